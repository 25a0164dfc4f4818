"""Routes for parties: service providers, merchants (KYC, fee rate, freezing, stores, static
codes), consumers, institutions, and API keys."""

from __future__ import annotations

import contextlib
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, StrictInt, field_validator
from sqlalchemy import Connection
from sqlalchemy.exc import SQLAlchemyError
from starlette.responses import Response

from lianjie import payments as pay
from lianjie.api import keys, views
from lianjie.api.access import acting_merchant, managing_merchant
from lianjie.api.keys import Principal, Role
from lianjie.api.runtime import Runtime, current_runtime, json, require_role, runtime
from lianjie.errors import DomainError, ErrorCode
from lianjie.payments import PartyKind

router = APIRouter(prefix="/v1")
RT = Annotated[Runtime, Depends(current_runtime)]
PAGE_LIMIT_MAX = 100


class Body(BaseModel):
    """A request body: unknown fields are refused, and so is a NUL character in any string, at
    any depth (PostgreSQL cannot store one in text, SQLite would, and no field needs one)."""

    model_config = ConfigDict(extra="forbid")

    @field_validator("*")
    @classmethod
    def _no_nul(cls, value: Any) -> Any:
        if _has_nul(value):
            raise ValueError("must not contain a NUL character")
        return value


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(_has_nul(v) for v in value)
    return False


class ServiceProviderIn(Body):
    name: str
    commission_share_bps: StrictInt | None = None
    webhook_url: str | None = None


class MerchantIn(Body):
    name: str
    business_type: str = "other"
    fee_rate_bps: StrictInt | None = None
    webhook_url: str | None = None
    service_provider_id: str | None = None


class NameIn(Body):
    name: str


class KycIn(Body):
    decision: Literal["approved", "rejected"]


class FeeRateIn(Body):
    fee_rate_bps: StrictInt


class QrCodeIn(Body):
    description: str
    store_id: str | None = None


class KeyIn(Body):
    party_id: str
    label: str | None = None


async def _principal(request: Request) -> Principal:
    return await runtime(request).principal(request)


Caller = Annotated[Principal, Depends(_principal)]
_ROLE_OF = {PartyKind.SERVICE_PROVIDER: Role.SERVICE_PROVIDER, PartyKind.MERCHANT: Role.MERCHANT,
            PartyKind.CONSUMER: Role.CONSUMER, PartyKind.INSTITUTION: Role.INSTITUTION,
            PartyKind.PLATFORM: Role.OPERATOR}


def _with_key(conn: Connection, rt: Runtime, party: pay.Party) -> dict[str, Any]:
    """A new party's JSON with its first API key and, for merchants and service providers, the
    secret that signs their webhooks: the only time either is shown."""
    _key_id, secret = keys.do_issue_key(conn, rt.clock.now(), party.id, _ROLE_OF[party.kind])
    out = {**views.party(party), "api_key": secret}
    if party.webhook_secret:
        out["webhook_secret"] = party.webhook_secret
    return out


@router.post("/service_providers", status_code=201, tags=["parties"])
async def create_service_provider(body: ServiceProviderIn, request: Request, rt: RT,
                                  p: Caller) -> Response:
    require_role(p, Role.OPERATOR)

    def action(conn: Connection) -> tuple[int, dict[str, Any]]:
        sp = pay.do_create_service_provider(conn, rt.clock.now(), rt.cfg, body.name,
                                            body.commission_share_bps, body.webhook_url)
        return 201, _with_key(conn, rt, sp)

    return await rt.mutate(request, p, action)


@router.post("/merchants", status_code=201, tags=["parties"])
async def onboard_merchant(body: MerchantIn, request: Request, rt: RT, p: Caller) -> Response:
    require_role(p, Role.OPERATOR, Role.SERVICE_PROVIDER)
    sp_id = p.party_id if p.role == Role.SERVICE_PROVIDER else body.service_provider_id
    if p.role == Role.SERVICE_PROVIDER and body.service_provider_id not in (None, p.party_id):
        raise DomainError(ErrorCode.FORBIDDEN, "a service provider onboards its own merchants",
                          "service_provider_id")

    def action(conn: Connection) -> tuple[int, dict[str, Any]]:
        merchant = pay.do_onboard_merchant(conn, rt.clock.now(), rt.cfg, body.name, sp_id=sp_id,
                                           business_type=body.business_type,
                                           fee_rate_bps=body.fee_rate_bps,
                                           webhook_url=body.webhook_url)
        return 201, _with_key(conn, rt, merchant)

    return await rt.mutate(request, p, action)


