"""Routes for payment orders, refunds, wallets, the ledger and webhook deliveries."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from pydantic import StrictInt
from sqlalchemy import Connection
from starlette.responses import Response

from lianjie import ledger
from lianjie import payments as pay
from lianjie.api import idempotency, views
from lianjie.api.access import (
    ClientContext,
    acting_merchant,
    acting_merchant_id,
    client_context,
    owner_visible,
    visible_order,
)
from lianjie.api.keys import Principal, Role
from lianjie.api.routes_parties import PAGE_LIMIT_MAX, Body, Caller
from lianjie.api.runtime import (
    BatchedKeys,
    Runtime,
    batcher_of,
    current_runtime,
    idempotency_of,
    json,
    require_role,
    stored_response,
)
from lianjie.batcher import Batcher
from lianjie.errors import DomainError, ErrorCode
from lianjie.ids import INT_ID_MAX, parse_int_id
from lianjie.money import DEFAULT_CURRENCY
from lianjie.money import currency as lookup_currency
from lianjie.payments.parties import parties_by_id

router = APIRouter(prefix="/v1")
RT = Annotated[Runtime, Depends(current_runtime)]
Limit = Annotated[int, Query(ge=1, le=PAGE_LIMIT_MAX)]


class OrderIn(Body):
    out_trade_no: str
    amount: StrictInt
    currency: str = DEFAULT_CURRENCY
    description: str
    expires_in_s: StrictInt | None = None
    store_id: str | None = None
    merchant_id: str | None = None


class PayIn(Body):
    device_id: str | None = None
    coupon_id: str | None = None


class StaticPayIn(Body):
    amount: StrictInt
    device_id: str | None = None
    coupon_id: str | None = None


class RefundIn(Body):
    out_refund_no: str
    amount: StrictInt
    reason: str | None = None


class WalletMoveIn(Body):
    institution_id: str
    amount: StrictInt
    currency: str = DEFAULT_CURRENCY
    device_id: str | None = None


class P2PIn(Body):
    recipient_id: str
    amount: StrictInt
    currency: str = DEFAULT_CURRENCY
    note: str | None = None
    device_id: str | None = None


ORDERS_PER_BATCH_MAX = 512


@dataclass(frozen=True, slots=True)
class CreateRequest:
    """One ``POST /v1/orders`` whose caller and body are checked: its part of a batch."""

    principal: Principal
    body: OrderIn


def _create_many(rt: Runtime) -> Callable[[Connection, datetime, Sequence[CreateRequest]],
                                          list[pay.Order | DomainError]]:
    def run_many(conn: Connection, now: datetime, requests: Sequence[CreateRequest]
                 ) -> list[pay.Order | DomainError]:
        """Each request as ``do_create_order`` alone, in turn (``pay.do_create_orders``): the
        merchants the callers act for are read in one statement, the ``out_trade_no``s taken
        in one more, the orders written in one ``executemany``. A refusal comes from the
        checks, which all run before the write, so a refused request writes nothing and needs
        no savepoint of its own; a request whose ``out_trade_no`` an earlier one in the batch
        took (under another Idempotency-Key, say) is refused as a duplicate, as it would be
        after it."""
        known = parties_by_id(conn, {
            mid for r in requests
            if isinstance(mid := acting_merchant_id(r.principal, r.body.merchant_id), str)})
        outcomes: list[pay.Order | DomainError | None] = []
        wanted: list[pay.NewOrder] = []
        for r in requests:
            body = r.body
            try:
                merchant = acting_merchant(conn, r.principal, body.merchant_id, known)
            except DomainError as exc:
                outcomes.append(exc)
                continue
            outcomes.append(None)
            wanted.append(pay.NewOrder(merchant, body.out_trade_no, body.amount, body.currency,
                                       body.description, body.expires_in_s, body.store_id))
        created = iter(pay.do_create_orders(conn, now, rt.cfg, wanted))
        return [next(created) if outcome is None else outcome for outcome in outcomes]

    return run_many


def _create_batcher(rt: Runtime) -> Batcher[CreateRequest, pay.Order]:
    return batcher_of(rt, "create_order", lambda: Batcher(
        rt.committer, rt.clock, _create_many(rt), ORDERS_PER_BATCH_MAX,
        BatchedKeys(lambda order: (201, views.order(order, rt.cfg)))))


async def create_once(rt: Runtime, p: Principal, body: OrderIn, key: str, fp: bytes
                      ) -> tuple[idempotency.Stored, bool]:
    """``POST /v1/orders`` (also run by ``api.fastpath``): the response and whether it is a
    replay. Concurrent creations share one unit of work through a ``Batcher``, each
    request's response stored under its Idempotency-Key in that unit, as ``Runtime.mutate``
    would store it."""
    stored, replayed = await _create_batcher(rt).submit_async(CreateRequest(p, body),
                                                              (p.key_id, key, fp))
    return stored, replayed


@router.post("/orders", status_code=201, tags=["orders"])
async def create_order(body: OrderIn, request: Request, rt: RT, p: Caller) -> Response:
    key, fp = await idempotency_of(request)
    return stored_response(*await create_once(rt, p, body, key, fp))


@router.get("/orders", tags=["orders"])
async def list_orders(rt: RT, p: Caller, merchant_id: str | None = None,
                      out_trade_no: str | None = None, status: str | None = None,
                      after: str | None = None, limit: Limit = 20) -> Response:
    def read(conn: Connection) -> dict[str, Any]:
        if p.role == Role.CONSUMER:
            found = pay.list_orders(conn, payer_id=p.party_id, status=status, after=after,
                                    limit=limit + 1)
            return views.page([views.order(o, rt.cfg) for o in found], limit)
        merchant = acting_merchant(conn, p, merchant_id) if p.role != Role.OPERATOR or \
            merchant_id else None
        if out_trade_no is not None:
            if merchant is None:
                raise DomainError(ErrorCode.INVALID_REQUEST,
                                  "out_trade_no needs merchant_id", "merchant_id")
            order = pay.find_order(conn, merchant.id, out_trade_no)
            items = [] if order is None else [views.order(order, rt.cfg)]
            return views.page(items, limit)
        found = pay.list_orders(conn, merchant_id=merchant.id if merchant else None,
                                status=status, after=after, limit=limit + 1)
        return views.page([views.order(o, rt.cfg) for o in found], limit)

    return json(await rt.read(read))


@router.get("/orders/{order_id}", tags=["orders"])
async def get_order(order_id: str, rt: RT, p: Caller) -> Response:
    order = await rt.read(lambda c: visible_order(c, p, order_id))
    return json(views.order(order, rt.cfg))


@router.get("/orders/{order_id}/qr.{kind}", tags=["orders"])
async def order_qr(order_id: str, kind: Literal["png", "svg"], rt: RT, p: Caller) -> Response:
    order = await rt.read(lambda c: visible_order(c, p, order_id))
    media = "image/png" if kind == "png" else "image/svg+xml"
    return Response(pay.render(pay.order_content(rt.cfg.base_url, order.id), kind),
                    media_type=media)


def _pay_batcher(rt: Runtime) -> Batcher[pay.PayRequest, pay.Order]:
    return batcher_of(rt, "pay", lambda: Batcher(
        rt.committer, rt.clock, pay.do_pay_many, pay.PAYS_PER_BATCH_MAX,
        BatchedKeys(lambda order: (200, views.order(order, rt.cfg)))))


async def pay_once(rt: Runtime, p: Principal, order_id: str, body: PayIn,
                   client: ClientContext, key: str, fp: bytes
                   ) -> tuple[idempotency.Stored, bool]:
    """``POST /v1/orders/{id}/pay`` for a caller both paths have already checked is a
    consumer (also run by ``api.fastpath``): the response and whether it is a replay.

    Concurrent payments share one unit of work (``payments.do_pay_many`` through a
    ``Batcher``); each request's response is stored under its Idempotency-Key in that unit,
    as ``Runtime.mutate`` would store it. Any consumer holding the order's id (its QR code)
    may try to pay it, and is told why it cannot (paid, closed, expired) rather than "not
    found": see ``access``."""
    stored, replayed = await _pay_batcher(rt).submit_async(
        pay.PayRequest(order_id, p.party_id, client.device_id, client.client_ip,
                       body.coupon_id), (p.key_id, key, fp))
    return stored, replayed


