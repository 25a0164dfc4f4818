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
from lianjie.db import rows_in
from lianjie.errors import DomainError, ErrorCode
from lianjie.ids import new_id, secret_token

CACHE_TTL_S = 30.0  # a revoked key stops working within this long in every process
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
    conn.execute(api_keys.update().where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
                 .values(revoked_at=now))


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


class KeyCache:
    """Verified keys for ``CACHE_TTL_S``, so a request costs no key lookup in the database.
    Keyed by ``digest``; at most ``CACHE_ENTRIES_MAX`` entries (emptied when full)."""

    def __init__(self) -> None:
        self._entries: dict[bytes, tuple[float, Principal]] = {}
        self._lock = threading.Lock()

    def get(self, digest: bytes) -> Principal | None:
        with self._lock:
            hit = self._entries.get(digest)
        if hit is None or hit[0] < time.monotonic():
            return None
        return hit[1]

    def put(self, digest: bytes, principal: Principal) -> None:
        with self._lock:
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