@router.get("/merchants", tags=["parties"])
async def list_merchants(rt: RT, p: Caller, after: str | None = None,
                         limit: Annotated[int, Query(ge=1, le=PAGE_LIMIT_MAX)] = 20) -> Response:
    require_role(p, Role.OPERATOR, Role.SERVICE_PROVIDER)
    parent = p.party_id if p.role == Role.SERVICE_PROVIDER else None
    found = await rt.read(lambda c: pay.list_parties(c, PartyKind.MERCHANT, parent_id=parent,
                                                     after=after, limit=limit + 1))
    return json(views.page([views.party(m) for m in found], limit))


@router.get("/merchants/{merchant_id}", tags=["parties"])
async def get_merchant(merchant_id: str, rt: RT, p: Caller) -> Response:
    merchant = await rt.read(lambda c: managing_merchant(c, p, merchant_id))
    return json(views.party(merchant))


@router.post("/merchants/{merchant_id}/kyc", tags=["parties"])
async def decide_kyc(merchant_id: str, body: KycIn, request: Request, rt: RT,
                     p: Caller) -> Response:
    require_role(p, Role.OPERATOR)

    def action(conn: Connection) -> tuple[int, dict[str, Any]]:
        merchant = pay.do_decide_kyc(conn, rt.clock.now(), merchant_id,
                                     body.decision == "approved")
        return 200, views.party(merchant)

    return await rt.mutate(request, p, action)


@router.post("/merchants/{merchant_id}/fee_rate", tags=["parties"])
async def set_fee_rate(merchant_id: str, body: FeeRateIn, request: Request, rt: RT,
                       p: Caller) -> Response:
    require_role(p, Role.OPERATOR, Role.SERVICE_PROVIDER)

    def action(conn: Connection) -> tuple[int, dict[str, Any]]:
        acting_merchant(conn, p, merchant_id)
        merchant = pay.do_set_fee_rate(conn, rt.clock.now(), rt.cfg, merchant_id,
                                       body.fee_rate_bps)
        return 200, views.party(merchant)

    return await rt.mutate(request, p, action)


async def _set_frozen(party_id: str, frozen: bool, request: Request, rt: Runtime,
                      p: Principal) -> Response:
    require_role(p, Role.OPERATOR)

    def action(conn: Connection) -> tuple[int, dict[str, Any]]:
        return 200, views.party(pay.do_set_frozen(conn, rt.clock.now(), party_id, frozen))

    return await rt.mutate(request, p, action)


@router.post("/parties/{party_id}/freeze", tags=["parties"])
async def freeze(party_id: str, request: Request, rt: RT, p: Caller) -> Response:
    return await _set_frozen(party_id, True, request, rt, p)


@router.post("/parties/{party_id}/unfreeze", tags=["parties"])
async def unfreeze(party_id: str, request: Request, rt: RT, p: Caller) -> Response:
    return await _set_frozen(party_id, False, request, rt, p)


@router.get("/parties/{party_id}", tags=["parties"])
async def get_party(party_id: str, rt: RT, p: Caller) -> Response:
    if p.role != Role.OPERATOR and p.party_id != party_id:
        raise DomainError(ErrorCode.PARTY_NOT_FOUND, f"no party {party_id!r}", "id")
    party = await rt.read(lambda c: pay.require_party(c, party_id))
    return json(views.party(party))


@router.post("/merchants/{merchant_id}/stores", status_code=201, tags=["parties"])
async def create_store(merchant_id: str, body: NameIn, request: Request, rt: RT,
                       p: Caller) -> Response:
    def action(conn: Connection) -> tuple[int, dict[str, Any]]:
        acting_merchant(conn, p, merchant_id)
        return 201, views.store(pay.do_create_store(conn, rt.clock.now(), merchant_id,
                                                    body.name))

    return await rt.mutate(request, p, action)


