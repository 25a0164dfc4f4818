"""The version row (what a process checks before each decision) and the block and allow lists.

Every change to rules, the model or the lists bumps a counter in ``risk_state`` in the same
transaction; a process compares the row with what it loaded and reloads what changed. One
primary-key read per transaction (``set_state`` makes the next decision read it again) is the
whole cost of hot reload.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, select

from lianjie.errors import DomainError, ErrorCode
from lianjie.ids import new_id
from lianjie.risk import schema

LISTS = ("block", "allow")
LIST_VALUE_LENGTH_MAX = 64
LIST_TTL_S_MAX = 10 * 365 * 86_400
LIST_ENTRIES_MAX = 1_000_000


@dataclass(frozen=True, slots=True)
class Versions:
    epoch: str
    rules: int
    model: int
    lists: int


_STATE = select(schema.state.c.epoch, schema.state.c.rules_version, schema.state.c.model_version,
                schema.state.c.lists_version).where(schema.state.c.id == 1)


def get_versions(conn: Connection) -> Versions:
    row = conn.execute(_STATE).first()
    return Versions("", 0, 0, 0) if row is None else Versions(row[0], row[1], row[2], row[3])


def set_state(conn: Connection, *, rules_version: int | None = None,
              model_version: int | None = None, bump_lists: bool = False) -> None:
    current = get_versions(conn)
    values = {"rules_version": current.rules if rules_version is None else rules_version,
              "model_version": current.model if model_version is None else model_version,
              "lists_version": current.lists + (1 if bump_lists else 0)}
    updated = conn.execute(schema.state.update().where(schema.state.c.id == 1).values(**values))
    if updated.rowcount == 0:
        conn.execute(schema.state.insert().values(id=1, epoch=new_id("epoch"), **values))
    from lianjie.risk.engine import forget_check

    forget_check(conn)


@dataclass(frozen=True, slots=True)
class ListEntry:
    list: str
    value: str
    reason: str | None
    expires_at: datetime | None
    created_at: datetime


def do_add_to_list(conn: Connection, now: datetime, list_name: str, value: str, *,
                   ttl_s: int | None = None, reason: str | None = None) -> ListEntry:
    if list_name not in LISTS:
        raise DomainError(ErrorCode.INVALID_REQUEST, "list must be block or allow", "list")
    if not isinstance(value, str) or not value.strip() or len(value) > LIST_VALUE_LENGTH_MAX:
        raise DomainError(ErrorCode.INVALID_REQUEST,
                          f"value must be 1 to {LIST_VALUE_LENGTH_MAX} characters", "value")
    if ttl_s is not None and (isinstance(ttl_s, bool) or not isinstance(ttl_s, int) or
                              not 0 < ttl_s <= LIST_TTL_S_MAX):
        raise DomainError(ErrorCode.INVALID_REQUEST,
                          f"ttl_s must be from 1 to {LIST_TTL_S_MAX}", "ttl_s")
    expires = None if ttl_s is None else now + timedelta(seconds=ttl_s)
    t = schema.lists
    conn.execute(t.delete().where(t.c.list == list_name, t.c.value == value))
    conn.execute(t.insert().values(list=list_name, value=value, reason=reason,
                                   expires_at=expires, created_at=now))
    set_state(conn, bump_lists=True)
    return ListEntry(list_name, value, reason, expires, now)


def do_remove_from_list(conn: Connection, list_name: str, value: str) -> bool:
    t = schema.lists
    gone = conn.execute(t.delete().where(t.c.list == list_name, t.c.value == value)).rowcount
    if gone:
        set_state(conn, bump_lists=True)
    return bool(gone)


def list_entries(conn: Connection, list_name: str | None = None,
                 limit: int = 100) -> list[ListEntry]:
    assert 0 < limit <= LIST_ENTRIES_MAX
    t = schema.lists
    query = select(t).order_by(t.c.list, t.c.value).limit(limit)
    if list_name is not None:
        query = query.where(t.c.list == list_name)
    return [ListEntry(r.list, r.value, r.reason, r.expires_at, r.created_at)
            for r in conn.execute(query)]


def load_lists(conn: Connection) -> dict[str, dict[str, datetime | None]]:
    """``{"block": {value: expires_at}, "allow": {...}}``; expiry is checked per decision."""
    out: dict[str, dict[str, datetime | None]] = {name: {} for name in LISTS}
    for e in list_entries(conn, limit=LIST_ENTRIES_MAX):
        out[e.list][e.value] = e.expires_at
    return out
