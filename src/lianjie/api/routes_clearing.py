"""Routes for end of day, signed heads and proofs, statements, e-receipts and reconciliation.

Operators run end of day and resolve reconciliation breaks; an institution reads its own
statements and positions and uploads its files; a merchant (or its service provider) reads its
own statements and settlements; any key may fetch the public key, signed heads and proofs, and
verify a receipt.
"""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any, Literal

import anyio
from fastapi import APIRouter, Depends, Query, Request
from pydantic import StrictInt
from sqlalchemy import Connection, select
from starlette.responses import Response

from lianjie import clearing
from lianjie.api import idempotency
from lianjie.api.access import owner_visible, visible_order
from lianjie.api.keys import Principal, Role
from lianjie.api.routes_parties import PAGE_LIMIT_MAX, Body, Caller
from lianjie.api.runtime import Runtime, current_runtime, json, require_role
from lianjie.clearing import log, receipts, recon, statements, terms
from lianjie.clearing import schema as cs
from lianjie.errors import DomainError, ErrorCode

router = APIRouter(prefix="/v1")
RT = Annotated[Runtime, Depends(current_runtime)]
Limit = Annotated[int, Query(ge=1, le=PAGE_LIMIT_MAX)]
MEDIA = {"csv": "text/csv; charset=utf-8", "camt053": "application/xml",
         "mt940": "text/plain; charset=utf-8", "proofs": "application/json"}


def clearing_config(request: Request) -> clearing.ClearingConfig:
    found = getattr(request.app.state, "clearing_config", None)
    return found if isinstance(found, clearing.ClearingConfig) else clearing.ClearingConfig()


class EodIn(Body):
    business_date: date


class ReconIn(Body):
    institution_id: str | None = None
    business_date: date
    format: Literal["csv", "camt053", "mt940"]
    content: str
    currency: str = "CNY"


class CorrectionIn(Body):
    debit_account_id: StrictInt
    credit_account_id: StrictInt
    amount: StrictInt


class TermsIn(Body):
    delay_days: StrictInt
    payout_institution_id: str | None = None


class CapIn(Body):
    net_debit_cap: StrictInt


class ResolveIn(Body):
    reason: str
    correction: CorrectionIn | None = None


@router.post("/clearing/end_of_day", tags=["clearing"])
async def end_of_day(body: EodIn, request: Request, rt: RT, p: Caller) -> Response:
    """Run or resume the end of a business day. Idempotent per day by construction: a rerun
    returns the finished day's report."""
    require_role(p, Role.OPERATOR)
    idempotency.check_key(request.headers.get("idempotency-key"))
    cfg = clearing_config(request)
    report = await anyio.to_thread.run_sync(lambda: clearing.run_end_of_day(
        rt.engine, body.business_date, clock=rt.clock, cfg=cfg))
    return json(report.as_json())


@router.get("/clearing/public_key", tags=["clearing"])
async def public_key(p: Caller) -> Response:
    signer = clearing.load_signer()
    return Response(signer.public_pem, media_type="application/x-pem-file",
                    headers={"Lianjie-Key-Id": signer.key_id})


def _head(conn: Connection, day: date) -> log.Head:
    head = log.get_head(conn, day)
    if head is None:
        raise DomainError(ErrorCode.NOT_LOGGED_YET, f"business day {day} is not sealed",
                          "business_date")
    return head


@router.get("/clearing/heads/{business_date}", tags=["clearing"])
async def signed_head(business_date: date, rt: RT, p: Caller) -> Response:
    head = await rt.read(lambda c: _head(c, business_date))
    return json({**head.as_json(), "business_date": business_date.isoformat(),
                 "tree_size": head.tree_size, "root_hash": head.root_hash.hex()})


@router.get("/clearing/consistency", tags=["clearing"])
async def consistency(rt: RT, p: Caller, first: date, second: date) -> Response:
    def read(conn: Connection) -> dict[str, Any]:
        old, new = _head(conn, first), _head(conn, second)
        if old.tree_size > new.tree_size:
            raise DomainError(ErrorCode.INVALID_REQUEST, "first must not be after second",
                              "first")
        return log.consistency_proof(conn, old, new)

    return json(await rt.read(read))


