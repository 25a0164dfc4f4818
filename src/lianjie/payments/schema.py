"""Payments tables. Only ``lianjie.payments`` writes them.

- ``parties``: every participant (platform, service providers, merchants, consumers, partner
  institutions) in one table with a ``kind``; a merchant's ``parent_id`` is the service provider
  that onboarded it. Keyed by random public ids so rows can be partitioned by key.
- ``stores`` and ``qr_codes``: a merchant's shops and its static collection codes.
- ``payment_orders``: one per ``out_trade_no`` per merchant; money facts (fee, commission,
  refunded amounts) are copies of what the ledger entry posted, kept for queries.
- ``refunds``: one per ``out_refund_no`` per merchant.
- ``wallet_operations``: top-ups, withdrawals and P2P transfers.
- ``webhook_deliveries``: one per (event, endpoint), with its retry state.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Index,
    Integer,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from lianjie.db import Timestamp, metadata

parties = Table(
    "parties",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("kind", String(20), nullable=False),
    Column("name", String(200), nullable=False),
    Column("status", String(10), nullable=False),  # active, frozen
    Column("kyc_status", String(10), nullable=False),  # pending, approved, rejected
    Column("parent_id", String(32), nullable=True),
    Column("business_type", String(40), nullable=True),
    Column("fee_rate_bps", Integer, nullable=True),
    Column("commission_share_bps", Integer, nullable=True),
    Column("webhook_url", String(500), nullable=True),
    Column("webhook_secret", String(100), nullable=True),
    Column("created_at", Timestamp, nullable=False),
    Index("ix_parties_kind_parent", "kind", "parent_id"),
)

stores = Table(
    "stores",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("merchant_id", String(32), nullable=False, index=True),
    Column("name", String(200), nullable=False),
    Column("created_at", Timestamp, nullable=False),
)

qr_codes = Table(
    "qr_codes",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("merchant_id", String(32), nullable=False, index=True),
    Column("store_id", String(32), nullable=True),
    Column("description", String(200), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("active", SmallInteger, nullable=False),
    Column("created_at", Timestamp, nullable=False),
)

orders = Table(
    "payment_orders",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("merchant_id", String(32), nullable=False),
    Column("sp_id", String(32), nullable=True),
    Column("store_id", String(32), nullable=True),
    Column("qr_code_id", String(32), nullable=True),
    Column("out_trade_no", String(64), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("description", String(200), nullable=False),
    Column("status", String(10), nullable=False),  # open, paid, closed, expired
    Column("expires_at", Timestamp, nullable=False),
    Column("created_at", Timestamp, nullable=False),
    Column("paid_at", Timestamp, nullable=True),
    Column("closed_at", Timestamp, nullable=True),
    Column("payer_id", String(32), nullable=True),
    Column("entry_id", BigInteger, nullable=True),
    Column("fee_amount", BigInteger, nullable=False),
    Column("commission_amount", BigInteger, nullable=False),
    Column("refunded_amount", BigInteger, nullable=False),
    Column("refunded_fee", BigInteger, nullable=False),
    Column("refunded_commission", BigInteger, nullable=False),
    Column("device_id", String(64), nullable=True),
    Column("client_ip", String(45), nullable=True),
    UniqueConstraint("merchant_id", "out_trade_no"),
    Index("ix_payment_orders_status_expires", "status", "expires_at"),
    Index("ix_payment_orders_merchant_created", "merchant_id", "created_at"),
    Index("ix_payment_orders_payer", "payer_id"),
)

refunds = Table(
    "refunds",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("order_id", String(32), nullable=False, index=True),
    Column("merchant_id", String(32), nullable=False),
    Column("out_refund_no", String(64), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("fee_refunded", BigInteger, nullable=False),
    Column("commission_refunded", BigInteger, nullable=False),
    Column("reason", String(200), nullable=True),
    Column("status", String(10), nullable=False),  # succeeded
    Column("entry_id", BigInteger, nullable=False),
    Column("created_at", Timestamp, nullable=False),
    UniqueConstraint("merchant_id", "out_refund_no"),
)

wallet_operations = Table(
    "wallet_operations",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("kind", String(12), nullable=False),  # topup, withdrawal, p2p
    Column("consumer_id", String(32), nullable=False, index=True),
    Column("counterparty_id", String(32), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("entry_id", BigInteger, nullable=False),
    Column("note", String(200), nullable=True),
    Column("created_at", Timestamp, nullable=False),
)

webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("event_id", String(32), nullable=False),
    Column("event_type", String(60), nullable=False),
    Column("party_id", String(32), nullable=False),
    Column("url", String(500), nullable=False),
    Column("payload", Text, nullable=False),
    Column("status", String(10), nullable=False),  # pending, delivered, failed
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", Timestamp, nullable=False),
    Column("last_error", String(300), nullable=True),
    Column("delivered_at", Timestamp, nullable=True),
    Column("created_at", Timestamp, nullable=False),
    UniqueConstraint("event_id", "party_id"),
    Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
    Index("ix_webhook_deliveries_party", "party_id", "created_at"),
)
