"""Payment orders, as in QR collection.

A merchant (or its service provider on its behalf) creates an order with its own unique
``out_trade_no``; the order's QR code carries a URL the consumer's wallet opens to pay it. The
states are ``open`` -> ``paid``, or ``open`` -> ``closed`` (by the merchant) or ``expired`` (by
time). An order is in the platform's currency (``PaymentsConfig.currency``), the one its
merchant is onboarded and settled in. Paying is one ledger entry of up to three legs:

    consumer wallet      -> merchant pending        amount
    merchant pending     -> platform fee revenue    fee
    platform fee revenue -> SP commission           the SP's share of the fee

The order row is updated only ``WHERE status = 'open'`` in the same transaction as the entry, so
two consumers racing to pay one order cannot both succeed: the second finds it paid.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Connection, Row, select

from lianjie import events, ledger, risk
from lianjie.clock import from_us, to_us
from lianjie.db import DriverSql, rows_in, rows_matching_pairs
from lianjie.errors import DomainError, ErrorCode
from lianjie.ids import new_id
from lianjie.ledger import Entry, EntryKind, Leg, Purpose
from lianjie.money import check_amount, currency
from lianjie.payments import fees
from lianjie.payments.config import PaymentsConfig
from lianjie.payments.parties import (
    PLATFORM_ID,
    Party,
    PartyKind,
    account_ids,
    check_collecting,
    get_qr_code,
    get_store,
    parties_by_id,
    payment_parties,
    require_collecting_merchant,
    require_party,
)
from lianjie.payments.schema import orders

OUT_TRADE_NO_LENGTH_MAX = 64
DESCRIPTION_LENGTH_MAX = 200
PAGE_SIZE_MAX = 100


@dataclass(frozen=True, slots=True)
class Order:
    id: str
    merchant_id: str
    sp_id: str | None
    store_id: str | None
    qr_code_id: str | None
    out_trade_no: str
    amount: int
    currency: str
    description: str
    status: str
    expires_at: datetime
    created_at: datetime
    paid_at: datetime | None
    closed_at: datetime | None
    payer_id: str | None
    entry_id: int | None
    fee_amount: int
    commission_amount: int
    refunded_amount: int
    refunded_fee: int
    refunded_commission: int


def _order(row: Row[tuple[object, ...]]) -> Order:
    m = row._mapping
    return Order(**{f: m[f] for f in Order.__dataclass_fields__})


# The statements of the create-and-pay path as driver SQL written once (``db.DriverSql``):
# through SQLAlchemy each cost several times what the database does (benchmarks/RESULTS.md).
_FIELDS = tuple(Order.__dataclass_fields__)
_COLUMNS = ", ".join(_FIELDS)
_TIMES = frozenset({"expires_at", "created_at", "paid_at", "closed_at"})
_TIME_INDEXES = tuple(i for i, f in enumerate(_FIELDS) if f in _TIMES)
_BY_ID = DriverSql(f"SELECT {_COLUMNS} FROM payment_orders WHERE id = ?")
_BY_ID_FOR_UPDATE = DriverSql(f"SELECT {_COLUMNS} FROM payment_orders WHERE id = ? FOR UPDATE")
_BY_OUT_TRADE_NO = DriverSql(f"SELECT {_COLUMNS} FROM payment_orders"
                             " WHERE merchant_id = ? AND out_trade_no = ?")
_INSERT = DriverSql(f"INSERT INTO payment_orders ({_COLUMNS}) VALUES"
                    f" ({', '.join('?' * len(_FIELDS))})")
_PAY_IF_OPEN = DriverSql(
    "UPDATE payment_orders SET status = ?, paid_at = ?, payer_id = ?, entry_id = ?,"
    " fee_amount = ?, commission_amount = ?, device_id = ?, client_ip = ?"
    " WHERE id = ? AND status = 'open'")


def _order_of(row: Sequence[Any]) -> Order:
    """An order from a driver row in ``_COLUMNS`` order."""
    r = list(row)
    for i in _TIME_INDEXES:
        if r[i] is not None:
            r[i] = from_us(r[i])
    return Order(*r)


def get_order(conn: Connection, order_id: str, *, for_update: bool = False) -> Order | None:
    lock = for_update and conn.dialect.name == "postgresql"
    row = (_BY_ID_FOR_UPDATE if lock else _BY_ID).run(conn, (order_id,)).fetchone()
    return None if row is None else _order_of(row)


def require_order(conn: Connection, order_id: str, *, for_update: bool = False) -> Order:
    order = get_order(conn, order_id, for_update=for_update) if isinstance(order_id, str) \
        else None
    if order is None:
        raise DomainError(ErrorCode.ORDER_NOT_FOUND, f"no order {order_id!r}", "id")
    return order


def find_order(conn: Connection, merchant_id: str, out_trade_no: str) -> Order | None:
    row = _BY_OUT_TRADE_NO.run(conn, (merchant_id, out_trade_no)).fetchone()
    return None if row is None else _order_of(row)


def list_orders(conn: Connection, *, merchant_id: str | None = None,
                sp_id: str | None = None, payer_id: str | None = None,
                status: str | None = None, after: str | None = None,
                limit: int = 50) -> list[Order]:
    """Orders in id order after the cursor ``after`` (an order id). Ids are random, so this
    is a stable order for paging, not the order of creation."""
    assert 0 < limit <= PAGE_SIZE_MAX + 1  # a full page and one more row: is there more?
    query = select(orders)
    for column, value in ((orders.c.merchant_id, merchant_id), (orders.c.sp_id, sp_id),
                          (orders.c.payer_id, payer_id), (orders.c.status, status)):
        if value is not None:
            query = query.where(column == value)
    if after is not None:
        query = query.where(orders.c.id > after)
    return [_order(r) for r in conn.execute(query.order_by(orders.c.id).limit(limit))]


def _check_text(value: object, param: str, length_max: int) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > length_max:
        raise DomainError(ErrorCode.INVALID_REQUEST,
                          f"{param} must be 1 to {length_max} characters", param)
    return value


def _check_expiry(cfg: PaymentsConfig, expires_in_s: int | None) -> int:
    if expires_in_s is None:
        return cfg.order_expiry_s_default
    if isinstance(expires_in_s, bool) or not isinstance(expires_in_s, int) or \
            not cfg.order_expiry_s_min <= expires_in_s <= cfg.order_expiry_s_max:
        raise DomainError(ErrorCode.INVALID_EXPIRY,
                          f"expires_in_s must be from {cfg.order_expiry_s_min} to "
                          f"{cfg.order_expiry_s_max}", "expires_in_s")
    return expires_in_s


def do_create_order(conn: Connection, now: datetime, cfg: PaymentsConfig, merchant_id: str, *,
                    out_trade_no: str, amount: int, currency_code: str, description: str,
                    expires_in_s: int | None = None, store_id: str | None = None,
                    qr_code_id: str | None = None, merchant: Party | None = None) -> Order:
    """Open an order. ``merchant`` is the merchant's row when the caller has just read it in
    this transaction (the API checks who may act for it first), saving a second read."""
    # _checked_order checks that it may collect, first of all
    merchant = merchant if merchant is not None and merchant.id == merchant_id else \
        require_party(conn, merchant_id, PartyKind.MERCHANT, "merchant_id")
    order = _checked_order(conn, now, cfg, NewOrder(
        merchant, out_trade_no, amount, currency_code, description, expires_in_s, store_id,
        qr_code_id), lambda m, t: find_order(conn, m, t) is not None)
    _INSERT.run(conn, _order_row(order))
    return order  # the row as written


@dataclass(frozen=True, slots=True)
class NewOrder:
    """One order to open with ``do_create_orders``: ``merchant`` is its row, read in this
    transaction (the caller has checked who may act for it); the rest as ``do_create_order``."""

    merchant: Party
    out_trade_no: str
    amount: int
    currency: str
    description: str
    expires_in_s: int | None = None
    store_id: str | None = None
    qr_code_id: str | None = None


def do_create_orders(conn: Connection, now: datetime, cfg: PaymentsConfig,
                     requests: Sequence[NewOrder]) -> list[Order | DomainError]:
    """``do_create_order`` for many orders at once, each as if opened alone and in turn: the
    order or its refusal, in order. The ``out_trade_no``s already used are read in one
    statement and the orders written in one ``executemany``, where each alone costs a read and
    an insert (benchmarks/RESULTS.md, "Payments over HTTP"). A refused request writes nothing;
    a later request with an ``out_trade_no`` an earlier one in the batch took is refused as a
    duplicate, as it would be after it."""
    used = _used_out_trade_nos(conn, [(r.merchant.id, r.out_trade_no) for r in requests
                                      if isinstance(r.out_trade_no, str)])
    outcomes: list[Order | DomainError] = []
    rows: list[tuple[object, ...]] = []
    for request in requests:
        try:
            order = _checked_order(conn, now, cfg, request, lambda m, t: (m, t) in used)
        except DomainError as exc:
            outcomes.append(exc)
            continue
        used.add((order.merchant_id, order.out_trade_no))
        rows.append(_order_row(order))
        outcomes.append(order)
    if rows:
        # in the unique index's order, as two concurrent batches on PostgreSQL must take it
        rows.sort(key=_BY_MERCHANT_AND_OUT_TRADE_NO)
        _INSERT.many(conn, rows)
    return outcomes


def _checked_order(conn: Connection, now: datetime, cfg: PaymentsConfig, r: NewOrder,
                   used: Callable[[str, str], bool]) -> Order:
    """The order ``r`` opens, after every check in turn (raising the first that fails);
    ``used(merchant_id, out_trade_no)`` says whether that ``out_trade_no`` is taken."""
    merchant = check_collecting(r.merchant)
    merchant_id = merchant.id
    out_trade_no = r.out_trade_no
    _check_text(out_trade_no, "out_trade_no", OUT_TRADE_NO_LENGTH_MAX)
    _check_text(r.description, "description", DESCRIPTION_LENGTH_MAX)
    amount = check_amount(r.amount)
    currency(r.currency)
    if r.currency != cfg.currency:
        # Merchants are onboarded, priced and settled in the platform's currency.
        raise DomainError(ErrorCode.CURRENCY_MISMATCH,
                          f"orders are in {cfg.currency}, not {r.currency}", "currency")
    ttl = _check_expiry(cfg, r.expires_in_s)
    if r.store_id is not None:
        store = get_store(conn, r.store_id)
        if store is None or store.merchant_id != merchant_id:
            raise DomainError(ErrorCode.NOT_FOUND, f"no store {r.store_id!r}", "store_id")
    if used(merchant_id, out_trade_no):
        raise DomainError(ErrorCode.DUPLICATE_OUT_TRADE_NO,
                          f"out_trade_no {out_trade_no!r} is already used", "out_trade_no")
    return Order(
        id=new_id("ord"), merchant_id=merchant_id, sp_id=merchant.parent_id,
        store_id=r.store_id, qr_code_id=r.qr_code_id, out_trade_no=out_trade_no, amount=amount,
        currency=r.currency, description=r.description, status="open",
        expires_at=now + timedelta(seconds=ttl), created_at=now, paid_at=None, closed_at=None,
        payer_id=None, entry_id=None, fee_amount=0, commission_amount=0, refunded_amount=0,
        refunded_fee=0, refunded_commission=0)


_BY_MERCHANT_AND_OUT_TRADE_NO = operator.itemgetter(_FIELDS.index("merchant_id"),
                                                    _FIELDS.index("out_trade_no"))


def _order_row(order: Order) -> tuple[object, ...]:
    return tuple(to_us(v) if f in _TIMES and v is not None else v
                 for f, v in zip(_FIELDS, (getattr(order, f) for f in _FIELDS), strict=True))


def _used_out_trade_nos(conn: Connection, pairs: Sequence[tuple[str, str]]
                        ) -> set[tuple[str, str]]:
    """The (merchant_id, out_trade_no) pairs among ``pairs`` that orders already have."""
    return {(m, t) for m, t in rows_matching_pairs(
        conn, "t.merchant_id, t.out_trade_no", "payment_orders", ("merchant_id", "out_trade_no"),
        pairs)}


def _check_payable(order: Order, now: datetime) -> None:
    if order.status == "paid":
        raise DomainError(ErrorCode.ORDER_ALREADY_PAID, "the order is already paid", "id")
    if order.status == "closed":
        raise DomainError(ErrorCode.ORDER_CLOSED, "the order is closed", "id")
    if order.status in ("reviewing", "declined"):  # held for risk review, or declined in it
        raise DomainError(ErrorCode.RISK_REVIEW_PENDING if order.status == "reviewing" else
                          ErrorCode.RISK_DECLINED, f"the order is {order.status}", "id")
    if order.status == "expired" or now >= order.expires_at:
        raise DomainError(ErrorCode.ORDER_EXPIRED, "the order has expired", "id")
    assert order.status == "open", order.status


def payment_legs(conn: Connection, order: Order, merchant: Party, payer_id: str,
                 sp: Party | None = None) -> tuple[tuple[Leg, ...], int, int]:
    """The legs of paying ``order`` from ``payer_id``'s wallet, with the fee and commission.
    ``sp`` is the merchant's service provider when the caller has read it already. The 3 or
    4 accounts are found in one statement."""
    wanted, fee, commission = _payment_accounts(conn, order, merchant, payer_id, sp)
    return _legs(order, account_ids(conn, wanted, order.currency), fee, commission), fee, \
        commission


def _payment_accounts(conn: Connection, order: Order, merchant: Party, payer_id: str,
                      sp: Party | None) -> tuple[list[tuple[str, Purpose]], int, int]:
    """The (owner, purpose) of the accounts paying ``order`` moves money between, in leg
    order, with the fee and commission. Raises ``party_not_found`` for a missing SP."""
    assert merchant.fee_rate_bps is not None
    fee = fees.fee_for(order.amount, merchant.fee_rate_bps)
    commission = 0
    if fee and merchant.parent_id is not None:
        if sp is None or sp.id != merchant.parent_id:
            sp = require_party(conn, merchant.parent_id, PartyKind.SERVICE_PROVIDER)
        assert sp.kind == PartyKind.SERVICE_PROVIDER
        commission = fees.commission_for(fee, sp.commission_share_bps or 0)
    wanted = [(payer_id, Purpose.WALLET), (merchant.id, Purpose.MERCHANT_PENDING)]
    if fee:
        wanted.append((PLATFORM_ID, Purpose.FEE_REVENUE))
    if commission:
        assert merchant.parent_id is not None
        wanted.append((merchant.parent_id, Purpose.SP_COMMISSION))
    return wanted, fee, commission


def _legs(order: Order, ids: Sequence[int], fee: int, commission: int) -> tuple[Leg, ...]:
    legs = [Leg(ids[0], ids[1], order.amount)]
    if fee:
        legs.append(Leg(ids[1], ids[2], fee))
    if commission:
        legs.append(Leg(ids[2], ids[3], commission))
    return tuple(legs)


def _check_payer(payer: Party | None, payer_id: str) -> Party:
    if payer is None or payer.kind != PartyKind.CONSUMER:
        raise DomainError(ErrorCode.PARTY_NOT_FOUND, f"no consumer {payer_id!r}", "payer_id")
    if not payer.active:
        raise DomainError(ErrorCode.ACCOUNT_FROZEN, "the payer's wallet is frozen", "payer_id")
    return payer


def _risk_event(order: Order, payer: Party, merchant: Party, device_id: str | None,
                client_ip: str | None) -> risk.Event:
    return risk.Event("payment", order.id, payer.id, order.amount, order.currency, merchant.id,
                      merchant.parent_id, device_id, client_ip, merchant.business_type,
                      payer.created_at, merchant.created_at)


def do_pay_order(conn: Connection, now: datetime, order_id: str, payer_id: str, *,
                 device_id: str | None = None, client_ip: str | None = None,
                 coupon_id: str | None = None) -> Order:
    """The consumer ``payer_id`` pays the order from its wallet: one ledger entry.

    With ``coupon_id`` the consumer pays the net amount and the coupon's campaign budget pays
    the discount to the merchant, in the same entry (see ``lianjie.marketing.coupons``)."""
    order = require_order(conn, order_id, for_update=True)
    _check_payable(order, now)
    payer, merchant, sp = payment_parties(conn, payer_id, order.merchant_id) \
        if isinstance(payer_id, str) else (None, None, None)
    payer = _check_payer(payer, payer_id)
    if merchant is None or merchant.kind != PartyKind.MERCHANT:
        merchant = require_collecting_merchant(conn, order.merchant_id)  # raises
    check_collecting(merchant)
    legs, fee, commission = payment_legs(conn, order, merchant, payer_id, sp)
    if coupon_id is not None:  # marketing: the campaign budget pays the discount
        from lianjie.marketing.coupons import redeem_in_payment  # marketing builds on payments
        legs = redeem_in_payment(conn, now, coupon_id, payer_id, order, merchant, legs,
                                 device_id)
    decision = risk.decide(conn, now, _risk_event(order, payer, merchant, device_id,
                                                  client_ip))
    # risk.decide raised risk_declined on block; review: a hold and a case
    result = ledger.post(conn, now, _payment_entry(order, legs, decision))
    if decision.review:
        assert result.entry_id is not None
        risk.open_case(conn, now, decision, result.entry_id)
    status = "reviewing" if decision.review else "paid"
    updated = _PAY_IF_OPEN.run(conn, (status, to_us(now), payer_id, result.entry_id, fee,
                                      commission, device_id, client_ip, order.id))
    if updated.rowcount != 1:
        raise DomainError(ErrorCode.ORDER_ALREADY_PAID, "the order is already paid", "id")
    paid = _paid(order, now, payer_id, result.entry_id, fee, commission, decision)
    events.emit(conn, now, *_payment_event(paid))
    return paid


def _payment_entry(order: Order, legs: tuple[Leg, ...], decision: risk.Decision) -> Entry:
    return Entry(key=f"pay:{order.id}", legs=legs, code="payment", memo=order.id,
                 kind=EntryKind.PENDING if decision.review else EntryKind.POSTED)


def _paid(order: Order, now: datetime, payer_id: str, entry_id: int | None, fee: int,
          commission: int, decision: risk.Decision) -> Order:
    """The order as paying it wrote it."""
    return replace(order, status="reviewing" if decision.review else "paid", paid_at=now,
                   payer_id=payer_id, entry_id=entry_id, fee_amount=fee,
                   commission_amount=commission)


def _payment_event(paid: Order) -> tuple[str, str, dict[str, object]]:
    kind = "payment.reviewing" if paid.status == "reviewing" else "payment.succeeded"
    return kind, paid.merchant_id, order_payload(paid)


# -- many payments in one unit of work (the HTTP pay route's batcher) --------------------------

PAYS_PER_BATCH_MAX = 512  # well under the ledger's BATCH_ENTRIES_MAX: one entry a payment
_ORDERS_IN_SQL = f"SELECT {_COLUMNS} FROM payment_orders WHERE id {{in}}"


@dataclass(frozen=True, slots=True)
class PayRequest:
    """One ``do_pay_order`` call's arguments, for ``do_pay_many``."""

    order_id: str
    payer_id: str
    device_id: str | None = None
    client_ip: str | None = None
    coupon_id: str | None = None


