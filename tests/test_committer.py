"""The group committer: many threads, one writer, one durable transaction per group.

Each unit of work runs in its own savepoint, so one unit's failure (a domain outcome, a bug, a bad
statement) rolls back that unit alone while the rest of its group commits. Grouping is made
deterministic with a gate: a first unit holds the writer thread until everything else is queued.
No test here depends on timing.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from tests.aio_support import run_in_own_loop

from lianjie import ledger as L
from lianjie.clock import ManualClock
from lianjie.committer import RETRY_COUNT_MAX, Committer, CommitterStopped, run_now
from lianjie.db import reader, writer
from lianjie.errors import DomainError, ErrorCode, StorageError

WALLET = L.AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS
WAIT_S = 30  # a bound on any wait, so a bug fails the test instead of hanging it


@contextmanager
def held_writer(committer: Committer) -> Iterator[None]:
    """Hold the writer thread inside a unit until the block ends: what is submitted inside the
    block queues up and commits together as the next group."""
    entered, release = threading.Event(), threading.Event()

    def gate(_conn: Connection) -> str:
        entered.set()
        assert release.wait(WAIT_S)
        return "gate"

    future = committer.submit(gate)
    assert entered.wait(WAIT_S)
    try:
        yield
    finally:
        release.set()
    assert future.result(WAIT_S) == "gate"


def open_wallet(now: Any, owner: str) -> Callable[[Connection], int]:
    return lambda conn: L.open_account(conn, now, owner, L.Purpose.WALLET, flags=WALLET).id


def owners(engine: Engine) -> set[str]:
    with reader(engine) as c:
        return {r[0] for r in c.execute(text("SELECT owner_id FROM ledger_accounts"))}


def test_each_unit_gets_its_own_result_from_many_threads(committer: Committer,
                                                         clock: ManualClock,
                                                         engine: Engine) -> None:
    def work(i: int) -> tuple[int, int]:
        return i, committer.run(open_wallet(clock.now(), f"cus_{i}"))

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(work, range(40)))
    with reader(engine) as c:
        for i, account_id in results:
            assert L.require_account(c, account_id).owner_id == f"cus_{i}"
    assert len({account_id for _, account_id in results}) == 40
    assert committer.units_committed == 40
    assert 1 <= committer.groups_committed <= 40


def test_units_queued_together_commit_as_one_group(committer: Committer, clock: ManualClock,
                                                   engine: Engine) -> None:
    with held_writer(committer):
        futures = [committer.submit(open_wallet(clock.now(), f"cus_{i}")) for i in range(10)]
        groups_before = committer.groups_committed
    assert len({f.result(WAIT_S) for f in futures}) == 10
    assert committer.groups_committed == groups_before + 2  # the gate's group, then the ten
    assert owners(engine) == {f"cus_{i}" for i in range(10)}


def _writes_then_raises(now: Any, owner: str, exc: BaseException) -> Callable[[Connection], int]:
    def unit(conn: Connection) -> int:
        open_wallet(now, owner)(conn)
        raise exc

    return unit


@pytest.mark.parametrize("exc", [
    DomainError(ErrorCode.INSUFFICIENT_FUNDS, "insufficient funds"),
    AssertionError("our own bug"),
    ValueError("also our own bug"),
    KeyError("and another"),
])
def test_a_failing_unit_rolls_back_alone(committer: Committer, clock: ManualClock,
                                         engine: Engine, exc: BaseException) -> None:
    now = clock.now()
    with held_writer(committer):
        before = committer.submit(open_wallet(now, "cus_before"))
        failing = committer.submit(_writes_then_raises(now, "cus_failing", exc))
        after = committer.submit(open_wallet(now, "cus_after"))
    assert isinstance(before.result(WAIT_S), int)
    assert isinstance(after.result(WAIT_S), int)
    with pytest.raises(type(exc)) as raised:
        failing.result(WAIT_S)
    assert raised.value is exc
    assert owners(engine) == {"cus_before", "cus_after"}
    with pytest.raises(type(exc)):
        committer.run(_writes_then_raises(now, "cus_alone", exc))
    assert "cus_alone" not in owners(engine)


def test_units_awaited_on_an_event_loop_resolve_there(committer: Committer,
                                                      clock: ManualClock,
                                                      engine: Engine) -> None:
    """``submit_async``: the loop's futures, resolved on the loop after the group commits, each
    with its own value or exception; one whose caller stopped waiting still commits."""
    now = clock.now()
    failure = DomainError(ErrorCode.INSUFFICIENT_FUNDS, "insufficient funds")

    async def main() -> list[Any]:
        with held_writer(committer):
            futures = [committer.submit_async(open_wallet(now, f"cus_{i}")) for i in range(3)]
            futures.append(committer.submit_async(_writes_then_raises(now, "cus_no", failure)))
            futures.append(committer.submit_async(open_wallet(now, "cus_gone")))
            futures[-1].cancel()
            thread_future = committer.submit(open_wallet(now, "cus_thread"))
        loop = asyncio.get_running_loop()
        assert all(f.get_loop() is loop for f in futures)
        outcomes = list(await asyncio.gather(*futures, return_exceptions=True))
        return [*outcomes, thread_future.result(WAIT_S)]

    outcomes = run_in_own_loop(main(), WAIT_S)
    assert all(isinstance(o, int) for o in outcomes[:3]) and isinstance(outcomes[5], int)
    assert outcomes[3] is failure
    assert isinstance(outcomes[4], asyncio.CancelledError)
    assert owners(engine) == {"cus_0", "cus_1", "cus_2", "cus_gone", "cus_thread"}


def test_a_unit_with_bad_sql_fails_alone(committer: Committer, clock: ManualClock,
                                         engine: Engine) -> None:
    """SQLite reports a mistake in SQL as an OperationalError: still only that unit's problem."""
    now = clock.now()

    def bad_sql(conn: Connection) -> None:
        open_wallet(now, "cus_bad")(conn)
        conn.execute(text("SELECT no_such_column FROM ledger_accounts"))

    with held_writer(committer):
        good = committer.submit(open_wallet(now, "cus_good"))
        bad = committer.submit(bad_sql)
        duplicate = committer.submit(lambda conn: conn.execute(text(
            "INSERT INTO ledger_accounts SELECT * FROM ledger_accounts")))
        also_good = committer.submit(open_wallet(now, "cus_also_good"))
    assert good.result(WAIT_S) != also_good.result(WAIT_S)
    with pytest.raises(DBAPIError):  # SQLite: OperationalError; PostgreSQL: ProgrammingError
        bad.result(WAIT_S)
    with pytest.raises(IntegrityError):
        duplicate.result(WAIT_S)
    assert owners(engine) == {"cus_good", "cus_also_good"}


