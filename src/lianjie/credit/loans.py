"""The 310 flow and servicing: apply (a synchronous decision), accept, draw down, repay, write
off, recover. Each action is one ``do_*`` function that checks, writes the credit rows and the
ledger entries, and emits its event in the caller's transaction.

Rules stated once:

- A merchant has at most one open application (an offer not yet drawn or expired) or active
  loan at a time (``application_already_open``); a second one racing the first is refused.
- An application without ``history_days_min`` of payment history is refused
  (``insufficient_history``), and nothing is stored. Above the product's maximum:
  ``amount_above_limit``. Above the merchant's computed limit: approved at the limit.
- Disbursement pays into the merchant's ``merchant_available`` account.
- Repayment waterfall: the product's order (default penalty, fees, interest, principal).
  Paying ahead is allowed: principal beyond what is due is an early repayment and covers the
  next instalments in order. Paying more than everything owed is refused
  (``repayment_exceeds_owed``) and nothing moves; repayment from receipts never takes more than
  is owed.
- Days past due count from the due day of the first instalment that payments do not yet cover.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import Connection, func, select

from lianjie import events, ledger, risk
from lianjie.credit import features as feats
from lianjie.credit import schedule, scoring
from lianjie.credit.funding import account, post_legs, split_legs
from lianjie.credit.products import Product, require_product
from lianjie.credit.schema import (
    applications,
    funder_limits,
    instalments,
    loan_funders,
    loans,
    repayments,
)
from lianjie.errors import DomainError, ErrorCode
from lianjie.ids import new_id
from lianjie.ledger import Leg, Purpose
from lianjie.money import BPS_DENOMINATOR, allocate, check_amount
from lianjie.payments import Party, PartyKind, require_party

PD_MAX = 0.10  # decline above a 10% probability of default
LIMIT_STEP = 100_00  # limits are whole hundreds of yuan
DPD_BUCKETS = ((0, "current"), (30, "1-30"), (60, "31-60"), (90, "61-90"))


@dataclass(frozen=True, slots=True)
class Application:
    id: str
    merchant_id: str
    product_id: str
    amount_requested: int
    status: str
    reasons: list[str]
    limit_amount: int
    rate_bps: int
    term_count: int
    score: int
    pd_bps: int
    model_version: str
    features: dict[str, float]
    expires_at: datetime
    created_at: datetime


def bucket(dpd: int) -> str:
    for upper, name in DPD_BUCKETS:
        if dpd <= upper:
            return name
    return "90+"


def _application(row: Any) -> Application:
    m = row._mapping
    return Application(
        id=m["id"], merchant_id=m["merchant_id"], product_id=m["product_id"],
        amount_requested=m["amount_requested"], status=m["status"],
        reasons=orjson.loads(m["reasons"]), limit_amount=m["limit_amount"],
        rate_bps=m["rate_bps"], term_count=m["term_count"], score=m["score"],
        pd_bps=m["pd_bps"], model_version=m["model_version"],
        features=orjson.loads(m["features"]), expires_at=m["expires_at"],
        created_at=m["created_at"])


def get_application(conn: Connection, app_id: str) -> Application | None:
    row = conn.execute(select(applications).where(applications.c.id == app_id)).first()
    return None if row is None else _application(row)


def require_application(conn: Connection, app_id: str) -> Application:
    found = get_application(conn, app_id) if isinstance(app_id, str) else None
    if found is None:
        raise DomainError(ErrorCode.APPLICATION_NOT_FOUND, f"no application {app_id!r}", "id")
    return found


def _limit_for(product: Product, score: int, features: dict[str, float]) -> int:
    multiple = 0.5 if score < 600 else 1.0 if score < 650 else 1.5 if score < 700 else 2.0
    raw = int(features["takings_monthly_avg"] * multiple) // LIMIT_STEP * LIMIT_STEP
    return min(product.amount_max, raw)


def risk_review(conn: Connection, now: datetime, app_id: str, merchant: Party,
                product: Product, amount: int, device_id: str | None = None,
                client_ip: str | None = None) -> list[str]:
    """Ask the risk engine about the application; return its decline reasons (none approves).

    A 310 decision involves no person, so the engine blocks where it would review. A block is
    logged by the engine and becomes a declined application, not a failed request."""
    try:
        risk.decide(conn, now, risk.Event(
            "loan_application", app_id, merchant.id, amount, product.currency,
            sp_id=merchant.parent_id, device_id=device_id, client_ip=client_ip,
            category=merchant.business_type,
            actor_since=merchant.created_at), reviewable=False)
    except risk.RiskDeclined as declined:
        declined.record(conn)
        return ["risk_declined", *(f"risk_{name}" for name in declined.decision.fired)]
    return []


def _open_application(conn: Connection, now: datetime, merchant_id: str) -> None:
    """Refuse while the merchant has an open offer or loan; expire a lapsed offer first."""
    row = conn.execute(select(applications).where(applications.c.open_key == merchant_id)
                       ).first()
    if row is None:
        return
    if row.status in ("approved", "accepted") and now >= row.expires_at:
        conn.execute(applications.update().where(applications.c.id == row.id)
                     .values(status="expired", open_key=None))
        return
    raise DomainError(ErrorCode.APPLICATION_ALREADY_OPEN,
                      f"merchant has an open application or loan ({row.id})", "merchant_id")


def do_apply(conn: Connection, now: datetime, merchant_id: str, product_id: str,
             amount: int, *, device_id: str | None = None, client_ip: str | None = None
             ) -> Application:
    """Decide an application synchronously: approve (with limit, rate, term) or decline.
    ``device_id`` and ``client_ip`` are the applicant's, for the risk engine."""
    amount = check_amount(amount)
    merchant = require_party(conn, merchant_id, PartyKind.MERCHANT, "merchant_id")
    product = require_product(conn, product_id)
    if amount > product.amount_max:
        raise DomainError(ErrorCode.AMOUNT_ABOVE_LIMIT,
                          f"the product lends at most {product.amount_max}", "amount")
    if amount < product.amount_min:
        raise DomainError(ErrorCode.AMOUNT_BELOW_MINIMUM,
                          f"the product lends at least {product.amount_min}", "amount")
    _open_application(conn, now, merchant.id)
    features = feats.for_merchant(conn, now, merchant.id)
    if features["history_days"] < product.history_days_min:
        raise DomainError(ErrorCode.INSUFFICIENT_HISTORY,
                          f"{int(features['history_days'])} days of payment history; the "
                          f"product needs {product.history_days_min}", "merchant_id")
    model = scoring.active_model(conn, now.timestamp())
    score, contributions = scoring.apply(model, features)
    pd = model.pd(score)
    limit = _limit_for(product, score, features)
    app_id = new_id("app")
    reasons = risk_review(conn, now, app_id, merchant, product, amount, device_id, client_ip)
    if not merchant.active:
        reasons.append("merchant_frozen")
    if conn.execute(select(loans.c.id).where(loans.c.merchant_id == merchant.id,
                                             loans.c.status == "written_off")).first():
        reasons.append("prior_write_off")
    if pd > PD_MAX:
        reasons.append("score_below_cutoff")
        reasons += [f"weak_{name}" for name, points in contributions[:2] if points < 0]
    if limit < product.amount_min:
        reasons.append("limit_below_minimum")
    status = "declined" if reasons else "approved"
    if status == "approved" and amount > limit:
        reasons.append("limit_reduced")
    row = dict(
        id=app_id, merchant_id=merchant.id, product_id=product.id,
        amount_requested=amount, status=status, reasons=orjson.dumps(reasons).decode(),
        limit_amount=min(amount, limit) if status == "approved" else 0,
        rate_bps=product.annual_rate_bps, term_count=product.term_count, score=score,
        pd_bps=round(pd * BPS_DENOMINATOR), model_version=model.version,
        features=orjson.dumps(features).decode(),
        open_key=merchant.id if status == "approved" else None,
        expires_at=now + timedelta(seconds=product.offer_ttl_s), created_at=now)
    conn.execute(applications.insert().values(**row))
    events.emit(conn, now, f"credit.application.{status}", merchant.id,
                {"id": row["id"], "status": status, "limit_amount": row["limit_amount"]})
    return require_application(conn, str(row["id"]))