@router.post("/merchants/{merchant_id}/qr_codes", status_code=201, tags=["parties"])
async def create_qr_code(merchant_id: str, body: QrCodeIn, request: Request, rt: RT,
                         p: Caller) -> Response:
    def action(conn: Connection) -> tuple[int, dict[str, Any]]:
        acting_merchant(conn, p, merchant_id)
        code = pay.do_create_qr_code(conn, rt.clock.now(), rt.cfg, merchant_id,
                                     body.description, body.store_id)
        return 201, views.qr_code(code, rt.cfg)

    return await rt.mutate(request, p, action)


@router.get("/qr_codes/{qr_code_id}", tags=["parties"])
async def get_qr_code(qr_code_id: str, rt: RT, p: Caller) -> Response:
    code = await rt.read(lambda c: pay.get_qr_code(c, qr_code_id))
    if code is None:
        raise DomainError(ErrorCode.QR_CODE_NOT_FOUND, f"no code {qr_code_id!r}", "id")
    return json(views.qr_code(code, rt.cfg))


@router.get("/qr_codes/{qr_code_id}/qr.{kind}", tags=["parties"])
async def qr_code_image(qr_code_id: str, kind: Literal["png", "svg"], rt: RT,
                        p: Caller) -> Response:
    code = await rt.read(lambda c: pay.get_qr_code(c, qr_code_id))
    if code is None:
        raise DomainError(ErrorCode.QR_CODE_NOT_FOUND, f"no code {qr_code_id!r}", "id")
    content = pay.static_content(rt.cfg.base_url, code.id)
    media = "image/png" if kind == "png" else "image/svg+xml"
    return Response(pay.render(content, kind), media_type=media)


@router.post("/consumers", status_code=201, tags=["parties"])
async def create_consumer(body: NameIn, request: Request, rt: RT, p: Caller) -> Response:
    require_role(p, Role.OPERATOR)

    def action(conn: Connection) -> tuple[int, dict[str, Any]]:
        return 201, _with_key(conn, rt, pay.do_create_consumer(conn, rt.clock.now(), rt.cfg,
                                                               body.name))

    return await rt.mutate(request, p, action)


@router.post("/institutions", status_code=201, tags=["parties"])
async def create_institution(body: NameIn, request: Request, rt: RT, p: Caller) -> Response:
    require_role(p, Role.OPERATOR)

    def action(conn: Connection) -> tuple[int, dict[str, Any]]:
        return 201, _with_key(conn, rt, pay.do_create_institution(conn, rt.clock.now(), rt.cfg,
                                                                  body.name))

    return await rt.mutate(request, p, action)


@router.post("/api_keys", status_code=201, tags=["parties"])
async def issue_key(body: KeyIn, request: Request, rt: RT, p: Caller) -> Response:
    require_role(p, Role.OPERATOR)

    def action(conn: Connection) -> tuple[int, dict[str, Any]]:
        party = pay.require_party(conn, body.party_id, param="party_id")
        key_id, secret = keys.do_issue_key(conn, rt.clock.now(), party.id, _ROLE_OF[party.kind],
                                           body.label)
        return 201, {"id": key_id, "object": "api_key", "party_id": party.id,
                     "role": _ROLE_OF[party.kind].value, "secret": secret}

    return await rt.mutate(request, p, action)


@router.post("/api_keys/{key_id}/revoke", tags=["parties"])
async def revoke_key(key_id: str, request: Request, rt: RT, p: Caller) -> Response:
    require_role(p, Role.OPERATOR)

    def action(conn: Connection) -> tuple[int, dict[str, Any]]:
        keys.do_revoke_key(conn, rt.clock.now(), key_id)
        return 200, {"id": key_id, "object": "api_key", "revoked": True}

    response = await rt.mutate(request, p, action)
    # This process forgets the key at once, the others when their RevocationWatcher reads the
    # revocation epoch; observing the new epoch here also refuses a lookup that read the key
    # before it was revoked (or the watcher's next read does, should this one fail).
    rt.key_cache.clear()
    with contextlib.suppress(SQLAlchemyError):
        rt.key_cache.observe(await rt.read(keys.revocation_epoch))
    return response
