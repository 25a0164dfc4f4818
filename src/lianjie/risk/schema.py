"""Tables of the risk context.

- ``risk_decisions``: the decision log, one row per decision, with the event's parties (so the
  in-process velocity state can be rebuilt from it after a restart, and kept in step across
  processes by reading rows past the last ``seq`` seen), the features, the rules that fired,
  the model's reasons and the versions used. A label (fraud or not) is added later by a case
  decision or an imported file; it is the only column ever updated.
- ``risk_rule_sets`` / ``risk_rules``: versioned rule sets in CEL; one version is active.
- ``risk_lists``: block and allow list entries with an optional expiry.
- ``risk_models``: the model registry (LightGBM model text); one version is active.
- ``risk_cases``: review cases, each holding one ledger hold until decided or expired.
- ``risk_state``: one row of version counters, read once per transaction: the cheap check that
  tells a process to reload rules, lists or the model (hot reload without restart).
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    Index,
    Integer,
    String,
    Table,
    Text,
)

from lianjie.db import Timestamp, metadata

_SEQ = BigInteger().with_variant(Integer, "sqlite")

decisions = Table(
    "risk_decisions",
    metadata,
    Column("seq", _SEQ, primary_key=True, autoincrement=True),
    Column("id", String(32), nullable=False, unique=True),
    Column("kind", String(24), nullable=False),
    Column("subject_id", String(64), nullable=False),
    Column("actor_id", String(64), nullable=False),
    Column("counterparty_id", String(64), nullable=True),
    Column("sp_id", String(64), nullable=True),
    Column("device_id", String(64), nullable=True),
    Column("client_ip", String(45), nullable=True),
    Column("amount", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("category", String(40), nullable=True),
    Column("actor_since", Timestamp, nullable=True),
    Column("counterparty_since", Timestamp, nullable=True),
    Column("outcome", String(10), nullable=False),  # allow, review, block
    Column("score", Float, nullable=False),
    Column("rules_version", Integer, nullable=False),
    Column("model_version", Integer, nullable=False),  # 0: no model
    Column("fired", Text, nullable=False),  # JSON list of rule names (shadow ones marked)
    Column("reasons", Text, nullable=False),  # JSON list of [feature, contribution]
    Column("features", Text, nullable=False),  # JSON object
    Column("label", Integer, nullable=True),  # 1 fraud, 0 legitimate, null unknown
    Column("label_source", String(20), nullable=True),
    Column("created_at", Timestamp, nullable=False),
    Index("ix_risk_decisions_created_at", "created_at"),
    Index("ix_risk_decisions_subject_id", "subject_id"),
)

rule_sets = Table(
    "risk_rule_sets",
    metadata,
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("note", String(200), nullable=True),
    Column("review_score", Float, nullable=False),
    Column("block_score", Float, nullable=False),
    Column("created_at", Timestamp, nullable=False),
)

rules = Table(
    "risk_rules",
    metadata,
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("name", String(64), primary_key=True),
    Column("expression", Text, nullable=False),
    Column("action", String(10), nullable=False),  # block, review, allow, score
    Column("weight", Float, nullable=False),
    Column("enabled", Boolean, nullable=False),
    Column("shadow", Boolean, nullable=False),
    Column("description", String(200), nullable=True),
)

lists = Table(
    "risk_lists",
    metadata,
    Column("list", String(10), primary_key=True),  # block, allow
    Column("value", String(64), primary_key=True),  # a party, device or IP
    Column("reason", String(200), nullable=True),
    Column("expires_at", Timestamp, nullable=True),
    Column("created_at", Timestamp, nullable=False),
)

models = Table(
    "risk_models",
    metadata,
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("features", Text, nullable=False),  # JSON list: the model's input, in order
    Column("model", Text, nullable=False),  # LightGBM model text
    Column("metrics", Text, nullable=False),  # JSON
    Column("created_at", Timestamp, nullable=False),
)

cases = Table(
    "risk_cases",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("decision_id", String(32), nullable=False, unique=True),
    Column("kind", String(24), nullable=False),
    Column("subject_id", String(64), nullable=False),
    Column("hold_entry_id", BigInteger, nullable=False),
    Column("status", String(10), nullable=False),  # open, claimed, approved, rejected, expired
    Column("assignee", String(64), nullable=True),
    Column("note", String(200), nullable=True),
    Column("resolved_entry_id", BigInteger, nullable=True),
    Column("expires_at", Timestamp, nullable=False),
    Column("created_at", Timestamp, nullable=False),
    Column("resolved_at", Timestamp, nullable=True),
    Index("ix_risk_cases_status_expires", "status", "expires_at"),
)

state = Table(
    "risk_state",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),  # always 1
    # Random, set when the row is created: a restored or emptied database is a new epoch, and
    # a process drops everything it folded from the old one.
    Column("epoch", String(32), nullable=False),
    Column("rules_version", Integer, nullable=False),  # the active rule set, 0: built-in
    Column("model_version", Integer, nullable=False),  # the active model, 0: none
    Column("lists_version", Integer, nullable=False),  # bumped on every list change
)