@dataclass(slots=True)
class _Ready:
    """A request that passed the checks before the risk decision, with what paying needs."""

    order: Order
    payer: Party
    merchant: Party
    wanted: list[tuple[str, Purpose]]
    fee: int
    commission: int
    account_ids: list[int] = field(default_factory=list)  # ``wanted``'s, once found


_ALONE = object()  # a request the batch hands to ``do_pay_order``, at its place in the order


def do_pay_many(conn: Connection, now: datetime, requests: Sequence[PayRequest]
                ) -> list[Order | DomainError]:
    """Pay many orders in one unit of work: per request, in order, the paid order or the
    refusal, exactly what ``do_pay_order`` gives run on each in turn in a savepoint of its own
    (as the committer runs units): the same orders, ledger entries, risk decisions and log rows,
    review cases and outbox events, in the same order. A refusal changes nothing (a risk
    decline's decision is logged, as the committer logs it for a unit).

    The requests are served in runs: a run reads its orders (locked on PostgreSQL, in id
    order), parties and accounts in a few statements, asks the risk engine as one
    ``risk.Batch``, posts every entry with one ``ledger.create_entries`` (each entry fails
    alone: a payer who can afford one of two orders pays the first), and writes the order
    updates and outbox rows with one ``executemany`` each. A second request for an order
    already in the run starts the next run, so it sees the first's outcome. A request with a
    coupon, one needing an account opened, or one in another currency than the run's first is
    paid by ``do_pay_order`` itself in its place.
    """
    assert 0 < len(requests) <= PAYS_PER_BATCH_MAX
    # A batch that refuses every request changes nothing, as a refused unit changes nothing:
    # rolled back, it leaves no trace of shared work (the risk engine's state row, made on its
    # first use in a database). A risk decline's log row is kept: the refusal records it.
    savepoint = conn.begin_nested()
    try:
        outcomes = _pay_requests(conn, now, requests)
    except BaseException:
        savepoint.rollback()
        raise
    if any(isinstance(o, Order) or getattr(o, "record", None) is not None for o in outcomes):
        savepoint.commit()
    else:
        savepoint.rollback()
    return outcomes