@router.get("/clearing/statements/{owner_id}/{business_date}.{fmt}", tags=["clearing"])
async def statement(owner_id: str, business_date: date,
                    fmt: Literal["csv", "camt053", "mt940", "proofs"], request: Request, rt: RT,
                    p: Caller) -> Response:
    cfg = clearing_config(request)

    def read(conn: Connection) -> bytes:
        if not owner_visible(p, owner_id, conn):
            raise DomainError(ErrorCode.PARTY_NOT_FOUND, f"no party {owner_id!r}", "owner_id")
        return statements.render(conn, cfg, owner_id, business_date, fmt, rt.clock.now())

    return Response(await rt.read(read), media_type=MEDIA[fmt])


@router.get("/clearing/settlements", tags=["clearing"])
async def settlements(rt: RT, p: Caller, merchant_id: str | None = None,
                      business_date: date | None = None, limit: Limit = 50) -> Response:
    if p.role == Role.MERCHANT:
        merchant_id = p.party_id
    elif p.role != Role.OPERATOR:
        raise DomainError(ErrorCode.FORBIDDEN, "operators and merchants read settlements")

    def read(conn: Connection) -> dict[str, Any]:
        t = cs.settlements
        q = select(t).order_by(t.c.business_date.desc(), t.c.id).limit(limit)
        if merchant_id is not None:
            q = q.where(t.c.merchant_id == merchant_id)
        if business_date is not None:
            q = q.where(t.c.business_date == business_date)
        data = [{"id": r.id, "object": "settlement", "merchant_id": r.merchant_id,
                 "currency": r.currency, "amount": r.amount,
                 "business_date": r.business_date.isoformat(),
                 "value_date": r.value_date.isoformat(), "institution_id": r.institution_id,
                 "entry_id": f"txf_{r.entry_id}",
                 "payout_entry_id": None if r.payout_entry_id is None
                 else f"txf_{r.payout_entry_id}",
                 "status": r.status} for r in conn.execute(q)]
        return {"object": "list", "data": data, "has_more": False, "next_cursor": None}

    return json(await rt.read(read))


@router.get("/clearing/positions/{business_date}", tags=["clearing"])
async def positions(business_date: date, rt: RT, p: Caller) -> Response:
    require_role(p, Role.OPERATOR, Role.INSTITUTION)

    def read(conn: Connection) -> dict[str, Any]:
        t, i = cs.positions, cs.instructions

        def mine(party: str) -> bool:
            return p.role == Role.OPERATOR or party == p.party_id

        pos = [{"object": "clearing_position", "institution_id": r.institution_id,
                "currency": r.currency, "debits": r.debits, "credits": r.credits,
                "net": r.net, "net_debit_cap": r.net_debit_cap, "status": r.status}
               for r in conn.execute(select(t).where(t.c.business_date == business_date)
                                     .order_by(t.c.institution_id)) if mine(r.institution_id)]
        ins = [{"id": r.id, "object": "settlement_instruction", "kind": r.kind,
                "payer_id": r.payer_id, "payee_id": r.payee_id, "amount": r.amount,
                "currency": r.currency, "value_date": r.value_date.isoformat(),
                "reference": r.reference, "status": r.status}
               for r in conn.execute(select(i).where(i.c.business_date == business_date)
                                     .order_by(i.c.reference))
               if mine(r.payer_id) or mine(r.payee_id)]
        return {"object": "clearing_day", "business_date": business_date.isoformat(),
                "positions": pos, "instructions": ins}

    return json(await rt.read(read))


@router.get("/orders/{order_id}/receipt", tags=["clearing"])
async def receipt(order_id: str, rt: RT, p: Caller) -> Response:
    def read(conn: Connection) -> dict[str, Any]:
        return receipts.receipt_for(conn, visible_order(conn, p, order_id))

    return json(await rt.read(read))


