"""Coalesce concurrent requests of one kind into one unit of work per batch.

Run one by one, each request pays every statement and per-call overhead of its unit alone; the
group commit shares only the COMMIT. Batched, a group of requests shares its reads, its ledger
call and its inserts, each a statement whose cost grows slowly with the batch. A ``Batcher``
is made with the action that serves many requests in one unit (``run_many(conn, now,
requests)``: one outcome per request, in order, each a result or a ``DomainError``) and its
batch bound. Callers ``submit`` a request and get a future; the first request to find no batch
scheduled submits a unit to the committer, and that unit, when the writer thread runs it, takes
every request queued by then (at most ``batch_max``). A caller's future resolves only after the
committer's group is durable, with the result or its refusal (``DomainError``).

Red packet grabs (``marketing.GrabBatcher``) and order payments (``payments.do_pay_many``,
through the HTTP pay route) use it.

A caller with many requests in hand at once (a gateway's batch of requests, a load generator)
hands them over with ``submit_many``: one lock, at most one unit scheduled, and one future for
all of them, resolved once every one of their groups is durable, with each request's outcome in
order. Making and resolving a ``Future`` per request, and waking its waiter, cost about as much
as a red packet grab's risk decision.

A batcher may be given an ``Around``: per-request work done in the same unit before and after
the batch, for requests that carry a ``tag``. The HTTP routes use it for Idempotency-Keys: the
unit looks up every request's key at once, runs the requests that have not run, and stores
their responses in the same transaction. Two requests with the same ``Around.same`` key never
share a unit: the later waits for the next, so it sees what the earlier stored.

One request that fails unexpectedly (a bug, or a bad row: an assertion, a constraint) fails
only itself. The batch runs in a savepoint; if it raises, it is rolled back and its requests
run again one by one, each in a savepoint of its own (``committer.run_isolated``), so the
failing request's caller gets that exception (the API answers 500 ``internal_error``) while the
others are served and committed with the group. A lock or serialization conflict still fails
the whole unit, for the committer to retry.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Future, InvalidStateError
from datetime import datetime
from typing import Any, Generic, Protocol, TypeVar

from sqlalchemy import Connection

from lianjie.clock import Clock
from lianjie.committer import Committer, CommitterStopped, Waiter, run_isolated, settle
from lianjie.errors import DomainError

Req = TypeVar("Req")  # a request
Res = TypeVar("Res")  # its result when it succeeds



class _Gather:
    """The one future of a ``submit_many`` call, filled in as its requests' batches finish
    (they may run in several units, whose callbacks may run on different threads)."""

    __slots__ = ("future", "left", "lock", "outcomes")

    def __init__(self, size: int) -> None:
        self.future: Future[list[Any]] = Future()
        self.outcomes: list[Any] = [None] * size
        self.left = size
        self.lock = threading.Lock()

    def fill(self, filled: list[tuple[int, Any]]) -> None:
        outcomes = self.outcomes
        for i, value in filled:
            outcomes[i] = value
        with self.lock:
            self.left -= len(filled)
            finished = self.left == 0
        if finished:
            try:
                self.future.set_result(outcomes)
            except InvalidStateError:  # its caller cancelled it
                pass


_Slot = tuple[_Gather, int]  # a request of a ``submit_many`` call: its gather and its place
_Pending = tuple[Any, Waiter | _Slot, Any]  # the request, its caller's future, its tag


class Around(Protocol):
    """Per-request work in a batch's unit, for requests submitted with a ``tag``."""

    def same(self, tag: Any) -> Hashable:
        """Requests whose tags give the same value are never put in one unit."""

    def before(self, conn: Connection, tags: Sequence[Any]) -> list[Any]:
        """Per tag: None to run the request, or what to resolve it with instead (an exception
        instance to fail it)."""

    def after(self, conn: Connection, now: datetime, tags: Sequence[Any],
              outcomes: Sequence[Any]) -> list[Any]:
        """Per request run (its result or its ``DomainError``): what to resolve it with (an
        exception to fail it)."""