def _pay_requests(conn: Connection, now: datetime, requests: Sequence[PayRequest]
                  ) -> list[Order | DomainError]:
    outcomes: list[Order | DomainError] = []
    run: list[PayRequest] = []
    for req in requests:
        if req.coupon_id is not None or not isinstance(req.order_id, str) or \
                not isinstance(req.payer_id, str):
            outcomes += _pay_run(conn, now, run)
            outcomes.append(_pay_alone(conn, now, req))
            run = []
            continue
        if any(r.order_id == req.order_id for r in run):
            outcomes += _pay_run(conn, now, run)
            run = []
        run.append(req)
    outcomes += _pay_run(conn, now, run)
    assert len(outcomes) == len(requests)
    return outcomes


def _pay_alone(conn: Connection, now: datetime, req: PayRequest) -> Order | DomainError:
    """``do_pay_order`` in a savepoint of its own, as the committer runs a unit."""
    from lianjie.committer import run_isolated  # the committer serves every context

    ok, value = run_isolated(conn, lambda c: do_pay_order(
        c, now, req.order_id, req.payer_id, device_id=req.device_id, client_ip=req.client_ip,
        coupon_id=req.coupon_id))
    if ok or isinstance(value, DomainError):
        return cast(Order | DomainError, value)
    raise value  # unexpected: the batcher fails this request alone