def _check_offer(app: Application, now: datetime, *, drawing: bool) -> None:
    ok = ("approved", "accepted") if drawing else ("approved",)
    if app.status not in ok:
        raise DomainError(ErrorCode.OFFER_NOT_APPROVED,
                          f"the application is {app.status}", "id")
    if now >= app.expires_at:
        raise DomainError(ErrorCode.OFFER_EXPIRED, "the offer has expired", "id")


def do_accept(conn: Connection, now: datetime, app_id: str) -> Application:
    app = require_application(conn, app_id)
    _check_offer(app, now, drawing=False)
    conn.execute(applications.update().where(applications.c.id == app.id,
                                             applications.c.status == "approved")
                 .values(status="accepted"))
    events.emit(conn, now, "credit.offer.accepted", app.merchant_id, {"id": app.id})
    return require_application(conn, app.id)


def _funders_for(conn: Connection, product: Product, amount: int) -> list[tuple[str, int]]:
    """Funders and their parts of ``amount`` within their exposure limits, re-routing by policy.

    Each funder's limit is taken with a conditional update, so two drawdowns racing for the
    last headroom cannot both get it."""
    eligible = list(product.funders)
    for _ in range(len(product.funders)):
        parts = allocate(amount, [f.share_bps for f in eligible])
        short = [f for f, part in zip(eligible, parts, strict=True)
                 if _headroom(conn, f.funder_id, product.currency) < part]
        if not short:
            break
        if product.limit_policy == "refuse" or len(short) == len(eligible):
            raise DomainError(ErrorCode.FUNDER_LIMIT_EXCEEDED,
                              f"funder {short[0].funder_id} would exceed its exposure limit",
                              "amount")
        eligible = [f for f in eligible if f not in short]
    parts = allocate(amount, [f.share_bps for f in eligible])
    for f, part in zip(eligible, parts, strict=True):
        t = funder_limits
        done = conn.execute(t.update().where(
            t.c.funder_id == f.funder_id, t.c.currency == product.currency,
            (t.c.exposure_max < 0) | (t.c.exposure_used + part <= t.c.exposure_max))
            .values(exposure_used=t.c.exposure_used + part)).rowcount
        if done != 1:
            raise DomainError(ErrorCode.FUNDER_LIMIT_EXCEEDED,
                              f"funder {f.funder_id} would exceed its exposure limit", "amount")
    return [(f.funder_id, part) for f, part in zip(eligible, parts, strict=True) if part]


