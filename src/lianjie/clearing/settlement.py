"""Merchant settlement: net what each merchant's ``merchant_pending`` account received (payments
net of fee, less refunds and loan repayments from receipts) and pay it out to its bank.

Exactly once: every merchant pending account has a watermark, the last ``account_seq`` settled.
A run settles the postings after the watermark up to the cut-off of the day being paid (T+n per
merchant, T+1 by default), moves the net to ``merchant_available`` and from there to the paying
institution's settlement account, in linked ledger entries keyed per (merchant, currency,
business date), and records a payout instruction. The net of a range is read from two
``balance_after`` lookups, not by summing postings; postings of earlier settlements inside the
range are added back, since they already paid out money that came before (a settlement row is
``netted`` once a watermark passes its posting, so the open ones are found without a scan).

Postings dated after the cut-off normally wait for the next day; entries whose code is in
``eod_codes`` (loan repayments from receipts, when the credit end of day ran on its own before
settlement) count with the day they are posted for. A net that is zero advances the watermark;
a negative net (refunds over receipts) waits until receipts cover it.

Loans repaid from receipts: ``holdback`` (the credit context's ``receipts_holdback``) says how
much of each merchant's settled net stays in ``merchant_available`` for its loan; the payout is
the rest (none when nothing is left: no payout entry and no instruction). The credit end of day,
which runs next, takes the held amount as the repayment.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import Connection, bindparam, text

from lianjie import events, ledger
from lianjie.clearing import schema as s
from lianjie.clearing.config import ClearingConfig
from lianjie.clock import to_us
from lianjie.ids import new_id
from lianjie.ledger import BATCH_ENTRIES_MAX, Entry, Leg, Purpose
from lianjie.payments import PartyKind, account_id

SETTLEMENT_CODE = "settlement"
PAYOUT_CODE = "payout"
LOOKUP_CHUNK = 500
Holdback = Callable[[Connection, date, Mapping[tuple[str, str], int]], dict[tuple[str, str], int]]


@dataclass
class SettleReport:
    settled: int = 0
    amount: int = 0
    skipped_negative: int = 0
    problems: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _Due:
    account_id: int
    merchant_id: str
    currency: str
    watermark: int
    bound: int
    net: int
    delay_days: int
    institution_id: str | None
    held: int = 0  # of ``net``, kept in merchant_available for a loan


def window(cfg: ClearingConfig, business_date: date, delay_days: int) -> tuple[date, date]:
    """(the last business day whose items are paid, the value date) for a run on this date."""
    if delay_days == 0:
        return business_date, business_date
    paid_through = business_date + timedelta(days=1 - delay_days)
    return paid_through, paid_through + timedelta(days=delay_days)


def _candidates(conn: Connection, cfg: ClearingConfig) -> list[Any]:
    return list(conn.execute(text(
        "SELECT a.id, a.owner_id, a.currency, a.posting_count, COALESCE(w.settled_seq, 0), "
        "COALESCE(t.delay_days, :delay), t.payout_institution_id "
        "FROM ledger_accounts a LEFT JOIN clearing_watermarks w ON w.account_id = a.id "
        "LEFT JOIN clearing_terms t ON t.merchant_id = a.owner_id "
        "WHERE a.purpose = :purpose AND a.posting_count > COALESCE(w.settled_seq, 0) "
        "ORDER BY a.id"),
        {"delay": cfg.settlement_delay_days_default,
         "purpose": Purpose.MERCHANT_PENDING.value}).all())


# Reading an unsettled posting's row for its date costs about six times a step of a scan over
# the entries (SQLite, 1 million payments): scan the entries only when there are fewer than
# this many entries per unsettled posting, so a long history does not slow every end of day.
ENTRIES_PER_UNSETTLED_SCAN_MAX = 4


def _first_late(conn: Connection, cut: datetime, codes: tuple[str, ...], *,
                by_entries: bool) -> dict[int, int]:
    """Per pending account: the first unsettled posting dated at or after the cut-off.

    ``by_entries``: found from the entries dated at or after the cut-off (a posting is dated as
    its entry), one pass over the entries and a primary-key probe for each late one's postings
    (CROSS JOIN keeps SQLite in that order); else by reading every unsettled posting of every
    merchant through the account index. Both give the same answer."""
    if by_entries:
        sql = ("SELECT p.account_id, MIN(p.account_seq) FROM ledger_entries e "
               "CROSS JOIN ledger_postings p JOIN ledger_accounts a ON a.id = p.account_id "
               "LEFT JOIN clearing_watermarks w ON w.account_id = p.account_id "
               "WHERE p.entry_id = e.id AND e.created_at >= :cut AND p.created_at >= :cut "
               "AND a.purpose = :purpose AND p.account_seq > COALESCE(w.settled_seq, 0) "
               "AND e.code NOT IN :codes GROUP BY p.account_id")
    else:
        sql = ("SELECT p.account_id, MIN(p.account_seq) FROM ledger_postings p "
               "JOIN ledger_accounts a ON a.id = p.account_id "
               "JOIN ledger_entries e ON e.id = p.entry_id "
               "LEFT JOIN clearing_watermarks w ON w.account_id = p.account_id "
               "WHERE a.purpose = :purpose AND p.account_seq > COALESCE(w.settled_seq, 0) "
               "AND p.created_at >= :cut AND e.code NOT IN :codes GROUP BY p.account_id")
    rows = conn.execute(text(sql).bindparams(bindparam("codes", expanding=True)),
                        {"purpose": Purpose.MERCHANT_PENDING.value, "cut": to_us(cut),
                         "codes": list(codes)})
    return {int(a): int(seq) for a, seq in rows}


def _scan_entries(conn: Connection, cands: list[Any]) -> bool:
    unsettled = sum(int(c[3]) - int(c[4]) for c in cands)
    entries = int(conn.execute(text("SELECT COALESCE(MAX(id), 0) FROM ledger_entries"))
                  .scalar_one())
    return entries < ENTRIES_PER_UNSETTLED_SCAN_MAX * unsettled


def _settled_before(conn: Connection) -> dict[int, list[tuple[int, int]]]:
    """Per pending account: (seq, amount) of earlier settlements' postings past the watermark."""
    rows = conn.execute(text(
        "SELECT st.pending_account_id, st.pending_seq, -st.amount FROM clearing_settlements st "
        "WHERE st.netted = 0"))
    out: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for a, seq, amount in rows:
        out[int(a)].append((int(seq), int(amount)))
    return out