def _pay_run(conn: Connection, now: datetime, run: list[PayRequest]
             ) -> list[Order | DomainError]:
    """A run of requests for distinct orders, none with a coupon."""
    if not run:
        return []
    prepared = _prepare(conn, now, run)
    for k, item in enumerate(prepared):
        if item is _ALONE:  # served in its place: the run before it, it, the run after it
            return [*_pay_run(conn, now, run[:k]), _pay_alone(conn, now, run[k]),
                    *_pay_run(conn, now, run[k + 1:])]
    outcomes: list[Order | DomainError | None] = [
        item if isinstance(item, DomainError) else None for item in prepared]
    ready = [(i, item) for i, item in enumerate(prepared) if isinstance(item, _Ready)]
    if ready:
        _pay_ready(conn, now, run, ready, outcomes)
    assert all(o is not None for o in outcomes)
    return [o for o in outcomes if o is not None]


def _prepare(conn: Connection, now: datetime, run: list[PayRequest]
             ) -> list[_Ready | DomainError | object]:
    """Per request: what ``do_pay_order`` checks before the risk decision, for the whole run
    in a few reads. ``_ALONE`` for a request needing an account opened, or whose order is in
    another currency than the run's first."""
    lock = " ORDER BY id FOR UPDATE" if conn.dialect.name == "postgresql" else ""
    found = {o.id: o for o in map(_order_of, rows_in(
        conn, _ORDERS_IN_SQL + lock, (), sorted({r.order_id for r in run})))}
    parties = _parties_of(conn, {r.payer_id for r in run} |
                          {o.merchant_id for o in found.values()} |
                          {o.sp_id for o in found.values() if o.sp_id is not None})
    prepared: list[_Ready | DomainError | object] = []
    for req in run:
        try:
            prepared.append(_check_request(conn, now, req, found.get(req.order_id), parties))
        except DomainError as exc:
            prepared.append(exc)
    # The run's accounts are found in one currency, the first order's (orders are all in the
    # platform's one today); an order in another is paid by ``do_pay_order`` in its place.
    ready = [item for item in prepared if isinstance(item, _Ready)]
    run_currency = ready[0].order.currency if ready else ""
    pairs = list(dict.fromkeys(pair for item in ready if item.order.currency == run_currency
                               for pair in item.wanted))
    accounts: dict[tuple[str, str], int] = {}
    for i in range(0, len(pairs), ledger.FIND_ACCOUNTS_MAX):
        accounts.update((k, a.id) for k, a in ledger.find_accounts(
            conn, pairs[i:i + ledger.FIND_ACCOUNTS_MAX], run_currency).items())
    for k, item in enumerate(prepared):
        if not isinstance(item, _Ready):
            continue
        if item.order.currency != run_currency or any(pair not in accounts
                                                      for pair in item.wanted):
            prepared[k] = _ALONE
        else:
            item.account_ids = [accounts[pair] for pair in item.wanted]
    return prepared


