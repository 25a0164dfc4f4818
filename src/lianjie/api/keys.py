"""API keys: one or more per party, each with the role of its party, stored hashed.

Roles decide what a key may do (see ``access``): ``operator`` keys administer the platform;
``service_provider`` keys act for their own sub-merchants only; ``merchant`` keys see only their
own data; ``consumer`` keys pay and use their own wallet; ``institution`` keys read their own
positions.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from sqlalchemy import Connection, select

from lianjie.api.schema import api_keys
from lianjie.db import DriverSql, rows_in
from lianjie.errors import DomainError, ErrorCode
from lianjie.ids import new_id, secret_token

# A verified key is kept this long at most. A revocation through the API (``do_revoke_key``)
# empties every process's cache within a second, through the revocation epoch
# (``KeyCache.observe``); this bounds the rest: a key revoked by hand in the database, a
# process whose watcher thread is not running.
CACHE_TTL_S = 60.0
CACHE_ENTRIES_MAX = 100_000


class Role(StrEnum):
    OPERATOR = "operator"
    SERVICE_PROVIDER = "service_provider"
    MERCHANT = "merchant"
    CONSUMER = "consumer"
    INSTITUTION = "institution"


_KEY_PREFIX = {Role.OPERATOR: "lj_op_", Role.SERVICE_PROVIDER: "lj_sp_",
               Role.MERCHANT: "lj_mch_", Role.CONSUMER: "lj_cus_", Role.INSTITUTION: "lj_ins_"}


@dataclass(frozen=True, slots=True)
class Principal:
    key_id: str
    party_id: str
    role: Role


def _hash(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def do_issue_key(conn: Connection, now: datetime, party_id: str, role: Role,
                 label: str | None = None) -> tuple[str, str]:
    """Create a key; returns (key id, secret). The secret is never stored or shown again."""
    secret = _KEY_PREFIX[role] + secret_token(24)
    key_id = new_id("key")
    conn.execute(api_keys.insert().values(id=key_id, party_id=party_id, role=role.value,
                                          prefix=secret[:12], secret_hash=_hash(secret),
                                          label=label, created_at=now))
    return key_id, secret


def do_revoke_key(conn: Connection, now: datetime, key_id: str) -> None:
    """Revoke a key; revoking it again is harmless, an unknown key is ``not_found``."""
    found = conn.execute(select(api_keys.c.id).where(api_keys.c.id == key_id)).first()
    if found is None:
        raise DomainError(ErrorCode.NOT_FOUND, f"no API key {key_id!r}", "id")
    revoked = conn.execute(api_keys.update().where(api_keys.c.id == key_id,
                                                   api_keys.c.revoked_at.is_(None))
                           .values(revoked_at=now)).rowcount
    if revoked:  # every process's cache empties when it next reads the epoch
        _BUMP_EPOCH.run(conn, ())


def revocation_epoch(conn: Connection) -> int:
    """How many revocations there have been: a key cache read at an older epoch may hold a
    revoked key."""
    return int(_EPOCH.run(conn, ()).fetchone()[0])


# The row is made by migration 0013; the upsert and the COALESCE keep working without it.
_EPOCH = DriverSql("SELECT COALESCE(MAX(epoch), 0) FROM api_key_epoch WHERE id = 1")
_BUMP_EPOCH = DriverSql("INSERT INTO api_key_epoch (id, epoch) VALUES (1, 1) ON CONFLICT (id)"
                        " DO UPDATE SET epoch = api_key_epoch.epoch + 1")


def digest(secret: str) -> bytes:
    """What is stored of ``secret``, and what the cache is keyed by."""
    return _hash(secret)


# Driver SQL for ``db.rows_in``: a hot red packet brings thousands of consumers whose keys are
# not in the cache yet, and ``Runtime`` looks up those that arrive together in one statement.
_LOOKUP_SQL = (f"SELECT secret_hash, id, party_id, role FROM {api_keys.name} "
               "WHERE revoked_at IS NULL AND secret_hash {in}")


def lookup_many(conn: Connection, digests: Sequence[bytes]) -> dict[bytes, Principal]:
    """The live keys among ``digests`` (see ``digest``); unknown and revoked ones are absent."""
    return {bytes(h): Principal(key_id, party_id, Role(role)) for h, key_id, party_id, role
            in rows_in(conn, _LOOKUP_SQL, (), digests, array_type="bytea")}


def lookup_at_epoch(conn: Connection, digests: Sequence[bytes]
                    ) -> tuple[dict[bytes, Principal], int]:
    """``lookup_many``, and the revocation epoch read before it: a key found live was live
    after that epoch was read (PostgreSQL's statements each see the latest commits), so any
    revocation of it comes later and moves the epoch past it."""
    epoch = revocation_epoch(conn)
    return lookup_many(conn, digests), epoch


class KeyCache:
    """Verified keys, so a request costs no key lookup in the database. Keyed by ``digest``; at
    most ``CACHE_ENTRIES_MAX`` entries (emptied when full), each kept ``CACHE_TTL_S`` at most.

    A key is cached with the revocation epoch it was read at (``lookup_at_epoch``), and only
    while that is the cache's epoch: ``observe`` moves the cache to a later epoch (a key was
    revoked somewhere) and empties it. Every server process's ``RevocationWatcher`` thread
    observes the epoch each second, so a key revoked through any process stops working in
    every process within about a second (a lookup that read it just before the revocation may
    be cached until then); the process that revokes it empties its own cache at once."""

    def __init__(self) -> None:
        self._entries: dict[bytes, tuple[float, Principal]] = {}
        self._lock = threading.Lock()
        self.epoch = -1  # none observed yet

    def get(self, digest: bytes) -> Principal | None:
        with self._lock:
            hit = self._entries.get(digest)
        if hit is None or hit[0] < time.monotonic():
            return None
        return hit[1]

    def observe(self, epoch: int, *, authoritative: bool = False) -> None:
        """The revocation epoch as just read: a later one than the cache's empties it. A
        lookup's epoch only ever moves the cache forward (a slow lookup's older epoch must not
        let its keys in); the watcher's read, one after another, is ``authoritative`` and moves
        it to any other epoch, so a database restored to an older one does not stop the
        caching."""
        with self._lock:
            if epoch > self.epoch or (authoritative and epoch != self.epoch):
                self.epoch = epoch
                self._entries.clear()

    def put(self, digest: bytes, principal: Principal, epoch: int) -> None:
        """Cache a key read live at ``epoch``: kept only if that is the cache's epoch (one read
        before a revocation the cache has since observed is not)."""
        with self._lock:
            if epoch != self.epoch:
                return
            if len(self._entries) >= CACHE_ENTRIES_MAX:
                self._entries.clear()
            self._entries[digest] = (time.monotonic() + CACHE_TTL_S, principal)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


def require_role(principal: Principal, *roles: Role) -> None:
    if principal.role not in roles:
        raise DomainError(ErrorCode.FORBIDDEN,
                          f"this needs a key of role {' or '.join(r.value for r in roles)}")
