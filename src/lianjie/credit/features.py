"""Merchant features from payment history, for one merchant (the 310 decision) or all of them.

History is the ``BUCKETS`` x 30 whole UTC days before the day of ``as_of``. Paid orders are
aggregated per merchant and 30-day bucket (bucket 0 is the 30 days before ``as_of``'s day, up
to bucket 11) and per payer, then one Polars function (``derive``) turns those few rows per
merchant into features. For one merchant (the decision) the database aggregates its orders
through the ``(merchant_id, created_at)`` index; for every merchant (the batch path) it sums the
per merchant and day aggregates the credit end of day keeps (``lianjie.credit.daily``:
``credit_merchant_days``, and ``credit_payer_days`` for exact distinct and repeat payers), a
few hundred rows per merchant whatever its takings. A test holds the two paths equal.

Features (``FEATURES``): monthly takings and their growth and volatility, active days, distinct
and repeat payers, average ticket, refund rate, tenure, history length, whether a service
provider onboarded the merchant, and a risk flag for a frozen merchant.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import polars as pl
from sqlalchemy import Connection, text

from lianjie.clock import to_us

BUCKETS = 12
DAY_US = 86_400 * 1_000_000
BUCKET_DAYS = 30
# An order is paid within its expiry, at most this long after it was created (PaymentsConfig).
ORDER_AGE_US_MAX = 7 * DAY_US
FEATURES = (
    "takings_monthly_avg", "takings_growth", "takings_volatility", "active_days",
    "active_day_ratio", "distinct_payers", "repeat_payer_ratio", "avg_ticket", "refund_rate",
    "tenure_days", "history_days", "payments", "has_service_provider", "risk_flag",
)


def _wide(bucket: str, takings: str) -> str:
    """One column of takings per 30-day bucket, summed in the same pass as the totals: the
    database streams each merchant's rows in key order with nothing to sort."""
    return ", ".join(f"SUM(CASE WHEN {bucket} = {b} THEN {takings} ELSE 0 END) AS t{b}"
                     for b in range(BUCKETS))


# One merchant's orders (the decision path), by the UTC day they were paid on.
_ORDER_DAY = "(paid_at / :day_us)"
_ORDER_SQL = f"""
SELECT merchant_id, {_wide(f"((:last_day - {_ORDER_DAY}) / :bucket_days)", "amount")},
       COUNT(*) AS payments, SUM(refunded_amount) AS refunded,
       COUNT(DISTINCT {_ORDER_DAY}) AS active_days, MIN(paid_at) AS first_paid,
       MIN({_ORDER_DAY}) AS first_day
FROM payment_orders
WHERE status = 'paid' AND created_at >= :created AND paid_at >= :lo AND paid_at < :hi {{where}}
GROUP BY merchant_id
"""
_ORDER_PAYERS = """
SELECT merchant_id, COUNT(*) AS distinct_payers,
       SUM(CASE WHEN n > 1 THEN 1 ELSE 0 END) AS repeat_payers
FROM (SELECT merchant_id, COALESCE(payer_id, '') AS payer, COUNT(*) AS n FROM payment_orders
      WHERE status = 'paid' AND created_at >= :created AND paid_at >= :lo AND paid_at < :hi
      {where} GROUP BY merchant_id, COALESCE(payer_id, '')) per_payer
GROUP BY merchant_id
"""
# Every merchant (the batch path), from the daily aggregates: the same figures. ``+day`` keeps
# SQLite on the primary key (merchant order) rather than the day index, as a whole year is read.
_DAY_SQL = f"""
SELECT merchant_id, {_wide("((:last_day - day) / :bucket_days)", "takings")},
       SUM(payments) AS payments, SUM(refunded) AS refunded, COUNT(*) AS active_days,
       MIN(first_paid) AS first_paid, MIN(day) AS first_day
FROM credit_merchant_days WHERE +day >= :first_day AND +day <= :last_day
GROUP BY merchant_id
"""
_DAY_PAYERS = """
SELECT merchant_id, COUNT(*) AS distinct_payers,
       SUM(CASE WHEN n > 1 THEN 1 ELSE 0 END) AS repeat_payers
FROM (SELECT merchant_id, payer_id, SUM(payments) AS n FROM credit_payer_days
      WHERE +day >= :first_day AND +day <= :last_day GROUP BY merchant_id, payer_id) per_payer
GROUP BY merchant_id
"""
_PARTY_SQL = """
SELECT id AS merchant_id, created_at, parent_id, status FROM parties
WHERE kind = 'merchant' {where}
"""
_BUCKET_SCHEMA: dict[str, Any] = {
    "merchant_id": pl.String, **{f"t{b}": pl.Int64 for b in range(BUCKETS)},
    "payments": pl.Int64, "refunded": pl.Int64, "active_days": pl.Int64,
    "first_paid": pl.Int64, "first_day": pl.Int64}
_PAYER_SCHEMA: dict[str, Any] = {
    "merchant_id": pl.String, "distinct_payers": pl.Int64, "repeat_payers": pl.Int64}
_PARTY_SCHEMA: dict[str, Any] = {"merchant_id": pl.String, "created_at": pl.Int64,
                                 "parent_id": pl.String, "status": pl.String}
FETCH_ROWS = 200_000