def _parties_of(conn: Connection, ids: set[str]) -> dict[str, Party]:
    """The parties ``ids`` and the service providers of the merchants among them: one read
    when ``ids`` names them already (an order keeps its merchant's SP), two otherwise."""
    found = parties_by_id(conn, ids)
    sps = {p.parent_id for p in found.values() if p.kind == PartyKind.MERCHANT and
           p.parent_id is not None and p.parent_id not in found}
    return found | parties_by_id(conn, sps) if sps else found


def _check_request(conn: Connection, now: datetime, req: PayRequest, order: Order | None,
                   parties: dict[str, Party]) -> _Ready:
    """``do_pay_order``'s checks, in its order, on rows read for the whole run."""
    if order is None:
        raise DomainError(ErrorCode.ORDER_NOT_FOUND, f"no order {req.order_id!r}", "id")
    _check_payable(order, now)
    payer = _check_payer(parties.get(req.payer_id), req.payer_id)
    merchant = parties.get(order.merchant_id)
    if merchant is None or merchant.kind != PartyKind.MERCHANT:
        merchant = require_collecting_merchant(conn, order.merchant_id)  # raises
    check_collecting(merchant)
    sp = parties.get(merchant.parent_id) if merchant.parent_id is not None else None
    wanted, fee, commission = _payment_accounts(conn, order, merchant, req.payer_id, sp)
    return _Ready(order, payer, merchant, wanted, fee, commission)


