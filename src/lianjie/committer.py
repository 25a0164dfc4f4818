"""Group commit: many concurrent writes share one durable database transaction.

Every state change in Lianjie is a *unit of work*: a function that takes a connection inside a
write transaction, checks, writes and emits its events, and returns a result. Callers submit
units to the ``Committer``; a single writer thread takes whatever has queued up (at most
``batch_units_max``), runs each inside its own SAVEPOINT, commits once, and only then resolves
the callers' futures. A unit that raises is rolled back to its savepoint alone; the others in the
group still commit. So a request is acknowledged only after its transaction is durable, and one
fsync is paid per group rather than per request.

This is the shape TigerBeetle and PostgreSQL's own commit_delay use: throughput rises with load
because the groups grow, while latency under light load stays one transaction.

SQLite allows one writer at a time, so one writer thread per process is also the fastest layout.
When several processes share one SQLite file (``lianjie serve --workers N``), their committers
also take turns on a lock file beside the database before ``BEGIN IMMEDIATE``: a blocked writer
then wakes as soon as the other commits, where SQLite's own busy handler would poll with sleeps
of up to 100 ms. The lock only orders writers; ``BEGIN IMMEDIATE`` still guards correctness.

On a SQLite file the committer also runs the WAL checkpoints on a thread of its own
(``Checkpointer``): SQLite otherwise checkpoints inside the COMMIT that passes
``wal_autocheckpoint`` pages, on the writer thread, so every few groups one waited for the
copy back into the database file. The checkpointer copies what the groups committed (a PASSIVE
checkpoint never blocks a writer) after each group, at most every ``CHECKPOINT_INTERVAL_S``,
in SQLite's C code without the GIL, so on a second core. The writer's connections keep a
distant ``wal_autocheckpoint`` as a safety net should the thread fall behind.
On PostgreSQL several processes may each run a committer; units take row locks
(``SELECT ... FOR UPDATE``) on what they change, and a group that hits a serialization failure
or deadlock is retried unit by unit, at most ``retry_count_max`` times.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError, OperationalError

from lianjie.errors import DomainError, StorageError

log = logging.getLogger(__name__)

T = TypeVar("T")
Unit = Callable[[Connection], Any]

BATCH_UNITS_MAX = 512
QUEUE_UNITS_MAX = 100_000
RETRY_COUNT_MAX = 5


Waiter = Future[Any] | asyncio.Future[Any]  # a thread's future, or an event loop's


@dataclass
class _Job:
    unit: Unit
    future: Waiter = field(default_factory=Future)


CHECKPOINT_INTERVAL_S = 0.02  # the checkpointer runs at most this often
WRITER_AUTOCHECKPOINT_PAGES = 20_000  # the writer's own checkpoint, should the thread fall behind


class Checkpointer:
    """WAL checkpoints of one SQLite file on a thread of their own (see the module docstring).
    ``poke`` after a commit; ``stop`` ends the thread."""

    def __init__(self, path: str, name: str = "lianjie-checkpoint") -> None:
        self.path = path
        self.runs = 0  # checkpoints run, for tests and benchmarks
        self._wanted = threading.Event()
        self._stopped = False
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def poke(self) -> None:
        self._wanted.set()

    def running(self) -> bool:
        return self._thread.is_alive()

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stopped = True
        self._wanted.set()
        self._thread.join(timeout_s)

    def _loop(self) -> None:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            db.execute("PRAGMA busy_timeout=1000")
            while True:
                self._wanted.wait()
                if self._stopped:
                    return
                self._wanted.clear()
                try:
                    db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                    self.runs += 1
                except sqlite3.Error:  # another process checkpoints: the next poke retries
                    log.debug("checkpoint skipped", exc_info=True)
                time.sleep(CHECKPOINT_INTERVAL_S)
        finally:
            db.close()


class CommitterStopped(StorageError):
    """The committer was stopped: it takes no more units."""


class Committer:
    """Runs units of work in grouped, durable transactions on one writer thread."""

    def __init__(self, engine: Engine, *, batch_units_max: int = BATCH_UNITS_MAX,
                 name: str = "lianjie-committer") -> None:
        assert 0 < batch_units_max <= 100_000
        self.engine = engine
        self.batch_units_max = batch_units_max
        self._queue: queue.Queue[_Job | None] = queue.Queue(maxsize=QUEUE_UNITS_MAX)
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._started = False
        self._stopped = False
        # Held while a unit is queued and while stopping, so no unit lands behind the stop.
        self._start_lock = threading.Lock()
        self.groups_committed = 0
        self.units_committed = 0
        self._turn_path = _sqlite_turn_path(engine)
        self._turn_fd: int | None = None  # opened by the writer thread on first use
        self._conn: Connection | None = None  # the writer thread's own, kept between groups
        self.checkpointer: Checkpointer | None = None  # a SQLite file's, once started

    def start(self) -> None:
        with self._start_lock:
            if self._stopped:
                raise CommitterStopped("a stopped committer does not start again")
            if not self._started:
                self._start_writer()

    def _start_writer(self) -> None:
        """(under ``_start_lock``) Start the writer thread, and a SQLite file's checkpointer."""
        self._started = True
        if self._turn_path is not None:
            self.checkpointer = Checkpointer(str(self.engine.url.database))
        self._thread.start()

    def stop(self, timeout_s: float = 30.0) -> None:
        """Commit what is queued, then stop; later ``submit`` calls raise ``CommitterStopped``.

        Units still queued when the writer has not finished within ``timeout_s`` are failed
        with ``CommitterStopped``, so no caller waits forever."""
        with self._start_lock:
            if not self._stopped:
                self._stopped = True
                if self._started:
                    self._queue.put(None)
        if self._started:
            self._thread.join(timeout_s)
        if not self._thread.is_alive():
            while True:  # nothing is left after a clean stop; this is for a writer that died
                try:
                    job = self._queue.get_nowait()
                except queue.Empty:
                    break
                if job is not None:
                    _fail_all([job], CommitterStopped("the committer has stopped"))
            if self._turn_fd is not None:
                os.close(self._turn_fd)
                self._turn_fd = None
        if self.checkpointer is not None:
            self.checkpointer.stop()

    def submit(self, unit: Callable[[Connection], T]) -> Future[T]:
        """Queue a unit of work; the future resolves after its group is durable.

        Raises ``CommitterStopped`` once ``stop`` has been called."""
        future: Future[T] = Future()
        self._put(_Job(unit, future))
        return future

    def submit_async(self, unit: Callable[[Connection], T]) -> asyncio.Future[T]:
        """``submit`` for a caller on an event loop: the future is the loop's own, and a group
        resolves all of its loop's futures in one call on that loop (``settle``), where
        ``asyncio.wrap_future`` costs a wake-up and a state copy per unit."""
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._put(_Job(unit, future))
        return future

    def _put(self, job: _Job) -> None:
        with self._start_lock:
            if self._stopped:
                raise CommitterStopped("the committer has stopped; it takes no more units")
            if not self._started:
                self._start_writer()
            self._queue.put(job)

    def run(self, unit: Callable[[Connection], T]) -> T:
        """Submit and wait: the unit's result, or its exception re-raised here."""
        return self.submit(unit).result()

    # -- the writer thread -------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._serve()
        finally:
            self._drop_connection()

    def _serve(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            jobs = [first]
            stop = False
            while len(jobs) < self.batch_units_max:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                jobs.append(nxt)
            self._commit_group(jobs)
            if stop:
                return

    def _commit_group(self, jobs: list[_Job]) -> None:
        for attempt in range(RETRY_COUNT_MAX):
            try:
                outcomes = self._try_group(jobs)
            except OperationalError as exc:
                if attempt + 1 == RETRY_COUNT_MAX or not _is_retryable(exc):
                    log.exception("group commit failed")
                    _fail_all(jobs, StorageError(f"commit failed: {exc}"))
                    return
                if len(jobs) > 1:
                    # Retry each unit alone so one conflicting unit cannot starve the others.
                    for job in jobs:
                        self._commit_group([job])
                    return
                continue
            except Exception as exc:  # the writer thread must never die
                log.exception("group commit failed")
                _fail_all(jobs, StorageError(f"commit failed: {exc}"))
                return
            self.groups_committed += 1
            self.units_committed += sum(ok for ok, _ in outcomes)
            if self.checkpointer is not None:
                self.checkpointer.poke()
            settle([(job.future, ok, value) for job, (ok, value) in zip(jobs, outcomes,
                                                                         strict=True)])
            return

    @contextmanager
    def _turn(self) -> Iterator[None]:
        """Wait for this process's turn to write the SQLite file (see the module docstring)."""
        if self._turn_path is None:
            yield
            return
        if self._turn_fd is None:
            self._turn_fd = os.open(self._turn_path, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self._turn_fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._turn_fd, fcntl.LOCK_UN)

    def _connection(self) -> Connection:
        """(SQLite) The writer thread's connection, the same one group after group while it
        works.

        SQLite discards a connection's whole page cache when it begins a transaction after
        another connection has written, and the pool hands its connections out in turn: a
        group on a connection that readers had used since found its cache empty and read a few
        hundred pages back from the file (benchmarks/RESULTS.md, "The writer's own
        connection"). Kept, the connection only ever sees its own writes (in one process).
        PostgreSQL has no such cache, and takes a pinged connection from the pool per group,
        so a group after the server restarted does not fail on a dead connection."""
        if self._conn is None:
            conn = self.engine.connect()
            raw = conn.connection
            if self.checkpointer is not None and not raw.info.get("checkpoints_elsewhere"):
                # checkpoints are the checkpointer's (once per pooled connection)
                raw.driver_connection.execute(  # type: ignore[union-attr]
                    f"PRAGMA wal_autocheckpoint={WRITER_AUTOCHECKPOINT_PAGES}")
                raw.info["checkpoints_elsewhere"] = True
            conn.execution_options(sqlite_begin="IMMEDIATE")
            self._conn = conn
        return self._conn

    def _drop_connection(self) -> None:
        """Give the connection back to the pool (after a failed group: the next takes a fresh
        one, in case this one is broken)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # a broken connection: the pool discards it
                log.exception("closing the writer's connection failed")

    def _try_group(self, jobs: list[_Job]) -> list[tuple[bool, Any]]:
        with self._turn():
            if self.engine.dialect.name != "sqlite":  # a pooled connection, pinged, per group
                with self.engine.connect() as conn, conn.begin():
                    return [_run_unit(conn, job.unit) for job in jobs]
            conn = self._connection()
            try:
                with conn.begin():
                    return [_run_unit(conn, job.unit) for job in jobs]
            except BaseException:
                self._drop_connection()
                raise


def _run_unit(conn: Connection, unit: Unit) -> tuple[bool, Any]:
    savepoint = conn.begin_nested()
    try:
        value = unit(conn)
    except DomainError as exc:
        savepoint.rollback()
        _record_refusal(conn, exc)
        return False, exc
    except OperationalError as exc:
        savepoint.rollback()
        if _is_retryable(exc):
            raise  # a lock or serialization conflict: the whole group retries
        log.exception("unit of work failed")  # e.g. SQLite reports bad SQL this way
        return False, exc
    except Exception as exc:  # a programmer error fails this unit, loudly
        log.exception("unit of work failed")
        savepoint.rollback()
        return False, exc
    savepoint.commit()
    return True, value


def run_isolated(conn: Connection, unit: Unit) -> tuple[bool, Any]:
    """Run ``unit`` in a savepoint of its own inside a unit of work, as the committer runs each
    unit: ``(True, value)``, or ``(False, exc)`` with the savepoint rolled back and an
    unexpected error logged. A lock or serialization conflict is raised for the group to retry.
    For a unit that serves many requests at once (``GrabBatcher``) and must fail them one by
    one rather than all together."""
    return _run_unit(conn, unit)


def _record_refusal(conn: Connection, exc: DomainError) -> None:
    """A refusal may carry a record of itself (a risk decline logs its decision): write it in
    a savepoint of its own after the unit's rollback, so it commits with the group."""
    record = getattr(exc, "record", None)
    if record is None:
        return
    savepoint = conn.begin_nested()
    try:
        record(conn)
    except Exception:  # the refusal stands even if its record cannot be written
        log.exception("recording a refusal failed")
        savepoint.rollback()
    else:
        savepoint.commit()


def _sqlite_turn_path(engine: Engine) -> str | None:
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or database == ":memory:" or \
            database.startswith("file:"):
        return None
    return database + "-writer.lock"


def _is_retryable(exc: DBAPIError) -> bool:
    text = str(exc.orig).lower() if exc.orig is not None else str(exc).lower()
    return any(word in text for word in ("deadlock", "could not serialize", "database is locked",
                                         "serialization"))


def _fail_all(jobs: list[_Job], exc: BaseException) -> None:
    settle([(job.future, False, exc) for job in jobs])


def settle(outcomes: list[tuple[Waiter, bool, Any]]) -> None:
    """Resolve each future with its value (ok) or exception (not ok): a thread's futures here,
    each event loop's futures in one callback on that loop's own thread, as asyncio requires.
    A future already done (its caller cancelled it) is left as it is."""
    on_loop: dict[asyncio.AbstractEventLoop, list[tuple[Waiter, bool, Any]]] = {}
    for item in outcomes:
        if isinstance(item[0], asyncio.Future):
            on_loop.setdefault(item[0].get_loop(), []).append(item)
        else:
            _set(item)
    for loop, theirs in on_loop.items():
        try:
            loop.call_soon_threadsafe(_set_all, theirs)
        except RuntimeError:  # the loop is closed: nobody waits on these any more
            pass


def _set_all(outcomes: list[tuple[Waiter, bool, Any]]) -> None:
    for item in outcomes:
        _set(item)


def _set(item: tuple[Waiter, bool, Any]) -> None:
    future, ok, value = item
    if future.done():
        return
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)


def run_now(engine: Engine, unit: Callable[[Connection], T]) -> T:
    """Run one unit in its own write transaction, without the writer thread (CLI, tests)."""
    with engine.connect() as conn:
        conn.execution_options(sqlite_begin="IMMEDIATE")
        try:
            with conn.begin():
                return unit(conn)
        except DomainError as exc:
            if getattr(exc, "record", None) is not None:
                with conn.begin():
                    _record_refusal(conn, exc)
            raise
