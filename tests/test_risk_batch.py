"""``risk.decide_many`` and ``risk.Batch`` decide as ``decide`` one by one: the same outcomes,
scores, rules, features and log rows, in the same order, with each event counted by the next
ones of its batch; blocks are logged in their place; and the seqs the batch's one
``executemany`` wrote are known to the process, so catching up with another process's rows
neither counts them twice nor skips the other's."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, select

from lianjie import risk
from lianjie.db import make_engine
from lianjie.risk import schema, store
from lianjie.risk.engine import refresh_and_features
from lianjie.sim import fraud

UNIT = 40  # events decided in one unit of work, at one time, as a grab batch is


def _units() -> list[tuple[datetime, list[risk.Event]]]:
    stream = fraud.generate(days=2, consumers=80, merchants=12, frauds_per_day=6, seed=9)
    events = stream.events[:1200]
    return [(events[i][0], [e for _, e in events[i:i + UNIT]])
            for i in range(0, len(events), UNIT)]


def _block_listed(engine: Engine, units: list[tuple[datetime, list[risk.Event]]]) -> str:
    """Put the busiest payer on the block list, so that blocks fall inside batches."""
    actors: dict[str, int] = {}
    for _, events in units:
        for e in events:
            actors[e.actor_id] = actors.get(e.actor_id, 0) + 1
    busiest = max(actors, key=lambda a: actors[a])
    with engine.begin() as conn:
        store.do_add_to_list(conn, units[0][0] - timedelta(hours=1), "block", busiest)
    return busiest


def _one_by_one(engine: Engine, now: datetime, events: list[risk.Event]
                ) -> list[risk.Decision | risk.RiskDeclined]:
    out: list[risk.Decision | risk.RiskDeclined] = []
    with engine.begin() as conn:
        for e in events:
            try:
                out.append(risk.decide(conn, now, e, reviewable=False))
            except risk.RiskDeclined as declined:
                declined.record(conn)
                out.append(declined)
    return out


def _many(engine: Engine, now: datetime, events: list[risk.Event]
          ) -> list[risk.Decision | risk.RiskDeclined]:
    with engine.begin() as conn:
        return risk.decide_many(conn, now, events, reviewable=False)


def _run(engine: Engine, decide: Callable[..., list[Any]]
         ) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    units = _units()
    _block_listed(engine, units)
    seen = []
    for now, events in units:
        for d in decide(engine, now, events):
            d = d.decision if isinstance(d, risk.RiskDeclined) else d
            seen.append((d.outcome, d.score, d.fired, d.shadow_fired, d.reasons,
                         d.rules_version, d.model_version, d.event, d.features))
    t = schema.decisions
    columns = [c for c in t.columns if c.name not in ("seq", "id")]
    with engine.connect() as conn:
        rows = [tuple(r) for r in conn.execute(select(*columns).order_by(t.c.seq))]
    return seen, rows


def test_decide_many_decides_and_logs_as_decide_one_by_one(
        engine: Engine, fresh: Callable[[], Engine]) -> None:
    seen_one, rows_one = _run(engine, _one_by_one)
    outcomes = {s[0] for s in seen_one}
    assert {"allow", "block"} <= outcomes, outcomes  # both paths are exercised
    seen_many, rows_many = _run(fresh(), _many)
    assert len(seen_many) == len(seen_one) == len(rows_one)
    for i, (a, b) in enumerate(zip(seen_one, seen_many, strict=True)):
        assert a == b, i
    assert rows_many == rows_one


def test_a_batch_sees_its_own_earlier_events(engine: Engine) -> None:
    now = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
    events = [risk.Event("payment", f"ord_{i}", "cus_burst", 100, "CNY", "mch_x", None, None,
                         None) for i in range(12)]
    with engine.begin() as conn:
        decided = risk.decide_many(conn, now, events)
    counts = [(d.decision if isinstance(d, risk.RiskDeclined) else d).features["c_count_1m"]
              for d in decided]
    assert counts == list(range(12))


def test_catching_up_after_a_batch_counts_each_row_once(engine: Engine) -> None:
    other = make_engine(engine.url.render_as_string(hide_password=False))
    try:
        units = _units()[:6]
        for i, (now, events) in enumerate(units):
            # This process decides in batches; another one decides between them.
            _many(engine, now, events)
            _one_by_one(other, now, [risk.Event("payment", f"ord_o{i}", "cus_other", 100,
                                                "CNY", events[0].counterparty_id, None,
                                                None, None)])
        probe = units[-1][1][0]
        when = units[-1][0] + timedelta(seconds=1)
        restarted = make_engine(engine.url.render_as_string(hide_password=False))
        try:
            # The state kept live across the batches equals a fold of the log from scratch.
            assert refresh_and_features(engine, when, probe) == \
                refresh_and_features(restarted, when, probe)
            assert refresh_and_features(other, when, probe) == \
                refresh_and_features(restarted, when, probe)
        finally:
            restarted.dispose()
    finally:
        other.dispose()