def _pay_ready(conn: Connection, now: datetime, run: list[PayRequest],
               ready: list[tuple[int, _Ready]], outcomes: list[Order | DomainError | None]
               ) -> None:
    """Decide, post and record the requests that passed their checks."""
    screening = risk.Batch(conn, now)
    decided: list[tuple[int, _Ready, risk.Decision]] = []
    for i, item in ready:
        try:
            decision = screening.decide(_risk_event(item.order, item.payer, item.merchant,
                                                    run[i].device_id, run[i].client_ip))
        except risk.RiskDeclined as declined:
            declined.record(conn)  # logged in its place among the batch's decisions
            outcomes[i] = declined
            continue
        decided.append((i, item, decision))
    entries = [_payment_entry(item.order, _legs(item.order, item.account_ids, item.fee,
                                                item.commission), decision)
               for _, item, decision in decided]
    results = ledger.create_entries(conn, now, entries) if entries else []
    paid: list[tuple[int, Order, risk.Decision]] = []
    for (i, item, decision), result in zip(decided, results, strict=True):
        if result.error is not None:  # as a unit rolled back: its decision is not logged
            outcomes[i] = ledger.refusal(result.error)  # worded as ledger.post words it
            screening.withdraw(decision)
            continue
        order = _paid(item.order, now, run[i].payer_id, result.entry_id, item.fee,
                      item.commission, decision)
        outcomes[i] = order
        paid.append((i, order, decision))
    screening.flush()
    _record_paid(conn, now, run, paid)


