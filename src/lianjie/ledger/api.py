"""One-entry conveniences over the batch processor, for contexts that post one thing at a time.

They raise ``DomainError`` with the entry's error code instead of returning a result, which is
what a unit of work wants: the committer rolls the unit back to its savepoint.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection

from lianjie.errors import DomainError, ErrorCode
from lianjie.ledger.batch import create_entries, create_system_entries
from lianjie.ledger.history import expired_hold_ids, get_entry, legs_from_postings
from lianjie.ledger.model import (
    BATCH_ENTRIES_MAX,
    SYSTEM_KEY_PREFIX,
    Entry,
    EntryKind,
    EntryResult,
    Leg,
)

_MESSAGES = {
    ErrorCode.INSUFFICIENT_FUNDS: "insufficient funds",
    ErrorCode.ACCOUNT_FROZEN: "the account is frozen",
    ErrorCode.ACCOUNT_CLOSED: "the account is closed",
    ErrorCode.EXISTS_WITH_DIFFERENT_FIELDS: "an entry with this key exists with other content",
}


def refusal(code: ErrorCode) -> DomainError:
    """An entry's error code as the ``DomainError`` ``post`` raises for it (for callers that
    post many entries with ``create_entries`` and answer each as if posted alone)."""
    return DomainError(code, _MESSAGES.get(code, code.value.replace("_", " ")))


def post(conn: Connection, now: datetime, entry: Entry) -> EntryResult:
    """Apply one entry; raise its error as a ``DomainError``."""
    (result,) = create_entries(conn, now, [entry])
    if result.error is not None:
        raise refusal(result.error)
    return result


def transfer(conn: Connection, now: datetime, key: str, debit_account_id: int,
             credit_account_id: int, amount: int, *, code: str = "transfer",
             memo: str | None = None) -> EntryResult:
    return post(conn, now, Entry(key=key, legs=(Leg(debit_account_id, credit_account_id,
                                                    amount),), code=code, memo=memo))


def reverse(conn: Connection, now: datetime, entry_id: int, key: str, *,
            code: str = "reversal", memo: str | None = None) -> EntryResult:
    """Post the exact reversal of a posted entry (each leg swapped). At most once per entry."""
    original = get_entry(conn, entry_id)
    if original is None or original.kind not in (EntryKind.POSTED, EntryKind.POST_PENDING):
        raise DomainError(ErrorCode.ENTRY_NOT_FOUND, f"no posted entry txf_{entry_id}")
    posted = legs_from_postings((p.leg_no, 1 if p.amount > 0 else 0, p.account_id, p.amount)
                                for p in original.postings)
    legs = tuple(Leg(leg.credit_account_id, leg.debit_account_id, leg.amount) for leg in posted)
    return post(conn, now, Entry(key=key, legs=legs, code=code, reverses_id=entry_id, memo=memo))


def expire_holds(conn: Connection, now: datetime, limit: int = BATCH_ENTRIES_MAX) -> int:
    """Release holds whose time ran out; returns how many expired. Safe to run any time."""
    ids = expired_hold_ids(conn, now, limit)
    entries = [Entry(key=f"{SYSTEM_KEY_PREFIX}expire:{hold_id}", kind=EntryKind.VOID_PENDING,
                     pending_id=hold_id, code="hold_expired") for hold_id in ids]
    results = create_system_entries(conn, now, entries)
    return sum(1 for r in results if r.ok and not r.replayed)