def _headroom(conn: Connection, funder_id: str, currency_code: str) -> int:
    t = funder_limits
    row = conn.execute(select(t).where(t.c.funder_id == funder_id,
                                       t.c.currency == currency_code)).first()
    if row is None:  # no limit set: unlimited, but tracked from now on
        conn.execute(t.insert().values(funder_id=funder_id, currency=currency_code,
                                       exposure_max=-1, exposure_used=0))
        return 2**62
    return 2**62 if row.exposure_max < 0 else row.exposure_max - row.exposure_used


def do_drawdown(conn: Connection, now: datetime, app_id: str, amount: int) -> dict[str, Any]:
    """Turn an approved or accepted offer into a loan and disburse it to the merchant."""
    amount = check_amount(amount)
    app = require_application(conn, app_id)
    _check_offer(app, now, drawing=True)
    if amount > app.limit_amount:
        raise DomainError(ErrorCode.AMOUNT_ABOVE_LIMIT,
                          f"the offer's limit is {app.limit_amount}", "amount")
    product = require_product(conn, app.product_id)
    if amount < product.amount_min:
        raise DomainError(ErrorCode.AMOUNT_BELOW_MINIMUM,
                          f"the product lends at least {product.amount_min}", "amount")
    taken = conn.execute(applications.update().where(
        applications.c.id == app.id, applications.c.status.in_(("approved", "accepted")))
        .values(status="drawn")).rowcount
    if taken != 1:
        raise DomainError(ErrorCode.OFFER_NOT_APPROVED, "the offer is already drawn", "id")
    parts = _funders_for(conn, product, amount)
    loan_id, day, cur = new_id("loan"), schedule.day_of(now), product.currency
    merchant_acct = account(conn, now, app.merchant_id, Purpose.MERCHANT_AVAILABLE, cur)
    legs = split_legs(conn, now, cur, amount, [f for f, _ in parts], [p for _, p in parts],
                      Purpose.LOAN_PRINCIPAL, merchant_acct, funder_pays=True)
    entry_id = post_legs(conn, now, f"credit:disburse:{loan_id}", "loan_disbursement", legs,
                         memo=loan_id)
    plan = schedule.build(amount, app.rate_bps, product.method, product.period,
                          product.term_count, day)
    _insert_loan(conn, now, loan_id, app, product, amount, day, plan, entry_id)
    conn.execute(loan_funders.insert(), [
        {"loan_id": loan_id, "funder_id": f, "share_bps": share, "principal": part,
         "principal_outstanding": part}
        for (f, part), share in zip(parts, allocate(BPS_DENOMINATOR, [p for _, p in parts]),
                                    strict=True)])
    events.emit(conn, now, "credit.loan.disbursed", app.merchant_id,
                {"id": loan_id, "amount": amount, "currency": cur,
                 "funders": [{"funder_id": f, "amount": p} for f, p in parts]})
    return require_loan(conn, loan_id)