@router.post("/receipts/verify", tags=["clearing"])
async def verify_receipt(request: Request, p: Caller) -> Response:
    """Check a receipt against the platform's key. It changes nothing, but takes an
    Idempotency-Key like every POST."""
    idempotency.check_key(request.headers.get("idempotency-key"))
    try:
        doc = await request.json()
    except ValueError as exc:
        raise DomainError(ErrorCode.INVALID_JSON, "the body is not JSON") from exc
    try:
        return json(receipts.check_receipt(doc, clearing.load_signer()))
    except DomainError as exc:
        if exc.code == ErrorCode.INVALID_REQUEST:  # not a receipt at all: a verdict, not 400
            return json({"object": "receipt_verification", "ok": False,
                         "code": "malformed", "message": exc.message})
        raise


def _institution(p: Principal, named: str | None) -> str:
    if p.role == Role.INSTITUTION:
        if named not in (None, p.party_id):
            raise DomainError(ErrorCode.FORBIDDEN, "an institution reconciles its own files",
                              "institution_id")
        return p.party_id
    require_role(p, Role.OPERATOR)
    if named is None:
        raise DomainError(ErrorCode.INVALID_REQUEST, "institution_id is required",
                          "institution_id")
    return named


@router.post("/clearing/reconciliations", status_code=201, tags=["clearing"])
async def import_file(body: ReconIn, request: Request, rt: RT, p: Caller) -> Response:
    institution = _institution(p, body.institution_id)
    cfg = clearing_config(request)

    def action(conn: Connection) -> tuple[int, dict[str, Any]]:
        return 201, recon.do_import(conn, rt.clock.now(), cfg, institution, body.business_date,
                                    body.format, body.content.encode(), body.currency)

    return await rt.mutate(request, p, action)


@router.get("/clearing/reconciliations/{import_id}", tags=["clearing"])
async def get_reconciliation(import_id: str, rt: RT, p: Caller) -> Response:
    require_role(p, Role.OPERATOR, Role.INSTITUTION)

    def read(conn: Connection) -> dict[str, Any]:
        found = recon.get_import(conn, import_id)
        if p.role == Role.INSTITUTION and found["institution_id"] != p.party_id:
            raise DomainError(ErrorCode.NOT_FOUND, f"no reconciliation {import_id}", "id")
        return found

    return json(await rt.read(read))


@router.post("/clearing/reconciliation_items/{item_id}/resolve", tags=["clearing"])
async def resolve(item_id: str, body: ResolveIn, request: Request, rt: RT,
                  p: Caller) -> Response:
    require_role(p, Role.OPERATOR)
    c = body.correction
    correction = None if c is None else (c.debit_account_id, c.credit_account_id, c.amount)

    def action(conn: Connection) -> tuple[int, dict[str, Any]]:
        return 200, recon.do_resolve(conn, rt.clock.now(), item_id, body.reason,
                                     correction=correction)

    return await rt.mutate(request, p, action)


@router.post("/clearing/merchant_terms/{merchant_id}", tags=["clearing"])
async def set_terms(merchant_id: str, body: TermsIn, request: Request, rt: RT,
                    p: Caller) -> Response:
    """A merchant's settlement delay (0: T+0, 1: T+1, ...) and the institution paying it."""
    require_role(p, Role.OPERATOR)
    cfg = clearing_config(request)

    def action(conn: Connection) -> tuple[int, dict[str, Any]]:
        return 200, terms.do_set_settlement_terms(conn, rt.clock.now(), cfg, merchant_id,
                                                  body.delay_days, body.payout_institution_id)

    return await rt.mutate(request, p, action)


@router.post("/clearing/net_debit_caps/{institution_id}", tags=["clearing"])
async def set_cap(institution_id: str, body: CapIn, request: Request, rt: RT,
                  p: Caller) -> Response:
    require_role(p, Role.OPERATOR)

    def action(conn: Connection) -> tuple[int, dict[str, Any]]:
        return 200, terms.do_set_net_debit_cap(conn, rt.clock.now(), institution_id,
                                               body.net_debit_cap)

    return await rt.mutate(request, p, action)
