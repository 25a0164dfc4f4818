"""API tables: hashed API keys and stored idempotent responses. Only ``lianjie.api`` writes them.

- ``api_keys``: a key is a random secret shown once; only its SHA-256 is stored (the secret has
  192 bits of entropy, so a fast hash is the right tool, as for Stripe's and GitHub's tokens).
  ``prefix`` keeps the first characters so operators can tell keys apart.
- ``api_key_epoch``: one row whose ``epoch`` counts revocations, so that every server process's
  key cache learns of one within a tick.
- ``idempotency_keys``: per API key, the request's fingerprint and the response that was
  returned, kept at least ``IDEMPOTENCY_TTL_S`` (48 hours).
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Index, Integer, LargeBinary, String, Table, Text

from lianjie.db import Timestamp, metadata

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("party_id", String(32), nullable=False, index=True),
    Column("role", String(20), nullable=False),
    Column("prefix", String(16), nullable=False),
    Column("secret_hash", LargeBinary(32), nullable=False, unique=True),
    Column("label", String(100), nullable=True),
    Column("created_at", Timestamp, nullable=False),
    Column("revoked_at", Timestamp, nullable=True),
)

# One row (id 1): its epoch goes up by one with every revocation (migration 0013; ``keys``).
api_key_epoch = Table(
    "api_key_epoch",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("epoch", BigInteger, nullable=False),
)

idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("api_key_id", String(32), primary_key=True),
    Column("key", String(255), primary_key=True),
    Column("fingerprint", LargeBinary(32), nullable=False),
    Column("status_code", Integer, nullable=False),
    Column("body", Text, nullable=False),
    Column("created_at", Timestamp, nullable=False),
    Index("ix_idempotency_keys_created", "created_at"),
)