def _insert_loan(conn: Connection, now: datetime, loan_id: str, app: Application,
                 product: Product, amount: int, day: int, plan: list[schedule.Instalment],
                 entry_id: int) -> None:
    conn.execute(loans.insert().values(
        id=loan_id, application_id=app.id, merchant_id=app.merchant_id, product_id=product.id,
        currency=product.currency, status="active", principal=amount, rate_bps=app.rate_bps,
        penalty_rate_bps=product.penalty_rate_bps, score=app.score, disbursed_day=day,
        maturity_day=plan[-1].due_day, principal_outstanding=amount, interest_unpaid=0,
        penalty_unpaid=0, fee_unpaid=0, scheduled_paid=0, interest_paid=0, penalty_paid=0,
        fee_paid=0, accrued_through_day=day - 1, unpaid_since_day=plan[0].due_day, dpd=0,
        written_off_day=None, written_off_amount=0, recovered_amount=0, entry_id=entry_id,
        created_at=now))
    cum, rows = 0, []
    for inst in plan:
        cum += inst.principal + inst.interest
        rows.append({"loan_id": loan_id, "seq": inst.seq, "due_day": inst.due_day,
                     "principal": inst.principal, "interest": inst.interest, "cum_due": cum})
    conn.execute(instalments.insert(), rows)


def get_loan_row(conn: Connection, loan_id: str) -> Any:
    return conn.execute(select(loans).where(loans.c.id == loan_id)).first()


def require_loan(conn: Connection, loan_id: str) -> dict[str, Any]:
    row = get_loan_row(conn, loan_id) if isinstance(loan_id, str) else None
    if row is None:
        raise DomainError(ErrorCode.LOAN_NOT_FOUND, f"no loan {loan_id!r}", "id")
    out = _plain(row)
    out["bucket"] = bucket(out["dpd"])
    out["owed"] = owed(out)
    out["funders"] = [_plain(r) for r in conn.execute(
        select(loan_funders).where(loan_funders.c.loan_id == loan_id)
        .order_by(loan_funders.c.funder_id))]
    out["schedule"] = [_plain(r) for r in conn.execute(
        select(instalments).where(instalments.c.loan_id == loan_id)
        .order_by(instalments.c.seq))]
    return out


def _plain(row: Any) -> dict[str, Any]:
    return {str(k): v for k, v in row._mapping.items()}


def owed(loan: dict[str, Any]) -> int:
    return int(loan["principal_outstanding"] + loan["interest_unpaid"] +
               loan["penalty_unpaid"] + loan["fee_unpaid"])


def split_waterfall(loan: dict[str, Any], order: tuple[str, ...], amount: int
                    ) -> dict[str, int]:
    """How much of ``amount`` goes to each part, in the waterfall's order (pure)."""
    due = {"penalty": loan["penalty_unpaid"], "fee": loan["fee_unpaid"],
           "interest": loan["interest_unpaid"], "principal": loan["principal_outstanding"]}
    out, left = {}, amount
    for part in order:
        out[part] = min(left, int(due[part]))
        left -= out[part]
    assert left == 0, "the caller caps the amount at what is owed"
    return out


