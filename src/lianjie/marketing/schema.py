"""Marketing tables. Only ``lianjie.marketing`` writes them.

- ``mkt_groups`` and ``mkt_group_members``: consumer groups that red packets are sent to.
- ``mkt_red_packets``: one per red packet; its money sits in its own ledger escrow account from
  sending to grabbing. ``shares_taken`` and ``amount_taken`` are copies of what the grabs
  posted, kept so the next share can be computed without reading the grabs.
- ``mkt_grabs``: one per (packet, consumer); the primary key makes a second grab impossible.
- ``mkt_campaigns``: a funder, a hard budget (a ledger account that cannot go below zero), a
  time window and a holdout share.
- ``mkt_audience``: who a campaign targeted and whether they were held out (the control group).
- ``mkt_coupon_templates`` and ``mkt_coupons``: what a coupon is worth and who holds one.
- ``mkt_segments`` and ``mkt_segment_members``: rules over payment history and their last
  evaluation.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Index,
    Integer,
    String,
    Table,
    Text,
)

from lianjie.db import Timestamp, metadata

groups = Table(
    "mkt_groups",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("owner_id", String(32), nullable=False),
    Column("name", String(200), nullable=False),
    Column("created_at", Timestamp, nullable=False),
)

group_members = Table(
    "mkt_group_members",
    metadata,
    Column("group_id", String(32), primary_key=True),
    Column("consumer_id", String(32), primary_key=True),
    Column("added_at", Timestamp, nullable=False),
)

red_packets = Table(
    "mkt_red_packets",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("sender_id", String(32), nullable=False),  # a consumer, or a campaign
    Column("group_id", String(32), nullable=True),  # None: anyone may grab (scan to get)
    Column("campaign_id", String(32), nullable=True),
    Column("merchant_id", String(32), nullable=True),  # a visit reward at this merchant
    Column("per_person_max", Integer, nullable=True),  # grabs per consumer over the campaign
    Column("split", String(10), nullable=False),  # equal, lucky
    Column("amount", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("shares", Integer, nullable=False),
    Column("shares_taken", Integer, nullable=False),
    Column("amount_taken", BigInteger, nullable=False),
    Column("seed", String(64), nullable=False),
    Column("status", String(10), nullable=False),  # open, emptied, expired
    Column("escrow_account_id", BigInteger, nullable=False),
    Column("send_entry_id", BigInteger, nullable=False),
    Column("return_entry_id", BigInteger, nullable=True),
    Column("amount_returned", BigInteger, nullable=False),
    Column("expires_at", Timestamp, nullable=False),
    Column("created_at", Timestamp, nullable=False),
    Index("ix_mkt_red_packets_status_expires", "status", "expires_at"),
    Index("ix_mkt_red_packets_campaign", "campaign_id"),
)

grabs = Table(
    "mkt_grabs",
    metadata,
    Column("packet_id", String(32), primary_key=True),
    Column("consumer_id", String(32), primary_key=True),
    Column("seq", Integer, nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("campaign_id", String(32), nullable=True),
    Column("entry_id", BigInteger, nullable=False),
    Column("created_at", Timestamp, nullable=False),
    Index("ix_mkt_grabs_campaign_consumer", "campaign_id", "consumer_id"),
)

campaigns = Table(
    "mkt_campaigns",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("funder_id", String(32), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("budget", BigInteger, nullable=False),  # funded so far
    Column("budget_account_id", BigInteger, nullable=False),
    Column("holdout_bps", Integer, nullable=False),
    Column("starts_at", Timestamp, nullable=False),
    Column("ends_at", Timestamp, nullable=False),
    Column("status", String(10), nullable=False),  # active, ended
    Column("segment_id", String(32), nullable=True),
    Column("created_at", Timestamp, nullable=False),
)

audience = Table(
    "mkt_audience",
    metadata,
    Column("campaign_id", String(32), primary_key=True),
    Column("consumer_id", String(32), primary_key=True),
    Column("holdout", Boolean, nullable=False),
    Column("added_at", Timestamp, nullable=False),
)

coupon_templates = Table(
    "mkt_coupon_templates",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("campaign_id", String(32), nullable=False),
    Column("name", String(200), nullable=False),
    Column("kind", String(10), nullable=False),  # fixed, percent
    Column("amount_off", BigInteger, nullable=False),  # fixed: the discount
    Column("percent_bps", Integer, nullable=False),  # percent: the rate
    Column("discount_max", BigInteger, nullable=False),  # percent: the cap
    Column("min_spend", BigInteger, nullable=False),
    Column("merchant_id", String(32), nullable=True),
    Column("business_type", String(40), nullable=True),
    Column("per_person_max", Integer, nullable=False),
    Column("total_max", Integer, nullable=False),
    Column("issued", Integer, nullable=False),
    Column("claimable", Boolean, nullable=False),
    Column("valid_s", Integer, nullable=False),
    Column("created_at", Timestamp, nullable=False),
    Index("ix_mkt_coupon_templates_campaign", "campaign_id"),
)

coupons = Table(
    "mkt_coupons",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("template_id", String(32), nullable=False),
    Column("campaign_id", String(32), nullable=False),
    Column("consumer_id", String(32), nullable=False),
    Column("via", String(10), nullable=False),  # issued, claimed
    Column("status", String(10), nullable=False),  # active, redeemed
    Column("expires_at", Timestamp, nullable=False),
    Column("created_at", Timestamp, nullable=False),
    Column("order_id", String(32), nullable=True),
    Column("order_amount", BigInteger, nullable=True),
    Column("discount", BigInteger, nullable=True),
    Column("discount_refunded", BigInteger, nullable=False),
    Column("redeemed_at", Timestamp, nullable=True),
    Index("ix_mkt_coupons_template_consumer", "template_id", "consumer_id"),
    Index("ix_mkt_coupons_consumer", "consumer_id"),
    Index("ix_mkt_coupons_order", "order_id"),
)

segments = Table(
    "mkt_segments",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("owner_id", String(32), nullable=False),
    Column("name", String(200), nullable=False),
    Column("rule", Text, nullable=False),  # JSON, see ``segments``
    Column("size", Integer, nullable=False),
    Column("refreshed_at", Timestamp, nullable=True),
    Column("created_at", Timestamp, nullable=False),
)

segment_members = Table(
    "mkt_segment_members",
    metadata,
    Column("segment_id", String(32), primary_key=True),
    Column("consumer_id", String(32), primary_key=True),
)
