"""Console tables. Only ``lianjie.console`` writes them.

- ``console_users``: operators who log in to the console, each with one role; the password is
  stored only as an argon2id hash.
- ``console_sessions``: server-side sessions. The cookie holds a random token; the table keeps
  only its SHA-256, so a copy of the database does not let anyone in. Each session has a CSRF
  token that every state-changing form must echo, and an absolute expiry.
- ``console_login_failures``: failed log-ins, counted per user name over a window to throttle
  password guessing (in the database so every server process sees the same count).
- ``console_audit``: every operator action (and every refused attempt): who, what, when, the
  target, the state before and after as JSON, and the outcome. Append-only.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Index,
    Integer,
    LargeBinary,
    SmallInteger,
    String,
    Table,
    Text,
)

from lianjie.db import Timestamp, metadata

users = Table(
    "console_users",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("username", String(64), nullable=False, unique=True),
    Column("password_hash", String(200), nullable=False),
    Column("role", String(20), nullable=False),
    Column("disabled", SmallInteger, nullable=False),
    Column("created_at", Timestamp, nullable=False),
)

sessions = Table(
    "console_sessions",
    metadata,
    Column("token_hash", LargeBinary(32), primary_key=True),
    Column("user_id", String(32), nullable=False, index=True),
    Column("csrf_token", String(64), nullable=False),
    Column("created_at", Timestamp, nullable=False),
    Column("expires_at", Timestamp, nullable=False, index=True),
)

login_failures = Table(
    "console_login_failures",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
           autoincrement=True),
    Column("username", String(64), nullable=False),
    Column("client_ip", String(45), nullable=True),
    Column("at", Timestamp, nullable=False),
    Index("ix_console_login_failures_user_at", "username", "at"),
)

audit = Table(
    "console_audit",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
           autoincrement=True),
    Column("at", Timestamp, nullable=False),
    Column("user_id", String(32), nullable=True),
    Column("username", String(64), nullable=False),
    Column("role", String(20), nullable=False),
    Column("action", String(60), nullable=False),
    Column("target", String(64), nullable=True),
    Column("outcome", String(40), nullable=False),  # ok, refused_role, or an error code
    Column("before", Text, nullable=True),
    Column("after", Text, nullable=True),
    Column("detail", String(300), nullable=True),
    Index("ix_console_audit_target", "target", "id"),
)
