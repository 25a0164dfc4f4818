"""Console operators: users with one role each, argon2id password hashes, server-side sessions
and log-in throttling.

Passwords are hashed with argon2-cffi's defaults (argon2id, RFC 9106 low-memory profile). Hashing
is deliberately slow, so callers verify outside the group committer (``check_password`` is a
pure function) and only write the session or the failure through it.

A session token is 32 random bytes sent in an HttpOnly, SameSite=Lax cookie; the table stores
its SHA-256. Sessions end at an absolute expiry (``SESSION_TTL``) or on log-out. After
``LOGIN_FAILURES_MAX`` failures for one user name within ``LOGIN_WINDOW`` further attempts are
refused until the window moves on, whatever the password.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import Connection, delete, func, select

from lianjie.console.schema import login_failures, sessions, users
from lianjie.errors import DomainError, ErrorCode
from lianjie.ids import new_id

SESSION_TTL = timedelta(hours=8)
LOGIN_WINDOW = timedelta(minutes=15)
LOGIN_FAILURES_MAX = 5
PASSWORD_LENGTH_MIN = 10
PASSWORD_LENGTH_MAX = 200
USERNAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{1,62}$")

_hasher = PasswordHasher()


def set_hash_cost(time_cost: int, memory_cost_kib: int) -> None:
    """Change the cost of new hashes (tests make them cheap); existing hashes keep theirs."""
    global _hasher
    _hasher = PasswordHasher(time_cost=time_cost, memory_cost=memory_cost_kib, parallelism=1)


class ConsoleRole(StrEnum):
    ADMIN = "admin"
    RISK_ANALYST = "risk_analyst"
    FINANCE = "finance"
    SUPPORT = "support"


ALL_ROLES = frozenset(ConsoleRole)


@dataclass(frozen=True, slots=True)
class Operator:
    """The user behind a live session."""

    id: str
    username: str
    role: ConsoleRole
    csrf_token: str
    expires_at: datetime


def hash_password(password: str) -> str:
    if not PASSWORD_LENGTH_MIN <= len(password) <= PASSWORD_LENGTH_MAX:
        raise DomainError(ErrorCode.INVALID_REQUEST,
                          f"a password has {PASSWORD_LENGTH_MIN} to {PASSWORD_LENGTH_MAX} "
                          "characters", "password")
    return _hasher.hash(password)


def check_password(password_hash: str, password: str) -> bool:
    try:
        return bool(_hasher.verify(password_hash, password))
    except (VerificationError, InvalidHashError):
        return False


def generate_password() -> str:
    return secrets.token_urlsafe(15)


def do_add_user(conn: Connection, now: datetime, username: str, role: str,
                password_hash: str) -> str:
    """Create a console user (or replace the password and role of an existing one)."""
    if not USERNAME_RE.match(username):
        raise DomainError(ErrorCode.INVALID_REQUEST,
                          "a user name is 2 to 63 lower-case letters, digits, '.', '_' or '-'",
                          "username")
    if role not in ALL_ROLES:
        raise DomainError(ErrorCode.INVALID_REQUEST,
                          f"role must be one of {sorted(ALL_ROLES)}", "role")
    found = conn.execute(select(users.c.id).where(users.c.username == username)).first()
    if found is not None:
        conn.execute(users.update().where(users.c.id == found.id)
                     .values(password_hash=password_hash, role=role, disabled=0))
        conn.execute(delete(sessions).where(sessions.c.user_id == found.id))
        return str(found.id)
    user_id = new_id("opr")
    conn.execute(users.insert().values(id=user_id, username=username, password_hash=password_hash,
                                       role=role, disabled=0, created_at=now))
    return user_id


@dataclass(frozen=True, slots=True)
class Credentials:
    user_id: str
    username: str
    role: ConsoleRole
    password_hash: str


def find_user(conn: Connection, username: str) -> Credentials | None:
    row = conn.execute(select(users).where(users.c.username == username,
                                           users.c.disabled == 0)).first()
    if row is None:
        return None
    return Credentials(row.id, row.username, ConsoleRole(row.role), row.password_hash)


def list_users(conn: Connection) -> list[tuple[str, str, str]]:
    rows = conn.execute(select(users.c.username, users.c.role, users.c.id)
                        .order_by(users.c.username))
    return [(r.username, r.role, r.id) for r in rows]


def list_operators(conn: Connection, now: datetime) -> list[tuple[str, str, datetime, int]]:
    """(username, role, created_at, live sessions) of every enabled user."""
    live = (select(sessions.c.user_id, func.count().label("n"))
            .where(sessions.c.expires_at > now).group_by(sessions.c.user_id).subquery())
    rows = conn.execute(
        select(users.c.username, users.c.role, users.c.created_at, live.c.n)
        .select_from(users.outerjoin(live, live.c.user_id == users.c.id))
        .where(users.c.disabled == 0).order_by(users.c.username))
    return [(r.username, r.role, r.created_at, int(r.n or 0)) for r in rows]


def recent_failures(conn: Connection, now: datetime, username: str) -> int:
    return int(conn.execute(select(func.count()).select_from(login_failures).where(
        login_failures.c.username == username,
        login_failures.c.at > now - LOGIN_WINDOW)).scalar_one())


def throttled(conn: Connection, now: datetime, username: str) -> bool:
    return recent_failures(conn, now, username) >= LOGIN_FAILURES_MAX


def do_record_failure(conn: Connection, now: datetime, username: str,
                      client_ip: str | None) -> None:
    conn.execute(login_failures.insert().values(username=username[:64], client_ip=client_ip,
                                                at=now))
    # Old failures no longer count; drop them as we go so the table stays small.
    conn.execute(delete(login_failures).where(login_failures.c.at < now - 2 * LOGIN_WINDOW))


def _token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def do_start_session(conn: Connection, now: datetime, user_id: str) -> str:
    """A new session for the user; returns the cookie token (shown once, stored hashed)."""
    token = secrets.token_urlsafe(32)
    conn.execute(sessions.insert().values(token_hash=_token_hash(token), user_id=user_id,
                                          csrf_token=secrets.token_urlsafe(24), created_at=now,
                                          expires_at=now + SESSION_TTL))
    conn.execute(delete(sessions).where(sessions.c.expires_at < now))
    return token


def session_operator(conn: Connection, now: datetime, token: str) -> Operator | None:
    """The operator of a live session, or None if the token is unknown or expired."""
    if not token or len(token) > 100:
        return None
    row = conn.execute(
        select(users.c.id, users.c.username, users.c.role, sessions.c.csrf_token,
               sessions.c.expires_at)
        .select_from(sessions.join(users, users.c.id == sessions.c.user_id))
        .where(sessions.c.token_hash == _token_hash(token), users.c.disabled == 0)).first()
    if row is None or row.expires_at <= now:
        return None
    return Operator(row.id, row.username, ConsoleRole(row.role), row.csrf_token, row.expires_at)


def do_end_session(conn: Connection, token: str) -> None:
    conn.execute(delete(sessions).where(sessions.c.token_hash == _token_hash(token)))