def test_a_lock_conflict_is_retried_and_commits_once(committer: Committer, clock: ManualClock,
                                                     engine: Engine) -> None:
    now = clock.now()
    attempts: list[int] = []

    def flaky(conn: Connection) -> int:
        attempts.append(1)
        account_id = open_wallet(now, "cus_flaky")(conn)
        if len(attempts) == 1:
            raise OperationalError("BEGIN", {}, Exception("database is locked"))
        return account_id

    with held_writer(committer):
        bystander = committer.submit(open_wallet(now, "cus_bystander"))
        retried = committer.submit(flaky)
    assert isinstance(retried.result(WAIT_S), int)
    assert isinstance(bystander.result(WAIT_S), int)
    assert len(attempts) == 2
    assert owners(engine) == {"cus_flaky", "cus_bystander"}


def test_a_conflict_that_never_clears_gives_up(committer: Committer, engine: Engine) -> None:
    attempts: list[int] = []

    def always_locked(_conn: Connection) -> None:
        attempts.append(1)
        raise OperationalError("BEGIN", {}, Exception("database is locked"))

    with pytest.raises(StorageError):
        committer.run(always_locked)
    assert len(attempts) == RETRY_COUNT_MAX
    assert committer.run(lambda conn: 42) == 42  # the writer thread lives on


