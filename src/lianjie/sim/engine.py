"""The simulation engine: simulated time, the event queue, and one run from start to report.

Time is a ``ManualClock`` moved event by event through the simulated days (business days in
Asia/Shanghai), so every timestamp the system records follows the daily rhythm. Events sit in a
heap ordered by (time, scheduling order); firing one turns the world's state into tasks for the
driver. Every ``TICK_S`` of simulated time the engine settles in-flight work (each step's
outcome goes to the report and back to the agent that asked) and runs the housekeeping a server
would: expiring orders and ledger holds. At the end it enqueues webhook deliveries for the whole
outbox, verifies the ledger, and compares every consumer's wallet with what the consumer
believes it holds.

Where the engine settles depends only on simulated time and counts, never on how fast the
machine is, so the same seed gives the same counts.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, datetime, timedelta

from sqlalchemy import Engine, func, select
from tqdm import tqdm

from lianjie.clock import ManualClock
from lianjie.errors import ConfigError
from lianjie.payments import PaymentsConfig
from lianjie.payments.schema import orders
from lianjie.sim import ops as o
from lianjie.sim.behaviours import BEHAVIOURS, Behaviour, Fire, midnight
from lianjie.sim.config import (
    DEFAULT_START_DATE,
    SHANGHAI,
    TICK_S,
    WINDOW_UNITS_MAX,
    SimConfig,
)
from lianjie.sim.drivers import Database, Driver, InProcessDriver
from lianjie.sim.population import draw, onboard, onboarding_steps
from lianjie.sim.report import SimReport
from lianjie.sim.world import World

DAY = timedelta(days=1)
TICK = timedelta(seconds=TICK_S)


class Queue:
    """Events in time order; ties keep the order they were scheduled in."""

    def __init__(self) -> None:
        self._heap: list[tuple[datetime, int, Fire]] = []
        self._seq = 0
        self.horizon: datetime | None = None
        self.due = 0  # events scheduled before the horizon (the end of the day being run)

    def at(self, when: datetime, fire: Fire) -> None:
        heapq.heappush(self._heap, (when, self._seq, fire))
        self._seq += 1
        if self.horizon is not None and when < self.horizon:
            self.due += 1

    def start_day(self, end: datetime) -> None:
        self.horizon = end
        self.due = sum(1 for when, _seq, _fire in self._heap if when < end)

    def pop_before(self, end: datetime) -> tuple[datetime, Fire] | None:
        if not self._heap or self._heap[0][0] >= end:
            return None
        when, _seq, fire = heapq.heappop(self._heap)
        return when, fire


class Runner:
    """Feeds tasks to the driver in time order and settles their outcomes."""

    def __init__(self, driver: Driver, clock: ManualClock, report: SimReport) -> None:
        self.driver = driver
        self.clock = clock
        self.report = report
        self._oldest: datetime | None = None

    def perform(self, task: o.Task) -> None:
        lag = self.driver.lag_s_max
        if lag is not None and self._oldest is not None and \
                (task.at - self._oldest).total_seconds() > lag:
            self.settle()
        if task.at > self.clock.now():
            self.clock.set(task.at)
        self._oldest = self._oldest or task.at
        self.driver.submit(task)
        if self.driver.pending >= WINDOW_UNITS_MAX:
            self.settle()

    def settle(self) -> None:
        for step, outcome in self.driver.drain():
            self.report.record(step, outcome)
            if step.then is not None:
                step.then(outcome)
        self._oldest = None

    def tick(self, now: datetime) -> None:
        self.settle()
        if now > self.clock.now():
            self.clock.set(now)
        expired, holds = self.driver.housekeeping(now)
        self.report.orders_expired += expired
        self.report.holds_expired += holds


def start_date(engine: Engine, cfg: SimConfig) -> date:
    """The configured start, or the day after the latest order already in the database."""
    if cfg.start_date is not None:
        return cfg.start_date
    with engine.connect() as conn:
        latest: datetime | None = conn.execute(select(func.max(orders.c.created_at))).scalar()
    if latest is None:
        return DEFAULT_START_DATE
    following: date = latest.astimezone(SHANGHAI).date() + DAY
    return max(DEFAULT_START_DATE, following)


def run_simulation(engine: Engine, cfg: SimConfig, progress: bool = False) -> SimReport:
    """Simulate ``cfg.days`` business days of traffic against ``engine``'s database."""
    started = time.monotonic()
    first = start_date(engine, cfg)
    clock = ManualClock(midnight(first - DAY))
    report = SimReport(cfg.mode, cfg.seed, first, cfg.days)
    report.server_housekeeping = cfg.url is not None
    world = draw(cfg, PaymentsConfig(), first)
    world.clock_shared = cfg.mode == "inprocess" or cfg.url is None
    for m in world.merchants:
        report.kyc[m.kyc] += 1
    behaviours = _behaviours(world)
    with _driver(engine, cfg, clock) as driver, \
            tqdm(total=onboarding_steps(world), unit="event", disable=not progress,
                 dynamic_ncols=True, desc="onboarding") as bar:
        runner = Runner(driver, clock, report)
        onboard(world, first - DAY, _Counting(runner, bar))
        queue = Queue()
        for n in range(cfg.days):
            _run_day(first + n * DAY, behaviours, queue, runner, bar)
        _finish(world, driver, runner)
    report.labels = list(world.truth.labels)
    report.elapsed_s = time.monotonic() - started
    return report


