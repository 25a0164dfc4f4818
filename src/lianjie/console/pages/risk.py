"""Risk: the review queue (claim, approve or reject a case), the rule sets (publish a new
version, roll back to an older one), the block and allow lists, shadow results and recent
decisions; an overview panel of blocks and reviews per hour and a section on the payment detail
page with the payment's decision.

Every change goes through the risk context's own functions (``do_claim``, ``do_decide``,
``do_publish``, ``do_activate``, ``do_add_to_list``, ``do_remove_from_list``) inside ``act``, so
approving a case posts its ledger hold (and rejecting voids it) exactly as the HTTP API does,
and a rule set that does not compile is refused with the same ``risk_rule_invalid`` message.
Risk analysts and administrators open these pages; the payment section is for everyone.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta
from typing import Annotated, Any

import orjson
from fastapi import Depends, Request
from sqlalchemy import Connection, select
from starlette.responses import Response

from lianjie import payments as pay
from lianjie import risk
from lianjie.api.runtime import runtime
from lianjie.console import i18n
from lianjie.console.charts import HOUR_US, bucketed, hour_labels, series
from lianjie.console.operators import ConsoleRole, Operator
from lianjie.console.pages.payments import Section, register_section
from lianjie.console.registry import Page, Panel, register, register_panel
from lianjie.console.web import PREFIX, act, guard, read_form, render
from lianjie.errors import DomainError, ErrorCode
from lianjie.risk import rules as rulesets
from lianjie.risk import schema, store

RISK_ROLES = frozenset({ConsoleRole.ADMIN, ConsoleRole.RISK_ANALYST})
PAGE = register(Page("risk", "/risk", "nav.risk", roles=RISK_ROLES, order=60))
RULES = register(Page("risk_rules", "/risk/rules", "risk.rules", roles=RISK_ROLES, nav=False))
DECISIONS = register(Page("risk_decisions", "/risk/decisions", "risk.decisions",
                          roles=RISK_ROLES, nav=False))
Viewer = Annotated[Operator, Depends(guard(PAGE))]
RulesViewer = Annotated[Operator, Depends(guard(RULES))]
DecisionsViewer = Annotated[Operator, Depends(guard(DECISIONS))]
QUEUE_MAX = 100
RECENT_MAX = 100
LIST_SHOWN_MAX = 500  # list entries shown on the rules page
SHADOW_WINDOW = timedelta(hours=24)
SHADOW_ROWS_MAX = 200_000  # the shadow table reads at most this many of the day's decisions
OUTCOMES = ("allow", "review", "block")
RULES_TEXT_MAX = 60_000
TTL_HOURS_MAX = store.LIST_TTL_S_MAX // 3600

i18n.add_messages({
    "nav.risk": ("Risk", "风控"),
    "risk.queue": ("Review queue", "待审核队列"),
    "risk.rules": ("Rules and lists", "规则与名单"),
    "risk.decisions": ("Shadow results and decisions", "影子规则与决策记录"),
    "risk.decision": ("Risk decision", "风控决策"),
    "risk.case": ("Case", "案件"),
    "risk.kind": ("Kind", "类型"),
    "risk.subject": ("Subject", "对象"),
    "risk.parties": ("Payer → payee", "付款方 → 收款方"),
    "risk.score": ("Score", "评分"),
    "risk.fired": ("Rules fired", "命中规则"),
    "risk.reasons": ("Model reasons", "模型原因"),
    "risk.assignee": ("Assignee", "处理人"),
    "risk.expires": ("Expires", "到期"),
    "risk.note": ("Note", "备注"),
    "risk.claim": ("Claim", "认领"),
    "risk.approve": ("Approve", "通过"),
    "risk.reject": ("Reject", "拒绝"),
    "risk.active_version": ("Active rule set: version {v}", "当前规则集：版本 {v}"),
    "risk.builtin": ("built-in", "内置"),
    "risk.versions": ("Versions", "版本"),
    "risk.version": ("Version", "版本"),
    "risk.viewing": ("Rules of version {v}", "版本 {v} 的规则"),
    "risk.expression": ("Expression", "表达式"),
    "risk.action": ("Action", "动作"),
    "risk.weight": ("Weight", "权重"),
    "risk.enabled": ("Enabled", "启用"),
    "risk.shadow": ("Shadow", "影子"),
    "risk.description": ("Description", "说明"),
    "risk.review_score": ("Review score", "审核分数线"),
    "risk.block_score": ("Block score", "拦截分数线"),
    "risk.activate": ("Activate", "启用"),
    "risk.active": ("active", "使用中"),
    "risk.view": ("View", "查看"),
    "risk.publish": ("Publish a new version", "发布新版本"),
    "risk.publish_help": ("The rules as a JSON list: name, expression (CEL over the features), "
                          "action (block, review, allow, score), weight, enabled, shadow, "
                          "description. Every rule must compile, or nothing changes.",
                          "规则以 JSON 列表填写：name、expression（基于特征的 CEL 表达式）、"
                          "action（block、review、allow、score）、weight、enabled、shadow、"
                          "description。任何一条规则无法编译则不作任何改动。"),
    "risk.publish_submit": ("Publish and activate", "发布并启用"),
    "risk.lists": ("Block and allow lists", "黑白名单"),
    "risk.list": ("List", "名单"),
    "risk.value": ("Party, device or IP", "主体、设备或 IP"),
    "risk.reason": ("Reason", "原因"),
    "risk.ttl_h": ("Expires in (hours, empty: never)", "有效期（小时，留空为永久）"),
    "risk.never": ("never", "永久"),
    "risk.add": ("Add", "添加"),
    "risk.remove": ("Remove", "移除"),
    "risk.shadow_results": ("Rules fired in the last 24 h", "近 24 小时规则命中"),
    "risk.live_fired": ("Fired (live)", "命中（生效）"),
    "risk.shadow_fired": ("Fired (shadow)", "命中（影子）"),
    "risk.decided_24h": ("{n} decisions in the last 24 h", "近 24 小时共 {n} 次决策"),
    "risk.recent": ("Recent decisions", "最近决策"),
    "risk.label": ("Label", "标注"),
    "risk.label.1": ("fraud", "欺诈"),
    "risk.label.0": ("legitimate", "正常"),
    "risk.no_decision": ("No risk decision for this payment.", "该交易没有风控决策。"),
    "risk.show": ("Show", "查看"),
    "status.claimed": ("claimed", "已认领"),
    "status.reviewing": ("reviewing", "审核中"),
    "status.declined": ("declined", "已拒绝"),
    "status.allow": ("allow", "放行"),
    "status.review": ("review", "人工审核"),
    "status.block": ("block", "拦截"),
    "confirm.risk_reject": ("Reject this case and release the held money?",
                            "确定拒绝该案件并释放冻结资金？"),
    "action.risk_claim": ("claim a risk case", "认领风控案件"),
    "action.risk_decide": ("decide a risk case", "处理风控案件"),
    "action.risk_publish": ("publish a rule set", "发布规则集"),
    "action.risk_activate": ("activate a rule set", "启用规则集"),
    "action.risk_list_add": ("add to a risk list", "加入黑白名单"),
    "action.risk_list_remove": ("remove from a risk list", "移出黑白名单"),
})


# -- reads -----------------------------------------------------------------------------------

def _decision_view(row: Any) -> dict[str, Any]:
    fired = orjson.loads(row.fired)
    return {"id": row.id, "kind": row.kind, "subject_id": row.subject_id,
            "actor_id": row.actor_id, "counterparty_id": row.counterparty_id,
            "amount": row.amount, "currency": row.currency, "outcome": row.outcome,
            "score": row.score, "rules_version": row.rules_version,
            "model_version": row.model_version,
            "fired": [f for f in fired if not f.startswith("shadow:")],
            "shadow": [f.removeprefix("shadow:") for f in fired if f.startswith("shadow:")],
            "reasons": [(name, round(float(v), 3)) for name, v in orjson.loads(row.reasons)],
            "label": row.label, "created_at": row.created_at}


def open_queue(conn: Connection) -> list[dict[str, Any]]:
    """Open and claimed cases, oldest first, each with its decision."""
    c, d = schema.cases, schema.decisions
    cases = conn.execute(select(c).where(c.c.status.in_(("open", "claimed")))
                         .order_by(c.c.created_at, c.c.id).limit(QUEUE_MAX)).all()
    decisions = {r.id: _decision_view(r) for r in conn.execute(
        select(d).where(d.c.id.in_([x.decision_id for x in cases])))}
    return [{**x._mapping, "decision": decisions[x.decision_id]} for x in cases]


def rules_view(conn: Connection, version: int | None) -> dict[str, Any]:
    active = store.get_versions(conn).rules
    versions = rulesets.list_versions(conn)
    known = {v["version"] for v in versions} | {0}
    shown = version if version is not None and version in known else active
    rule_set = rulesets.load_active(conn, shown)
    current = rulesets.load_active(conn, active)
    text = orjson.dumps([rulesets.rule_json(r) for r in current.rules],
                        option=orjson.OPT_INDENT_2).decode()
    return {"active": active, "versions": versions, "shown": shown, "rule_set": rule_set,
            "rules_text": text, "review_score": current.review_score,
            "block_score": current.block_score,
            "entries": store.list_entries(conn, limit=LIST_SHOWN_MAX)}


def shadow_results(conn: Connection, now: datetime) -> tuple[list[dict[str, Any]], int]:
    """Per rule, how often it fired live and in shadow over the last 24 hours."""
    d = schema.decisions
    fired_lists = conn.execute(select(d.c.fired).where(d.c.created_at >= now - SHADOW_WINDOW)
                               .order_by(d.c.seq.desc()).limit(SHADOW_ROWS_MAX)).scalars().all()
    live: Counter[str] = Counter()
    shadow: Counter[str] = Counter()
    for raw in fired_lists:
        for name in orjson.loads(raw):
            if name.startswith("shadow:"):
                shadow[name.removeprefix("shadow:")] += 1
            else:
                live[name] += 1
    active = rulesets.load_active(conn, store.get_versions(conn).rules)
    rows: dict[str, dict[str, Any]] = {
        r.name: {"name": r.name, "shadow_rule": r.shadow, "action": r.action,
                 "live": 0, "shadowed": 0} for r in active.rules}
    for name in set(live) | set(shadow):
        rows.setdefault(name, {"name": name, "shadow_rule": None, "action": "",
                               "live": 0, "shadowed": 0})
        rows[name]["live"], rows[name]["shadowed"] = live[name], shadow[name]
    ordered = sorted(rows.values(), key=lambda r: (-(r["live"] + r["shadowed"]), r["name"]))
    return ordered, len(fired_lists)


def recent_decisions(conn: Connection, outcome: str) -> list[dict[str, Any]]:
    d = schema.decisions
    query = select(d).order_by(d.c.seq.desc()).limit(RECENT_MAX)
    if outcome in OUTCOMES:
        query = query.where(d.c.outcome == outcome)
    return [_decision_view(r) for r in conn.execute(query)]


def payment_decision(conn: Connection, order: pay.Order) -> dict[str, Any]:
    """The order's latest decision (a retried payment may have several) and its case."""
    d, c = schema.decisions, schema.cases
    row = conn.execute(select(d).where(d.c.subject_id == order.id)
                       .order_by(d.c.seq.desc()).limit(1)).first()
    if row is None:
        return {"decision": None, "case": None}
    case = conn.execute(select(c).where(c.c.decision_id == row.id)).first()
    return {"decision": _decision_view(row), "case": case}