@router.post("/orders/{order_id}/pay", tags=["orders"])
async def pay_order(order_id: str, body: PayIn, request: Request, rt: RT,
                    p: Caller) -> Response:
    require_role(p, Role.CONSUMER)
    client = client_context(request, p, body.device_id)
    key, fp = await idempotency_of(request)
    return stored_response(*await pay_once(rt, p, order_id, body, client, key, fp))


@router.post("/qr_codes/{qr_code_id}/pay", tags=["orders"])
async def pay_static(qr_code_id: str, body: StaticPayIn, request: Request, rt: RT,
                     p: Caller) -> Response:
    require_role(p, Role.CONSUMER)
    client = client_context(request, p, body.device_id)

    def action(conn: Connection) -> tuple[int, dict[str, Any]]:
        order = pay.do_pay_static_code(conn, rt.clock.now(), rt.cfg, qr_code_id, p.party_id,
                                       body.amount, device_id=client.device_id,
                                       client_ip=client.client_ip,
                                       coupon_id=body.coupon_id)
        return 200, views.order(order, rt.cfg)

    return await rt.mutate(request, p, action)


@router.post("/orders/{order_id}/close", tags=["orders"])
async def close_order(order_id: str, request: Request, rt: RT, p: Caller) -> Response:
    require_role(p, Role.OPERATOR, Role.MERCHANT, Role.SERVICE_PROVIDER)

    def action(conn: Connection) -> tuple[int, dict[str, Any]]:
        visible_order(conn, p, order_id, for_update=True)
        return 200, views.order(pay.do_close_order(conn, rt.clock.now(), order_id), rt.cfg)

    return await rt.mutate(request, p, action)


