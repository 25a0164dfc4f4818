"""Consumer wallets: top-up from and withdrawal to a partner institution, and P2P transfers.

A wallet is a ledger account that can never go below zero (its debits never exceed its credits).
Money enters and leaves the platform through the partner institution's settlement account, which
may go negative: it mirrors what the institution owes or is owed.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

from sqlalchemy import Connection, Row, select

from lianjie import events, ledger, risk
from lianjie.errors import DomainError, ErrorCode
from lianjie.ids import new_id
from lianjie.ledger import Entry, EntryKind, Leg, Purpose
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
            amount: int, cur: str, leg: Leg, note: str | None,
            risk_event: risk.Event | None = None) -> WalletOperation:
    if note is not None and (not isinstance(note, str) or len(note) > NOTE_LENGTH_MAX):
        raise DomainError(ErrorCode.INVALID_REQUEST, "note is too long", "note")
    op_id = new_id("wop")
    # Risk decides before anything is posted: block raises, review holds the money.
    decision = None if risk_event is None else \
        risk.decide(conn, now, replace(risk_event, subject_id=op_id))
    review = decision is not None and decision.review
    result = ledger.post(conn, now, Entry(key=f"{kind}:{op_id}", legs=(leg,), code=kind,
                                          memo=op_id,
                                          kind=EntryKind.PENDING if review else EntryKind.POSTED))
    assert result.entry_id is not None
    if decision is not None and review:
        risk.open_case(conn, now, decision, result.entry_id)
    conn.execute(wallet_operations.insert().values(
        id=op_id, kind=kind, consumer_id=consumer_id, counterparty_id=counterparty_id,
        amount=amount, currency=cur, entry_id=result.entry_id, note=note, created_at=now))
    op = WalletOperation(op_id, kind, consumer_id, counterparty_id, amount, cur,
                         result.entry_id, note, now)
    events.emit(conn, now, f"wallet.{kind}.reviewing" if review else f"wallet.{kind}",
                consumer_id, _op_payload(op))
    return op


def _op_payload(op: WalletOperation) -> dict[str, object]:
    return {"id": op.id, "object": "wallet_operation", "kind": op.kind, "amount": op.amount,
            "currency": op.currency, "consumer_id": op.consumer_id,
            "counterparty_id": op.counterparty_id}


def _resolve_review(conn: Connection, now: datetime, case: risk.Case, approved: bool,
                    entry_id: int) -> None:
    """A held P2P transfer or withdrawal was approved (posted) or rejected (voided)."""
    row = conn.execute(select(wallet_operations)
                       .where(wallet_operations.c.id == case.subject_id)).one()
    op = _op(row)
    events.emit(conn, now, f"wallet.{op.kind}" if approved else f"wallet.{op.kind}.declined",
                op.consumer_id, _op_payload(op))


risk.register_resolver("p2p", _resolve_review)
risk.register_resolver("withdrawal", _resolve_review)


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
                amount: int, currency_code: str, *, device_id: str | None = None,
                client_ip: str | None = None) -> WalletOperation:
    """Money goes out to the partner institution; the wallet must hold it."""
    amount, wallet, settlement = _bank_move(conn, consumer_id, institution_id, amount,
                                            currency_code)
    event = _risk_event(conn, "withdrawal", consumer_id, institution_id, amount, currency_code,
                        device_id, client_ip)
    return _record(conn, now, "withdrawal", consumer_id, institution_id, amount, currency_code,
                   Leg(wallet, settlement, amount), None, event)


def _risk_event(conn: Connection, kind: str, consumer_id: str, counterparty_id: str,
                amount: int, cur: str, device_id: str | None, client_ip: str | None
                ) -> risk.Event:
    consumer = require_party(conn, consumer_id)
    counterparty = require_party(conn, counterparty_id)
    return risk.Event(kind, "", consumer_id, amount, cur, counterparty_id, None, device_id,
                      client_ip, None, consumer.created_at, counterparty.created_at)


def do_p2p(conn: Connection, now: datetime, consumer_id: str, recipient_id: str, amount: int,
           currency_code: str, note: str | None = None, *, device_id: str | None = None,
           client_ip: str | None = None) -> WalletOperation:
    amount = check_amount(amount)
    currency(currency_code)
    if consumer_id == recipient_id:
        raise DomainError(ErrorCode.SAME_WALLET, "cannot send money to yourself", "recipient_id")
    _active(require_party(conn, consumer_id, PartyKind.CONSUMER, "consumer_id"), "consumer_id")
    _active(require_party(conn, recipient_id, PartyKind.CONSUMER, "recipient_id"),
            "recipient_id")
    leg = Leg(account_id(conn, consumer_id, Purpose.WALLET, currency_code),
              account_id(conn, recipient_id, Purpose.WALLET, currency_code), amount)
    event = _risk_event(conn, "p2p", consumer_id, recipient_id, amount, currency_code,
                        device_id, client_ip)
    return _record(conn, now, "p2p", consumer_id, recipient_id, amount, currency_code, leg, note,
                   event)


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
