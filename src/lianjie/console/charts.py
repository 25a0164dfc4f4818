"""Chart data helpers: every chart on the console is Chart.js data
``{"labels": [...], "datasets": [{"label": ..., "data": [...]}]}`` built by these functions,
served as JSON and drawn by ``static/console.js``, which polls it to keep the chart live.

Amounts are sent in major units (yuan) for display only; nothing computes with them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, text

from lianjie.clock import to_us
from lianjie.console.web import BUSINESS_TZ

MINUTE_US = 60_000_000
HOUR_US = 60 * MINUTE_US


def series(labels: Sequence[str], **datasets: Sequence[float | None]) -> dict[str, Any]:
    """Chart data with one dataset per keyword (its name is the legend label key)."""
    return {"labels": list(labels),
            "datasets": [{"label": name, "data": list(values)} for name, values in
                         datasets.items()]}


def major(amount_minor: Any, exponent: int = 2) -> float:
    """For drawing only."""
    return round(int(amount_minor or 0) / int(10**exponent), exponent)


def bucket_labels(start: datetime, count: int, width: timedelta, tz: Any) -> list[str]:
    return [(start + i * width).astimezone(tz).strftime("%H:%M") for i in range(count)]


def hour_labels(start: datetime) -> list[str]:
    """The 24 hour labels of the business day starting at ``start``, in business time."""
    return bucket_labels(start, 24, timedelta(hours=1), BUSINESS_TZ)


def bucketed(conn: Connection, sql: str, start: datetime, end: datetime, width_us: int,
             count: int, columns: int = 1) -> list[list[int]]:
    """Run ``sql`` (selecting ``bucket`` then ``columns`` sums, with :start, :end, :width
    parameters) and spread its rows over ``count`` buckets, zero where there are none."""
    out = [[0] * count for _ in range(columns)]
    rows: Iterable[Any] = conn.execute(text(sql), {"start": to_us(start), "end": to_us(end),
                                                   "width": width_us})
    for row in rows:
        b = int(row[0])
        if 0 <= b < count:
            for c in range(columns):
                out[c][b] = int(row[c + 1] or 0)
    return out
