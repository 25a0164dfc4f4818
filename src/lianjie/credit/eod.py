"""The credit end-of-day job for one business day.

Steps, in order, each in its own transaction together with its row in ``credit_eod_steps``,
so the job is idempotent (a finished step is skipped: running twice accrues once) and resumable
(a crash rolls the unfinished step back, and the next run does it):

1. ``receipts``: for loans whose product takes a share of daily receipts, that share is taken
   as a repayment, capped at what is owed. Where it comes from depends on who runs the day:

   - inside the clearing end of day (``held`` given), settlement has already run for the day
     and moved the merchant's settled net from ``merchant_pending`` to ``merchant_available``,
     paying out all but what ``receipts_holdback`` computed for the loan; the repayment takes
     that held amount from ``merchant_available``, capped at what is available. A payment after
     the cut-off is in neither: it waits in pending for the next day's settlement.
   - on its own (``held`` is None: deployments and tests that run credit without clearing),
     the share of the business day's receipts (paid orders net of fee, less refunds net of the
     fee returned, in the window the cut-off bounds) is taken from ``merchant_pending``, capped
     at the pending balance; clearing, if it runs later, nets those entries with the day
     (``ClearingConfig.eod_codes``).
2. ``accrue``: one day of Actual/365 interest on every active loan's outstanding principal,
   set-based in SQL; the day's total per currency is split between funders with ``allocate``
   (weights: each funder's share of each loan's interest) and booked as one ledger entry.
3. ``delinquency``: days past due for every active loan (set-based), and the day a loan first
   reaches ``VINTAGE_DPD`` (what vintage curves read); for loans in arrears,
   penalty interest on the overdue amount and, on the first day in arrears, the late fee.
4. ``write_off``: loans at or past their product's ``writeoff_dpd`` are written off.
5. ``daily``: the per merchant and day aggregates batch features read are rebuilt for the days
   around this one and for earlier days of orders refunded in them (``lianjie.credit.daily``).
6. ``expire_offers``: offers past their expiry free the merchant to apply again.

Days not yet run before ``business_day`` are run first, in order (at most ``CATCH_UP_DAYS_MAX``);
their receipts come only from the standalone path's window when ``held`` is None, and are
nothing otherwise (each of those days' settlements belonged to that day's own run).

A business day ends at the cut-off (``timezone`` and ``cutoff``, the same settings as
``ClearingConfig``): with a 18:00 cut-off, the business day D runs from 18:00 on D-1 to 18:00
on D, local time.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from functools import partial
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, Engine, func, select, text

from lianjie import ledger
from lianjie.clock import business_day_end, to_us
from lianjie.committer import run_now
from lianjie.credit import daily, schedule
from lianjie.credit import loans as L
from lianjie.credit.funding import account, post_legs
from lianjie.credit.schema import applications, eod_steps, loans
from lianjie.errors import DomainError, ErrorCode
from lianjie.ledger import Leg, Purpose
from lianjie.money import allocate

_UTC = ZoneInfo("UTC")
STEPS = ("receipts", "accrue", "delinquency", "write_off", "daily", "expire_offers")
CATCH_UP_DAYS_MAX = 400
VINTAGE_DPD = 30  # vintage curves count principal of loans once this many days past due
DAY_US = 86_400 * 1_000_000
# An order is paid within its expiry, at most this long after it was created (PaymentsConfig).
ORDER_AGE_US_MAX = 7 * DAY_US
Runner = Callable[[Callable[[Connection], Any]], Any]


Held = Mapping[tuple[str, str], int]  # (merchant, currency) -> settled and held for loans


def require_day_over(business_date: date, now: datetime, tz: str = "Asia/Shanghai",
                     cutoff: time = time(0)) -> None:
    """Refuse to close a business day before its cut-off has passed."""
    end = business_day_end(business_date, tz, cutoff)
    if now < end:
        raise DomainError(ErrorCode.BUSINESS_DAY_NOT_OVER,
                          f"business day {business_date} ends at {end.isoformat()}",
                          "business_date")


def run_end_of_day(target: Engine | Connection, business_date: date, *,
                   now: datetime | None = None, runner: Runner | None = None,
                   tz: str = "Asia/Shanghai", cutoff: time = time(0),
                   held: Held | None = None) -> dict[str, int]:
    """Run every unfinished step of every unfinished day up to ``business_date``.

    ``target`` is an engine (each step in its own transaction) or a connection already in a
    transaction (everything in it). ``tz`` and ``cutoff`` bound a business day. ``held``: what
    settlement held back for loans today (see the module docstring); None when credit runs on
    its own. Returns items done per step for ``business_date`` (-1: already done)."""
    day = schedule.day_of(business_date)
    zone = ZoneInfo(tz)
    when = now or business_day_end(business_date, tz, cutoff) - timedelta(seconds=1)

    def run(unit: Callable[[Connection], Any]) -> Any:
        if runner is not None:
            return runner(unit)
        if isinstance(target, Connection):
            return unit(target)
        return run_now(target, unit)

    first = min(day, run(lambda c: _first_day(c, day)))
    done: dict[str, int] = {}
    for d in range(max(first, day - CATCH_UP_DAYS_MAX), day + 1):
        bounds = _Day(tz, cutoff, None if held is None else held if d == day else {})
        for step in STEPS:
            n: int = run(partial(_step, now=when, day=d, step=step, zone=zone, bounds=bounds))
            if d == day:
                done[step] = n
    return done


def _first_day(conn: Connection, day: int) -> int:
    last = conn.execute(select(func.max(eod_steps.c.business_day)).where(
        eod_steps.c.step == STEPS[-1])).scalar()
    if last is not None:
        return int(last) + 1
    first_loan = conn.execute(select(func.min(loans.c.disbursed_day))).scalar()
    return day if first_loan is None else min(day, int(first_loan))


@dataclass(frozen=True, slots=True)
class _Day:
    """A business day as its steps see it: where it ends (time zone and cut-off), and what
    settlement held back for loans out of its net (None when credit runs on its own: receipts
    then come from ``merchant_pending``; see the module docstring)."""
    tz: str
    cutoff: time
    held: Held | None


def _step(conn: Connection, *, now: datetime, day: int, step: str, zone: ZoneInfo,
          bounds: _Day) -> int:
    t = eod_steps
    if conn.execute(select(t.c["items"]).where(t.c.business_day == day, t.c.step == step)
                    ).first() is not None:
        return -1
    local = now.astimezone(zone)
    n = _STEP_FNS[step](conn, local, day, bounds)
    conn.execute(t.insert().values(business_day=day, step=step, items=n, finished_at=now))
    return n


_RECEIPT_LOANS = (
    "SELECT l.id, l.merchant_id, l.currency, p.receipt_share_bps, "
    "  l.principal_outstanding + l.interest_unpaid + l.penalty_unpaid + l.fee_unpaid "
    "FROM credit_loans l JOIN credit_products p ON p.id = l.product_id "
    "WHERE l.status = 'active' AND p.receipt_share_bps > 0 AND l.disbursed_day <= :day "
    "ORDER BY l.id")


def receipts_holdback(conn: Connection, business_date: date, settled: Held) -> dict[
        tuple[str, str], int]:
    """What settlement should hold back in ``merchant_available`` for loans, per (merchant,
    currency), out of the net it settles today: each active loan's product share of it, capped
    at what the loan owes. The credit end of day then takes it (``held``)."""
    out: dict[tuple[str, str], int] = defaultdict(int)
    rows = conn.execute(text(_RECEIPT_LOANS), {"day": schedule.day_of(business_date)}).all()
    for _, merchant_id, cur, share_bps, owing in rows:
        net = settled.get((merchant_id, cur), 0)
        take = min(max(net, 0) * int(share_bps) // 10_000, int(owing))
        if take > 0:
            out[(merchant_id, cur)] += take
    return dict(out)


def _receipts(conn: Connection, now: datetime, day: int, bounds: _Day) -> int:
    if bounds.held is not None:
        return _receipts_held(conn, now, day, bounds.held)
    end = to_us(business_day_end(schedule.date_of(day), bounds.tz, bounds.cutoff))
    start = to_us(business_day_end(schedule.date_of(day - 1), bounds.tz, bounds.cutoff))
    rows = conn.execute(text(
        "SELECT l.id, l.merchant_id, l.currency, p.receipt_share_bps, "
        "  (SELECT COALESCE(SUM(o.amount - o.fee_amount), 0) FROM payment_orders o "
        "   WHERE o.merchant_id = l.merchant_id AND o.created_at >= :created "
        "   AND o.created_at < :end AND o.status = 'paid' "
        "   AND o.paid_at >= :start AND o.paid_at < :end) "
        "- (SELECT COALESCE(SUM(r.amount - r.fee_refunded), 0) FROM refunds r "
        "   WHERE r.merchant_id = l.merchant_id AND r.created_at >= :start "
        "   AND r.created_at < :end) AS receipts "
        "FROM credit_loans l JOIN credit_products p ON p.id = l.product_id "
        "WHERE l.status = 'active' AND p.receipt_share_bps > 0 AND l.disbursed_day <= :day "
        "ORDER BY l.id"), {"start": start, "end": end, "day": day,
                           "created": start - ORDER_AGE_US_MAX}).all()
    n = 0
    for loan_id, merchant_id, cur, share_bps, receipts in rows:
        share = max(int(receipts), 0) * share_bps // 10_000
        n += _take(conn, now, day, loan_id, share, Purpose.MERCHANT_PENDING, merchant_id,
                   cur) > 0
    return n


def _receipts_held(conn: Connection, now: datetime, day: int, held: Held) -> int:
    """Take what settlement held back for each merchant's loans from ``merchant_available``."""
    left = dict(held)
    n = 0
    for loan_id, merchant_id, cur, _, _ in conn.execute(text(_RECEIPT_LOANS), {"day": day}).all():
        want = left.get((merchant_id, cur), 0)
        took = _take(conn, now, day, loan_id, want, Purpose.MERCHANT_AVAILABLE, merchant_id, cur)
        left[(merchant_id, cur)] = want - took
        n += took > 0
    return n


