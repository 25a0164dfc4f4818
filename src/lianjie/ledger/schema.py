"""Ledger tables. Only ``lianjie.ledger`` writes them.

- ``ledger_accounts``: one row per account with its running totals (TigerBeetle's four counters:
  debits and credits, posted and pending) and ``posting_count``, the sequence number of its last
  posting. Totals are a cache of the postings that ``verify`` re-derives.
- ``ledger_entries``: immutable; one per entry (an atomic set of legs), keyed by the client's
  idempotency ``key``; ``fingerprint`` is a hash of its content, so a replay with the same key
  and other content is recognised without comparing every field. On SQLite ``id`` is the
  rowid; ``reverses_id`` is unique where it is set (a partial index: few entries reverse one).
- ``ledger_postings``: immutable; two per posted leg (the debit side and the credit side), with
  the account's balance after it, so the balance at any past instant is one index lookup. Keyed
  by (entry_id, leg_no, side) so inserts append; indexed by (account_id, account_seq) for history.
- ``ledger_holds`` and ``ledger_hold_legs``: two-phase holds. A hold's legs are reserved in the
  accounts' pending counters until it is posted (all or part), voided or expires.

Amounts are BIGINT minor units; a posting's ``amount`` is signed: negative debits the account,
positive credits it. ``balance = credits_posted - debits_posted``.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Index,
    Integer,
    LargeBinary,
    Sequence,
    SmallInteger,
    String,
    Table,
    UniqueConstraint,
    text,
)

from lianjie.db import Timestamp, metadata

account_id_seq = Sequence("ledger_account_id_seq", metadata=metadata)
entry_id_seq = Sequence("ledger_entry_id_seq", metadata=metadata)

accounts = Table(
    "ledger_accounts",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=False),
    Column("owner_id", String(64), nullable=False),
    Column("purpose", String(40), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("flags", Integer, nullable=False),
    Column("status", String(10), nullable=False),
    Column("debits_posted", BigInteger, nullable=False),
    Column("credits_posted", BigInteger, nullable=False),
    Column("debits_pending", BigInteger, nullable=False),
    Column("credits_pending", BigInteger, nullable=False),
    Column("posting_count", BigInteger, nullable=False),
    Column("created_at", Timestamp, nullable=False),
    UniqueConstraint("owner_id", "purpose", "currency"),
)

entries = Table(
    "ledger_entries",
    metadata,
    # SQLite: INTEGER PRIMARY KEY makes the id the rowid (one B-tree fewer; migration 0012)
    Column("id", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True,
           autoincrement=False),
    Column("key", String(200), nullable=False, unique=True),
    Column("kind", SmallInteger, nullable=False),
    Column("code", String(40), nullable=False),
    Column("pending_id", BigInteger, nullable=True),
    Column("reverses_id", BigInteger, nullable=True),
    Column("fingerprint", LargeBinary(16), nullable=False),
    Column("memo", String(200), nullable=True),
    Column("created_at", Timestamp, nullable=False),
    # At most one reversal of an entry; partial, since almost no entry reverses anything.
    Index("uq_ledger_entries_reverses_id", "reverses_id", unique=True,
          sqlite_where=text("reverses_id IS NOT NULL"),
          postgresql_where=text("reverses_id IS NOT NULL")),
)

postings = Table(
    "ledger_postings",
    metadata,
    Column("entry_id", BigInteger, primary_key=True),
    Column("leg_no", SmallInteger, primary_key=True),
    Column("side", SmallInteger, primary_key=True),  # 0 debit, 1 credit
    Column("account_id", BigInteger, nullable=False),
    Column("account_seq", BigInteger, nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("balance_after", BigInteger, nullable=False),
    Column("created_at", Timestamp, nullable=False),
    Index("ix_ledger_postings_account", "account_id", "account_seq", unique=True),
    sqlite_with_rowid=False,
)

holds = Table(
    "ledger_holds",
    metadata,
    Column("entry_id", BigInteger, primary_key=True, autoincrement=False),
    Column("status", SmallInteger, nullable=False),
    Column("expires_at", Timestamp, nullable=True),
    Column("resolved_by_id", BigInteger, nullable=True),
    Index("ix_ledger_holds_status_expires", "status", "expires_at"),
)

hold_legs = Table(
    "ledger_hold_legs",
    metadata,
    Column("entry_id", BigInteger, primary_key=True),
    Column("leg_no", SmallInteger, primary_key=True),
    Column("debit_account_id", BigInteger, nullable=False),
    Column("credit_account_id", BigInteger, nullable=False),
    Column("amount", BigInteger, nullable=False),
    sqlite_with_rowid=False,
)
