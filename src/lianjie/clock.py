"""Clocks: every timestamp comes from an injected clock, timezone-aware and in UTC.

Business dates (a settlement day, a loan's due date) are separate ``date`` values derived from a
timestamp in a configured time zone; they are never the naive date of a UTC timestamp.
"""

from __future__ import annotations

import threading
from datetime import UTC, date, datetime, time, timedelta
from typing import Protocol
from zoneinfo import ZoneInfo


class Clock(Protocol):
    def now(self) -> datetime: ...


class SystemClock:
    """Wall-clock time in UTC."""

    def now(self) -> datetime:
        return datetime.now(UTC)


class ManualClock:
    """A clock that tests and the simulator move by hand. It never goes backwards."""

    def __init__(self, start: datetime | None = None) -> None:
        start = start or datetime(2026, 1, 5, 0, 0, tzinfo=UTC)
        assert start.tzinfo is not None, "clocks are timezone-aware"
        self._now = start.astimezone(UTC)
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def advance(self, delta: timedelta) -> datetime:
        assert delta >= timedelta(0), "a clock never goes backwards"
        with self._lock:
            self._now += delta
            return self._now

    def set(self, when: datetime) -> None:
        assert when.tzinfo is not None
        with self._lock:
            assert when >= self._now, "a clock never goes backwards"
            self._now = when.astimezone(UTC)


def to_us(when: datetime) -> int:
    """Microseconds since the Unix epoch for an aware datetime (how timestamps are stored)."""
    assert when.tzinfo is not None, "timestamps are timezone-aware"
    delta = when - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def business_day_end(business_date: date, timezone: str, cutoff: time) -> datetime:
    """The instant (UTC) at which ``business_date`` ends: its cut-off in ``timezone``; a
    midnight cut-off ends the day at the next midnight, any other at that time on the date
    itself (what is recorded after it belongs to the next business day)."""
    tz = ZoneInfo(timezone)
    local = datetime.combine(business_date, cutoff, tzinfo=tz)
    if cutoff == time(0, 0):
        local = datetime.combine(business_date + timedelta(days=1), cutoff, tzinfo=tz)
    return local.astimezone(UTC)


def from_us(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
