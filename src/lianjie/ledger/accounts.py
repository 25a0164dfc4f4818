"""Accounts: opening, reading, freezing and closing.

An account is identified by (owner party, purpose, currency); opening one that exists returns it,
so contexts can open their accounts lazily and idempotently. Status changes are the only edits an
account row ever gets besides its running totals, which only the batch processor writes.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, select, text

from lianjie.clock import from_us
from lianjie.db import DriverSql
from lianjie.errors import DomainError, ErrorCode
from lianjie.ledger import schema as s
from lianjie.ledger.model import Account, AccountFlags, AccountStatus
from lianjie.money import currency as lookup_currency

OWNER_ID_LENGTH_MAX = 64
FIND_ACCOUNTS_MAX = 16  # accounts per find_accounts call: one statement per count is kept


def _account(row: Row[tuple[object, ...]]) -> Account:
    m = row._mapping
    return Account(
        id=m["id"], owner_id=m["owner_id"], purpose=m["purpose"], currency=m["currency"],
        flags=AccountFlags(m["flags"]), status=AccountStatus(m["status"]),
        debits_posted=m["debits_posted"], credits_posted=m["credits_posted"],
        debits_pending=m["debits_pending"], credits_pending=m["credits_pending"],
        posting_count=m["posting_count"], created_at=m["created_at"])


def open_account(conn: Connection, now: datetime, owner_id: str, purpose: str,
                 currency: str = "CNY", flags: AccountFlags = AccountFlags.NONE) -> Account:
    """Open the account for (owner, purpose, currency), or return it if it exists.

    An existing account with other flags is a programmer error: flags are fixed at opening.
    """
    lookup_currency(currency)
    assert 0 < len(owner_id) <= OWNER_ID_LENGTH_MAX and purpose
    found = find_account(conn, owner_id, purpose, currency)
    if found is not None:
        assert found.flags == flags, f"account {found.id} exists with flags {found.flags!r}"
        return found
    account_id = _next_account_id(conn)
    conn.execute(s.accounts.insert().values(
        id=account_id, owner_id=owner_id, purpose=purpose, currency=currency, flags=int(flags),
        status=AccountStatus.OPEN.value, debits_posted=0, credits_posted=0, debits_pending=0,
        credits_pending=0, posting_count=0, created_at=now))
    account = get_account(conn, account_id)
    assert account is not None
    return account


def _next_account_id(conn: Connection) -> int:
    if conn.dialect.name == "postgresql":
        return int(conn.execute(text("SELECT nextval('ledger_account_id_seq')")).scalar_one())
    top = conn.execute(text("SELECT COALESCE(MAX(id), 0) FROM ledger_accounts")).scalar_one()
    return int(top) + 1


def get_account(conn: Connection, account_id: int) -> Account | None:
    row = conn.execute(select(s.accounts).where(s.accounts.c.id == account_id)).first()
    return None if row is None else _account(row)


def require_account(conn: Connection, account_id: int) -> Account:
    account = get_account(conn, account_id)
    if account is None:
        raise DomainError(ErrorCode.ACCOUNT_NOT_FOUND, f"no account {account_id}", "account")
    return account


# The lookups every payment makes, as driver SQL written once (see ``db.DriverSql``): each
# payment finds its 3 or 4 accounts by (owner, purpose, currency) in one statement.
_COLUMNS = ("id, owner_id, purpose, currency, flags, status, debits_posted, credits_posted,"
            " debits_pending, credits_pending, posting_count, created_at")
_FIND = DriverSql(f"SELECT {_COLUMNS} FROM ledger_accounts"
                  " WHERE owner_id = ? AND purpose = ? AND currency = ?")
_FIND_MANY: dict[int, DriverSql] = {
    n: DriverSql(f"SELECT {_COLUMNS} FROM ledger_accounts WHERE currency = ? AND ("
                 + " OR ".join(["(owner_id = ? AND purpose = ?)"] * n) + ")")
    for n in range(1, FIND_ACCOUNTS_MAX + 1)}


def _account_of(row: Sequence[Any]) -> Account:
    """An account from a driver row in ``_COLUMNS`` order."""
    return Account(id=row[0], owner_id=row[1], purpose=row[2], currency=row[3],
                   flags=AccountFlags(row[4]), status=AccountStatus(row[5]),
                   debits_posted=row[6], credits_posted=row[7], debits_pending=row[8],
                   credits_pending=row[9], posting_count=row[10], created_at=from_us(row[11]))


def find_account(conn: Connection, owner_id: str, purpose: str, currency: str = "CNY"
                 ) -> Account | None:
    row = _FIND.run(conn, (owner_id, purpose, currency)).fetchone()
    return None if row is None else _account_of(row)


def find_accounts(conn: Connection, wanted: Sequence[tuple[str, str]], currency: str = "CNY"
                  ) -> dict[tuple[str, str], Account]:
    """The accounts of several (owner, purpose) pairs in one currency, in one statement,
    keyed by (owner, purpose); a pair with no account is absent."""
    pairs = list(dict.fromkeys(wanted))
    assert 0 < len(pairs) <= FIND_ACCOUNTS_MAX
    params: list[str] = [currency]
    for owner_id, purpose in pairs:
        params += (owner_id, purpose)
    rows = _FIND_MANY[len(pairs)].run(conn, params).fetchall()
    return {(row[1], row[2]): _account_of(row) for row in rows}


def accounts_of(conn: Connection, owner_id: str) -> list[Account]:
    t = s.accounts
    rows = conn.execute(select(t).where(t.c.owner_id == owner_id).order_by(t.c.id))
    return [_account(r) for r in rows]


def get_accounts(conn: Connection, ids: Iterable[int]) -> dict[int, Account]:
    t = s.accounts
    wanted = sorted(set(ids))
    if not wanted:
        return {}
    return {r.id: _account(r) for r in conn.execute(select(t).where(t.c.id.in_(wanted)))}


def set_account_status(conn: Connection, account_id: int, status: AccountStatus) -> Account:
    """Freeze, unfreeze or close an account. Closing needs a zero balance and nothing pending."""
    account = require_account(conn, account_id)
    if account.status == AccountStatus.CLOSED and status != AccountStatus.CLOSED:
        raise DomainError(ErrorCode.ACCOUNT_CLOSED, "a closed account stays closed", "status")
    if status == AccountStatus.CLOSED and (
            account.balance != 0 or account.debits_pending or account.credits_pending):
        raise DomainError(ErrorCode.INVALID_STATE_TRANSITION,
                          "only an account with zero balance and nothing pending can close",
                          "status")
    conn.execute(s.accounts.update().where(s.accounts.c.id == account_id)
                 .values(status=status.value))
    return require_account(conn, account_id)