def _balances(conn: Connection, pairs: list[tuple[int, int]]) -> dict[tuple[int, int], int]:
    """``balance_after`` of each (account, seq): one index probe each, through the driver on
    SQLite (no round trip), one join against unnested arrays on PostgreSQL."""
    wanted = sorted({p for p in pairs if p[1] > 0})
    if not wanted:
        return {}
    if conn.dialect.name == "postgresql":
        rows = conn.execute(text(
            "SELECT p.account_id, p.account_seq, p.balance_after FROM ledger_postings p "
            "JOIN unnest(CAST(:a AS BIGINT[]), CAST(:q AS BIGINT[])) AS w(a, q) "
            "ON p.account_id = w.a AND p.account_seq = w.q"),
            {"a": [a for a, _ in wanted], "q": [q for _, q in wanted]})
        return {(int(a), int(q)): int(b) for a, q, b in rows}
    cur = conn.connection.cursor()
    out: dict[tuple[int, int], int] = {}
    for a, q in wanted:
        cur.execute("SELECT balance_after FROM ledger_postings WHERE account_id = ? "
                    "AND account_seq = ?", (a, q))
        row = cur.fetchone()
        assert row is not None, f"account {a} has no posting {q}"
        out[(a, q)] = int(row[0])
    return out


def due_settlements(conn: Connection, cfg: ClearingConfig, business_date: date, *,
                    by_entries: bool | None = None) -> list[_Due]:
    """What a run for ``business_date`` would settle, per merchant pending account
    (``by_entries``: how to find late postings; by default the cheaper way for the data)."""
    cands = _candidates(conn, cfg)
    if by_entries is None:
        by_entries = _scan_entries(conn, cands)
    codes = (SETTLEMENT_CODE, *cfg.eod_codes)
    late_by_cut: dict[date, dict[int, int]] = {}
    settled = _settled_before(conn)
    bounds: list[tuple[Any, int]] = []
    for c in cands:
        paid_through, _ = window(cfg, business_date, int(c[5]))
        if paid_through not in late_by_cut:
            late_by_cut[paid_through] = _first_late(conn, cfg.day_end(paid_through), codes,
                                                     by_entries=by_entries)
        late = late_by_cut[paid_through].get(int(c[0]))
        bound = int(c[3]) if late is None else late - 1
        if bound > int(c[4]):
            bounds.append((c, bound))
    bal = _balances(conn, [(int(c[0]), int(c[4])) for c, _ in bounds]
                    + [(int(c[0]), b) for c, b in bounds])
    out = []
    for c, bound in bounds:
        acc, wm = int(c[0]), int(c[4])
        paid_back = sum(amount for seq, amount in settled.get(acc, ()) if wm < seq <= bound)
        net = bal[(acc, bound)] - bal.get((acc, wm), 0) - paid_back
        out.append(_Due(acc, c[1], c[2], wm, bound, net, int(c[5]), c[6]))
    return out