def _take(conn: Connection, now: datetime, day: int, loan_id: str, want: int, purpose: Purpose,
          merchant_id: str, cur: str) -> int:
    """Repay up to ``want`` of the loan from the merchant's ``purpose`` account, capped at what
    is owed and at the account's available balance; returns what was taken."""
    if want <= 0:
        return 0
    debit = account(conn, now, merchant_id, purpose, cur)
    balance = ledger.require_account(conn, debit).available
    take = min(want, L.owed(L.require_loan(conn, loan_id)), max(balance, 0))
    if take <= 0:
        return 0
    L.apply_repayment(conn, now, loan_id, take, source="receipts", debit_account=debit,
                      key=f"credit:receipts:{loan_id}:{day}")
    return take


_LOAN = "credit_loans"
_DAILY = f"(({_LOAN}.principal_outstanding * {_LOAN}.rate_bps + 1825000) / 3650000)"
_OVERDUE = (f"(SELECT MAX(i.cum_due) FROM credit_instalments i WHERE i.loan_id = {_LOAN}.id "
            f"AND i.due_day < :day) - {_LOAN}.scheduled_paid")
_PENALTY = (f"((CASE WHEN {_OVERDUE} > 0 THEN {_OVERDUE} ELSE 0 END) "
            f"* {_LOAN}.penalty_rate_bps + 1825000) / 3650000")
