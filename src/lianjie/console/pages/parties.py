"""Merchants and service providers: search, onboarding, KYC decisions, fee rates, freezing.

Every change goes through the payments context's own ``do_*`` functions inside ``act`` (CSRF,
role, audit row, group committer), so the console refuses exactly what the HTTP API refuses.
Who may do what: KYC and freezing are risk decisions (admin, risk analyst); fee rates are
pricing (admin, finance); onboarding is an administrator's; everyone may look.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import Annotated, Any

from fastapi import Depends, Request
from sqlalchemy import Connection, func, or_, select
from starlette.responses import Response

from lianjie import ledger
from lianjie import payments as pay
from lianjie.api.runtime import runtime
from lianjie.console import audit, i18n
from lianjie.console.operators import ConsoleRole, Operator
from lianjie.console.registry import Page, register
from lianjie.console.web import PREFIX, act, guard, read_form, render
from lianjie.errors import DomainError, ErrorCode
from lianjie.payments import PartyKind
from lianjie.payments.schema import orders, parties

MERCHANTS = register(Page("merchants", "/merchants", "nav.merchants", order=20))
SPS = register(Page("service_providers", "/service_providers", "nav.service_providers",
                    order=30))
Viewer = Annotated[Operator, Depends(guard(MERCHANTS))]
KYC_ROLES = frozenset({ConsoleRole.ADMIN, ConsoleRole.RISK_ANALYST})
FREEZE_ROLES = frozenset({ConsoleRole.ADMIN, ConsoleRole.RISK_ANALYST})
FEE_ROLES = frozenset({ConsoleRole.ADMIN, ConsoleRole.FINANCE})
ONBOARD_ROLES = frozenset({ConsoleRole.ADMIN})
PAGE_SIZE = 50
QUERY_LENGTH_MAX = 100

i18n.add_messages({
    "nav.merchants": ("Merchants", "商户"),
    "nav.service_providers": ("Service providers", "服务商"),
    "merchants.search": ("Name or id", "名称或编号"),
    "merchants.sp": ("Service provider", "服务商"),
    "merchants.business_type": ("Business type", "经营类别"),
    "merchants.fee_rate": ("Fee rate (bps)", "费率（基点）"),
    "merchants.commission": ("Commission share (bps)", "分润比例（基点）"),
    "merchants.orders": ("Recent payments", "最近交易"),
    "merchants.accounts": ("Ledger accounts", "账户"),
    "merchants.audit": ("Operator actions", "操作记录"),
    "merchants.count": ("Merchants", "商户数"),
    "merchants.onboard": ("Onboard a merchant", "新增商户"),
    "action.kyc_approve": ("Approve KYC", "通过实名审核"),
    "action.kyc_reject": ("Reject KYC", "驳回实名审核"),
    "action.kyc": ("decide KYC", "实名审核"),
    "action.fee_rate": ("change the fee rate", "修改费率"),
    "action.set_fee_rate": ("Set fee rate", "设置费率"),
    "action.freeze": ("Freeze", "冻结"),
    "action.unfreeze": ("Unfreeze", "解冻"),
    "action.freeze_party": ("freeze or unfreeze", "冻结或解冻"),
    "action.onboard": ("onboard a merchant", "新增商户"),
    "action.logout": ("log out", "退出"),
    "confirm.freeze": ("Freeze this party and all its accounts?", "确定冻结该主体及其全部账户？"),
})


def search_parties(conn: Connection, kind: PartyKind, q: str, kyc: str, status: str,
                   offset: int) -> list[pay.Party]:
    query = select(parties.c.id).where(parties.c.kind == kind.value)
    if q:
        like = f"%{q.lower()}%"
        query = query.where(or_(parties.c.id == q, parties.c.parent_id == q,
                                func.lower(parties.c.name).like(like)))
    if kyc:
        query = query.where(parties.c.kyc_status == kyc)
    if status:
        query = query.where(parties.c.status == status)
    ids = conn.execute(query.order_by(parties.c.created_at.desc(), parties.c.id)
                       .offset(offset).limit(PAGE_SIZE + 1)).scalars().all()
    return [p for p in (pay.get_party(conn, i) for i in ids) if p is not None]


def _args(q: str | None, offset: int) -> tuple[str, int]:
    return (q or "").strip()[:QUERY_LENGTH_MAX], max(0, min(offset, 1_000_000))


@MERCHANTS.router.get("/merchants")
async def merchants(request: Request, op: Viewer, q: str | None = None, kyc: str = "",
                    status: str = "", offset: int = 0) -> Response:
    text, offset = _args(q, offset)
    found = await runtime(request).read(
        lambda c: search_parties(c, PartyKind.MERCHANT, text, kyc, status, offset))
    return render(request, op, "merchants.html", merchants=found[:PAGE_SIZE], q=text, kyc=kyc,
                  status=status, offset=offset, has_more=len(found) > PAGE_SIZE,
                  can_onboard=op.role in ONBOARD_ROLES,
                  business_types=sorted(runtime(request).cfg.business_types))


def _detail(conn: Connection, merchant_id: str) -> dict[str, Any] | None:
    merchant = pay.get_party(conn, merchant_id)
    if merchant is None or merchant.kind not in (PartyKind.MERCHANT,
                                                 PartyKind.SERVICE_PROVIDER):
        return None
    sp = pay.get_party(conn, merchant.parent_id) if merchant.parent_id else None
    column = orders.c.merchant_id if merchant.kind == PartyKind.MERCHANT else orders.c.sp_id
    recent = conn.execute(select(orders).where(column == merchant_id)
                          .order_by(orders.c.created_at.desc()).limit(20)).all()
    subs = pay.list_parties(conn, PartyKind.MERCHANT, parent_id=merchant_id, limit=100) \
        if merchant.kind == PartyKind.SERVICE_PROVIDER else []
    return {"party": merchant, "sp": sp, "orders": recent, "subs": subs,
            "accounts": ledger.accounts_of(conn, merchant_id),
            "audit": audit.recent(conn, target=merchant_id, limit=20)}


@MERCHANTS.router.get("/merchants/{party_id}")
@SPS.router.get("/service_providers/{party_id}")
async def party_detail(request: Request, party_id: str, op: Viewer) -> Response:
    found = await runtime(request).read(lambda c: _detail(c, party_id))
    if found is None:
        return render(request, op, "not_found.html", status_code=404, what=party_id)
    return render(request, op, "party.html", **found, kyc_roles=KYC_ROLES,
                  freeze_roles=FREEZE_ROLES, fee_roles=FEE_ROLES)


def _snapshot(party: pay.Party) -> dict[str, Any]:
    keep = ("status", "kyc_status", "fee_rate_bps")
    return {k: v for k, v in asdict(party).items() if k in keep}


def _back(party_id: str) -> str:
    return f"{PREFIX}/{'service_providers' if party_id.startswith('sp_') else 'merchants'}/" \
           f"{party_id}"


@MERCHANTS.router.post("/merchants/{merchant_id}/kyc")
async def decide_kyc(request: Request, merchant_id: str, op: Viewer) -> Response:
    decision = (await read_form(request)).get("decision")

    def change(conn: Connection, now: datetime) -> tuple[dict[str, Any], dict[str, Any]]:
        if decision not in ("approved", "rejected"):
            raise DomainError(ErrorCode.INVALID_REQUEST, "decision must be approved or rejected",
                              "decision")
        before = _snapshot(pay.require_party(conn, merchant_id, PartyKind.MERCHANT))
        after = pay.do_decide_kyc(conn, now, merchant_id, decision == "approved")
        return before, _snapshot(after)

    return await act(request, op, action="kyc", target=merchant_id, roles=KYC_ROLES,
                     change=change, back=_back(merchant_id))


@MERCHANTS.router.post("/merchants/{merchant_id}/fee_rate")
async def set_fee_rate(request: Request, merchant_id: str, op: Viewer) -> Response:
    raw = (await read_form(request)).get("fee_rate_bps", "").strip()
    cfg = runtime(request).cfg

    def change(conn: Connection, now: datetime) -> tuple[dict[str, Any], dict[str, Any]]:
        if not (raw.isascii() and raw.isdigit()) or len(raw) > 6:
            raise DomainError(ErrorCode.FEE_RATE_OUT_OF_BOUNDS,
                              "fee_rate_bps must be a whole number of basis points",
                              "fee_rate_bps")
        before = _snapshot(pay.require_party(conn, merchant_id, PartyKind.MERCHANT))
        after = pay.do_set_fee_rate(conn, now, cfg, merchant_id, int(raw))
        return before, _snapshot(after)

    return await act(request, op, action="fee_rate", target=merchant_id, roles=FEE_ROLES,
                     change=change, back=_back(merchant_id))


async def _freeze(request: Request, party_id: str, op: Operator, frozen: bool) -> Response:
    def change(conn: Connection, now: datetime) -> tuple[dict[str, Any], dict[str, Any]]:
        before = _snapshot(pay.require_party(conn, party_id))
        return before, _snapshot(pay.do_set_frozen(conn, now, party_id, frozen))

    return await act(request, op, action="freeze" if frozen else "unfreeze", target=party_id,
                     roles=FREEZE_ROLES, change=change, back=_back(party_id))


@MERCHANTS.router.post("/parties/{party_id}/freeze")
async def freeze(request: Request, party_id: str, op: Viewer) -> Response:
    return await _freeze(request, party_id, op, True)


@MERCHANTS.router.post("/parties/{party_id}/unfreeze")
async def unfreeze(request: Request, party_id: str, op: Viewer) -> Response:
    return await _freeze(request, party_id, op, False)


@MERCHANTS.router.post("/merchants")
async def onboard(request: Request, op: Viewer) -> Response:
    form = await read_form(request)
    rt = runtime(request)
    created: list[str] = []

    def change(conn: Connection, now: datetime) -> tuple[None, dict[str, Any]]:
        rate = form.get("fee_rate_bps", "").strip()
        merchant = pay.do_onboard_merchant(
            conn, now, rt.cfg, form.get("name", ""), sp_id=form.get("service_provider_id") or None,
            business_type=form.get("business_type", "other"),
            fee_rate_bps=int(rate) if rate.isascii() and rate.isdigit() and len(rate) < 7
            else None)
        created.append(merchant.id)
        return None, {"id": merchant.id, "name": merchant.name}

    response = await act(request, op, action="onboard", target=None, roles=ONBOARD_ROLES,
                         change=change, back=f"{PREFIX}/merchants")
    if created:
        response.headers["location"] = f"{PREFIX}/merchants/{created[0]}"
    return response


@SPS.router.get("/service_providers")
async def service_providers(request: Request, op: Viewer, q: str | None = None,
                            offset: int = 0) -> Response:
    text, offset = _args(q, offset)

    def read(conn: Connection) -> tuple[list[pay.Party], dict[str, int]]:
        found = search_parties(conn, PartyKind.SERVICE_PROVIDER, text, "", "", offset)
        counts: dict[str, int] = dict(conn.execute(
            select(parties.c.parent_id, func.count()).where(
                parties.c.kind == PartyKind.MERCHANT.value,
                parties.c.parent_id.in_([p.id for p in found]))
            .group_by(parties.c.parent_id)).tuples().all())
        return found, counts

    found, counts = await runtime(request).read(read)
    return render(request, op, "service_providers.html", sps=found[:PAGE_SIZE], counts=counts,
                  q=text, offset=offset, has_more=len(found) > PAGE_SIZE)
