"""Refunds: partial or full, several per order, never more than was paid.

Idempotent by the merchant's ``out_refund_no``: asking again with the same number and amount
returns the refund already made; the same number with another order or amount is refused. The fee
and the SP's commission go back in proportion to the amount refunded (see ``fees``), in the same
ledger entry that returns the money:

    merchant pending     -> consumer wallet        amount
    platform fee revenue -> merchant pending       fee share
    SP commission        -> platform fee revenue   commission share
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, Row, select

from lianjie import events, ledger
from lianjie.errors import DomainError, ErrorCode
from lianjie.ids import new_id
from lianjie.ledger import Entry, Leg, Purpose
from lianjie.money import check_amount
from lianjie.payments import fees
from lianjie.payments.orders import Order, require_order
from lianjie.payments.parties import PLATFORM_ID, account_id
from lianjie.payments.schema import orders, refunds

OUT_REFUND_NO_LENGTH_MAX = 64
REASON_LENGTH_MAX = 200


@dataclass(frozen=True, slots=True)
class Refund:
    id: str
    order_id: str
    merchant_id: str
    out_refund_no: str
    amount: int
    currency: str
    fee_refunded: int
    commission_refunded: int
    reason: str | None
    status: str
    entry_id: int
    created_at: datetime


def _refund(row: Row[tuple[object, ...]]) -> Refund:
    m = row._mapping
    return Refund(**{f: m[f] for f in Refund.__dataclass_fields__})


def find_refund(conn: Connection, merchant_id: str, out_refund_no: str) -> Refund | None:
    row = conn.execute(select(refunds).where(refunds.c.merchant_id == merchant_id,
                                             refunds.c.out_refund_no == out_refund_no)).first()
    return None if row is None else _refund(row)


def get_refund(conn: Connection, refund_id: str) -> Refund | None:
    row = conn.execute(select(refunds).where(refunds.c.id == refund_id)).first()
    return None if row is None else _refund(row)


def refunds_of(conn: Connection, order_id: str) -> list[Refund]:
    rows = conn.execute(select(refunds).where(refunds.c.order_id == order_id)
                        .order_by(refunds.c.created_at, refunds.c.id))
    return [_refund(r) for r in rows]


def _legs(conn: Connection, order: Order, amount: int, fee_back: int, commission_back: int
          ) -> tuple[Leg, ...]:
    assert order.payer_id is not None
    cur = order.currency
    pending = account_id(conn, order.merchant_id, Purpose.MERCHANT_PENDING, cur)
    legs = [Leg(pending, account_id(conn, order.payer_id, Purpose.WALLET, cur), amount)]
    revenue = account_id(conn, PLATFORM_ID, Purpose.FEE_REVENUE, cur)
    if fee_back:
        legs.append(Leg(revenue, pending, fee_back))
    if commission_back:
        assert order.sp_id is not None
        legs.append(Leg(account_id(conn, order.sp_id, Purpose.SP_COMMISSION, cur), revenue,
                        commission_back))
    return tuple(legs)


def do_refund(conn: Connection, now: datetime, order_id: str, *, out_refund_no: str,
              amount: int, reason: str | None = None) -> Refund:
    if not isinstance(out_refund_no, str) or not out_refund_no.strip() or \
            len(out_refund_no) > OUT_REFUND_NO_LENGTH_MAX:
        raise DomainError(ErrorCode.INVALID_REQUEST, "out_refund_no must be 1 to "
                          f"{OUT_REFUND_NO_LENGTH_MAX} characters", "out_refund_no")
    if reason is not None and (not isinstance(reason, str) or len(reason) > REASON_LENGTH_MAX):
        raise DomainError(ErrorCode.INVALID_REQUEST, "reason is too long", "reason")
    amount = check_amount(amount)
    order = require_order(conn, order_id, for_update=True)
    prior = find_refund(conn, order.merchant_id, out_refund_no)
    if prior is not None:
        if prior.order_id == order.id and prior.amount == amount:
            return prior
        raise DomainError(ErrorCode.DUPLICATE_OUT_REFUND_NO,
                          f"out_refund_no {out_refund_no!r} is used by another refund",
                          "out_refund_no")
    if order.status != "paid":
        raise DomainError(ErrorCode.ORDER_NOT_PAID, "only a paid order can be refunded", "id")
    if order.refunded_amount + amount > order.amount:
        raise DomainError(ErrorCode.REFUND_EXCEEDS_PAID,
                          f"at most {order.amount - order.refunded_amount} can still be "
                          "refunded", "amount")
    fee_back = fees.refund_share(order.fee_amount, order.amount, order.refunded_amount, amount,
                                 order.refunded_fee)
    commission_back = fees.refund_share(order.commission_amount, order.amount,
                                        order.refunded_amount, amount, order.refunded_commission)
    refund_id = new_id("re")
    legs = _legs(conn, order, amount, fee_back, commission_back)
    # marketing: a coupon's subsidy share goes back to its campaign budget (the refund rule is
    # in lianjie.marketing.coupons); orders paid without a coupon keep their legs.
    from lianjie.marketing.coupons import refund_legs  # marketing builds on payments
    legs = refund_legs(conn, order, amount, legs)
    result = ledger.post(conn, now, Entry(key=f"refund:{refund_id}", legs=legs, code="refund",
                                          memo=order.id))
    conn.execute(refunds.insert().values(
        id=refund_id, order_id=order.id, merchant_id=order.merchant_id,
        out_refund_no=out_refund_no, amount=amount, currency=order.currency,
        fee_refunded=fee_back, commission_refunded=commission_back, reason=reason,
        status="succeeded", entry_id=result.entry_id, created_at=now))
    updated = conn.execute(orders.update().where(
        orders.c.id == order.id, orders.c.refunded_amount == order.refunded_amount).values(
        refunded_amount=order.refunded_amount + amount,
        refunded_fee=order.refunded_fee + fee_back,
        refunded_commission=order.refunded_commission + commission_back))
    assert updated.rowcount == 1, "the order row is locked by this transaction"
    refund = get_refund(conn, refund_id)
    assert refund is not None
    events.emit(conn, now, "refund.succeeded", order.merchant_id, refund_payload(refund))
    return refund


def refund_payload(refund: Refund) -> dict[str, object]:
    return {"id": refund.id, "object": "refund", "order_id": refund.order_id,
            "merchant_id": refund.merchant_id, "out_refund_no": refund.out_refund_no,
            "amount": refund.amount, "currency": refund.currency,
            "fee_refunded": refund.fee_refunded, "status": refund.status,
            "entry_id": refund.entry_id}