def _record_paid(conn: Connection, now: datetime, run: list[PayRequest],
                 paid: list[tuple[int, Order, risk.Decision]]) -> None:
    """The order updates (one ``executemany``), review cases and outbox events, in order."""
    if not paid:
        return
    updated = _PAY_IF_OPEN.many(conn, [
        (o.status, to_us(now), o.payer_id, o.entry_id, o.fee_amount, o.commission_amount,
         run[i].device_id, run[i].client_ip, o.id) for i, o, _ in paid])
    assert updated == len(paid), (updated, len(paid))  # the orders are locked and distinct
    queued: list[tuple[str, str, dict[str, object]]] = []
    for _, order, decision in paid:
        if decision.review:  # its case opens before its payment event, as one by one
            assert order.entry_id is not None
            events.emit_many(conn, now, queued)
            queued = []
            risk.open_case(conn, now, decision, order.entry_id)
        queued.append(_payment_event(order))
    events.emit_many(conn, now, queued)


def _resolve_review(conn: Connection, now: datetime, case: risk.Case, approved: bool,
                    entry_id: int) -> None:
    """A reviewed payment's case is decided: the hold was posted (paid) or voided."""
    status = "paid" if approved else "declined"
    conn.execute(orders.update().where(orders.c.id == case.subject_id,
                                       orders.c.status == "reviewing")
                 .values(status=status, entry_id=entry_id if approved else None,
                         paid_at=now if approved else None, closed_at=None if approved else now,
                         **({} if approved else {"fee_amount": 0, "commission_amount": 0})))
    if not approved:  # marketing: a coupon the voided payment used is the payer's again
        from lianjie.marketing.coupons import release_for_order  # marketing builds on payments
        release_for_order(conn, now, case.subject_id)
    order = require_order(conn, case.subject_id)
    events.emit(conn, now, "payment.succeeded" if approved else "payment.declined",
                order.merchant_id, order_payload(order))


