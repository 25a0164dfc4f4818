"""Consumer wallets: top-up from and withdrawal to a partner institution, and P2P transfers.

A wallet is a ledger account that can never go below zero (its debits never exceed its credits).
Money enters and leaves the platform through the partner institution's settlement account, which
may go negative: it mirrors what the institution owes or is owed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, Row, select

from lianjie import events, ledger
from lianjie.errors import DomainError, ErrorCode
from lianjie.ids import new_id
from lianjie.ledger import Entry, Leg, Purpose
from lianjie.money import check_amount, currency
from lianjie.payments.parties import Party, PartyKind, account_id, require_party
from lianjie.payments.schema import wallet_operations

NOTE_LENGTH_MAX = 200
PAGE_SIZE_MAX = 100


@dataclass(frozen=True, slots=True)
class WalletOperation:
    id: str
    kind: str
    consumer_id: str
    counterparty_id: str
    amount: int
    currency: str
    entry_id: int
    note: str | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class WalletBalance:
    consumer_id: str
    currency: str
    balance: int
    available: int
    pending: int


def _op(row: Row[tuple[object, ...]]) -> WalletOperation:
    m = row._mapping
    return WalletOperation(**{f: m[f] for f in WalletOperation.__dataclass_fields__})


def _active(party: Party, param: str) -> Party:
    if not party.active:
        raise DomainError(ErrorCode.ACCOUNT_FROZEN, f"{party.id} is frozen", param)
    return party


def _record(conn: Connection, now: datetime, kind: str, consumer_id: str, counterparty_id: str,
            amount: int, cur: str, leg: Leg, note: str | None) -> WalletOperation:
    if note is not None and (not isinstance(note, str) or len(note) > NOTE_LENGTH_MAX):
        raise DomainError(ErrorCode.INVALID_REQUEST, "note is too long", "note")
    op_id = new_id("wop")
    result = ledger.post(conn, now, Entry(key=f"{kind}:{op_id}", legs=(leg,), code=kind,
                                          memo=op_id))
    assert result.entry_id is not None
    conn.execute(wallet_operations.insert().values(
        id=op_id, kind=kind, consumer_id=consumer_id, counterparty_id=counterparty_id,
        amount=amount, currency=cur, entry_id=result.entry_id, note=note, created_at=now))
    op = WalletOperation(op_id, kind, consumer_id, counterparty_id, amount, cur,
                         result.entry_id, note, now)
    events.emit(conn, now, f"wallet.{kind}", consumer_id,
                {"id": op_id, "object": "wallet_operation", "kind": kind, "amount": amount,
                 "currency": cur, "consumer_id": consumer_id, "counterparty_id": counterparty_id})
    return op


def _bank_move(conn: Connection, consumer_id: str, institution_id: str, amount: int,
               currency_code: str) -> tuple[int, int, int]:
    """Check a move between a wallet and an institution; (amount, wallet, settlement) ids."""
    amount = check_amount(amount)
    currency(currency_code)
    _active(require_party(conn, consumer_id, PartyKind.CONSUMER, "consumer_id"), "consumer_id")
    _active(require_party(conn, institution_id, PartyKind.INSTITUTION, "institution_id"),
            "institution_id")
    return (amount, account_id(conn, consumer_id, Purpose.WALLET, currency_code),
            account_id(conn, institution_id, Purpose.INSTITUTION_SETTLEMENT, currency_code))


def do_top_up(conn: Connection, now: datetime, consumer_id: str, institution_id: str,
              amount: int, currency_code: str) -> WalletOperation:
    """Money comes in from the partner institution: its settlement account pays the wallet."""
    amount, wallet, settlement = _bank_move(conn, consumer_id, institution_id, amount,
                                            currency_code)
    return _record(conn, now, "topup", consumer_id, institution_id, amount, currency_code,
                   Leg(settlement, wallet, amount), None)


def do_withdraw(conn: Connection, now: datetime, consumer_id: str, institution_id: str,
                amount: int, currency_code: str) -> WalletOperation:
    """Money goes out to the partner institution; the wallet must hold it."""
    amount, wallet, settlement = _bank_move(conn, consumer_id, institution_id, amount,
                                            currency_code)
    return _record(conn, now, "withdrawal", consumer_id, institution_id, amount, currency_code,
                   Leg(wallet, settlement, amount), None)


def do_p2p(conn: Connection, now: datetime, consumer_id: str, recipient_id: str, amount: int,
           currency_code: str, note: str | None = None) -> WalletOperation:
    amount = check_amount(amount)
    currency(currency_code)
    if consumer_id == recipient_id:
        raise DomainError(ErrorCode.SAME_WALLET, "cannot send money to yourself", "recipient_id")
    _active(require_party(conn, consumer_id, PartyKind.CONSUMER, "consumer_id"), "consumer_id")
    _active(require_party(conn, recipient_id, PartyKind.CONSUMER, "recipient_id"),
            "recipient_id")
    leg = Leg(account_id(conn, consumer_id, Purpose.WALLET, currency_code),
              account_id(conn, recipient_id, Purpose.WALLET, currency_code), amount)
    return _record(conn, now, "p2p", consumer_id, recipient_id, amount, currency_code, leg, note)


def wallet_balance(conn: Connection, consumer_id: str, currency_code: str) -> WalletBalance:
    require_party(conn, consumer_id, PartyKind.CONSUMER, "consumer_id")
    currency(currency_code)
    account = ledger.find_account(conn, consumer_id, Purpose.WALLET, currency_code)
    if account is None:
        return WalletBalance(consumer_id, currency_code, 0, 0, 0)
    return WalletBalance(consumer_id, currency_code, account.balance, account.available,
                         account.debits_pending)


def wallet_operations_of(conn: Connection, consumer_id: str, *, after: str | None = None,
                         limit: int = 50) -> list[WalletOperation]:
    assert 0 < limit <= PAGE_SIZE_MAX + 1  # a full page and one more row: is there more?
    t = wallet_operations
    query = select(t).where(t.c.consumer_id == consumer_id)
    if after is not None:
        query = query.where(t.c.id > after)
    return [_op(r) for r in conn.execute(query.order_by(t.c.id).limit(limit))]