# -- pages -----------------------------------------------------------------------------------

@PAGE.router.get("/risk")
async def queue(request: Request, op: Viewer) -> Response:
    cases = await runtime(request).read(open_queue)
    return render(request, op, "risk_queue.html", cases=cases)


@RULES.router.get("/risk/rules")
async def rules_page(request: Request, op: RulesViewer, version: int | None = None
                     ) -> Response:
    view = await runtime(request).read(lambda c: rules_view(c, version))
    return render(request, op, "risk_rules.html", **view, ttl_max=TTL_HOURS_MAX)


@DECISIONS.router.get("/risk/decisions")
async def decisions_page(request: Request, op: DecisionsViewer, outcome: str = "") -> Response:
    rt = runtime(request)
    now = rt.clock.now()

    def read(conn: Connection) -> dict[str, Any]:
        shadow, total = shadow_results(conn, now)
        return {"shadow": shadow, "total": total, "decisions": recent_decisions(conn, outcome)}

    found = await rt.read(read)
    return render(request, op, "risk_decisions.html", **found, outcome=outcome,
                  outcomes=OUTCOMES)


# -- actions ---------------------------------------------------------------------------------

def _case_snapshot(case: risk.Case) -> dict[str, Any]:
    return {"status": case.status, "assignee": case.assignee, "note": case.note}


