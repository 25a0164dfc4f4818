"""Vintage curves: for each disbursal month (vintage), the share of its disbursed principal
that has been 30 or more days past due (a written-off loan was, or is counted from its write-off
day) by the end of each month on book.

A month on book is 30 days from each loan's own disbursal day: a loan that first reached 30 days
past due ``n`` days after disbursal counts from month ``n // 30 + 1`` on, so the curves are
cumulative and never fall. The heavy part (a group-by over all loans) is one SQL query on both
databases; what remains is a fold over distinct disbursal days. The loan's ``dpd30_day``,
written by the end of day's delinquency step, is the DPD history this needs; a vintage's curve
runs up to the last business day the end of day closed.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from sqlalchemy import Connection, func, select, text

from lianjie.credit import schedule
from lianjie.credit.schema import eod_steps

MONTH_DAYS = 30
MOB_MAX = 36  # months on book shown per vintage
VINTAGES_MAX = 36  # the most recent vintages shown

_BY_DAY = (
    "SELECT disbursed_day, currency, bad_mob, SUM(principal) FROM ("
    "  SELECT disbursed_day, currency, principal, CASE WHEN COALESCE(dpd30_day, "
    "  written_off_day) IS NULL THEN -1 ELSE (COALESCE(dpd30_day, written_off_day) "
    "  - disbursed_day) / :month END AS bad_mob FROM credit_loans) x "
    "GROUP BY disbursed_day, currency, bad_mob")


def vintage_curves(conn: Connection, currency_code: str = "CNY") -> list[dict[str, Any]]:
    """Each vintage (``YYYY-MM``) oldest first, with its principal and its curve: the share of
    that principal 30+ days past due at months on book 1, 2, ... (fractions, 4 decimals)."""
    closed = conn.execute(select(func.max(eod_steps.c.business_day))).scalar()
    if closed is None:
        return []
    total: dict[str, int] = defaultdict(int)
    bad: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))
    first: dict[str, int] = {}
    for day, cur, bad_mob, principal in conn.execute(text(_BY_DAY), {"month": MONTH_DAYS}):
        if cur != currency_code:
            continue
        month = schedule.date_of(int(day)).strftime("%Y-%m")
        total[month] += int(principal)
        first[month] = min(first.get(month, int(day)), int(day))
        if int(bad_mob) >= 0:
            bad[month][int(bad_mob)] += int(principal)
    out = []
    for month in sorted(total)[-VINTAGES_MAX:]:
        months = min(max(int(closed) - first[month], 0) // MONTH_DAYS + 1, MOB_MAX)
        curve, seen = [], 0
        for mob in range(1, months + 1):
            seen += bad[month].get(mob - 1, 0)
            curve.append(round(seen / total[month], 4))
        out.append({"vintage": month, "principal": total[month], "curve": curve})
    return out
