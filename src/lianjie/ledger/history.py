"""History: entries with their postings, an account's postings page by page, and its balance at
any past instant.

Each posting carries the account's balance after it, so a past balance is the ``balance_after``
of the last posting at or before the instant: one descending scan of the account's index.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import Connection, select

from lianjie.ledger import schema as s
from lianjie.ledger.model import EntryKind, EntryRecord, Hold, HoldStatus, Leg, Posting

PAGE_SIZE_MAX = 1000


def _posting(row: object) -> Posting:
    m = row._mapping  # type: ignore[attr-defined]
    return Posting(entry_id=m["entry_id"], leg_no=m["leg_no"], account_id=m["account_id"],
                   account_seq=m["account_seq"], amount=m["amount"],
                   balance_after=m["balance_after"], created_at=m["created_at"])


def account_postings(conn: Connection, account_id: int, *, after_seq: int = 0,
                     limit: int = 100) -> list[Posting]:
    """Postings of one account in order, starting after ``after_seq`` (the page cursor)."""
    assert 0 < limit <= PAGE_SIZE_MAX
    p = s.postings
    rows = conn.execute(select(p).where(p.c.account_id == account_id, p.c.account_seq > after_seq)
                        .order_by(p.c.account_seq).limit(limit))
    return [_posting(r) for r in rows]


def balance_at(conn: Connection, account_id: int, when: datetime) -> int:
    """The account's posted balance as of ``when`` (0 before its first posting)."""
    p = s.postings
    row = conn.execute(select(p.c.balance_after).where(p.c.account_id == account_id,
                                                       p.c.created_at <= when)
                       .order_by(p.c.account_seq.desc()).limit(1)).first()
    return 0 if row is None else int(row[0])


def get_entry(conn: Connection, entry_id: int) -> EntryRecord | None:
    e = s.entries
    row = conn.execute(select(e).where(e.c.id == entry_id)).first()
    if row is None:
        return None
    return _entry_record(conn, row)


def get_entry_by_key(conn: Connection, key: str) -> EntryRecord | None:
    e = s.entries
    row = conn.execute(select(e).where(e.c.key == key)).first()
    return None if row is None else _entry_record(conn, row)


def _entry_record(conn: Connection, row: object) -> EntryRecord:
    p = s.postings
    m = row._mapping  # type: ignore[attr-defined]
    rows = conn.execute(select(p).where(p.c.entry_id == m["id"])
                        .order_by(p.c.leg_no, p.c.side))
    return EntryRecord(id=m["id"], key=m["key"], kind=EntryKind(m["kind"]), code=m["code"],
                       pending_id=m["pending_id"], reverses_id=m["reverses_id"], memo=m["memo"],
                       created_at=m["created_at"], postings=tuple(_posting(r) for r in rows))


def legs_from_postings(postings: Iterable[tuple[int, int, int, int]]) -> tuple[Leg, ...]:
    """An entry's legs, in order, rebuilt from its postings as ``(leg_no, side, account_id,
    amount)`` (side 0 debits ``account_id``, 1 credits it; amounts signed or not)."""
    by_leg: dict[int, list[int]] = {}
    for leg_no, side, account_id, amount in postings:
        leg = by_leg.setdefault(leg_no, [0, 0, 0])
        leg[side] = account_id
        leg[2] = abs(amount)
    return tuple(Leg(debit, credit, amount) for _, (debit, credit, amount)
                 in sorted(by_leg.items()))


def get_hold(conn: Connection, entry_id: int) -> Hold | None:
    h, hl = s.holds, s.hold_legs
    row = conn.execute(select(h).where(h.c.entry_id == entry_id)).first()
    if row is None:
        return None
    legs = conn.execute(select(hl.c.debit_account_id, hl.c.credit_account_id, hl.c.amount)
                        .where(hl.c.entry_id == entry_id).order_by(hl.c.leg_no))
    return Hold(entry_id=row.entry_id, status=HoldStatus(row.status), expires_at=row.expires_at,
                resolved_by_id=row.resolved_by_id,
                legs=tuple(Leg(d, c, a) for d, c, a in legs))


def expired_hold_ids(conn: Connection, now: datetime, limit: int) -> list[int]:
    h = s.holds
    rows = conn.execute(select(h.c.entry_id).where(h.c.status == int(HoldStatus.PENDING),
                                                   h.c.expires_at.is_not(None),
                                                   h.c.expires_at <= now)
                        .order_by(h.c.expires_at).limit(limit))
    return [r[0] for r in rows]