class _Counting:
    """Onboarding's view of the runner: every task is one simulated event on the bar."""

    def __init__(self, runner: Runner, bar: tqdm) -> None:
        self.runner = runner
        self.bar = bar

    def perform(self, task: o.Task) -> None:
        self.runner.report.events += 1
        self.runner.perform(task)
        self.bar.update(1)

    def settle(self) -> None:
        self.runner.settle()


def _behaviours(world: World) -> list[Behaviour]:
    unknown = [name for name in world.cfg.behaviours if name not in BEHAVIOURS]
    if unknown:
        raise ConfigError(f"unknown behaviour(s) {unknown}; known: {sorted(BEHAVIOURS)}")
    return [BEHAVIOURS[name](world) for name in world.cfg.behaviours]


def _run_day(day: date, behaviours: list[Behaviour], queue: Queue, runner: Runner,
             bar: tqdm) -> None:
    start, end = midnight(day), midnight(day + DAY)
    queue.start_day(end)
    for behaviour in behaviours:
        behaviour.plan_day(day, queue)
    bar.set_description(f"{day:%a %Y-%m-%d}", refresh=False)
    bar.reset(total=queue.due)
    next_tick = start + TICK
    while (item := queue.pop_before(end)) is not None:
        when, fire = item
        while when >= next_tick:
            runner.tick(next_tick)
            bar.set_postfix_str(f"{next_tick.astimezone(SHANGHAI):%H:%M}", refresh=False)
            next_tick += TICK
        for task in fire(when):
            runner.perform(task)
        bar.total = queue.due
        runner.report.events += 1
        bar.update(1)
    while next_tick <= end:
        runner.tick(next_tick)
        next_tick += TICK


def _finish(world: World, driver: Driver, runner: Runner) -> None:
    """After the last day's final tick: webhooks for the whole outbox, then the checks."""
    report = runner.report
    report.deliveries_enqueued = driver.finish(runner.clock.now())
    report.verify_problems = driver.verify()
    consumers = [c for c in world.consumers if c.id]
    balances = driver.wallet_balances([c.id for c in consumers])
    if balances is None:
        return
    report.wallets_checked = len(consumers)
    for c in consumers:
        if balances[c.id] != c.balance:
            report.unexpected("wallet:belief_mismatch",
                              f"{c.id} holds {balances[c.id]} but expects {c.balance}")


@contextmanager
def _driver(engine: Engine, cfg: SimConfig, clock: ManualClock) -> Iterator[Driver]:
    if cfg.mode == "inprocess":
        driver: Driver = InProcessDriver(engine, PaymentsConfig(), clock.now())
        try:
            yield driver
        finally:
            driver.close()
        return
    from lianjie.cli import bootstrap
    from lianjie.sim.httpdriver import HttpDriver

    key = cfg.operator_key or bootstrap(engine)
    if cfg.url is not None:
        driver = HttpDriver(cfg.url, key, None)
        try:
            yield driver
        finally:
            driver.close()
        return
    from lianjie.sim.server import owned_server

    with owned_server(engine, clock) as (url, rt):
        driver = HttpDriver(url, key, Database(engine, rt.committer.run, rt.cfg.currency))
        try:
            yield driver
        finally:
            driver.close()
