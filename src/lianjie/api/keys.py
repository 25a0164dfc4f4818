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
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from sqlalchemy import Connection, select

from lianjie.api.schema import api_keys
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


def lookup(conn: Connection, secret: str) -> Principal | None:
    row = conn.execute(select(api_keys.c.id, api_keys.c.party_id, api_keys.c.role)
                       .where(api_keys.c.secret_hash == _hash(secret),
                              api_keys.c.revoked_at.is_(None))).first()
    return None if row is None else Principal(row.id, row.party_id, Role(row.role))


class KeyCache:
    """Verified keys for ``CACHE_TTL_S``, so a request costs no key lookup in the database."""

    def __init__(self) -> None:
        self._entries: dict[bytes, tuple[float, Principal]] = {}
        self._lock = threading.Lock()

    def get(self, secret: str) -> Principal | None:
        digest = _hash(secret)
        with self._lock:
            hit = self._entries.get(digest)
        if hit is None or hit[0] < time.monotonic():
            return None
        return hit[1]

    def put(self, secret: str, principal: Principal) -> None:
        with self._lock:
            if len(self._entries) >= CACHE_ENTRIES_MAX:
                self._entries.clear()
            self._entries[_hash(secret)] = (time.monotonic() + CACHE_TTL_S, principal)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


def require_role(principal: Principal, *roles: Role) -> None:
    if principal.role not in roles:
        raise DomainError(ErrorCode.FORBIDDEN,
                          f"this needs a key of role {' or '.join(r.value for r in roles)}")
