"""Routes of the risk engine, for operators: review cases, rule sets, lists, models, decisions
and backtests."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import anyio
import orjson
from fastapi import APIRouter, Depends, Query, Request
from pydantic import Field, StrictBool, StrictInt
from sqlalchemy import Connection, select
from starlette.responses import Response

from lianjie import risk
from lianjie.api import idempotency, views
from lianjie.api.keys import Principal, Role
from lianjie.api.routes_parties import PAGE_LIMIT_MAX, Body, Caller
from lianjie.api.runtime import Runtime, current_runtime, json, require_role
from lianjie.errors import DomainError, ErrorCode
from lianjie.risk import model as models
from lianjie.risk import rules as rulesets
from lianjie.risk import schema, store, training

router = APIRouter(prefix="/v1/risk", tags=["risk"])
RT = Annotated[Runtime, Depends(current_runtime)]
Limit = Annotated[int, Query(ge=1, le=PAGE_LIMIT_MAX)]
CSV_LENGTH_MAX = 20_000_000


class DecisionIn(Body):
    approve: StrictBool
    note: str | None = None


class RuleIn(Body):
    name: str
    expression: str
    action: Literal["block", "review", "allow", "score"] = "score"
    weight: float = 0.0
    enabled: StrictBool = True
    shadow: StrictBool = False
    description: str | None = None


class RuleSetIn(Body):
    rules: list[RuleIn]
    review_score: float = rulesets.REVIEW_SCORE_DEFAULT
    block_score: float = rulesets.BLOCK_SCORE_DEFAULT
    note: str | None = None
    activate: StrictBool = True


class ListIn(Body):
    list: Literal["block", "allow"]
    value: str
    ttl_s: StrictInt | None = None
    reason: str | None = None


class BacktestIn(Body):
    since: datetime | None = None
    until: datetime | None = None
    rules: list[RuleIn] | None = None  # a candidate set; none: the active one
    review_score: float = rulesets.REVIEW_SCORE_DEFAULT
    block_score: float = rulesets.BLOCK_SCORE_DEFAULT
    model_version: StrictInt | None = None  # none: the active model; 0: no model


def _operator(p: Principal) -> Principal:
    require_role(p, Role.OPERATOR)
    return p


def _rule(r: RuleIn) -> rulesets.Rule:
    return rulesets.Rule(r.name, r.expression, r.action, r.weight, r.enabled, r.shadow,
                         r.description)


@router.get("/cases")
async def list_cases(rt: RT, p: Caller, status: str | None = None, after: str | None = None,
                     limit: Limit = 20) -> Response:
    _operator(p)
    found = await rt.read(lambda c: risk.list_cases(c, status=status, after=after,
                                                    limit=limit + 1))
    return json(views.page([risk.case_payload(x) for x in found], limit))


@router.get("/cases/{case_id}")
async def get_case(case_id: str, rt: RT, p: Caller) -> Response:
    _operator(p)
    return json(risk.case_payload(await rt.read(lambda c: risk.get_case(c, case_id))))


@router.post("/cases/{case_id}/claim")
async def claim_case(case_id: str, request: Request, rt: RT, p: Caller) -> Response:
    _operator(p)

    def action(conn: Connection) -> tuple[int, dict[str, Any]]:
        return 200, risk.case_payload(risk.do_claim(conn, rt.clock.now(), case_id, p.key_id))

    return await rt.mutate(request, p, action)


@router.post("/cases/{case_id}/decision")
async def decide_case(case_id: str, body: DecisionIn, request: Request, rt: RT,
                      p: Caller) -> Response:
    _operator(p)

    def action(conn: Connection) -> tuple[int, dict[str, Any]]:
        case = risk.do_decide(conn, rt.clock.now(), case_id, p.key_id, body.approve, body.note)
        return 200, risk.case_payload(case)

    return await rt.mutate(request, p, action)


def _decision_view(r: Any) -> dict[str, Any]:
    return {"id": r.id, "object": "risk_decision", "kind": r.kind, "subject_id": r.subject_id,
            "actor_id": r.actor_id, "counterparty_id": r.counterparty_id, "sp_id": r.sp_id,
            "device_id": r.device_id, "client_ip": r.client_ip, "amount": r.amount,
            "currency": r.currency, "outcome": r.outcome, "score": r.score,
            "rules_version": r.rules_version, "model_version": r.model_version,
            "fired": orjson.loads(r.fired), "reasons": orjson.loads(r.reasons),
            "features": orjson.loads(r.features), "label": r.label,
            "created_at": r.created_at.isoformat()}


@router.get("/decisions")
async def list_decisions(rt: RT, p: Caller, subject_id: str | None = None,
                         outcome: str | None = None, limit: Limit = 20) -> Response:
    _operator(p)
    t = schema.decisions

    def read(conn: Connection) -> dict[str, Any]:
        query = select(t).order_by(t.c.seq.desc()).limit(limit)
        if subject_id is not None:
            query = query.where(t.c.subject_id == subject_id)
        if outcome is not None:
            query = query.where(t.c.outcome == outcome)
        items = [_decision_view(r) for r in conn.execute(query)]
        return {"object": "list", "data": items, "has_more": False, "next_cursor": None}

    return json(await rt.read(read))


@router.get("/rules")
async def active_rules(rt: RT, p: Caller) -> Response:
    _operator(p)

    def read(conn: Connection) -> dict[str, Any]:
        rs = rulesets.load_active(conn, store.get_versions(conn).rules)
        return {"object": "risk_rule_set", "version": rs.version,
                "review_score": rs.review_score, "block_score": rs.block_score,
                "rules": [rulesets.rule_json(r) for r in rs.rules]}

    return json(await rt.read(read))


@router.post("/rule_sets", status_code=201)
async def publish_rules(body: RuleSetIn, request: Request, rt: RT, p: Caller) -> Response:
    _operator(p)

    def action(conn: Connection) -> tuple[int, dict[str, Any]]:
        rs = rulesets.do_publish(conn, rt.clock.now(), [_rule(r) for r in body.rules],
                                 review_score=body.review_score, block_score=body.block_score,
                                 note=body.note, activate=body.activate)
        return 201, {"object": "risk_rule_set", "version": rs.version,
                     "active": body.activate, "rules": len(rs.rules)}

    return await rt.mutate(request, p, action)


@router.post("/rule_sets/{version}/activate")
async def activate_rules(version: int, request: Request, rt: RT, p: Caller) -> Response:
    _operator(p)

    def action(conn: Connection) -> tuple[int, dict[str, Any]]:
        rulesets.do_activate(conn, version)
        return 200, {"object": "risk_rule_set", "version": version, "active": True}

    return await rt.mutate(request, p, action)


def _list_view(e: store.ListEntry) -> dict[str, Any]:
    return {"object": "risk_list_entry", "list": e.list, "value": e.value, "reason": e.reason,
            "expires_at": e.expires_at.isoformat() if e.expires_at else None,
            "created_at": e.created_at.isoformat()}


@router.get("/lists")
async def list_lists(rt: RT, p: Caller, list: str | None = None) -> Response:
    _operator(p)
    found = await rt.read(lambda c: store.list_entries(c, list, limit=PAGE_LIMIT_MAX))
    return json({"object": "list", "data": [_list_view(e) for e in found], "has_more": False,
                 "next_cursor": None})


@router.post("/lists", status_code=201)
async def add_to_list(body: ListIn, request: Request, rt: RT, p: Caller) -> Response:
    _operator(p)

    def action(conn: Connection) -> tuple[int, dict[str, Any]]:
        entry = store.do_add_to_list(conn, rt.clock.now(), body.list, body.value,
                                     ttl_s=body.ttl_s, reason=body.reason)
        return 201, _list_view(entry)

    return await rt.mutate(request, p, action)


@router.post("/lists/{list_name}/{value}/remove")
async def remove_from_list(list_name: str, value: str, request: Request, rt: RT,
                           p: Caller) -> Response:
    _operator(p)

    def action(conn: Connection) -> tuple[int, dict[str, Any]]:
        if not store.do_remove_from_list(conn, list_name, value):
            raise DomainError(ErrorCode.NOT_FOUND, f"{value!r} is not on the {list_name} list",
                              "value")
        return 200, {"object": "risk_list_entry", "list": list_name, "value": value,
                     "deleted": True}

    return await rt.mutate(request, p, action)


@router.get("/models")
async def list_models(rt: RT, p: Caller) -> Response:
    _operator(p)

    def read(conn: Connection) -> dict[str, Any]:
        return {"object": "list", "data": models.list_models(conn), "has_more": False,
                "next_cursor": None, "active_version": store.get_versions(conn).model}

    return json(await rt.read(read))


class TrainIn(Body):
    csv: str | None = Field(default=None, max_length=CSV_LENGTH_MAX)
    test_share: float = Field(default=0.25, gt=0, lt=1)
    fpr_max: float = Field(default=0.001, gt=0, lt=1)


@router.post("/models/train", status_code=201)
async def train_model(body: TrainIn, request: Request, rt: RT, p: Caller) -> Response:
    """Train on the labelled decisions (case outcomes and imported labels), or on a labelled
    CSV sent as ``csv``, and register the model as the next version if it loads. Its threshold
    is chosen for the active rule set and the model together (``training.train``)."""
    _operator(p)
    idempotency.check_key(request.headers.get("idempotency-key"))
    if body.csv is not None:
        data = training.from_csv_text(body.csv)
    else:
        data = await rt.read(lambda c: training.from_decisions(c, labelled_only=True))
    rule_set = await rt.read(training.active_rule_set)
    text, metrics = await anyio.to_thread.run_sync(
        lambda: training.train(data, rule_set=rule_set, test_share=body.test_share,
                               fpr_max=body.fpr_max))

    def action(conn: Connection) -> tuple[int, dict[str, Any]]:
        version = models.do_register(conn, rt.clock.now(), text, risk.MODEL_FEATURES, metrics)
        return 201, {"object": "risk_model", "version": version, "metrics": metrics}

    return await rt.mutate(request, p, action)


@router.post("/backtests")
async def backtest(body: BacktestIn, request: Request, rt: RT, p: Caller) -> Response:
    """Replay logged decisions against a candidate rule set and model (a read: nothing
    changes)."""
    _operator(p)
    idempotency.check_key(request.headers.get("idempotency-key"))

    def read(conn: Connection) -> dict[str, Any]:
        versions = store.get_versions(conn)
        candidate = rulesets.RuleSet(-1, tuple(_rule(r) for r in body.rules),
                                     body.review_score, body.block_score) \
            if body.rules is not None else rulesets.load_active(conn, versions.rules)
        version = versions.model if body.model_version is None else body.model_version
        model = _model(conn, version)
        data = training.from_decisions(conn, since=body.since, until=body.until)
        return {"object": "risk_backtest", **training.backtest(data, candidate, model)}

    return json(await rt.read(read))


def _model(conn: Connection, version: int) -> models.Model | None:
    if version and conn.execute(select(schema.models.c.version).where(
            schema.models.c.version == version)).first() is None:
        raise DomainError(ErrorCode.NOT_FOUND, f"no model version {version}", "model_version")
    return models.load_active(conn, version)
