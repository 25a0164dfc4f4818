"""The end-of-day job: settle merchants, close credit's day, seal the day's log, clear between
institutions.

Idempotent and resumable. Each step runs in one transaction that also records the step as done
(``clearing_steps``), so a run killed anywhere leaves each step either finished or untouched; a
rerun skips finished steps and redoes the rest. Money moves only through ledger entries keyed
per (merchant, currency, business date), and settlement watermarks move in the same
transaction, so no item is settled twice. Every step locks the day's run row first, so two
runs of one day on PostgreSQL take turns.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from typing import Any

from sqlalchemy import Connection, Engine, select
from sqlalchemy.exc import IntegrityError

from lianjie import credit
from lianjie.clearing import log, netting, settlement
from lianjie.clearing import schema as s
from lianjie.clearing.config import ClearingConfig
from lianjie.clearing.signing import Signer, load_signer
from lianjie.clock import Clock, SystemClock
from lianjie.committer import run_now
from lianjie.errors import DomainError, ErrorCode

# Settlement moves the day's net from merchant_pending to merchant_available and pays out all
# but what loans repaid from receipts hold back; credit's day then takes that held amount from
# merchant_available. A payment after the cut-off is in neither: the next day settles it.
STEPS = ("settle", "credit", "seal", "clear")


@dataclass
class EodReport:
    business_date: date
    steps: dict[str, dict[str, Any]] = field(default_factory=dict)
    resumed: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)  # wall time of each step's unit

    def as_json(self) -> dict[str, Any]:
        return {"object": "end_of_day", "business_date": self.business_date.isoformat(),
                "steps": self.steps, "resumed": self.resumed,
                "seconds": {k: round(v, 3) for k, v in self.seconds.items()}}


def _start(conn: Connection, now: datetime, business_date: date) -> None:
    found = conn.execute(select(s.runs.c.status).where(s.runs.c.business_date == business_date)
                         ).first()
    if found is None:
        conn.execute(s.runs.insert().values(business_date=business_date, status="running",
                                            started_at=now))


def _lock(conn: Connection, business_date: date) -> None:
    query = select(s.runs.c.status).where(s.runs.c.business_date == business_date)
    if conn.dialect.name == "postgresql":
        query = query.with_for_update()
    conn.execute(query).one()


def _done(conn: Connection, business_date: date, step: str) -> dict[str, Any] | None:
    found = conn.execute(select(s.steps.c.result).where(
        s.steps.c.business_date == business_date, s.steps.c.step == step)).scalar()
    return None if found is None else dict(json.loads(found))


def _step_fn(step: str, cfg: ClearingConfig, signer: Signer, business_date: date
             ) -> Callable[[Connection, datetime], dict[str, Any]]:
    def credit_day(conn: Connection, now: datetime) -> dict[str, Any]:
        # Posted now, after the cut-off, so the log and every statement keep time order; the
        # repayment moves money within merchant_available, which settlement does not net.
        held = credit.receipts_holdback(conn, business_date, _settled(conn, business_date))
        return dict(credit.run_end_of_day(conn, business_date, now=now, tz=cfg.timezone,
                                          cutoff=cfg.cutoff, held=held))

    def settle(conn: Connection, now: datetime) -> dict[str, Any]:
        return asdict(settlement.settle_merchants(conn, now, cfg, business_date,
                                                  holdback=credit.receipts_holdback))

    def seal(conn: Connection, now: datetime) -> dict[str, Any]:
        head = log.seal_day(conn, now, business_date, cfg.day_end(business_date), signer)
        return {"tree_size": head.tree_size, "day_start_index": head.day_start_index,
                "root_hash": head.root_hash.hex()}

    def clear(conn: Connection, now: datetime) -> dict[str, Any]:
        head = log.get_head(conn, business_date)
        assert head is not None, "the day is sealed before it is cleared"
        return netting.clear_day(conn, now, cfg, business_date, head.day_start_index,
                                 head.tree_size)

    return {"credit": credit_day, "settle": settle, "seal": seal, "clear": clear}[step]


def _settled(conn: Connection, business_date: date) -> dict[tuple[str, str], int]:
    """What settlement moved to each merchant's available balance on this run."""
    t = s.settlements
    return {(r.merchant_id, r.currency): int(r.amount) for r in conn.execute(
        select(t.c.merchant_id, t.c.currency, t.c.amount).where(
            t.c.business_date == business_date))}


def run_end_of_day(engine: Engine, business_date: date, *, clock: Clock | None = None,
                   cfg: ClearingConfig | None = None, signer: Signer | None = None
                   ) -> EodReport:
    """Run (or resume) the end of ``business_date``; a finished day returns its report."""
    clock = clock or SystemClock()
    cfg = cfg or ClearingConfig()
    if clock.now() < cfg.day_end(business_date):
        raise DomainError(ErrorCode.BUSINESS_DAY_NOT_OVER,
                          f"business day {business_date} ends at {cfg.day_end(business_date)}",
                          "business_date")
    signer = signer or load_signer()
    with engine.connect() as conn:
        latest = log.latest_head(conn)
        sealed = log.get_head(conn, business_date)
    if latest is not None and latest.business_date > business_date and sealed is None:
        raise DomainError(ErrorCode.DAY_ALREADY_SEALED,
                          f"{latest.business_date} is sealed; days close in order",
                          "business_date")
    try:
        run_now(engine, lambda conn: _start(conn, clock.now(), business_date))
    except IntegrityError:
        pass  # another run of this day started at the same instant; steps take turns below
    report = EodReport(business_date)
    for step in STEPS:
        fn = _step_fn(step, cfg, signer, business_date)

        def unit(conn: Connection, step: str = step,
                 fn: Callable[[Connection, datetime], dict[str, Any]] = fn
                 ) -> tuple[dict[str, Any], bool]:
            _lock(conn, business_date)
            done = _done(conn, business_date, step)
            if done is not None:
                return done, True
            now = clock.now()
            result = fn(conn, now)
            conn.execute(s.steps.insert().values(business_date=business_date, step=step,
                                                 result=json.dumps(result), finished_at=now))
            return result, False

        started = time.perf_counter()
        result, resumed = run_now(engine, unit)
        report.seconds[step] = time.perf_counter() - started
        report.steps[step] = result
        if resumed:
            report.resumed.append(step)
    run_now(engine, lambda conn: conn.execute(
        s.runs.update().where(s.runs.c.business_date == business_date)
        .values(status="done", finished_at=clock.now())))
    return report
