"""The audit log of operator actions: one append-only row per action or refused attempt.

``record`` runs in the same transaction as the action it describes, so an action and its audit
row commit together or not at all. Refusals (wrong role, missing CSRF token, a domain error) are
recorded in a transaction of their own, since the action's rolled back.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import Connection, select

from lianjie.console.schema import audit

PAGE_SIZE_MAX = 200
DETAIL_LENGTH_MAX = 300


@dataclass(frozen=True, slots=True)
class AuditRow:
    id: int
    at: datetime
    username: str
    role: str
    action: str
    target: str | None
    outcome: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    detail: str | None


def _dump(value: dict[str, Any] | None) -> str | None:
    return None if value is None else orjson.dumps(value, default=str).decode()


def record(conn: Connection, now: datetime, *, user_id: str | None, username: str, role: str,
           action: str, target: str | None, outcome: str = "ok",
           before: dict[str, Any] | None = None, after: dict[str, Any] | None = None,
           detail: str | None = None) -> None:
    conn.execute(audit.insert().values(
        at=now, user_id=user_id, username=username, role=role, action=action, target=target,
        outcome=outcome, before=_dump(before), after=_dump(after),
        detail=None if detail is None else detail[:DETAIL_LENGTH_MAX]))


def _row(r: Any) -> AuditRow:
    return AuditRow(r.id, r.at, r.username, r.role, r.action, r.target, r.outcome,
                    None if r.before is None else orjson.loads(r.before),
                    None if r.after is None else orjson.loads(r.after), r.detail)


def recent(conn: Connection, *, target: str | None = None, username: str | None = None,
           before_id: int | None = None, limit: int = 50) -> list[AuditRow]:
    """Newest first; ``before_id`` pages back."""
    assert 0 < limit <= PAGE_SIZE_MAX + 1
    query = select(audit)
    if target:
        query = query.where(audit.c.target == target)
    if username:
        query = query.where(audit.c.username == username)
    if before_id is not None:
        query = query.where(audit.c.id < before_id)
    return [_row(r) for r in conn.execute(query.order_by(audit.c.id.desc()).limit(limit))]