_RECEIVABLE = {"penalty": Purpose.PENALTY_RECEIVABLE, "fee": Purpose.FEE_RECEIVABLE,
               "interest": Purpose.INTEREST_RECEIVABLE}


def apply_repayment(conn: Connection, now: datetime, loan_id: str, amount: int, *,
                    source: str, debit_account: int, key: str) -> dict[str, Any]:
    """Repay ``amount`` (at most what is owed) of an active loan from ``debit_account``."""
    loan = require_loan(conn, loan_id)
    assert loan["status"] == "active" and 0 < amount <= owed(loan)
    product = require_product(conn, loan["product_id"])
    parts = split_waterfall(loan, product.waterfall, amount)
    funders = loan["funders"]
    ids, shares = [f["funder_id"] for f in funders], [f["share_bps"] for f in funders]
    cur = loan["currency"]
    legs: list[Leg] = []
    for name, purpose in _RECEIVABLE.items():
        legs += split_legs(conn, now, cur, parts[name], ids, shares, purpose, debit_account,
                           funder_pays=False)
    principal_parts = allocate(parts["principal"], [f["principal_outstanding"] for f in funders]
                               ) if parts["principal"] else [0] * len(funders)
    for f, part in zip(funders, principal_parts, strict=True):
        if part:
            legs.append(Leg(debit_account, account(conn, now, f["funder_id"],
                                                   Purpose.LOAN_PRINCIPAL, cur), part))
            _release(conn, f["loan_id"], f["funder_id"], cur, part)
    entry_id = post_legs(conn, now, key, "loan_repayment", legs, memo=loan_id)
    _record(conn, now, loan, parts, amount, source, key, entry_id)
    return require_loan(conn, loan_id)


def _release(conn: Connection, loan_id: str, funder_id: str, cur: str, part: int) -> None:
    lf, fl = loan_funders, funder_limits
    conn.execute(lf.update().where(lf.c.loan_id == loan_id, lf.c.funder_id == funder_id)
                 .values(principal_outstanding=lf.c.principal_outstanding - part))
    conn.execute(fl.update().where(fl.c.funder_id == funder_id, fl.c.currency == cur)
                 .values(exposure_used=fl.c.exposure_used - part))


def _record(conn: Connection, now: datetime, loan: dict[str, Any], parts: dict[str, int],
            amount: int, source: str, key: str, entry_id: int) -> None:
    day = schedule.day_of(now)
    paid = loan["scheduled_paid"] + parts["interest"] + parts["principal"]
    left = loan["principal_outstanding"] - parts["principal"]
    rest = owed(loan) - amount
    next_unpaid = conn.execute(select(func.min(instalments.c.due_day)).where(
        instalments.c.loan_id == loan["id"], instalments.c.cum_due > paid)).scalar()
    status = "paid_off" if rest == 0 else "active"
    conn.execute(loans.update().where(loans.c.id == loan["id"]).values(
        principal_outstanding=left,
        interest_unpaid=loan["interest_unpaid"] - parts["interest"],
        penalty_unpaid=loan["penalty_unpaid"] - parts["penalty"],
        fee_unpaid=loan["fee_unpaid"] - parts["fee"], scheduled_paid=paid,
        interest_paid=loan["interest_paid"] + parts["interest"],
        penalty_paid=loan["penalty_paid"] + parts["penalty"],
        fee_paid=loan["fee_paid"] + parts["fee"],
        unpaid_since_day=None if left == 0 else next_unpaid,
        dpd=0 if next_unpaid is None or next_unpaid >= day or left == 0 else loan["dpd"],
        status=status))
    conn.execute(repayments.insert().values(
        id=new_id("rpy"), key=key, loan_id=loan["id"], source=source, business_day=day,
        amount=amount, penalty=parts["penalty"], fee=parts["fee"],
        interest=parts["interest"], principal=parts["principal"], entry_id=entry_id,
        created_at=now))
    if status == "paid_off":
        conn.execute(applications.update().where(applications.c.id == loan["application_id"])
                     .values(open_key=None))
    events.emit(conn, now, "credit.loan.repaid", loan["merchant_id"],
                {"id": loan["id"], "amount": amount, "source": source, **parts,
                 "status": status})


