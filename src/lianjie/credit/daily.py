"""Per merchant and day aggregates of paid orders, so batch features read a few rows per merchant
and day instead of every order.

``credit_merchant_days`` holds, per merchant and UTC day of ``paid_at``, the paid orders' count,
takings, refunded amount and first payment time; ``credit_payer_days`` the paid orders per
merchant, day and payer (distinct and repeat payers over a window cannot be summed from daily
counts, but they are exact from these rows; a payer who pays daily has one row a day).

The credit end of day calls ``refresh`` for the days around the business day it closes (see
``refresh_window``): those days are rebuilt from the orders (delete, then insert the groups), and
so is every earlier day of an order refunded in the window, since a refund changes the order's
``refunded_amount``. Rebuilding is idempotent, so reruns and catch-up days are harmless.
"""

from __future__ import annotations

from datetime import datetime, time, timedelta

from sqlalchemy import Connection, text

from lianjie.clock import to_us
from lianjie.credit import schedule

DAY_US = 86_400 * 1_000_000
WINDOW_DAYS = 3
REFUND_DAYS_MAX = 10_000  # (merchant, day) pairs rebuilt for refunds in one run, at most

_MERCHANT_DAYS = (
    "INSERT INTO credit_merchant_days (merchant_id, day, payments, takings, refunded, "
    "first_paid) SELECT merchant_id, paid_at / :day_us, COUNT(*), SUM(amount), "
    "SUM(refunded_amount), MIN(paid_at) FROM payment_orders "
    "WHERE status = 'paid' AND paid_at >= :lo AND paid_at < :hi {where} "
    "GROUP BY merchant_id, paid_at / :day_us")
_PAYER_DAYS = (
    "INSERT INTO credit_payer_days (merchant_id, day, payer_id, payments) "
    "SELECT merchant_id, paid_at / :day_us, COALESCE(payer_id, ''), COUNT(*) "
    "FROM payment_orders WHERE status = 'paid' AND paid_at >= :lo AND paid_at < :hi {where} "
    "GROUP BY merchant_id, paid_at / :day_us, COALESCE(payer_id, '')")
_REFUNDED_DAYS = (
    "SELECT DISTINCT o.merchant_id, o.paid_at / :day_us FROM refunds r "
    "JOIN payment_orders o ON o.id = r.order_id "
    "WHERE r.created_at >= :lo AND r.created_at < :hi AND o.paid_at < :lo")


def refresh(conn: Connection, first_day: int, last_day: int) -> int:
    """Rebuild days ``first_day`` to ``last_day`` (UTC day numbers) for every merchant, and each
    earlier day of an order refunded in that range; returns the merchant-days written."""
    assert first_day <= last_day
    lo, hi = first_day * DAY_US, (last_day + 1) * DAY_US
    pairs = conn.execute(text(_REFUNDED_DAYS), {"day_us": DAY_US, "lo": lo, "hi": hi}).all()
    assert len(pairs) <= REFUND_DAYS_MAX, "too many refunded days in one run"
    n = _rebuild(conn, lo, hi, "", {})
    for merchant_id, day in pairs:
        n += _rebuild(conn, int(day) * DAY_US, (int(day) + 1) * DAY_US,
                      "AND merchant_id = :m", {"m": merchant_id})
    return n


def _rebuild(conn: Connection, lo: int, hi: int, where: str, extra: dict[str, str]) -> int:
    params = {"day_us": DAY_US, "lo": lo, "hi": hi, "first": lo // DAY_US,
              "last": hi // DAY_US - 1, **extra}
    for table in ("credit_merchant_days", "credit_payer_days"):
        conn.execute(text(f"DELETE FROM {table} WHERE day >= :first AND day <= :last {where}"),
                     params)
    conn.execute(text(_PAYER_DAYS.format(where=where)), params)
    return int(conn.execute(text(_MERCHANT_DAYS.format(where=where)), params).rowcount or 0)


def refresh_window(now: datetime, day: int) -> tuple[int, int]:
    """The UTC days the end of day for business ``day`` rebuilds: from the day before the local
    calendar day ``day`` began (any cut-off's business day starts within it) to ``now``'s, at
    most ``WINDOW_DAYS`` (a catch-up over many days rebuilds each day a few times, not all)."""
    start = datetime.combine(schedule.date_of(day), time(0), tzinfo=now.tzinfo)
    first = to_us(start - timedelta(days=1)) // DAY_US
    return first, max(first, min(to_us(now) // DAY_US, first + WINDOW_DAYS - 1))
