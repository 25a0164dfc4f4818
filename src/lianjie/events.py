"""The transactional outbox: every domain event is a row written in the same transaction as the
change it describes, so no event is lost on a crash and none is emitted for a change that rolled
back.

Consumers (webhook delivery now; risk features, credit features and an event stream later) read
the outbox in id order from their own cursor in ``outbox_cursors`` and advance it in the same
transaction as whatever they do with the events, so each consumer sees every event at least once.
An event keeps a stable public id (``evt_...``) that receivers use to drop duplicates.

``partition_key`` is the merchant or party the event is about: the key an event stream would
partition on once the outbox feeds one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import BigInteger, Column, Connection, Integer, String, Table, Text, select

from lianjie.clock import to_us
from lianjie.db import DriverSql, Timestamp, metadata
from lianjie.ids import new_id

READ_BATCH_MAX = 1000

outbox = Table(
    "outbox_events",
    metadata,
    Column("seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
           autoincrement=True),
    Column("id", String(32), nullable=False, unique=True),
    Column("type", String(60), nullable=False),
    Column("partition_key", String(64), nullable=False),
    Column("payload", Text, nullable=False),
    Column("created_at", Timestamp, nullable=False),
)

cursors = Table(
    "outbox_cursors",
    metadata,
    Column("consumer", String(60), primary_key=True),
    Column("last_seq", BigInteger, nullable=False),
)


@dataclass(frozen=True, slots=True)
class Event:
    seq: int
    id: str
    type: str
    partition_key: str
    payload: dict[str, Any]
    created_at: datetime


# Driver SQL written once (``db.DriverSql``): emit is on every payment's path.
_INSERT = DriverSql("INSERT INTO outbox_events (id, type, partition_key, payload, created_at)"
                    " VALUES (?, ?, ?, ?, ?)")


def emit(conn: Connection, now: datetime, type_: str, partition_key: str,
         payload: dict[str, Any]) -> str:
    """Record an event in the caller's transaction; returns its public id."""
    event_id = new_id("evt")
    _INSERT.run(conn, (event_id, type_, partition_key, orjson.dumps(payload).decode(),
                       to_us(now)))
    return event_id


def emit_many(conn: Connection, now: datetime,
              items: Sequence[tuple[str, str, dict[str, Any]]]) -> list[str]:
    """``emit`` for several ``(type, partition_key, payload)``, in order: one executemany."""
    if not items:
        return []
    at = to_us(now)
    rows = [(new_id("evt"), type_, key, orjson.dumps(payload).decode(), at)
            for type_, key, payload in items]
    _INSERT.many(conn, rows)
    return [row[0] for row in rows]


def read_after(conn: Connection, after_seq: int, limit: int = READ_BATCH_MAX,
               types: tuple[str, ...] | None = None) -> list[Event]:
    assert 0 < limit <= READ_BATCH_MAX
    query = select(outbox).where(outbox.c.seq > after_seq).order_by(outbox.c.seq).limit(limit)
    if types:
        query = query.where(outbox.c.type.in_(types))
    return [Event(r.seq, r.id, r.type, r.partition_key, orjson.loads(r.payload), r.created_at)
            for r in conn.execute(query)]


def cursor(conn: Connection, consumer: str) -> int:
    row = conn.execute(select(cursors.c.last_seq).where(cursors.c.consumer == consumer)).first()
    return 0 if row is None else int(row[0])


def advance(conn: Connection, consumer: str, last_seq: int) -> None:
    """Move a consumer's cursor forward, in the transaction that handled the events."""
    current = conn.execute(select(cursors.c.last_seq).where(cursors.c.consumer == consumer)
                           .with_for_update()).first()
    if current is None:
        conn.execute(cursors.insert().values(consumer=consumer, last_seq=last_seq))
    else:
        assert last_seq >= current[0], "cursors only move forward"
        conn.execute(cursors.update().where(cursors.c.consumer == consumer)
                     .values(last_seq=last_seq))
