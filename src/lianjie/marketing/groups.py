"""Consumer groups: who a red packet is sent to.

A consumer creates a group and is its first member; the owner adds members. Membership is what
lets a consumer grab a group's red packets.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, select

from lianjie import events
from lianjie.errors import DomainError, ErrorCode
from lianjie.ids import new_id
from lianjie.marketing.rows import check_name
from lianjie.marketing.schema import group_members, groups
from lianjie.payments import PartyKind, require_party

MEMBERS_PER_CALL_MAX = 500


@dataclass(frozen=True, slots=True)
class Group:
    id: str
    owner_id: str
    name: str
    created_at: datetime
    members: tuple[str, ...]


def get_group(conn: Connection, group_id: str) -> Group | None:
    row = conn.execute(select(groups).where(groups.c.id == group_id)).first()
    if row is None:
        return None
    members = conn.execute(select(group_members.c.consumer_id).where(
        group_members.c.group_id == group_id).order_by(group_members.c.consumer_id)).scalars()
    return Group(row.id, row.owner_id, row.name, row.created_at, tuple(members))


def require_group(conn: Connection, group_id: str) -> Group:
    group = get_group(conn, group_id) if isinstance(group_id, str) else None
    if group is None:
        raise DomainError(ErrorCode.GROUP_NOT_FOUND, f"no group {group_id!r}", "group_id")
    return group


def is_member(conn: Connection, group_id: str, consumer_id: str) -> bool:
    return conn.execute(select(group_members.c.consumer_id).where(
        group_members.c.group_id == group_id,
        group_members.c.consumer_id == consumer_id)).first() is not None


def do_create_group(conn: Connection, now: datetime, owner_id: str, name: str) -> Group:
    require_party(conn, owner_id, PartyKind.CONSUMER, "owner_id")
    check_name(name)
    group_id = new_id("grp")
    conn.execute(groups.insert().values(id=group_id, owner_id=owner_id, name=name,
                                        created_at=now))
    conn.execute(group_members.insert().values(group_id=group_id, consumer_id=owner_id,
                                               added_at=now))
    events.emit(conn, now, "group.created", owner_id, {"id": group_id, "owner_id": owner_id})
    return require_group(conn, group_id)


def do_add_members(conn: Connection, now: datetime, group_id: str, owner_id: str,
                   consumer_ids: Sequence[str]) -> Group:
    """The owner adds consumers; adding a member twice is harmless."""
    group = require_group(conn, group_id)
    if group.owner_id != owner_id:
        raise DomainError(ErrorCode.GROUP_NOT_FOUND, f"no group {group_id!r}", "group_id")
    if not consumer_ids or len(consumer_ids) > MEMBERS_PER_CALL_MAX:
        raise DomainError(ErrorCode.INVALID_REQUEST,
                          f"add 1 to {MEMBERS_PER_CALL_MAX} members at a time", "consumer_ids")
    for consumer_id in consumer_ids:
        require_party(conn, consumer_id, PartyKind.CONSUMER, "consumer_ids")
    new = sorted(set(consumer_ids) - set(group.members))
    if new:
        conn.execute(group_members.insert(), [
            {"group_id": group_id, "consumer_id": c, "added_at": now} for c in new])
        events.emit(conn, now, "group.members_added", owner_id,
                    {"id": group_id, "consumer_ids": new})
    return require_group(conn, group_id)
