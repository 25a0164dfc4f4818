"""Business days and repayment schedules (pure functions).

A business day is an ``int``: days since 1970-01-01 on the UTC business calendar. Interest uses
the **Actual/365 Fixed** day-count convention everywhere: one day's interest on a balance is
``balance * annual_rate_bps / 10_000 / 365``, rounded half-up to a minor unit, every day.

Schedules: ``annuity`` (equal instalments), ``equal_principal`` and ``bullet`` (interest only,
principal at the end); periods ``daily``, ``weekly`` or ``monthly`` (same day of month, clipped
to the month's last day). Principal parts always sum to the principal (``allocate`` for equal
principal; the last annuity instalment takes what is left). Scheduled interest is the estimate
shown to the merchant; what is owed is what accrues daily.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal

from lianjie.money import allocate

EPOCH = date(1970, 1, 1)
DAYS_PER_YEAR = 365
METHODS = ("annuity", "equal_principal", "bullet")
PERIODS = ("daily", "weekly", "monthly")
TERM_COUNT_MAX = 366


def day_of(value: date | datetime) -> int:
    if isinstance(value, datetime):
        value = value.astimezone(UTC).date()
    return (value - EPOCH).days


def date_of(day: int) -> date:
    return EPOCH + timedelta(days=day)


def daily_interest(balance: int, rate_bps: int) -> int:
    """One day's Actual/365 interest, rounded half-up (the SQL accrual computes the same)."""
    return (balance * rate_bps + 1_825_000) // 3_650_000


@dataclass(frozen=True, slots=True)
class Instalment:
    seq: int
    due_day: int
    principal: int
    interest: int


def due_days(start_day: int, period: str, count: int) -> list[int]:
    if period == "daily":
        return [start_day + i for i in range(1, count + 1)]
    if period == "weekly":
        return [start_day + 7 * i for i in range(1, count + 1)]
    assert period == "monthly", period
    start = date_of(start_day)
    out = []
    for i in range(1, count + 1):
        month0 = start.month - 1 + i
        year, month = start.year + month0 // 12, month0 % 12 + 1
        dom = min(start.day, calendar.monthrange(year, month)[1])
        out.append(day_of(date(year, month, dom)))
    return out


def build(principal: int, rate_bps: int, method: str, period: str, count: int,
          start_day: int) -> list[Instalment]:
    assert principal > 0 and 0 < count <= TERM_COUNT_MAX and method in METHODS
    days = due_days(start_day, period, count)
    lengths = [d - p for d, p in zip(days, [start_day, *days[:-1]], strict=True)]
    if method == "equal_principal":
        parts = allocate(principal, [1] * count)
    elif method == "bullet":
        parts = [0] * (count - 1) + [principal]
    else:
        parts = _annuity_principal(principal, rate_bps, lengths)
    out, balance = [], principal
    for i, (day, length, part) in enumerate(zip(days, lengths, parts, strict=True)):
        interest = _round(Decimal(balance) * rate_bps * length / (10_000 * DAYS_PER_YEAR))
        out.append(Instalment(i + 1, day, part, interest))
        balance -= part
    assert balance == 0 and sum(p.principal for p in out) == principal
    return out


def _round(value: Decimal) -> int:
    return int(value.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def _annuity_principal(principal: int, rate_bps: int, lengths: list[int]) -> list[int]:
    """Principal parts of equal instalments at the mean period's rate; the last takes the rest."""
    count = len(lengths)
    rate = Decimal(rate_bps) * (Decimal(sum(lengths)) / count) / (10_000 * DAYS_PER_YEAR)
    if rate == 0:
        return allocate(principal, [1] * count)
    payment = Decimal(principal) * rate / (1 - (1 + rate) ** -count)
    parts, balance = [], principal
    for _ in range(count - 1):
        interest = Decimal(balance) * rate
        part = max(0, min(balance, _round(payment - interest)))
        parts.append(part)
        balance -= part
    parts.append(balance)
    return parts
