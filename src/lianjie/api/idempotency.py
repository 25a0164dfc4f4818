"""Idempotency keys, as Stripe has them.

Every POST carries an ``Idempotency-Key``. The first request with a key runs and its response is
stored in the same transaction as its effects. A later request with the same key and the same
method, path and body gets the stored response again, marked ``Idempotent-Replayed: true``; with
anything different it gets 409 ``idempotency_conflict``. Domain errors are not stored: nothing
changed, so running the request again is safe. Keys live ``IDEMPOTENCY_TTL_S`` and are scoped
to the API key that sent them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, delete, text

from lianjie.api.schema import idempotency_keys as ik
from lianjie.clock import to_us
from lianjie.db import DriverSql, rows_matching_pairs
from lianjie.errors import DomainError, ErrorCode

IDEMPOTENCY_TTL_S = 48 * 3600
KEY_LENGTH_MAX = 255


@dataclass(frozen=True, slots=True)
class Stored:
    status_code: int
    body: str


def fingerprint(method: str, path: str, body: bytes) -> bytes:
    return hashlib.sha256(method.encode() + b" " + path.encode() + b"\n" + body).digest()


def check_key(key: str | None) -> str:
    if key is None or not key.strip():
        raise DomainError(ErrorCode.IDEMPOTENCY_KEY_REQUIRED,
                          "send an Idempotency-Key header with every POST", "Idempotency-Key")
    if len(key) > KEY_LENGTH_MAX:
        raise DomainError(ErrorCode.INVALID_REQUEST,
                          f"Idempotency-Key is longer than {KEY_LENGTH_MAX}", "Idempotency-Key")
    return key


# Driver SQL written once (``db.DriverSql``): every POST runs these, and through SQLAlchemy
# each cost several times what the database does.
_LOOKUP = DriverSql("SELECT fingerprint, status_code, body FROM idempotency_keys"
                    " WHERE api_key_id = ? AND key = ?")
_STORE_ONE = DriverSql("INSERT INTO idempotency_keys (api_key_id, key, fingerprint,"
                       " status_code, body, created_at) VALUES (?, ?, ?, ?, ?, ?)")
_LOCK_PG = DriverSql("SELECT pg_advisory_xact_lock(?)")


def lookup(conn: Connection, api_key_id: str, key: str, fp: bytes) -> Stored | None:
    """The stored response for this key, if its request ran; call it first in the unit.

    On PostgreSQL it first locks the key until the transaction ends, because several processes
    may run committers there: a request with the same key in another process then waits for
    this one to commit and replays it, instead of racing it to a unique-key error. (On SQLite
    one writer at a time does that already; in one process the committer does.)
    """
    if conn.dialect.name == "postgresql":
        _LOCK_PG.run(conn, (_lock_key(api_key_id, key),)).fetchall()
    row = _LOOKUP.run(conn, (api_key_id, key)).fetchone()
    if row is None:
        return None
    if bytes(row[0]) != fp:
        raise DomainError(ErrorCode.IDEMPOTENCY_CONFLICT,
                          "this Idempotency-Key was used with a different request",
                          "Idempotency-Key")
    return Stored(row[1], row[2])


def store(conn: Connection, now: datetime, api_key_id: str, key: str, fp: bytes,
          status_code: int, body: str) -> None:
    _STORE_ONE.run(conn, (api_key_id, key, fp, status_code, body, to_us(now)))


# -- many requests in one unit (red packet grabs batched into one unit of work) ---------------

_LOCK_MANY_PG = text("SELECT count(pg_advisory_xact_lock(k)) FROM "
                     "(SELECT unnest(CAST(:lock_keys AS bigint[])) AS k ORDER BY 1) AS s")


def _lock_key(api_key_id: str, key: str) -> int:
    digest = hashlib.sha256(api_key_id.encode() + b"\0" + key.encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def lookup_many(conn: Connection, requests: Sequence[tuple[str, str, bytes]]
                ) -> list[Stored | DomainError | None]:
    """``lookup`` for many ``(api_key_id, key, fingerprint)`` at once, whose (API key, key)
    pairs are distinct: one lock statement (keys locked in order, so two batches cannot
    deadlock each other) and one select per ``db.PAIRS_PER_STATEMENT_MAX`` pairs. Per request:
    the stored response, an ``idempotency_conflict`` error to answer with, or None when it has
    not run."""
    if conn.dialect.name == "postgresql" and requests:
        conn.execute(_LOCK_MANY_PG, {"lock_keys": sorted(
            {_lock_key(a, k) for a, k, _ in requests})})
    found: dict[tuple[str, str], tuple[bytes, int, str]] = {}
    for api_key_id, key, fp, status, body in rows_matching_pairs(
            conn, "t.api_key_id, t.key, t.fingerprint, t.status_code, t.body",
            "idempotency_keys", ("api_key_id", "key"), [(a, k) for a, k, _ in requests]):
        found[(api_key_id, key)] = (bytes(fp), status, body)
    out: list[Stored | DomainError | None] = []
    for a, k, fp in requests:
        hit = found.get((a, k))
        if hit is None:
            out.append(None)
        elif hit[0] != fp:
            out.append(DomainError(ErrorCode.IDEMPOTENCY_CONFLICT,
                                   "this Idempotency-Key was used with a different request",
                                   "Idempotency-Key"))
        else:
            out.append(Stored(hit[1], hit[2]))
    return out


def store_many(conn: Connection, now: datetime,
               rows: Sequence[tuple[str, str, bytes, int, str]]) -> None:
    """``store`` for many ``(api_key_id, key, fingerprint, status_code, body)``: one
    executemany."""
    if rows:
        at = to_us(now)
        _STORE_ONE.many(conn, [(a, k, fp, st, body, at) for a, k, fp, st, body in rows])


def do_purge(conn: Connection, now: datetime) -> int:
    cutoff = now - timedelta(seconds=IDEMPOTENCY_TTL_S)
    return conn.execute(delete(ik).where(ik.c.created_at < cutoff)).rowcount