def do_repay(conn: Connection, now: datetime, loan_id: str, amount: int, key: str
             ) -> dict[str, Any]:
    """A merchant repays from its available balance (early, partial or in full)."""
    amount = check_amount(amount)
    loan = require_loan(conn, loan_id)
    cur = loan["currency"]
    source = account(conn, now, loan["merchant_id"], Purpose.MERCHANT_AVAILABLE, cur)
    if loan["status"] == "written_off":
        return do_recover(conn, now, loan_id, amount, key, source)
    if loan["status"] != "active":
        raise DomainError(ErrorCode.LOAN_NOT_ACTIVE, f"the loan is {loan['status']}", "id")
    if amount > owed(loan):
        raise DomainError(ErrorCode.REPAYMENT_EXCEEDS_OWED,
                          f"{owed(loan)} is owed; pay at most that", "amount")
    _check_funds(conn, source, amount)
    return apply_repayment(conn, now, loan_id, amount, source="manual", debit_account=source,
                           key=f"credit:repay:{key}")


def _check_funds(conn: Connection, account_id: int, amount: int) -> None:
    acct = ledger.require_account(conn, account_id)
    if acct.available < amount:
        raise DomainError(ErrorCode.INSUFFICIENT_FUNDS,
                          f"the merchant's available balance is {acct.available}", "amount")


def do_write_off(conn: Connection, now: datetime, loan_id: str) -> dict[str, Any]:
    """Write the loan off: each funder books its outstanding share as a credit loss.

    Afterwards nothing is outstanding or unpaid, on the loan row, on its funder rows and on the
    funders' receivable accounts alike; what was is kept in the ``*_written_off`` columns."""
    loan = require_loan(conn, loan_id)
    if loan["status"] != "active":
        raise DomainError(ErrorCode.LOAN_NOT_ACTIVE, f"the loan is {loan['status']}", "id")
    cur, funders = loan["currency"], loan["funders"]
    ids, shares = [f["funder_id"] for f in funders], [f["share_bps"] for f in funders]
    losses = {f["funder_id"]: f["principal_outstanding"] for f in funders}
    legs: list[Leg] = []
    for f in funders:
        if f["principal_outstanding"]:
            loss = account(conn, now, f["funder_id"], Purpose.CREDIT_LOSS, cur)
            legs.append(Leg(loss, account(conn, now, f["funder_id"], Purpose.LOAN_PRINCIPAL,
                                          cur), f["principal_outstanding"]))
            _release(conn, loan_id, f["funder_id"], cur, f["principal_outstanding"])
    for part, purpose in _RECEIVABLE.items():
        amount = loan[f"{part}_unpaid"]
        if not amount:
            continue
        for funder_id, piece in zip(ids, allocate(amount, shares), strict=True):
            if piece:
                losses[funder_id] += piece
                legs.append(Leg(account(conn, now, funder_id, Purpose.CREDIT_LOSS, cur),
                                account(conn, now, funder_id, purpose, cur), piece))
    total = owed(loan)
    assert sum(losses.values()) == total
    if legs:
        post_legs(conn, now, f"credit:writeoff:{loan_id}", "loan_write_off", legs, memo=loan_id)
    _record_write_off(conn, now, loan, losses)
    events.emit(conn, now, "credit.loan.written_off", loan["merchant_id"],
                {"id": loan_id, "amount": total})
    return require_loan(conn, loan_id)


def _record_write_off(conn: Connection, now: datetime, loan: dict[str, Any],
                      losses: dict[str, int]) -> None:
    """Move the loan's outstanding parts, and each funder's, into their written-off columns
    (``_release`` has already zeroed each funder's outstanding principal)."""
    lf = loan_funders
    for f in loan["funders"]:
        conn.execute(lf.update().where(lf.c.loan_id == loan["id"],
                                       lf.c.funder_id == f["funder_id"]).values(
            principal_written_off=f["principal_outstanding"],
            written_off_amount=losses[f["funder_id"]]))
    conn.execute(loans.update().where(loans.c.id == loan["id"]).values(
        status="written_off", written_off_day=schedule.day_of(now),
        written_off_amount=owed(loan), principal_written_off=loan["principal_outstanding"],
        interest_written_off=loan["interest_unpaid"],
        penalty_written_off=loan["penalty_unpaid"], fee_written_off=loan["fee_unpaid"],
        principal_outstanding=0, interest_unpaid=0, penalty_unpaid=0, fee_unpaid=0))
    conn.execute(applications.update().where(applications.c.id == loan["application_id"])
                 .values(open_key=None))


