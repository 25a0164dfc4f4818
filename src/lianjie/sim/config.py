"""Settings of a simulation run, and the named limits every part of the simulator keeps.

A run is fully described by its ``SimConfig``: the same config on an empty database gives the
same counts, because every random choice comes from ``random.Random`` streams derived from
``seed`` (one stream per concern, so adding a behaviour does not reshuffle the others).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Literal

from lianjie.errors import ConfigError

# China has kept UTC+8 without daylight saving since 1991, so a fixed offset is exact for any
# simulated date and needs no time zone database on the host.
SHANGHAI = timezone(timedelta(hours=8), "Asia/Shanghai")
DEFAULT_START_DATE = date(2026, 1, 5)  # a Monday: SimConfig's default, for repeatable runs

SIZE_MAX = 1_000_000  # agents of one kind in one run
DAYS_MAX = 366
TICK_S = 600  # simulated seconds between housekeeping ticks (expiry, draining in-flight work)
WINDOW_UNITS_MAX = 256  # operations in flight before the driver is drained
HTTP_LAG_S_MAX = 60  # in HTTP mode, how far the shared clock may run ahead of in-flight work
HTTP_LANES = 4  # concurrent request lanes in HTTP mode
HTTP_TIMEOUT_S = 30.0
HTTP_RETRY_COUNT_MAX = 3
SERVER_START_TIMEOUT_S = 20.0
MAINTENANCE_ROUNDS_MAX = 1000  # batches per housekeeping job before giving up on a backlog

Mode = Literal["inprocess", "http"]


def yesterday(now: datetime) -> date:
    """The platform's previous business day (Asia/Shanghai) as of ``now``: where the command
    line starts a simulation on an empty database, so the simulated day ends shortly before the
    server, which runs on the system clock, records its own traffic."""
    assert now.tzinfo is not None, "clocks are timezone-aware"
    return now.astimezone(SHANGHAI).date() - timedelta(days=1)
DEFAULT_BEHAVIOURS = ("shopping", "p2p", "withdrawals")


@dataclass(frozen=True)
class SimConfig:
    """What to simulate. ``url`` is a running server for ``mode="http"``; when it is None the
    simulator starts one in-process on a free port and stops it at the end."""

    seed: int = 7
    service_providers: int = 3
    merchants: int = 60
    consumers: int = 600
    institutions: int = 2
    days: int = 1
    mode: Mode = "inprocess"
    url: str | None = None
    # The first simulated business day (Asia/Shanghai); None continues after the last day
    # already in the database, or starts on DEFAULT_START_DATE.
    start_date: date | None = None
    behaviours: tuple[str, ...] = field(default=DEFAULT_BEHAVIOURS)
    # The operator key for mode="http"; None takes the one ``lianjie init`` keeps.
    operator_key: str | None = None
    # Average purchases per consumer per weekday; each consumer's own rate varies around it.
    purchases_per_day: float = 4.5

    def __post_init__(self) -> None:
        for name in ("service_providers", "merchants", "consumers", "institutions"):
            value = getattr(self, name)
            if not 0 <= value <= SIZE_MAX:
                raise ConfigError(f"{name} must be from 0 to {SIZE_MAX}")
        if self.merchants < 1 or self.consumers < 2 or self.institutions < 1:
            raise ConfigError("a simulation needs a merchant, two consumers and an institution")
        if not 1 <= self.days <= DAYS_MAX:
            raise ConfigError(f"days must be from 1 to {DAYS_MAX}")
        if self.mode not in ("inprocess", "http"):
            raise ConfigError("mode must be 'inprocess' or 'http'")
        if self.url is not None and self.mode != "http":
            raise ConfigError("url is only used with mode='http'")
        if not 0 < self.purchases_per_day <= 100:
            raise ConfigError("purchases_per_day must be above 0 and at most 100")

    def rng(self, stream: str, start: date) -> random.Random:
        """An independent, repeatable random stream for one concern of a run starting on
        ``start``: the same seed replays a run on the same starting database, and a run that
        continues a database (a later start) is a different population and a different day."""
        return random.Random(f"lianjie-sim:{self.seed}:{start.isoformat()}:{stream}")