def test_run_now_commits_or_rolls_back_one_unit(engine: Engine, clock: ManualClock) -> None:
    now = clock.now()
    assert isinstance(run_now(engine, open_wallet(now, "cus_1")), int)
    with pytest.raises(DomainError):
        run_now(engine, _writes_then_raises(now, "cus_2", DomainError(
            ErrorCode.ACCOUNT_FROZEN, "frozen")))
    assert owners(engine) == {"cus_1"}


# -- races on one wallet --------------------------------------------------------------------------

@pytest.fixture
def funded(engine: Engine, clock: ManualClock) -> tuple[int, int]:
    """A wallet with 10.00 yuan in it, and a shop."""
    with writer(engine) as c:
        now = clock.now()
        bank = L.open_account(c, now, "ins_bank", L.Purpose.INSTITUTION_SETTLEMENT).id
        wallet = L.open_account(c, now, "cus_alice", L.Purpose.WALLET, flags=WALLET).id
        shop = L.open_account(c, now, "mch_shop", L.Purpose.MERCHANT_PENDING).id
        L.transfer(c, now, "topup", bank, wallet, 1_000)
    return wallet, shop


def race(n: int, action: Callable[[int], Any]) -> list[Future[Any]]:
    """Start ``n`` threads together (a barrier, not a sleep) and collect their outcomes."""
    barrier = threading.Barrier(n)

    def go(i: int) -> Any:
        barrier.wait(WAIT_S)
        return action(i)

    with ThreadPoolExecutor(max_workers=n) as pool:
        futures = [pool.submit(go, i) for i in range(n)]
    return futures


def test_twenty_payers_race_for_ten_payments(committer: Committer, clock: ManualClock,
                                             engine: Engine, funded: tuple[int, int]) -> None:
    wallet, shop = funded

    def pay(i: int) -> L.EntryResult:
        return committer.run(lambda conn: L.transfer(conn, clock.now(), f"pay-{i}", wallet,
                                                     shop, 100))

    outcomes = race(20, pay)
    paid = [f.result(WAIT_S) for f in outcomes if f.exception() is None]
    refused = [f.exception() for f in outcomes if f.exception() is not None]
    assert len(paid) == 10 and len({r.entry_id for r in paid}) == 10
    assert len(refused) == 10
    assert all(isinstance(e, DomainError) and e.code == ErrorCode.INSUFFICIENT_FUNDS
               for e in refused)
    with reader(engine) as c:
        alice = L.require_account(c, wallet)
        assert (alice.balance, alice.posting_count) == (0, 11)
        assert L.require_account(c, shop).balance == 1_000
        history = L.account_postings(c, wallet)
        assert [p.balance_after for p in history] == [1_000 - 100 * k for k in range(11)]
        assert L.verify(c) == []


def test_the_same_key_from_many_threads_makes_one_entry(committer: Committer,
                                                        clock: ManualClock, engine: Engine,
                                                        funded: tuple[int, int]) -> None:
    wallet, shop = funded

    def pay(_i: int) -> L.EntryResult:
        return committer.run(lambda conn: L.transfer(conn, clock.now(), "pay-once", wallet,
                                                     shop, 300))

    results = [f.result(WAIT_S) for f in race(8, pay)]
    assert len({r.entry_id for r in results}) == 1
    assert sorted(r.replayed for r in results) == [False] + [True] * 7
    with reader(engine) as c:
        assert L.require_account(c, wallet).balance == 700
        assert L.require_account(c, shop).balance == 300
        assert L.verify(c) == []


