"""Segments (customer profiling): rules over consumers' features from their payment history.

A rule is JSON, one of:

- ``{"kind": "all"}``: every consumer;
- ``{"kind": "new", "days": 30}``: consumers who joined in the last ``days`` days;
- ``{"kind": "lapsed", "days": 30}``: paid before, but not in the last ``days`` days;
- ``{"kind": "frequent", "merchant_id": "mch_...", "min_count": 3, "days": 30}``: at least
  ``min_count`` payments (at that merchant, if named) in the last ``days`` days;
- ``{"kind": "high_spender", "min_amount": 100000, "days": 30}``: paid at least ``min_amount``
  in the last ``days`` days;
- ``{"kind": "all_of" | "any_of", "rules": [...]}``: the intersection or union of rules.

Features are computed in batch with a few grouped queries over paid orders, and the result is
stored as the segment's members, so issuing coupons reads a list and never re-evaluates. A
segment is re-evaluated daily (``do_refresh_due``, run by the server's background jobs and by
``lianjie marketing segments refresh``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import Connection, Row, delete, func, select

from lianjie import events
from lianjie.errors import DomainError, ErrorCode
from lianjie.ids import new_id
from lianjie.marketing.rows import check_name
from lianjie.marketing.schema import segment_members, segments
from lianjie.payments.schema import orders, parties

RULE_DEPTH_MAX = 3
RULES_PER_GROUP_MAX = 10
DAYS_MAX = 3660
REFRESH_EVERY_S = 86_400
REFRESH_BATCH_MAX = 20
MEMBERS_MAX = 1_000_000
E = ErrorCode
_KINDS = ("all", "new", "lapsed", "frequent", "high_spender", "all_of", "any_of")


@dataclass(frozen=True, slots=True)
class Segment:
    id: str
    owner_id: str
    name: str
    rule: dict[str, Any]
    size: int
    refreshed_at: datetime | None
    created_at: datetime


def _segment(row: Row[Any]) -> Segment:
    m = row._mapping
    return Segment(m["id"], m["owner_id"], m["name"], orjson.loads(m["rule"]), m["size"],
                   m["refreshed_at"], m["created_at"])


def get_segment(conn: Connection, segment_id: str) -> Segment | None:
    row = conn.execute(select(segments).where(segments.c.id == segment_id)).first()
    return None if row is None else _segment(row)


def require_segment(conn: Connection, segment_id: str) -> Segment:
    found = get_segment(conn, segment_id) if isinstance(segment_id, str) else None
    if found is None:
        raise DomainError(E.SEGMENT_NOT_FOUND, f"no segment {segment_id!r}", "segment_id")
    return found


def members_of(conn: Connection, segment_id: str) -> list[str]:
    return list(conn.execute(select(segment_members.c.consumer_id).where(
        segment_members.c.segment_id == segment_id).order_by(segment_members.c.consumer_id)
        .limit(MEMBERS_MAX)).scalars())


def _bad(message: str) -> DomainError:
    return DomainError(E.INVALID_RULE, message, "rule")


def _int_field(rule: dict[str, Any], name: str, default: int, high: int) -> int:
    value = rule.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= high:
        raise _bad(f"{name} must be an integer from 0 to {high}")
    return value


def check_rule(rule: object, depth: int = 0) -> dict[str, Any]:
    """Validate a rule (user input): ``invalid_rule`` with what is wrong."""
    if not isinstance(rule, dict) or rule.get("kind") not in _KINDS:
        raise _bad(f"a rule is an object whose kind is one of {', '.join(_KINDS)}")
    kind = rule["kind"]
    allowed = {"all": {"kind"}, "new": {"kind", "days"}, "lapsed": {"kind", "days"},
               "frequent": {"kind", "days", "merchant_id", "min_count"},
               "high_spender": {"kind", "days", "min_amount"},
               "all_of": {"kind", "rules"}, "any_of": {"kind", "rules"}}[kind]
    if set(rule) - allowed:
        raise _bad(f"a {kind} rule takes only {', '.join(sorted(allowed))}")
    if kind in ("all_of", "any_of"):
        parts = rule.get("rules")
        if depth >= RULE_DEPTH_MAX or not isinstance(parts, list) or \
                not 0 < len(parts) <= RULES_PER_GROUP_MAX:
            raise _bad(f"{kind} takes 1 to {RULES_PER_GROUP_MAX} rules, nested at most "
                       f"{RULE_DEPTH_MAX} deep")
        for part in parts:
            check_rule(part, depth + 1)
        return rule
    _int_field(rule, "days", 30, DAYS_MAX)
    _int_field(rule, "min_count", 1, 1_000_000)
    _int_field(rule, "min_amount", 1, 2**62)
    if "merchant_id" in rule and not isinstance(rule["merchant_id"], str):
        raise _bad("merchant_id must be a string")
    return rule


def evaluate(conn: Connection, now: datetime, rule: dict[str, Any]) -> set[str]:
    """The consumers a (valid) rule selects now."""
    kind = rule["kind"]
    if kind in ("all_of", "any_of"):
        parts = [evaluate(conn, now, part) for part in rule["rules"]]
        return set.intersection(*parts) if kind == "all_of" else set.union(*parts)
    since = now - timedelta(days=rule.get("days", 30))
    consumers = select(parties.c.id).where(parties.c.kind == "consumer")
    if kind == "all":
        return set(conn.execute(consumers).scalars())
    if kind == "new":
        return set(conn.execute(consumers.where(parties.c.created_at >= since)).scalars())
    paid = select(orders.c.payer_id).where(orders.c.status == "paid",
                                           orders.c.payer_id.is_not(None))
    if kind == "lapsed":
        query = paid.group_by(orders.c.payer_id).having(func.max(orders.c.paid_at) < since)
        return set(conn.execute(query).scalars())
    recent = paid.where(orders.c.paid_at >= since)
    if kind == "frequent":
        if "merchant_id" in rule:
            recent = recent.where(orders.c.merchant_id == rule["merchant_id"])
        query = recent.group_by(orders.c.payer_id).having(
            func.count() >= rule.get("min_count", 1))
        return set(conn.execute(query).scalars())
    assert kind == "high_spender", kind
    query = recent.group_by(orders.c.payer_id).having(
        func.sum(orders.c.amount) >= rule.get("min_amount", 1))
    return set(conn.execute(query).scalars())


def do_create_segment(conn: Connection, now: datetime, owner_id: str, name: str,
                      rule: object) -> Segment:
    """Create a segment and evaluate it at once."""
    check_name(name)
    checked = check_rule(rule)
    segment_id = new_id("seg")
    conn.execute(segments.insert().values(id=segment_id, owner_id=owner_id, name=name,
                                          rule=orjson.dumps(checked).decode(), size=0,
                                          refreshed_at=None, created_at=now))
    return do_refresh_segment(conn, now, segment_id)


def do_refresh_segment(conn: Connection, now: datetime, segment_id: str) -> Segment:
    segment = require_segment(conn, segment_id)
    found = sorted(evaluate(conn, now, segment.rule))[:MEMBERS_MAX]
    conn.execute(delete(segment_members).where(segment_members.c.segment_id == segment_id))
    if found:
        conn.execute(segment_members.insert(), [{"segment_id": segment_id, "consumer_id": c}
                                                for c in found])
    conn.execute(segments.update().where(segments.c.id == segment_id)
                 .values(size=len(found), refreshed_at=now))
    events.emit(conn, now, "segment.refreshed", segment.owner_id,
                {"id": segment_id, "size": len(found)})
    return require_segment(conn, segment_id)


def do_refresh_due(conn: Connection, now: datetime, limit: int = REFRESH_BATCH_MAX) -> int:
    """Re-evaluate segments last evaluated a day or more ago; returns how many."""
    assert 0 < limit <= 1000
    due = now - timedelta(seconds=REFRESH_EVERY_S)
    ids = conn.execute(select(segments.c.id).where(
        (segments.c.refreshed_at.is_(None)) | (segments.c.refreshed_at <= due))
        .order_by(segments.c.refreshed_at).limit(limit)).scalars().all()
    for segment_id in ids:
        do_refresh_segment(conn, now, segment_id)
    return len(ids)


def segment_payload(s: Segment) -> dict[str, object]:
    return {"id": s.id, "object": "segment", "owner_id": s.owner_id, "name": s.name,
            "rule": s.rule, "size": s.size,
            "refreshed_at": s.refreshed_at.isoformat() if s.refreshed_at else None,
            "created_at": s.created_at.isoformat()}
