"""Payments: find an order by any id (order, refund, ledger entry ``txf_``, merchant, payer) or
by ``out_trade_no``, and a detail page with the order's timeline, its ledger postings, refunds
and webhook deliveries. Capabilities add sections to the detail page (a risk decision, a loan
repayment) with ``register_section``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request
from sqlalchemy import Connection, or_, select
from starlette.responses import Response

from lianjie import ledger
from lianjie import payments as pay
from lianjie.api.runtime import runtime
from lianjie.console import i18n
from lianjie.console.operators import ALL_ROLES, ConsoleRole, Operator
from lianjie.console.registry import Page, register
from lianjie.console.web import PREFIX, guard, redirect, render
from lianjie.ids import parse_int_id
from lianjie.payments.schema import orders, refunds, webhook_deliveries

PAGE = register(Page("payments", "/payments", "nav.payments", order=40))
Viewer = Annotated[Operator, Depends(guard(PAGE))]
PAGE_SIZE = 50
QUERY_LENGTH_MAX = 100
STATUSES = ("open", "paid", "closed", "expired")
DELIVERIES_MAX = 50

i18n.add_messages({
    "nav.payments": ("Payments", "交易"),
    "payments.search": ("Order, refund, txf_, merchant or payer id, or out_trade_no",
                        "订单号、退款号、txf_ 分录号、商户或付款人编号，或商户订单号"),
    "payments.merchant": ("Merchant", "商户"),
    "payments.payer": ("Payer", "付款人"),
    "payments.fee": ("Platform fee", "平台手续费"),
    "payments.commission": ("SP commission", "服务商分润"),
    "payments.refunded": ("Refunded", "已退款"),
    "payments.timeline": ("Timeline", "时间线"),
    "payments.postings": ("Ledger postings", "账务分录"),
    "payments.refunds": ("Refunds", "退款"),
    "payments.webhooks": ("Webhook deliveries", "回调通知"),
    "payments.older": ("Older", "更早"),
    "timeline.created": ("Order created", "订单创建"),
    "timeline.paid": ("Paid", "支付成功"),
    "timeline.refund": ("Refund {amount}", "退款 {amount}"),
    "timeline.closed": ("Closed", "订单关闭"),
    "timeline.expired": ("Expired", "订单过期"),
    "timeline.webhook": ("Webhook {type} {status}", "回调 {type} {status}"),
    "col.account": ("Account", "账户"),
    "col.owner": ("Owner", "所属主体"),
    "col.purpose": ("Purpose", "用途"),
    "col.debit": ("Debit", "借方"),
    "col.credit": ("Credit", "贷方"),
    "col.balance_after": ("Balance after", "余额"),
    "col.entry": ("Entry", "分录"),
    "col.attempts": ("Attempts", "尝试次数"),
    "col.error": ("Last error", "最近错误"),
})


@dataclass(frozen=True)
class Section:
    """A block on the payment detail page: ``data(conn, order)`` feeds ``template``."""

    key: str
    title: str  # message key
    template: str
    data: Callable[[Connection, pay.Order], dict[str, Any]]
    roles: frozenset[ConsoleRole] = ALL_ROLES
    order: int = 100


_SECTIONS: dict[str, Section] = {}


def register_section(section: Section) -> Section:
    assert _SECTIONS.get(section.key, section) == section, section.key
    _SECTIONS[section.key] = section
    return section


def search(conn: Connection, q: str, status: str, before: str | None) -> list[Any]:
    query = select(orders)
    if q:
        conds = [orders.c.id == q, orders.c.out_trade_no == q, orders.c.merchant_id == q,
                 orders.c.payer_id == q, orders.c.sp_id == q]
        entry = parse_int_id("txf", q)
        if entry is not None:
            conds.append(orders.c.entry_id == entry)
            conds.append(orders.c.id.in_(select(refunds.c.order_id)
                                         .where(refunds.c.entry_id == entry)))
        conds.append(orders.c.id.in_(select(refunds.c.order_id).where(
            or_(refunds.c.id == q, refunds.c.out_refund_no == q))))
        query = query.where(or_(*conds))
    if status in STATUSES:
        query = query.where(orders.c.status == status)
    if before:
        anchor = pay.get_order(conn, before)
        if anchor is not None:
            query = query.where(or_(orders.c.created_at < anchor.created_at,
                                    (orders.c.created_at == anchor.created_at)
                                    & (orders.c.id < anchor.id)))
    return list(conn.execute(query.order_by(orders.c.created_at.desc(), orders.c.id.desc())
                             .limit(PAGE_SIZE + 1)))


@PAGE.router.get("/payments")
async def payments(request: Request, op: Viewer, q: str | None = None, status: str = "",
                   before: str | None = None) -> Response:
    text = (q or "").strip()[:QUERY_LENGTH_MAX]
    found = await runtime(request).read(lambda c: search(c, text, status, before))
    if text and len(found) == 1:
        return redirect(f"{PREFIX}/payments/{found[0].id}")
    return render(request, op, "payments.html", orders=found[:PAGE_SIZE], q=text, status=status,
                  statuses=STATUSES, has_more=len(found) > PAGE_SIZE)


def _postings(conn: Connection, entry_ids: list[int]) -> list[dict[str, Any]]:
    rows = []
    for entry_id in entry_ids:
        record = ledger.get_entry(conn, entry_id)
        if record is None:
            continue
        accounts = ledger.get_accounts(conn, [p.account_id for p in record.postings])
        for p in record.postings:
            a = accounts[p.account_id]
            rows.append({"entry": record, "posting": p, "account": a})
    return rows


def _deliveries(conn: Connection, order: pay.Order) -> list[Any]:
    # Deliveries name the order only inside their payload; the merchant's and service
    # provider's since the order was created are few, so a LIKE over them is cheap.
    parties = [p for p in (order.merchant_id, order.sp_id) if p]
    return list(conn.execute(
        select(webhook_deliveries).where(
            webhook_deliveries.c.party_id.in_(parties),
            webhook_deliveries.c.created_at >= order.created_at,
            webhook_deliveries.c.payload.like(f'%"{order.id}"%'))
        .order_by(webhook_deliveries.c.created_at).limit(DELIVERIES_MAX)))


def _timeline(order: pay.Order, order_refunds: list[pay.Refund],
              deliveries: list[Any]) -> list[tuple[Any, str, dict[str, Any]]]:
    items: list[tuple[Any, str, dict[str, Any]]] = [(order.created_at, "timeline.created", {})]
    if order.paid_at:
        items.append((order.paid_at, "timeline.paid", {}))
    for r in order_refunds:
        items.append((r.created_at, "timeline.refund", {"amount": r.amount}))
    if order.closed_at:
        items.append((order.closed_at, f"timeline.{order.status}"
                      if order.status in ("closed", "expired") else "timeline.closed", {}))
    for d in deliveries:
        items.append((d.delivered_at or d.created_at, "timeline.webhook",
                      {"type": d.event_type, "status": d.status}))
    return sorted(items, key=lambda i: i[0])


def _detail(conn: Connection, order_id: str, role: ConsoleRole) -> dict[str, Any] | None:
    order = pay.get_order(conn, order_id)
    if order is None:
        return None
    order_refunds = pay.refunds_of(conn, order.id)
    entries = ([order.entry_id] if order.entry_id else []) + [r.entry_id for r in order_refunds]
    deliveries = _deliveries(conn, order)
    sections = [(s, s.data(conn, order)) for s in sorted(_SECTIONS.values(),
                                                         key=lambda s: (s.order, s.key))
                if role in s.roles]
    return {"order": order, "merchant": pay.get_party(conn, order.merchant_id),
            "refunds": order_refunds, "postings": _postings(conn, entries),
            "deliveries": deliveries, "timeline": _timeline(order, order_refunds, deliveries),
            "sections": sections}


@PAGE.router.get("/payments/{order_id}")
async def payment(request: Request, order_id: str, op: Viewer) -> Response:
    found = await runtime(request).read(lambda c: _detail(c, order_id, op.role))
    if found is None:
        return render(request, op, "not_found.html", status_code=404, what=order_id)
    return render(request, op, "payment.html", **found)