class Batcher(Generic[Req, Res]):
    def __init__(self, committer: Committer, clock: Clock,
                 run_many: Callable[[Connection, datetime, list[Req]], Sequence[Res | DomainError]],
                 batch_max: int, around: Around | None = None) -> None:
        assert 0 < batch_max <= 100_000
        self.committer = committer
        self.clock = clock
        self.run_many = run_many
        self.batch_max = batch_max
        self.around = around
        self._lock = threading.Lock()
        self._pending: list[_Pending] = []
        self._scheduled = False
        self.batches = 0
        self.unit_cpu_s = 0.0  # CPU time of the writer thread inside this batcher's units

    def submit(self, request: Req, tag: Any = None) -> Future[Any]:
        """The request's future: its result (or, with an ``Around`` and a tag, what ``Around``
        answers), or the refusal as its exception."""
        future: Future[Any] = Future()
        self._queue(request, future, tag)
        return future

    def submit_async(self, request: Req, tag: Any = None) -> asyncio.Future[Any]:
        """``submit`` for a caller on an event loop: the future is the loop's own, and a batch
        resolves all of its loop's futures in one call on that loop (one wake-up per batch,
        where ``asyncio.wrap_future`` costs one per request)."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue(request, future, tag)
        return future

    def submit_many(self, requests: Sequence[Req]) -> Future[list[Any]]:
        """Several requests at once, queued in order under one lock. The future resolves once
        every one of them is durable (or refused), with a list in the order of ``requests``:
        each one's result, or its refusal (``DomainError``) or failure as the exception
        instance (for requests whose unit could not run at all, the committer's error). The
        future itself does not fail."""
        assert 0 < len(requests) <= self.batch_max, "hand over a bounded batch at a time"
        gather = _Gather(len(requests))
        self._queue_all([(request, (gather, i), None) for i, request in enumerate(requests)])
        return gather.future

    def run_one(self, request: Req) -> Res:
        """Submit and wait: the result, or the refusal raised."""
        found: Res = self.submit(request).result()
        return found

    def _queue(self, request: Req, future: Waiter, tag: Any) -> None:
        self._queue_all([(request, future, tag)])

    def _queue_all(self, items: list[_Pending]) -> None:
        with self._lock:
            self._pending += items
            if not self._scheduled:
                self._scheduled = True
                try:
                    self._schedule()
                except BaseException:  # the committer has stopped: these never run
                    del self._pending[-len(items):]
                    raise

    def _take(self) -> list[_Pending]:
        """The next batch, under ``_lock``: at most ``batch_max``, and no two requests with
        the same ``Around.same`` key (the later stay queued, in order)."""
        if self.around is None:
            batch = self._pending[:self.batch_max]
            del self._pending[:self.batch_max]
            return batch
        batch, rest, seen = [], [], set()
        for item in self._pending:
            key = None if item[2] is None else self.around.same(item[2])
            if len(batch) >= self.batch_max or (key is not None and key in seen):
                rest.append(item)
                continue
            if key is not None:
                seen.add(key)
            batch.append(item)
        self._pending = rest
        return batch

    def _schedule(self) -> None:
        taken: list[list[_Pending]] = []

        def unit(conn: Connection) -> list[Any]:
            if not taken:  # a group the committer retries runs this unit again: same batch
                stranded: list[_Pending] = []
                with self._lock:
                    taken.append(self._take())
                    if self._pending:
                        try:
                            self._schedule()  # the rest go in the next unit
                        except CommitterStopped as exc:  # no unit will run the rest
                            stranded, self._pending = self._pending, []
                            stopped = exc
                    else:
                        self._scheduled = False
                if stranded:  # their callers are told now; this batch still runs
                    _resolve([(fut, False, stopped) for _, fut, _tag in stranded])
            started = time.thread_time()
            try:
                return self._run(conn, taken[0])
            finally:
                self.unit_cpu_s += time.thread_time() - started

        def done(f: Future[list[Any]]) -> None:
            batch = taken[0] if taken else []
            self.batches += 1
            exc = f.exception()
            if exc is not None:
                if not taken:  # the unit never ran: fail what is queued rather than strand it
                    with self._lock:
                        batch, self._pending, self._scheduled = self._pending, [], False
                _resolve([(fut, False, exc) for _, fut, _tag in batch])
                return
            _resolve([(fut, not isinstance(outcome, BaseException), outcome)
                      for (_, fut, _tag), outcome in zip(batch, f.result(), strict=True)])

        try:
            self.committer.submit(unit).add_done_callback(done)
        except BaseException:  # the committer has stopped: nothing is scheduled any more
            self._scheduled = False
            raise

    def _run(self, conn: Connection, batch: list[_Pending]) -> list[Any]:
        if not batch:
            return []
        if self.around is None or all(tag is None for _, _, tag in batch):
            return self._isolated(conn, self.clock.now(), [req for req, _, _ in batch])
        around = self.around
        tagged = [i for i, item in enumerate(batch) if item[2] is not None]
        results: list[Any] = [None] * len(batch)
        for i, answer in zip(tagged, around.before(conn, [batch[i][2] for i in tagged]),
                             strict=True):
            results[i] = answer
        to_run = [i for i in range(len(batch)) if results[i] is None]
        if not to_run:
            return results
        # The time of the work, read after the keys' lookup: on PostgreSQL that waits for the
        # keys' locks, held by another process's unit until it commits.
        now: datetime = self.clock.now()
        outcomes = self._isolated(conn, now, [batch[i][0] for i in to_run])
        # A request that failed unexpectedly changed nothing and stores no response.
        wrapped: list[tuple[int, Any]] = []
        for i, outcome in zip(to_run, outcomes, strict=True):
            if batch[i][2] is not None and _ran(outcome):
                wrapped.append((i, outcome))
            else:
                results[i] = outcome
        answers = around.after(conn, now, [batch[i][2] for i, _ in wrapped],
                               [o for _, o in wrapped])
        for (i, _), answer in zip(wrapped, answers, strict=True):
            results[i] = answer
        return results

    def _isolated(self, conn: Connection, now: datetime, requests: list[Req]
                  ) -> list[Res | DomainError | Exception]:
        """``run_many``, where an unexpected error fails only the request that raised it: the
        batch is tried whole (one savepoint), then, if it raised, one request at a time."""
        def many(batch: list[Req]) -> Callable[[Connection], Sequence[Res | DomainError]]:
            return lambda c: self.run_many(c, now, batch)

        ok, value = run_isolated(conn, many(requests))
        if ok:
            return list(value)
        if len(requests) == 1:
            return [value]
        outcomes: list[Res | DomainError | Exception] = []
        for request in requests:
            ok, value = run_isolated(conn, many([request]))
            outcomes.append(value[0] if ok else value)
        return outcomes


def _ran(outcome: Any) -> bool:
    """A result or a refusal, not an unexpected failure."""
    return not isinstance(outcome, BaseException) or isinstance(outcome, DomainError)


def _resolve(outcomes: list[tuple[Waiter | _Slot, bool, Any]]) -> None:
    """Settle the futures of single requests (``committer.settle``) and fill the gathers of
    ``submit_many`` calls, each once per batch: a refusal or failure goes in as itself."""
    futures: list[tuple[Waiter, bool, Any]] = []
    gathers: dict[_Gather, list[tuple[int, Any]]] = {}
    for waiter, ok, value in outcomes:
        if isinstance(waiter, tuple):
            gathers.setdefault(waiter[0], []).append((waiter[1], value))
        else:
            futures.append((waiter, ok, value))
    if futures:
        settle(futures)
    for gather, filled in gathers.items():
        gather.fill(filled)