@PAGE.router.post("/risk/cases/{case_id}/claim")
async def claim(request: Request, case_id: str, op: Viewer) -> Response:
    def change(conn: Connection, now: datetime) -> tuple[dict[str, Any], dict[str, Any]]:
        before = _case_snapshot(risk.get_case(conn, case_id))
        return before, _case_snapshot(risk.do_claim(conn, now, case_id, op.username))

    return await act(request, op, action="risk_claim", target=case_id, roles=RISK_ROLES,
                     change=change, back=f"{PREFIX}/risk")


@PAGE.router.post("/risk/cases/{case_id}/decide")
async def decide(request: Request, case_id: str, op: Viewer) -> Response:
    form = await read_form(request)
    decision, note = form.get("decision", ""), form.get("note", "").strip() or None

    def change(conn: Connection, now: datetime) -> tuple[dict[str, Any], dict[str, Any]]:
        if decision not in ("approve", "reject"):
            raise DomainError(ErrorCode.INVALID_REQUEST, "decision must be approve or reject",
                              "decision")
        before = _case_snapshot(risk.get_case(conn, case_id))
        after = risk.do_decide(conn, now, case_id, op.username, decision == "approve", note)
        return before, _case_snapshot(after)

    return await act(request, op, action="risk_decide", target=case_id, roles=RISK_ROLES,
                     change=change, back=f"{PREFIX}/risk")


