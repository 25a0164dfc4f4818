"""Credit tables. Only ``lianjie.credit`` writes them.

Business dates are stored as integer *day numbers* (days since 1970-01-01, UTC business
calendar), so the end-of-day job can do date arithmetic set-based on both databases.

- ``credit_products``: a loan product: pricing, schedule shape, limits, repayment waterfall,
  the share of daily receipts taken for repayment, and its funders (``credit_product_funders``).
- ``credit_funder_limits``: each funder's exposure limit and the principal it has outstanding;
  a drawdown raises ``exposure_used`` only ``WHERE exposure_used + share <= exposure_max``.
- ``credit_applications``: one per application with its synchronous decision and offer;
  ``open_key`` holds the merchant id while an offer or loan is open (unique: one at a time).
- ``credit_loans``: a loan's state (outstanding amounts, accrual and delinquency state);
  ``credit_loan_funders``: each funder's share and outstanding principal of that loan. A
  write-off moves what was outstanding or unpaid into the ``*_written_off`` columns (the loan's
  per part, each funder's principal and total loss), so outstanding figures are zero on both
  the loan and its funder rows, as on the funders' ledger accounts, and losses stay reportable;
  ``credit_instalments``: its schedule.
- ``credit_repayments``: one per repayment (manual, from receipts, or a recovery), keyed.
- ``credit_eod_steps``: which end-of-day steps finished for which business day.
- ``credit_models``: the model registry (versioned scorecards and challengers).
- ``credit_merchant_days``: per merchant and UTC day, its paid orders' count, takings, refunded
  amount and first payment time; ``credit_payer_days``: per merchant, UTC day and payer, that
  payer's paid orders (distinct and repeat payers over any window of days are exact from it).
  The credit end of day keeps both up to date (``lianjie.credit.daily``); batch features read
  them instead of every order.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from lianjie.db import Timestamp, metadata

products = Table(
    "credit_products",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("annual_rate_bps", Integer, nullable=False),
    Column("penalty_rate_bps", Integer, nullable=False),
    Column("method", String(20), nullable=False),  # annuity, equal_principal, bullet
    Column("period", String(10), nullable=False),  # daily, weekly, monthly
    Column("term_count", Integer, nullable=False),
    Column("amount_min", BigInteger, nullable=False),
    Column("amount_max", BigInteger, nullable=False),
    Column("history_days_min", Integer, nullable=False),
    Column("late_fee", BigInteger, nullable=False),
    Column("writeoff_dpd", Integer, nullable=False),
    Column("receipt_share_bps", Integer, nullable=False),
    Column("waterfall", String(60), nullable=False),
    Column("limit_policy", String(10), nullable=False),  # refuse, reroute
    Column("offer_ttl_s", Integer, nullable=False),
    Column("created_at", Timestamp, nullable=False),
)

product_funders = Table(
    "credit_product_funders",
    metadata,
    Column("product_id", String(32), primary_key=True),
    Column("seq", Integer, primary_key=True),
    Column("funder_id", String(32), nullable=False),
    Column("share_bps", Integer, nullable=False),
)

funder_limits = Table(
    "credit_funder_limits",
    metadata,
    Column("funder_id", String(32), primary_key=True),
    Column("currency", String(3), primary_key=True),
    Column("exposure_max", BigInteger, nullable=False),
    Column("exposure_used", BigInteger, nullable=False),
)

applications = Table(
    "credit_applications",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("merchant_id", String(32), nullable=False, index=True),
    Column("product_id", String(32), nullable=False),
    Column("amount_requested", BigInteger, nullable=False),
    Column("status", String(10), nullable=False),  # approved, declined, accepted, drawn, expired
    Column("reasons", Text, nullable=False),  # JSON list of reason codes
    Column("limit_amount", BigInteger, nullable=False),
    Column("rate_bps", Integer, nullable=False),
    Column("term_count", Integer, nullable=False),
    Column("score", Integer, nullable=False),
    Column("pd_bps", Integer, nullable=False),
    Column("model_version", String(40), nullable=False),
    Column("features", Text, nullable=False),  # JSON: what the decision saw
    Column("open_key", String(32), nullable=True, unique=True),
    Column("expires_at", Timestamp, nullable=False),
    Column("created_at", Timestamp, nullable=False),
)

loans = Table(
    "credit_loans",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("application_id", String(32), nullable=False, unique=True),
    Column("merchant_id", String(32), nullable=False, index=True),
    Column("product_id", String(32), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("status", String(12), nullable=False),  # active, paid_off, written_off
    Column("principal", BigInteger, nullable=False),
    Column("rate_bps", Integer, nullable=False),
    Column("penalty_rate_bps", Integer, nullable=False),
    Column("score", Integer, nullable=False),
    Column("disbursed_day", Integer, nullable=False),
    Column("maturity_day", Integer, nullable=False),
    Column("principal_outstanding", BigInteger, nullable=False),
    Column("interest_unpaid", BigInteger, nullable=False),
    Column("penalty_unpaid", BigInteger, nullable=False),
    Column("fee_unpaid", BigInteger, nullable=False),
    Column("scheduled_paid", BigInteger, nullable=False),  # principal + interest paid
    Column("interest_paid", BigInteger, nullable=False),
    Column("penalty_paid", BigInteger, nullable=False),
    Column("fee_paid", BigInteger, nullable=False),
    Column("accrued_through_day", Integer, nullable=False),
    Column("unpaid_since_day", Integer, nullable=True),  # due day of the first unpaid instalment
    Column("dpd", Integer, nullable=False),
    Column("dpd30_day", Integer, nullable=True),  # the first day it was 30+ days past due
    Column("written_off_day", Integer, nullable=True),
    Column("written_off_amount", BigInteger, nullable=False),
    Column("principal_written_off", BigInteger, nullable=False, server_default="0"),
    Column("interest_written_off", BigInteger, nullable=False, server_default="0"),
    Column("penalty_written_off", BigInteger, nullable=False, server_default="0"),
    Column("fee_written_off", BigInteger, nullable=False, server_default="0"),
    Column("recovered_amount", BigInteger, nullable=False),
    Column("entry_id", BigInteger, nullable=False),
    Column("created_at", Timestamp, nullable=False),
    Index("ix_credit_loans_status", "status", "product_id"),
)

loan_funders = Table(
    "credit_loan_funders",
    metadata,
    Column("loan_id", String(32), primary_key=True),
    Column("funder_id", String(32), primary_key=True),
    Column("share_bps", Integer, nullable=False),
    Column("principal", BigInteger, nullable=False),
    Column("principal_outstanding", BigInteger, nullable=False),
    Column("principal_written_off", BigInteger, nullable=False, server_default="0"),
    Column("written_off_amount", BigInteger, nullable=False, server_default="0"),
    Index("ix_credit_loan_funders_funder", "funder_id"),
)

instalments = Table(
    "credit_instalments",
    metadata,
    Column("loan_id", String(32), primary_key=True),
    Column("seq", Integer, primary_key=True),
    Column("due_day", Integer, nullable=False),
    Column("principal", BigInteger, nullable=False),
    Column("interest", BigInteger, nullable=False),
    Column("cum_due", BigInteger, nullable=False),
)

repayments = Table(
    "credit_repayments",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("key", String(200), nullable=False, unique=True),
    Column("loan_id", String(32), nullable=False, index=True),
    Column("source", String(10), nullable=False),  # manual, receipts, recovery
    Column("business_day", Integer, nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("penalty", BigInteger, nullable=False),
    Column("fee", BigInteger, nullable=False),
    Column("interest", BigInteger, nullable=False),
    Column("principal", BigInteger, nullable=False),
    Column("entry_id", BigInteger, nullable=False),
    Column("created_at", Timestamp, nullable=False),
)

eod_steps = Table(
    "credit_eod_steps",
    metadata,
    Column("business_day", Integer, primary_key=True),
    Column("step", String(20), primary_key=True),
    Column("items", BigInteger, nullable=False),
    Column("finished_at", Timestamp, nullable=False),
)

models = Table(
    "credit_models",
    metadata,
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("kind", String(20), nullable=False),  # scorecard, lightgbm
    Column("name", String(100), nullable=False),
    Column("active", Integer, nullable=False),
    Column("metrics", Text, nullable=False),
    Column("payload", Text, nullable=False),
    Column("created_at", Timestamp, nullable=False),
    UniqueConstraint("name", "version"),
)

merchant_days = Table(
    "credit_merchant_days",
    metadata,
    Column("merchant_id", String(32), primary_key=True),
    Column("day", Integer, primary_key=True),  # paid_at's UTC day number
    Column("payments", BigInteger, nullable=False),
    Column("takings", BigInteger, nullable=False),
    Column("refunded", BigInteger, nullable=False),
    Column("first_paid", Timestamp, nullable=False),
    Index("ix_credit_merchant_days_day", "day"),  # the end of day rebuilds days for everyone
    sqlite_with_rowid=False,  # rows live in key order: a batch read is one sequential scan
)

payer_days = Table(
    "credit_payer_days",
    metadata,
    # Keyed by payer before day: batch features group by (merchant, payer) along the key.
    Column("merchant_id", String(32), primary_key=True),
    Column("payer_id", String(32), primary_key=True),  # '' for an order without a payer
    Column("day", Integer, primary_key=True),
    Column("payments", BigInteger, nullable=False),
    Index("ix_credit_payer_days_day", "day"),
    sqlite_with_rowid=False,
)