@router.post("/orders/{order_id}/refunds", status_code=201, tags=["refunds"])
async def refund_order(order_id: str, body: RefundIn, request: Request, rt: RT,
                       p: Caller) -> Response:
    require_role(p, Role.OPERATOR, Role.MERCHANT, Role.SERVICE_PROVIDER)

    def action(conn: Connection) -> tuple[int, dict[str, Any]]:
        visible_order(conn, p, order_id, for_update=True)
        refund = pay.do_refund(conn, rt.clock.now(), order_id, out_refund_no=body.out_refund_no,
                               amount=body.amount, reason=body.reason)
        return 201, views.refund(refund)

    return await rt.mutate(request, p, action)


@router.get("/orders/{order_id}/refunds", tags=["refunds"])
async def list_refunds(order_id: str, rt: RT, p: Caller) -> Response:
    def read(conn: Connection) -> dict[str, Any]:
        visible_order(conn, p, order_id)
        items = [views.refund(r) for r in pay.refunds_of(conn, order_id)]
        return {"object": "list", "data": items, "has_more": False, "next_cursor": None}

    return json(await rt.read(read))


def _consumer(p: Principal) -> str:
    require_role(p, Role.CONSUMER)
    return p.party_id


def _platform_currency(rt: Runtime, code: str) -> str:
    """Wallets move the platform's currency, the one its merchants are paid in."""
    if code != rt.cfg.currency:
        lookup_currency(code)  # an unknown code is unknown_currency, a known one a mismatch
        raise DomainError(ErrorCode.CURRENCY_MISMATCH,
                          f"this platform's wallets hold {rt.cfg.currency}", "currency")
    return code


@router.get("/wallet", tags=["wallets"])
async def wallet(rt: RT, p: Caller, currency: str = DEFAULT_CURRENCY) -> Response:
    consumer_id = _consumer(p)
    found = await rt.read(lambda c: pay.wallet_balance(c, consumer_id, currency))
    return json(views.wallet(found))


@router.get("/wallet/operations", tags=["wallets"])
async def wallet_operations(rt: RT, p: Caller, after: str | None = None,
                            limit: Limit = 20) -> Response:
    consumer_id = _consumer(p)
    found = await rt.read(lambda c: pay.wallet_operations_of(c, consumer_id, after=after,
                                                             limit=limit + 1))
    return json(views.page([views.wallet_operation(w) for w in found], limit))


@router.post("/wallet/top_ups", status_code=201, tags=["wallets"])
async def top_up(body: WalletMoveIn, request: Request, rt: RT, p: Caller) -> Response:
    consumer_id = _consumer(p)

    def action(conn: Connection) -> tuple[int, dict[str, Any]]:
        op = pay.do_top_up(conn, rt.clock.now(), consumer_id, body.institution_id, body.amount,
                           _platform_currency(rt, body.currency))
        return 201, views.wallet_operation(op)

    return await rt.mutate(request, p, action)