def compute(conn: Connection, as_of: datetime, merchant_ids: list[str] | None = None
            ) -> pl.DataFrame:
    """One row per merchant with ``FEATURES`` as of ``as_of`` (a year of whole days)."""
    last_day = to_us(as_of) // DAY_US - 1
    first_day = last_day - BUCKETS * BUCKET_DAYS + 1
    lo, hi = first_day * DAY_US, (last_day + 1) * DAY_US
    params: dict[str, Any] = {"last_day": last_day, "first_day": first_day, "lo": lo, "hi": hi,
                              "created": lo - ORDER_AGE_US_MAX, "day_us": DAY_US,
                              "bucket_days": BUCKET_DAYS}
    if merchant_ids is None:
        buckets = _frame(conn, _DAY_SQL, params, _BUCKET_SCHEMA)
        payers = _frame(conn, _DAY_PAYERS, params, _PAYER_SCHEMA)
        party = _frame(conn, _PARTY_SQL.format(where=""), params, _PARTY_SCHEMA)
        return derive(buckets, payers, party, to_us(as_of), last_day)
    assert merchant_ids and len(merchant_ids) <= 1000
    names = [f"m{i}" for i in range(len(merchant_ids))]
    params.update(zip(names, merchant_ids, strict=True))
    where = "AND merchant_id IN (" + ", ".join(f":{n}" for n in names) + ")"
    buckets = _frame(conn, _ORDER_SQL.format(where=where), params, _BUCKET_SCHEMA)
    payers = _frame(conn, _ORDER_PAYERS.format(where=where), params, _PAYER_SCHEMA)
    party_where = where.replace("merchant_id IN", "id IN")
    party = _frame(conn, _PARTY_SQL.format(where=party_where), params, _PARTY_SCHEMA)
    return derive(buckets, payers, party, to_us(as_of), last_day)


def _frame(conn: Connection, sql: str, params: dict[str, Any],
           schema: dict[str, Any]) -> pl.DataFrame:
    result = conn.execute(text(sql).execution_options(stream_results=True), params)
    chunks = [pl.DataFrame([tuple(r) for r in rows], schema=schema, orient="row")
              for rows in iter(lambda: result.fetchmany(FETCH_ROWS), [])]
    return pl.concat(chunks) if chunks else pl.DataFrame(schema=schema)


def derive(per: pl.DataFrame, payers: pl.DataFrame, party: pl.DataFrame,
           as_of_us: int, last_day: int) -> pl.DataFrame:
    """The features from the aggregates (pure, columnar): ``per`` has one row per merchant with
    its takings per bucket (``t0`` the latest) and totals, ``last_day`` is bucket 0's last day."""
    t = [pl.col(f"t{b}") for b in range(BUCKETS)]
    # Observed months reach back to the oldest bucket with takings; volatility is over every
    # observed month, counting months without takings as zero.
    per = per.with_columns(
        takings=pl.sum_horizontal(t), recent=pl.sum_horizontal(t[:3]),
        before=pl.sum_horizontal(t[3:6]),
        months=(last_day - pl.col("first_day")) // BUCKET_DAYS + 1)
    mean = pl.col("takings") / pl.col("months")
    per = per.with_columns(mean=mean, std=(pl.sum_horizontal(
        [pl.when(pl.col("months") > b).then((t[b] - mean) ** 2).otherwise(0.0)
         for b in range(BUCKETS)]) / pl.col("months")).sqrt()).drop(
        [f"t{b}" for b in range(BUCKETS)])
    vol = per.select("merchant_id", "mean", "std")
    per = per.drop("mean", "std")
    out = party.join(per, on="merchant_id", how="left").join(vol, on="merchant_id", how="left")
    out = out.join(payers, on="merchant_id", how="left").with_columns(
        has_sp=pl.col("parent_id").is_not_null()).drop("parent_id").fill_null(0)
    months = pl.max_horizontal(pl.col("months"), 1)
    return out.select(
        "merchant_id",
        takings_monthly_avg=(pl.col("takings") / months).cast(pl.Float64),
        takings_growth=((pl.col("recent") + 1) / (pl.col("before") + 1) - 1).clip(-1, 10),
        takings_volatility=pl.when(pl.col("mean") > 0)
        .then(pl.col("std") / pl.col("mean")).otherwise(0.0),
        active_days=pl.col("active_days").cast(pl.Float64),
        active_day_ratio=(pl.col("active_days") / (months * 30)).clip(0, 1),
        distinct_payers=pl.col("distinct_payers").cast(pl.Float64),
        repeat_payer_ratio=pl.when(pl.col("distinct_payers") > 0)
        .then(pl.col("repeat_payers") / pl.col("distinct_payers")).otherwise(0.0),
        avg_ticket=pl.when(pl.col("payments") > 0)
        .then(pl.col("takings") / pl.col("payments")).otherwise(0.0),
        refund_rate=pl.when(pl.col("takings") > 0)
        .then(pl.col("refunded") / pl.col("takings")).otherwise(0.0),
        tenure_days=((as_of_us - pl.col("created_at")) / DAY_US).clip(0, None),
        history_days=pl.when(pl.col("first_paid") > 0)
        .then((as_of_us - pl.col("first_paid")) / DAY_US).otherwise(0.0),
        payments=pl.col("payments").cast(pl.Float64),
        has_service_provider=pl.col("has_sp").cast(pl.Float64),
        risk_flag=(pl.col("status") != "active").cast(pl.Float64),
    ).sort("merchant_id")


def for_merchant(conn: Connection, as_of: datetime, merchant_id: str) -> dict[str, float]:
    frame = compute(conn, as_of, [merchant_id])
    assert frame.height == 1, merchant_id
    row = frame.row(0, named=True)
    return {name: round(float(row[name]), 6) for name in FEATURES}