_LATE_FEE = (f"(CASE WHEN {_LOAN}.dpd = 1 THEN (SELECT p.late_fee FROM credit_products p "
             f"WHERE p.id = {_LOAN}.product_id) ELSE 0 END)")


def _accrue(conn: Connection, now: datetime, day: int, _bounds: _Day) -> int:
    where = (f"{_LOAN}.status = 'active' AND {_LOAN}.accrued_through_day < :day "
             f"AND {_LOAN}.disbursed_day <= :day")
    _book_set(conn, now, day, "accrue", _DAILY, where, Purpose.INTEREST_RECEIVABLE,
              Purpose.INTEREST_INCOME)
    return int(conn.execute(text(
        f"UPDATE {_LOAN} SET interest_unpaid = interest_unpaid + {_DAILY}, "
        f"accrued_through_day = :day WHERE {where}"), {"day": day}).rowcount)


def _book_set(conn: Connection, now: datetime, day: int, what: str, amount: str, where: str,
              receivable: Purpose, income: Purpose) -> None:
    """Book the day's ``amount`` (a per-loan SQL expression) over the loans ``where`` selects:
    per currency, the total split between funders by their shares of each loan's amount."""
    weights = conn.execute(text(
        f"SELECT {_LOAN}.currency, f.funder_id, SUM(({amount}) * f.share_bps) FROM {_LOAN} "
        f"JOIN credit_loan_funders f ON f.loan_id = {_LOAN}.id WHERE {where} "
        f"GROUP BY {_LOAN}.currency, f.funder_id"), {"day": day}).all()
    totals = conn.execute(text(
        f"SELECT {_LOAN}.currency, SUM({amount}) FROM {_LOAN} WHERE {where} "
        f"GROUP BY {_LOAN}.currency ORDER BY {_LOAN}.currency"), {"day": day}).all()
    by_cur: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for cur, funder_id, weight in sorted(weights):
        if weight and int(weight) > 0:
            by_cur[cur].append((funder_id, int(weight)))
    for cur, total in totals:
        total = int(total or 0)
        pairs = by_cur[cur]
        if total == 0 or not pairs:
            continue
        parts = allocate(total, [w for _, w in pairs])
        legs = [Leg(account(conn, now, f, receivable, cur), account(conn, now, f, income, cur),
                    part) for (f, _), part in zip(pairs, parts, strict=True) if part]
        post_legs(conn, now, f"credit:{what}:{day}:{cur}", f"loan_{what}", legs)


