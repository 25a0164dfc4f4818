"""Velocity across processes: two engines on one database (each with its own in-process state,
as two server processes have) count every event the other decided, however their transactions
interleave. On PostgreSQL a row's ``seq`` is drawn at insert, so rows commit out of ``seq``
order; a process that reads past a missing seq must come back for it."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Connection, Engine

from lianjie import risk
from lianjie.db import make_engine
from lianjie.risk.engine import refresh, refresh_and_features
from lianjie.risk.features import Event

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
SHOP = "mch_shop"
WAIT_S = 60  # no statement, barrier or thread may hang the test for longer


@pytest.fixture
def other(engine: Engine) -> Iterator[Engine]:
    """A second engine on the same database: a second process's state."""
    second = make_engine(engine.url.render_as_string(hide_password=False))
    yield second
    second.dispose()


def _event(actor: str, amount: int = 100) -> Event:
    return Event("payment", f"ord_{actor}", actor, amount, "CNY", SHOP, None, None, None)


def _bound(conn: Connection) -> None:
    """A statement waiting on a lock fails after ``WAIT_S`` instead of hanging the test."""
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(f"SET LOCAL statement_timeout = {WAIT_S * 1000}")


def _decide(engine: Engine, actor: str) -> None:
    with engine.connect() as conn:
        conn.execution_options(sqlite_begin="IMMEDIATE")
        with conn.begin():
            _bound(conn)
            risk.decide(conn, T0, _event(actor))


def _shop_count(engine: Engine) -> int:
    feats = refresh_and_features(engine, T0 + timedelta(seconds=1), _event("cus_probe"))
    return int(feats["m_count_1h"])


def test_a_row_committed_after_a_higher_seq_was_read_is_still_counted(
        engine: Engine, other: Engine, db_kind: str) -> None:
    if db_kind != "postgresql":
        pytest.skip("SQLite has one writer at a time: rows commit in seq order")
    with engine.begin() as conn:  # the version row, made on first use, exists before the race
        refresh(conn, T0)
    with engine.connect() as slow:
        tx = slow.begin()
        _bound(slow)
        risk.decide(slow, T0, _event("cus_slow"))  # seq 1, not committed yet
        _decide(other, "cus_b")  # seq 2, committed
        _decide(engine, "cus_c")  # seq 3, committed
        assert _shop_count(other) == 2  # reads past seq 1, which is not visible yet
        tx.commit()
    assert _shop_count(other) == 3  # seq 1 appeared: counted
    assert _shop_count(engine) == 3
    _decide(other, "cus_d")
    assert _shop_count(other) == 4 and _shop_count(engine) == 4


def test_two_engines_racing_both_count_every_event(engine: Engine, other: Engine) -> None:
    per_engine, per_tx = 60, 3
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def run(e: Engine, name: str) -> None:
        try:
            barrier.wait(WAIT_S)
            for i in range(0, per_engine, per_tx):
                with e.connect() as conn:
                    conn.execution_options(sqlite_begin="IMMEDIATE")
                    with conn.begin():
                        _bound(conn)
                        for j in range(i, i + per_tx):
                            risk.decide(conn, T0, _event(f"cus_{name}_{j}"))
        except Exception as exc:  # noqa: BLE001 - reported below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(e, n)) for e, n in ((engine, "a"),
                                                                      (other, "b"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT_S)
    assert not any(t.is_alive() for t in threads), "a racing engine is stuck"
    assert not errors, errors
    assert _shop_count(engine) == 2 * per_engine
    assert _shop_count(other) == 2 * per_engine