def _score(raw: str, name: str) -> float:
    try:
        return float(raw)
    except ValueError:
        raise DomainError(ErrorCode.RISK_RULE_INVALID, f"{name} must be a number",
                          name) from None


def _parse_rules(text: str) -> list[rulesets.Rule]:
    if len(text) > RULES_TEXT_MAX:
        raise DomainError(ErrorCode.RISK_RULE_INVALID, "the rules are too long", "rules")
    try:
        raw = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise DomainError(ErrorCode.RISK_RULE_INVALID,
                          f"the rules are not valid JSON: {exc}", "rules") from None
    if not isinstance(raw, list):
        raise DomainError(ErrorCode.RISK_RULE_INVALID, "the rules are a JSON list", "rules")
    return [rulesets.rule_from_json(r) for r in raw]


@RULES.router.post("/risk/rules")
async def publish(request: Request, op: RulesViewer) -> Response:
    form = await read_form(request)

    def change(conn: Connection, now: datetime) -> tuple[dict[str, Any], dict[str, Any]]:
        rules = _parse_rules(form.get("rules", ""))
        before = {"active_version": store.get_versions(conn).rules}
        rs = rulesets.do_publish(
            conn, now, rules,
            review_score=_score(form.get("review_score", ""), "review_score"),
            block_score=_score(form.get("block_score", ""), "block_score"),
            note=form.get("note", "").strip()[:200] or None)
        return before, {"active_version": rs.version, "rules": [r.name for r in rs.rules]}

    return await act(request, op, action="risk_publish", target=None, roles=RISK_ROLES,
                     change=change, back=f"{PREFIX}/risk/rules")