@router.post("/wallet/withdrawals", status_code=201, tags=["wallets"])
async def withdraw(body: WalletMoveIn, request: Request, rt: RT, p: Caller) -> Response:
    consumer_id = _consumer(p)
    client = client_context(request, p, body.device_id)

    def action(conn: Connection) -> tuple[int, dict[str, Any]]:
        op = pay.do_withdraw(conn, rt.clock.now(), consumer_id, body.institution_id,
                             body.amount, _platform_currency(rt, body.currency),
                             device_id=client.device_id, client_ip=client.client_ip)
        return 201, views.wallet_operation(op)

    return await rt.mutate(request, p, action)


@router.post("/wallet/transfers", status_code=201, tags=["wallets"])
async def p2p(body: P2PIn, request: Request, rt: RT, p: Caller) -> Response:
    consumer_id = _consumer(p)
    client = client_context(request, p, body.device_id)

    def action(conn: Connection) -> tuple[int, dict[str, Any]]:
        op = pay.do_p2p(conn, rt.clock.now(), consumer_id, body.recipient_id, body.amount,
                        _platform_currency(rt, body.currency), body.note,
                        device_id=client.device_id, client_ip=client.client_ip)
        return 201, views.wallet_operation(op)

    return await rt.mutate(request, p, action)


def _account(conn: Connection, p: Principal, account_id: str) -> ledger.Account:
    number = parse_int_id("acc", account_id)
    account = ledger.get_account(conn, number) if number is not None else None
    if account is None or not owner_visible(p, account.owner_id, conn):
        raise DomainError(ErrorCode.ACCOUNT_NOT_FOUND, f"no account {account_id!r}", "id")
    return account


@router.get("/accounts", tags=["ledger"])
async def list_accounts(rt: RT, p: Caller, owner_id: str | None = None) -> Response:
    owner = owner_id or p.party_id

    def read(conn: Connection) -> dict[str, Any]:
        if not owner_visible(p, owner, conn):
            raise DomainError(ErrorCode.PARTY_NOT_FOUND, f"no party {owner!r}", "owner_id")
        items = [views.account(a) for a in ledger.accounts_of(conn, owner)]
        return {"object": "list", "data": items, "has_more": False, "next_cursor": None}

    return json(await rt.read(read))


@router.get("/accounts/{account_id}", tags=["ledger"])
async def get_account(account_id: str, rt: RT, p: Caller) -> Response:
    return json(views.account(await rt.read(lambda c: _account(c, p, account_id))))


@router.get("/accounts/{account_id}/postings", tags=["ledger"])
async def account_postings(account_id: str, rt: RT, p: Caller,
                           after: Annotated[int, Query(ge=0, le=INT_ID_MAX)] = 0,
                           limit: Limit = 50) -> Response:
    def read(conn: Connection) -> dict[str, Any]:
        account = _account(conn, p, account_id)
        found = ledger.account_postings(conn, account.id, after_seq=after, limit=limit + 1)
        return views.page([views.posting(x) for x in found], limit, cursor_field="seq")

    return json(await rt.read(read))


@router.get("/ledger_entries/{entry_id}", tags=["ledger"])
async def get_entry(entry_id: str, rt: RT, p: Caller) -> Response:
    require_role(p, Role.OPERATOR)
    number = parse_int_id("txf", entry_id)
    found = await rt.read(lambda c: ledger.get_entry(c, number)) if number else None
    if found is None:
        raise DomainError(ErrorCode.ENTRY_NOT_FOUND, f"no entry {entry_id!r}", "id")
    return json(views.entry(found))


@router.get("/ledger/verify", tags=["ledger"])
async def verify(rt: RT, p: Caller) -> Response:
    require_role(p, Role.OPERATOR)
    problems = await rt.read(ledger.verify)
    return json({"object": "ledger_verification", "ok": not problems,
                 "violations": [{"code": v.code, "subject": v.subject, "detail": v.detail}
                                for v in problems]})


@router.get("/webhook_deliveries", tags=["webhooks"])
async def webhook_deliveries(rt: RT, p: Caller, party_id: str | None = None,
                             event_id: str | None = None) -> Response:
    def read(conn: Connection) -> dict[str, Any]:
        if event_id is not None:
            require_role(p, Role.OPERATOR)
            found = pay.deliveries_for_event(conn, event_id)
        else:
            target = party_id or p.party_id
            if p.role != Role.OPERATOR and target != p.party_id:
                raise DomainError(ErrorCode.FORBIDDEN, "only your own deliveries", "party_id")
            found = pay.deliveries_of(conn, target)
        return {"object": "list", "data": [views.delivery(d) for d in found],
                "has_more": False, "next_cursor": None}

    return json(await rt.read(read))
