"""Clearing tables. Only ``lianjie.clearing`` writes them.

- ``clearing_terms``: a merchant's settlement delay (T+n) and the institution that pays it out.
- ``clearing_caps``: an institution's net debit cap.
- ``clearing_watermarks``: per merchant ledger account, the last ``account_seq`` settled, so
  settlement nets exactly the postings not settled before, each once.
- ``clearing_runs`` and ``clearing_steps``: one end-of-day run per business date and the steps
  it finished; a rerun skips finished steps, so a killed run resumes.
- ``clearing_settlements``: one merchant settlement per (merchant, currency, business date),
  with its ledger entries and payout instruction.
- ``clearing_positions`` and ``clearing_instructions``: each institution's net position for the
  day and the settlement instructions of the multilateral netting.
- ``clearing_log_leaves`` and ``clearing_log_nodes``: the append-only Merkle log of ledger
  entries (leaf hashes, and every complete subtree hash, so proofs take O(log n) lookups).
- ``clearing_log_heads``: the signed tree head of each business day, chained to the previous.
- ``clearing_recon_imports`` and ``clearing_recon_items``: partners' files and what matching
  found, with operators' resolutions.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Date,
    Index,
    Integer,
    LargeBinary,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from lianjie.db import Timestamp, metadata

terms = Table(
    "clearing_terms",
    metadata,
    Column("merchant_id", String(32), primary_key=True),
    Column("delay_days", Integer, nullable=False),
    Column("payout_institution_id", String(32), nullable=True),
    Column("updated_at", Timestamp, nullable=False),
)

caps = Table(
    "clearing_caps",
    metadata,
    Column("institution_id", String(32), primary_key=True),
    Column("net_debit_cap", BigInteger, nullable=False),
    Column("updated_at", Timestamp, nullable=False),
)

watermarks = Table(
    "clearing_watermarks",
    metadata,
    Column("account_id", BigInteger, primary_key=True, autoincrement=False),
    Column("settled_seq", BigInteger, nullable=False),
)

runs = Table(
    "clearing_runs",
    metadata,
    Column("business_date", Date, primary_key=True),
    Column("status", String(10), nullable=False),  # running, done
    Column("started_at", Timestamp, nullable=False),
    Column("finished_at", Timestamp, nullable=True),
)

steps = Table(
    "clearing_steps",
    metadata,
    Column("business_date", Date, primary_key=True),
    Column("step", String(30), primary_key=True),
    Column("result", Text, nullable=False),
    Column("finished_at", Timestamp, nullable=False),
)

settlements = Table(
    "clearing_settlements",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("merchant_id", String(32), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("business_date", Date, nullable=False),
    Column("value_date", Date, nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("from_seq", BigInteger, nullable=False),
    Column("to_seq", BigInteger, nullable=False),
    Column("institution_id", String(32), nullable=False),
    Column("entry_id", BigInteger, nullable=False),
    Column("payout_entry_id", BigInteger, nullable=True),  # none when a loan held it all
    Column("status", String(10), nullable=False),  # instructed, to_loan (a loan took it all)
    Column("created_at", Timestamp, nullable=False),
    # Where this settlement debited merchant_pending, and whether a later settlement has netted
    # past that posting yet (0: not yet), so settlement finds the open ones without a scan.
    Column("pending_account_id", BigInteger, nullable=False),
    Column("pending_seq", BigInteger, nullable=False),
    Column("netted", SmallInteger, nullable=False),
    UniqueConstraint("merchant_id", "currency", "business_date"),
    Index("ix_clearing_settlements_date", "business_date"),
    Index("ix_clearing_settlements_netted", "netted", "pending_account_id"),
)

positions = Table(
    "clearing_positions",
    metadata,
    Column("business_date", Date, primary_key=True),
    Column("institution_id", String(32), primary_key=True),
    Column("currency", String(3), primary_key=True),
    Column("debits", BigInteger, nullable=False),
    Column("credits", BigInteger, nullable=False),
    Column("net", BigInteger, nullable=False),  # credits - debits: > 0 the platform owes it
    Column("net_debit_cap", BigInteger, nullable=False),
    Column("status", String(16), nullable=False),  # within_cap, cap_exceeded
)

instructions = Table(
    "clearing_instructions",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("business_date", Date, nullable=False, index=True),
    Column("kind", String(20), nullable=False),  # interbank, merchant_payout
    Column("payer_id", String(32), nullable=False),
    Column("payee_id", String(32), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("value_date", Date, nullable=False),
    Column("reference", String(64), nullable=False, unique=True),
    Column("status", String(10), nullable=False),  # instructed, held
    Column("created_at", Timestamp, nullable=False),
)

log_leaves = Table(
    "clearing_log_leaves",
    metadata,
    # SQLite: INTEGER PRIMARY KEY makes the leaf index the rowid (two B-trees a row, not three)
    Column("leaf_index", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True,
           autoincrement=False),
    Column("entry_id", BigInteger, nullable=False, unique=True),
    Column("leaf_hash", LargeBinary(32), nullable=False),
)

log_nodes = Table(
    "clearing_log_nodes",
    metadata,
    Column("level", SmallInteger, primary_key=True),
    Column("node_index", BigInteger, primary_key=True),
    Column("hash", LargeBinary(32), nullable=False),
    sqlite_with_rowid=False,
)

log_heads = Table(
    "clearing_log_heads",
    metadata,
    Column("business_date", Date, primary_key=True),
    Column("tree_size", BigInteger, nullable=False),
    Column("day_start_index", BigInteger, nullable=False),
    Column("root_hash", LargeBinary(32), nullable=False),
    Column("prev_root_hash", LargeBinary(32), nullable=False),
    Column("signed_body", Text, nullable=False),
    Column("signature", LargeBinary(64), nullable=False),
    Column("key_id", String(64), nullable=False),
    Column("created_at", Timestamp, nullable=False),
)

recon_imports = Table(
    "clearing_recon_imports",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("institution_id", String(32), nullable=False),
    Column("business_date", Date, nullable=False),
    Column("format", String(10), nullable=False),
    Column("file_sha256", String(64), nullable=False, unique=True),
    Column("currency", String(3), nullable=False),
    Column("line_count", Integer, nullable=False),
    Column("summary", Text, nullable=False),
    Column("created_at", Timestamp, nullable=False),
)

recon_items = Table(
    "clearing_recon_items",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("import_id", String(32), nullable=False, index=True),
    Column("outcome", String(20), nullable=False),
    Column("reference", String(64), nullable=False),
    Column("ours_amount", BigInteger, nullable=True),
    Column("theirs_amount", BigInteger, nullable=True),
    Column("value_date", Date, nullable=True),
    Column("status", String(10), nullable=False),  # matched, open, resolved
    Column("resolution", String(200), nullable=True),
    Column("correction_entry_id", BigInteger, nullable=True),
    Column("resolved_at", Timestamp, nullable=True),
)