def do_recover(conn: Connection, now: datetime, loan_id: str, amount: int, key: str,
               source: int) -> dict[str, Any]:
    """Money received on a written-off loan: recovery income of each funder, by share, up to
    what was written off."""
    loan = require_loan(conn, loan_id)
    left = loan["written_off_amount"] - loan["recovered_amount"]
    if amount > left:
        raise DomainError(ErrorCode.REPAYMENT_EXCEEDS_OWED,
                          f"{left} is left to recover; pay at most that", "amount")
    _check_funds(conn, source, amount)
    funders = loan["funders"]
    legs = split_legs(conn, now, loan["currency"], amount, [f["funder_id"] for f in funders],
                      [f["share_bps"] for f in funders], Purpose.RECOVERY_INCOME, source,
                      funder_pays=False)
    key = f"credit:recover:{key}"
    entry_id = post_legs(conn, now, key, "loan_recovery", legs, memo=loan_id)
    conn.execute(loans.update().where(loans.c.id == loan_id).values(
        recovered_amount=loan["recovered_amount"] + amount))
    conn.execute(repayments.insert().values(
        id=new_id("rpy"), key=key, loan_id=loan_id, source="recovery",
        business_day=schedule.day_of(now), amount=amount, penalty=0, fee=0, interest=0,
        principal=0, entry_id=entry_id, created_at=now))
    events.emit(conn, now, "credit.loan.recovered", loan["merchant_id"],
                {"id": loan_id, "amount": amount})
    return require_loan(conn, loan_id)


PAGE_SIZE_MAX = 101
POSITION_PURPOSES = (Purpose.LOAN_PRINCIPAL, Purpose.INTEREST_RECEIVABLE,
                     Purpose.INTEREST_INCOME, Purpose.PENALTY_RECEIVABLE,
                     Purpose.PENALTY_INCOME, Purpose.FEE_RECEIVABLE, Purpose.FEE_INCOME,
                     Purpose.CREDIT_LOSS, Purpose.RECOVERY_INCOME)


def list_loans(conn: Connection, *, merchant_id: str | None = None,
               funder_id: str | None = None, after: str | None = None, limit: int = 20
               ) -> list[dict[str, Any]]:
    """Loans in id order after the cursor; a funder sees the loans it funds, with its part."""
    assert 0 < limit <= PAGE_SIZE_MAX
    query = select(loans.c.id)
    if merchant_id is not None:
        query = query.where(loans.c.merchant_id == merchant_id)
    if funder_id is not None:
        query = query.where(loans.c.id.in_(select(loan_funders.c.loan_id).where(
            loan_funders.c.funder_id == funder_id)))
    if after is not None:
        query = query.where(loans.c.id > after)
    ids = conn.execute(query.order_by(loans.c.id).limit(limit)).scalars().all()
    return [require_loan(conn, i) for i in ids]


def position(conn: Connection, funder_id: str, currency_code: str) -> dict[str, Any]:
    """A funder's balances in each of its credit accounts, its exposure and its loans' count."""
    balances = {}
    for purpose in POSITION_PURPOSES:
        acct = ledger.find_account(conn, funder_id, purpose, currency_code)
        balances[purpose.value] = 0 if acct is None else acct.balance
    t = funder_limits
    row = conn.execute(select(t).where(t.c.funder_id == funder_id,
                                       t.c.currency == currency_code)).first()
    active = conn.execute(select(func.count()).select_from(loan_funders.join(
        loans, loans.c.id == loan_funders.c.loan_id)).where(
        loan_funders.c.funder_id == funder_id, loans.c.status == "active")).scalar_one()
    return {"object": "funder_position", "funder_id": funder_id, "currency": currency_code,
            "principal_outstanding": -balances["loan_principal"],
            "exposure_max": None if row is None or row.exposure_max < 0 else row.exposure_max,
            "exposure_used": 0 if row is None else row.exposure_used,
            "active_loans": int(active), "balances": balances}