def _delinquency(conn: Connection, now: datetime, day: int, _bounds: _Day) -> int:
    """Days past due for every active loan; penalty interest and the late fee, set-based."""
    conn.execute(text(
        f"UPDATE {_LOAN} SET dpd = CASE WHEN unpaid_since_day IS NOT NULL AND "
        "unpaid_since_day < :day THEN :day - unpaid_since_day ELSE 0 END "
        "WHERE status = 'active'"), {"day": day})
    conn.execute(text(f"UPDATE {_LOAN} SET dpd30_day = :day WHERE status = 'active' "
                      f"AND dpd >= {VINTAGE_DPD} AND dpd30_day IS NULL"), {"day": day})
    where = f"{_LOAN}.status = 'active' AND {_LOAN}.dpd > 0"
    _book_set(conn, now, day, "penalty", _PENALTY, where, Purpose.PENALTY_RECEIVABLE,
              Purpose.PENALTY_INCOME)
    _book_set(conn, now, day, "late_fee", _LATE_FEE, where, Purpose.FEE_RECEIVABLE,
              Purpose.FEE_INCOME)
    return int(conn.execute(text(
        f"UPDATE {_LOAN} SET penalty_unpaid = penalty_unpaid + {_PENALTY}, "
        f"fee_unpaid = fee_unpaid + {_LATE_FEE} WHERE {where}"), {"day": day}).rowcount)


def _write_off(conn: Connection, now: datetime, day: int, _bounds: _Day) -> int:
    ids = conn.execute(text(
        "SELECT l.id FROM credit_loans l JOIN credit_products p ON p.id = l.product_id "
        "WHERE l.status = 'active' AND l.dpd >= p.writeoff_dpd ORDER BY l.id")).scalars().all()
    for loan_id in ids:
        L.do_write_off(conn, now, loan_id)
    return len(ids)


def _expire_offers(conn: Connection, now: datetime, day: int, bounds: _Day) -> int:
    """Expire the offers whose time has passed by the end of the business day (its cut-off),
    and never one whose time is still to come when the step runs."""
    end = min(now, business_day_end(schedule.date_of(day), bounds.tz, bounds.cutoff))
    t = applications
    return int(conn.execute(t.update().where(
        t.c.status.in_(("approved", "accepted")), t.c.expires_at <= end)
        .values(status="expired", open_key=None)).rowcount)


def _daily(conn: Connection, now: datetime, day: int, _bounds: _Day) -> int:
    return daily.refresh(conn, *daily.refresh_window(now, day))


_STEP_FNS: dict[str, Callable[[Connection, datetime, int, _Day], int]] = {
    "receipts": _receipts, "accrue": _accrue, "delinquency": _delinquency,
    "write_off": _write_off, "daily": _daily, "expire_offers": _expire_offers,
}
