"""Routes for merchant credit: products and funder limits (operator), applications with a
synchronous decision, offers, drawdown, repayments (merchant, its service provider, operator),
loans and funder positions (the funder institution sees its own), and the end of day."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from pydantic import StrictInt
from sqlalchemy import Connection
from starlette.responses import Response

from lianjie import credit
from lianjie.api import views
from lianjie.api.access import acting_merchant, client_context
from lianjie.api.keys import Principal, Role
from lianjie.api.routes_clearing import clearing_config
from lianjie.api.routes_parties import PAGE_LIMIT_MAX, Body, Caller
from lianjie.api.runtime import Runtime, current_runtime, json, require_role
from lianjie.errors import DomainError, ErrorCode
from lianjie.ids import new_id
from lianjie.money import DEFAULT_CURRENCY

router = APIRouter(prefix="/v1/credit", tags=["credit"])
RT = Annotated[Runtime, Depends(current_runtime)]
Limit = Annotated[int, Query(ge=1, le=PAGE_LIMIT_MAX)]


class FunderIn(Body):
    funder_id: str
    share_bps: StrictInt


class ProductIn(Body):
    name: str
    funders: list[FunderIn]
    currency: str = DEFAULT_CURRENCY
    annual_rate_bps: StrictInt = 1800
    penalty_rate_bps: StrictInt = 2700
    method: Literal["annuity", "equal_principal", "bullet"] = "annuity"
    period: Literal["daily", "weekly", "monthly"] = "monthly"
    term_count: StrictInt = 6
    amount_min: StrictInt = 100_00
    amount_max: StrictInt = 500_000_00
    history_days_min: StrictInt = 90
    late_fee: StrictInt = 0
    writeoff_dpd: StrictInt = 90
    receipt_share_bps: StrictInt = 0
    waterfall: str = "penalty,fee,interest,principal"
    limit_policy: Literal["refuse", "reroute"] = "refuse"
    offer_ttl_s: StrictInt = 7 * 86_400


class LimitIn(Body):
    exposure_max: StrictInt
    currency: str = DEFAULT_CURRENCY


class ApplicationIn(Body):
    product_id: str
    amount: StrictInt
    merchant_id: str | None = None
    device_id: str | None = None


class AmountIn(Body):
    amount: StrictInt


class EodIn(Body):
    business_date: date


def _product(p: credit.Product) -> dict[str, Any]:
    out = {k: getattr(p, k) for k in p.__dataclass_fields__ if k != "funders"}
    out.update(object="credit_product", waterfall=",".join(p.waterfall),
               funders=[{"funder_id": f.funder_id, "share_bps": f.share_bps} for f in p.funders])
    return out


def _application(a: credit.Application) -> dict[str, Any]:
    out = {k: getattr(a, k) for k in a.__dataclass_fields__}
    out.update(object="credit_application", expires_at=views._ts(a.expires_at),
               created_at=views._ts(a.created_at))
    return out


def _loan(loan: dict[str, Any]) -> dict[str, Any]:
    return {**loan, "object": "loan", "created_at": views._ts(loan["created_at"])}


def _own_application(conn: Connection, p: Principal, app_id: str) -> credit.Application:
    app = credit.get_application(conn, app_id) if isinstance(app_id, str) else None
    if app is not None and p.role != Role.OPERATOR:
        try:
            acting_merchant(conn, p, app.merchant_id)
        except DomainError:
            app = None
    if app is None:
        raise DomainError(ErrorCode.APPLICATION_NOT_FOUND, f"no application {app_id!r}", "id")
    return app


def _visible_loan(conn: Connection, p: Principal, loan_id: str) -> dict[str, Any]:
    loan = credit.require_loan(conn, loan_id)
    if p.role == Role.OPERATOR:
        return loan
    if p.role == Role.INSTITUTION and any(f["funder_id"] == p.party_id for f in loan["funders"]):
        return loan
    try:
        acting_merchant(conn, p, loan["merchant_id"])
    except DomainError:
        raise DomainError(ErrorCode.LOAN_NOT_FOUND, f"no loan {loan_id!r}", "id") from None
    return loan


@router.post("/products", status_code=201)
async def create_product(body: ProductIn, request: Request, rt: RT, p: Caller) -> Response:
    require_role(p, Role.OPERATOR)

    def action(conn: Connection) -> tuple[int, dict[str, Any]]:
        fields = body.model_dump(exclude={"funders", "currency"})
        prod = credit.do_create_product(
            conn, rt.clock.now(), currency_code=body.currency,
            funders=[(f.funder_id, f.share_bps) for f in body.funders], **fields)
        return 201, _product(prod)

    return await rt.mutate(request, p, action)


@router.get("/products")
async def list_products(rt: RT, p: Caller) -> Response:
    found = await rt.read(credit.list_products)
    return json({"object": "list", "data": [_product(x) for x in found], "has_more": False,
                 "next_cursor": None})


@router.post("/funders/{funder_id}/limit")
async def set_funder_limit(funder_id: str, body: LimitIn, request: Request, rt: RT,
                           p: Caller) -> Response:
    require_role(p, Role.OPERATOR)

    def action(conn: Connection) -> tuple[int, dict[str, Any]]:
        out = credit.do_set_funder_limit(conn, rt.clock.now(), funder_id, body.currency,
                                         body.exposure_max)
        return 200, {"object": "funder_limit", **out}

    return await rt.mutate(request, p, action)


@router.get("/funders/{funder_id}/position")
async def funder_position(funder_id: str, rt: RT, p: Caller,
                          currency: str = DEFAULT_CURRENCY) -> Response:
    require_role(p, Role.OPERATOR, Role.INSTITUTION)
    if p.role == Role.INSTITUTION and funder_id != p.party_id:
        raise DomainError(ErrorCode.PARTY_NOT_FOUND, f"no funder {funder_id!r}", "funder_id")
    return json(await rt.read(lambda c: credit.position(c, funder_id, currency)))


@router.post("/applications", status_code=201)
async def apply(body: ApplicationIn, request: Request, rt: RT, p: Caller) -> Response:
    client = client_context(request, p, body.device_id)

    def action(conn: Connection) -> tuple[int, dict[str, Any]]:
        merchant = acting_merchant(conn, p, body.merchant_id)
        app = credit.do_apply(conn, rt.clock.now(), merchant.id, body.product_id, body.amount,
                              device_id=client.device_id, client_ip=client.client_ip)
        return 201, _application(app)

    return await rt.mutate(request, p, action)


@router.get("/applications/{app_id}")
async def get_application(app_id: str, rt: RT, p: Caller) -> Response:
    app = await rt.read(lambda c: _own_application(c, p, app_id))
    return json(_application(app))


@router.post("/applications/{app_id}/accept")
async def accept(app_id: str, request: Request, rt: RT, p: Caller) -> Response:
    def action(conn: Connection) -> tuple[int, dict[str, Any]]:
        _own_application(conn, p, app_id)
        return 200, _application(credit.do_accept(conn, rt.clock.now(), app_id))

    return await rt.mutate(request, p, action)


@router.post("/applications/{app_id}/drawdown", status_code=201)
async def drawdown(app_id: str, body: AmountIn, request: Request, rt: RT,
                   p: Caller) -> Response:
    def action(conn: Connection) -> tuple[int, dict[str, Any]]:
        _own_application(conn, p, app_id)
        return 201, _loan(credit.do_drawdown(conn, rt.clock.now(), app_id, body.amount))

    return await rt.mutate(request, p, action)


@router.get("/loans")
async def list_loans(rt: RT, p: Caller, merchant_id: str | None = None,
                     after: str | None = None, limit: Limit = 20) -> Response:
    def read(conn: Connection) -> dict[str, Any]:
        funder = p.party_id if p.role == Role.INSTITUTION else None
        merchant = None
        if p.role not in (Role.OPERATOR, Role.INSTITUTION) or merchant_id:
            if p.role == Role.INSTITUTION:
                raise DomainError(ErrorCode.FORBIDDEN, "a funder lists the loans it funds",
                                  "merchant_id")
            merchant = acting_merchant(conn, p, merchant_id).id
        found = credit.list_loans(conn, merchant_id=merchant, funder_id=funder, after=after,
                                  limit=limit + 1)
        return views.page([_loan(x) for x in found], limit)

    return json(await rt.read(read))


@router.get("/loans/{loan_id}")
async def get_loan(loan_id: str, rt: RT, p: Caller) -> Response:
    return json(_loan(await rt.read(lambda c: _visible_loan(c, p, loan_id))))


@router.post("/loans/{loan_id}/repayments")
async def repay(loan_id: str, body: AmountIn, request: Request, rt: RT, p: Caller) -> Response:
    def action(conn: Connection) -> tuple[int, dict[str, Any]]:
        loan = _visible_loan(conn, p, loan_id)
        if p.role != Role.OPERATOR:  # funders read loans; only the borrower's side repays
            acting_merchant(conn, p, loan["merchant_id"])
        out = credit.do_repay(conn, rt.clock.now(), loan_id, body.amount, new_id("rpy"))
        return 200, _loan(out)

    return await rt.mutate(request, p, action)


@router.post("/end_of_day")
async def end_of_day(body: EodIn, request: Request, rt: RT, p: Caller) -> Response:
    """Run the credit end of day for a business date (idempotent; catches up missed days)."""
    require_role(p, Role.OPERATOR)
    cfg = clearing_config(request)  # the business day is the one clearing's cut-off defines

    def action(conn: Connection) -> tuple[int, dict[str, Any]]:
        now = rt.clock.now()
        credit.require_day_over(body.business_date, now, cfg.timezone, cfg.cutoff)
        done = credit.run_end_of_day(conn, body.business_date, now=now, tz=cfg.timezone,
                                     cutoff=cfg.cutoff)
        return 200, {"object": "credit_end_of_day",
                     "business_date": body.business_date.isoformat(), "steps": done}

    return await rt.mutate(request, p, action)