def default_institution(conn: Connection, cfg: ClearingConfig) -> str | None:
    if cfg.payout_institution_id is not None:
        return cfg.payout_institution_id
    found = conn.execute(text("SELECT id FROM parties WHERE kind = :k ORDER BY created_at, id "
                              "LIMIT 1"), {"k": PartyKind.INSTITUTION.value}).scalar()
    return None if found is None else str(found)


def settle_merchants(conn: Connection, now: datetime, cfg: ClearingConfig,
                     business_date: date, holdback: Holdback | None = None) -> SettleReport:
    """Settle every merchant due on ``business_date``; problems are collected, not raised."""
    report = SettleReport()
    fallback = default_institution(conn, cfg)
    plans: list[_Plan] = []
    advance: list[_Due] = []
    due = _held(conn, business_date, due_settlements(conn, cfg, business_date), holdback)
    ids = _account_ids(conn, due, fallback)
    for d in due:
        if d.net < 0:
            report.skipped_negative += 1
            continue
        if d.net == 0:
            advance.append(d)
            continue
        institution = d.institution_id or fallback
        if institution is None:
            report.problems.append({"code": "no_payout_institution",
                                    "merchant_id": d.merchant_id})
            continue
        plans.append(_plan(conn, ids, d, institution, business_date))
    done: list[tuple[_Plan, int, int | None]] = []
    for i in range(0, len(plans), BATCH_ENTRIES_MAX // 2):
        batch = plans[i:i + BATCH_ENTRIES_MAX // 2]
        results = iter(ledger.create_entries(conn, now, [e for p in batch for e in p[3]]))
        for plan in batch:
            got = [next(results) for _ in plan[3]]
            failed = [r.error for r in got if r.error is not None]
            if failed:
                report.problems.append({"code": str(failed[0]),
                                        "merchant_id": plan[0].merchant_id})
                continue
            assert all(r.entry_id is not None for r in got)
            done.append((plan, got[0].entry_id or 0, got[1].entry_id if len(got) > 1 else None))
            advance.append(plan[0])
            report.settled += 1
            report.amount += plan[0].net
    _record(conn, now, cfg, business_date, done)
    _advance(conn, advance)
    return report


def _held(conn: Connection, business_date: date, dues: list[_Due],
          holdback: Holdback | None) -> list[_Due]:
    if holdback is None:
        return dues
    held = holdback(conn, business_date, {(d.merchant_id, d.currency): d.net for d in dues
                                          if d.net > 0})
    out = []
    for d in dues:
        keep = held.get((d.merchant_id, d.currency), 0)
        assert 0 <= keep <= max(d.net, 0), "a loan holds back at most what is settled"
        out.append(replace(d, held=keep) if keep else d)
    return out


_Plan = tuple[_Due, str, str, tuple[Entry, ...]]


def _account_ids(conn: Connection, dues: list[_Due], fallback: str | None
                 ) -> dict[tuple[str, str, str], int]:
    """(owner, purpose, currency) -> account id for every account settlement will touch."""
    owners = {d.merchant_id for d in dues} | {d.institution_id for d in dues
                                              if d.institution_id} | ({fallback} - {None})
    out: dict[tuple[str, str, str], int] = {}
    wanted = sorted(o for o in owners if o)
    for i in range(0, len(wanted), LOOKUP_CHUNK):
        rows = conn.execute(text(
            "SELECT owner_id, purpose, currency, id FROM ledger_accounts "
            "WHERE owner_id IN :owners AND purpose IN :purposes")
            .bindparams(bindparam("owners", expanding=True),
                        bindparam("purposes", expanding=True)),
            {"owners": wanted[i:i + LOOKUP_CHUNK],
             "purposes": [Purpose.MERCHANT_AVAILABLE.value,
                          Purpose.INSTITUTION_SETTLEMENT.value]})
        out.update({(r[0], r[1], r[2]): int(r[3]) for r in rows})
    return out


def _plan(conn: Connection, ids: dict[tuple[str, str, str], int], due: _Due, institution: str,
          business_date: date) -> _Plan:
    def acc(owner: str, purpose: Purpose) -> int:
        found = ids.get((owner, purpose.value, due.currency))
        if found is None:  # first settlement in this currency: open it
            found = ids[(owner, purpose.value, due.currency)] = account_id(
                conn, owner, purpose, due.currency)
        return found

    available = acc(due.merchant_id, Purpose.MERCHANT_AVAILABLE)
    bank = acc(institution, Purpose.INSTITUTION_SETTLEMENT)
    sid = new_id("stl")
    day = business_date.isoformat()
    paid = due.net - due.held
    settle = Entry(key=f"settle:{due.merchant_id}:{due.currency}:{day}", code=SETTLEMENT_CODE,
                   legs=(Leg(due.account_id, available, due.net),), memo=sid, linked=paid > 0)
    if paid == 0:  # the loan holds back all of it: nothing to pay out
        return due, sid, institution, (settle,)
    payout = Entry(key=f"payout:{due.merchant_id}:{due.currency}:{day}", code=PAYOUT_CODE,
                   legs=(Leg(available, bank, paid),), memo=sid)
    return due, sid, institution, (settle, payout)


def _record(conn: Connection, now: datetime, cfg: ClearingConfig, business_date: date,
            done: list[tuple[_Plan, int, int | None]]) -> None:
    """Settlement rows, payout instructions and events for the settled merchants, in bulk. A
    settlement's ``amount`` is what left ``merchant_pending``; its payout (instruction and event)
    is that less what was held back for a loan, and a settlement held back whole is ``to_loan``."""
    if not done:
        return
    settled, instructed, emitted = [], [], []
    seqs = _pending_seqs(conn, [entry_id for _, entry_id, _ in done])
    for (due, sid, institution, _), entry_id, payout_id in done:
        _, value_date = window(cfg, business_date, due.delay_days)
        settled.append({
            "id": sid, "merchant_id": due.merchant_id, "currency": due.currency,
            "business_date": business_date, "value_date": value_date, "amount": due.net,
            "from_seq": due.watermark + 1, "to_seq": due.bound, "institution_id": institution,
            "entry_id": entry_id, "payout_entry_id": payout_id,
            "status": "to_loan" if payout_id is None else "instructed",
            "created_at": now, "pending_account_id": due.account_id,
            "pending_seq": seqs[entry_id], "netted": 0})
        if payout_id is None:
            continue
        paid = due.net - due.held
        suffix = sid.removeprefix("stl_")  # one random id per settlement; the rest derive
        instructed.append({
            "id": f"sti_{suffix}", "business_date": business_date, "kind": "merchant_payout",
            "payer_id": institution, "payee_id": due.merchant_id, "amount": paid,
            "currency": due.currency, "value_date": value_date, "reference": sid,
            "status": "instructed", "created_at": now})
        emitted.append({
            "id": f"evt_{suffix}", "type": "settlement.instructed",
            "partition_key": due.merchant_id, "created_at": now,
            "payload": orjson.dumps({
                "id": sid, "object": "settlement", "merchant_id": due.merchant_id,
                "amount": paid, "held_for_loans": due.held, "currency": due.currency,
                "business_date": business_date.isoformat(),
                "value_date": value_date.isoformat(), "institution_id": institution}).decode()})
    conn.execute(s.settlements.insert(), settled)
    if instructed:
        conn.execute(s.instructions.insert(), instructed)
        # the outbox rows events.emit would write, one statement for the whole run
        conn.execute(events.outbox.insert(), emitted)


def _pending_seqs(conn: Connection, entry_ids: list[int]) -> dict[int, int]:
    """The merchant_pending posting (leg 0, debit side) of each settlement entry."""
    out: dict[int, int] = {}
    for i in range(0, len(entry_ids), LOOKUP_CHUNK):
        rows = conn.execute(text(
            "SELECT entry_id, account_seq FROM ledger_postings WHERE entry_id IN :ids "
            "AND leg_no = 0 AND side = 0").bindparams(bindparam("ids", expanding=True)),
            {"ids": entry_ids[i:i + LOOKUP_CHUNK]})
        out.update({int(e): int(q) for e, q in rows})
    return out


def _advance(conn: Connection, dues: list[_Due]) -> None:
    if not dues:
        return
    # settlement postings the new watermarks pass are netted now
    conn.execute(text("UPDATE clearing_settlements SET netted = 1 WHERE netted = 0 "
                      "AND pending_account_id = :a AND pending_seq <= :b"),
                 [{"a": d.account_id, "b": d.bound} for d in dues])
    ids = [d.account_id for d in dues]
    for i in range(0, len(ids), LOOKUP_CHUNK):
        conn.execute(s.watermarks.delete().where(
            s.watermarks.c.account_id.in_(ids[i:i + LOOKUP_CHUNK])))
    rows = [{"account_id": d.account_id, "settled_seq": d.bound} for d in dues]
    for i in range(0, len(rows), BATCH_ENTRIES_MAX):
        conn.execute(s.watermarks.insert(), rows[i:i + BATCH_ENTRIES_MAX])