@RULES.router.post("/risk/rules/{version}/activate")
async def activate(request: Request, version: int, op: RulesViewer) -> Response:
    def change(conn: Connection, now: datetime) -> tuple[dict[str, Any], dict[str, Any]]:
        before = {"active_version": store.get_versions(conn).rules}
        rulesets.do_activate(conn, version)
        return before, {"active_version": version}

    return await act(request, op, action="risk_activate", target=f"rules:{version}",
                     roles=RISK_ROLES, change=change, back=f"{PREFIX}/risk/rules")


def _ttl_s(raw: str) -> int | None:
    raw = raw.strip()
    if not raw:
        return None
    if not (raw.isascii() and raw.isdigit()) or not 0 < int(raw) <= TTL_HOURS_MAX:
        raise DomainError(ErrorCode.INVALID_REQUEST,
                          f"the expiry is a whole number of hours from 1 to {TTL_HOURS_MAX}",
                          "ttl_h")
    return int(raw) * 3600


def _entry(e: store.ListEntry | None) -> dict[str, Any] | None:
    return None if e is None else {"list": e.list, "value": e.value, "reason": e.reason,
                                   "expires_at": e.expires_at}


def _find_entry(conn: Connection, list_name: str, value: str) -> store.ListEntry | None:
    t = schema.lists
    r = conn.execute(select(t).where(t.c.list == list_name, t.c.value == value)).first()
    return None if r is None else store.ListEntry(r.list, r.value, r.reason, r.expires_at,
                                                  r.created_at)


@RULES.router.post("/risk/lists")
async def add_to_list(request: Request, op: RulesViewer) -> Response:
    form = await read_form(request)
    list_name, value = form.get("list", ""), form.get("value", "").strip()

    def change(conn: Connection, now: datetime) -> tuple[dict[str, Any] | None,
                                                         dict[str, Any] | None]:
        ttl = _ttl_s(form.get("ttl_h", ""))
        before = _entry(_find_entry(conn, list_name, value))
        entry = store.do_add_to_list(conn, now, list_name, value, ttl_s=ttl,
                                     reason=form.get("reason", "").strip()[:200] or None)
        return before, _entry(entry)

    return await act(request, op, action="risk_list_add", target=f"{list_name}:{value}",
                     roles=RISK_ROLES, change=change, back=f"{PREFIX}/risk/rules#lists")


@RULES.router.post("/risk/lists/remove")
async def remove_from_list(request: Request, op: RulesViewer) -> Response:
    form = await read_form(request)
    list_name, value = form.get("list", ""), form.get("value", "")

    def change(conn: Connection, now: datetime) -> tuple[dict[str, Any] | None, None]:
        before = _entry(_find_entry(conn, list_name, value))
        if not store.do_remove_from_list(conn, list_name, value):
            raise DomainError(ErrorCode.NOT_FOUND, f"{value!r} is not on the {list_name} list",
                              "value")
        return before, None

    return await act(request, op, action="risk_list_remove", target=f"{list_name}:{value}",
                     roles=RISK_ROLES, change=change, back=f"{PREFIX}/risk/rules#lists")


# -- overview panel and payment section ------------------------------------------------------

def blocks_per_hour(conn: Connection, start: datetime, end: datetime) -> dict[str, Any]:
    blocked, reviewed = bucketed(
        conn, "SELECT (created_at - :start) / :width, "
              "SUM(CASE WHEN outcome = 'block' THEN 1 ELSE 0 END), "
              "SUM(CASE WHEN outcome = 'review' THEN 1 ELSE 0 END) "
              "FROM risk_decisions WHERE created_at >= :start AND created_at < :end GROUP BY 1",
        start, end, HOUR_US, 24, columns=2)
    return series(hour_labels(start), blocked=blocked, reviewed=reviewed)


register_panel(Panel("risk", "panel.risk", "bar", blocks_per_hour, order=45))
register_section(Section("risk", "risk.decision", "risk_decision.html", payment_decision,
                         order=10))