# -- stopping -------------------------------------------------------------------------------------

def test_stop_commits_what_was_queued_and_then_refuses_units(committer: Committer,
                                                             clock: ManualClock,
                                                             engine: Engine) -> None:
    with held_writer(committer):
        queued = [committer.submit(open_wallet(clock.now(), f"cus_{i}")) for i in range(5)]
    committer.stop()
    assert all(f.done() for f in queued)
    assert len({f.result(0) for f in queued}) == 5
    with pytest.raises(CommitterStopped):
        committer.submit(open_wallet(clock.now(), "cus_late"))
    with pytest.raises(CommitterStopped):
        committer.run(open_wallet(clock.now(), "cus_late"))
    with pytest.raises(CommitterStopped):
        committer.start()
    assert owners(engine) == {f"cus_{i}" for i in range(5)}


def test_a_committer_stopped_before_it_started_refuses_units(engine: Engine,
                                                             clock: ManualClock) -> None:
    idle = Committer(engine)
    idle.stop()
    with pytest.raises(CommitterStopped):
        idle.submit(open_wallet(clock.now(), "cus_1"))
    assert owners(engine) == set()


def test_a_sqlite_files_checkpoints_run_beside_the_writer(engine: Engine,
                                                          clock: ManualClock) -> None:
    """On a SQLite file the committer's checkpointer copies committed groups back into the
    database file on its own thread, and the writer's connection no longer checkpoints at
    SQLite's default 1,000 pages; stopping the committer ends the thread."""
    import time

    from lianjie.committer import WRITER_AUTOCHECKPOINT_PAGES

    if engine.dialect.name != "sqlite":
        pytest.skip("PostgreSQL has no WAL checkpoints to run")
    committer = Committer(engine)
    committer.start()
    checkpointer = committer.checkpointer
    assert checkpointer is not None
    for i in range(20):
        committer.run(open_wallet(clock.now(), f"cus_ckpt{i}"))
    deadline = time.monotonic() + WAIT_S
    while checkpointer.runs == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert checkpointer.runs >= 1

    def writer_setting(conn: Connection) -> int:
        return int(conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar_one())

    assert committer.run(writer_setting) == WRITER_AUTOCHECKPOINT_PAGES
    committer.stop()
    assert not checkpointer.running()
    assert len({o for o in owners(engine) if o.startswith("cus_ckpt")}) == 20


def test_on_sqlite_the_writer_keeps_its_connection_and_its_page_cache(
        engine: Engine, clock: ManualClock) -> None:
    """Group after group the writer works on one SQLite connection, however many readers use
    the pool's others in between (SQLite empties a connection's page cache when another
    connection has written since it last looked), and after a failed group it takes a fresh
    one. PostgreSQL takes a pooled, pinged connection per group."""
    committer = Committer(engine)
    committer.start()
    try:
        def raw(conn: Connection) -> Any:
            return conn.connection.driver_connection

        seen = []  # the objects themselves, so that no id is reused
        for i in range(5):
            seen.append(committer.run(raw))
            committer.run(open_wallet(clock.now(), f"cus_keep{i}"))
            with reader(engine) as c, reader(engine) as d:  # two more pooled connections
                assert c.execute(text("SELECT count(*) FROM ledger_accounts")).scalar_one() == \
                    d.execute(text("SELECT count(*) FROM ledger_accounts")).scalar_one()
        if engine.dialect.name != "sqlite":
            return
        assert all(c is seen[0] for c in seen)

        def breaks_the_group(conn: Connection) -> None:
            conn.invalidate()  # its savepoint cannot be released: the whole group fails

        with pytest.raises(StorageError):
            committer.run(breaks_the_group)
        after = committer.run(raw)
        assert after is not seen[0]
        assert committer.run(raw) is after
        assert committer.run(open_wallet(clock.now(), "cus_after")) > 0
    finally:
        committer.stop()