risk.register_resolver("payment", _resolve_review)


def do_pay_static_code(conn: Connection, now: datetime, cfg: PaymentsConfig, qr_code_id: str,
                       payer_id: str, amount: int, *, device_id: str | None = None,
                       client_ip: str | None = None, out_trade_no: str | None = None,
                       coupon_id: str | None = None) -> Order:
    """The payer scans a merchant's static collection code and enters the amount."""
    code = get_qr_code(conn, qr_code_id) if isinstance(qr_code_id, str) else None
    if code is None or not code.active:
        raise DomainError(ErrorCode.QR_CODE_NOT_FOUND, f"no active code {qr_code_id!r}", "id")
    order = do_create_order(conn, now, cfg, code.merchant_id,
                            out_trade_no=out_trade_no or new_id("scan"), amount=amount,
                            currency_code=code.currency, description=code.description,
                            store_id=code.store_id, qr_code_id=code.id)
    return do_pay_order(conn, now, order.id, payer_id, device_id=device_id, client_ip=client_ip,
                        coupon_id=coupon_id)


def do_close_order(conn: Connection, now: datetime, order_id: str) -> Order:
    order = require_order(conn, order_id, for_update=True)
    if order.status == "closed":
        return order  # closing twice is harmless, as in WeChat Pay's close API
    _check_payable(order, now)
    conn.execute(orders.update().where(orders.c.id == order_id, orders.c.status == "open")
                 .values(status="closed", closed_at=now))
    events.emit(conn, now, "order.closed", order.merchant_id, {"id": order_id})
    return require_order(conn, order_id)


def do_expire_orders(conn: Connection, now: datetime, limit: int = 1000) -> int:
    """Mark open orders past their expiry as expired; returns how many."""
    assert 0 < limit <= 10_000
    rows = conn.execute(select(orders.c.id, orders.c.merchant_id)
                        .where(orders.c.status == "open", orders.c.expires_at <= now)
                        .order_by(orders.c.expires_at).limit(limit)).all()
    for order_id, merchant_id in rows:
        conn.execute(orders.update().where(orders.c.id == order_id, orders.c.status == "open")
                     .values(status="expired", closed_at=now))
        events.emit(conn, now, "order.expired", merchant_id, {"id": order_id})
    return len(rows)


def order_payload(order: Order) -> dict[str, object]:
    """What events and webhooks say about an order."""
    return {
        "id": order.id, "object": "payment_order", "merchant_id": order.merchant_id,
        "service_provider_id": order.sp_id, "out_trade_no": order.out_trade_no,
        "amount": order.amount, "currency": order.currency, "status": order.status,
        "fee_amount": order.fee_amount, "commission_amount": order.commission_amount,
        "payer_id": order.payer_id, "entry_id": order.entry_id,
        "paid_at": order.paid_at.isoformat() if order.paid_at else None,
        "refunded_amount": order.refunded_amount,
    }
