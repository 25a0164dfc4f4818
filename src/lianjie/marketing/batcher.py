"""Coalesce concurrent grabs into one unit of work per batch.

A hot red packet gets many grabs at once. Run one by one, each grab reads and writes the packet
row, its ledger accounts and the outbox on its own; batched, a group of grabs costs one packet
read and write, one ledger call (whose cost grows slowly with its size) and one insert. Callers
``submit`` a grab and get a future; the first grab to find no batch scheduled submits a unit to
the committer, and that unit, when the writer thread runs it, takes every grab queued by then
(at most ``GRABS_PER_BATCH_MAX``). A caller's future resolves only after the committer's group
is durable, with the grab or its refusal (``DomainError``).
"""

from __future__ import annotations

import threading
from concurrent.futures import Future
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from lianjie.clock import Clock
from lianjie.committer import Committer
from lianjie.marketing.redpackets import (
    GRABS_PER_BATCH_MAX,
    Grab,
    GrabRequest,
    do_grab_many,
)

_Pending = tuple[GrabRequest, "Future[Grab]"]


class GrabBatcher:
    def __init__(self, committer: Committer, clock: Clock) -> None:
        self.committer = committer
        self.clock = clock
        self._lock = threading.Lock()
        self._pending: list[_Pending] = []
        self._scheduled = False
        self.batches = 0

    def submit(self, request: GrabRequest) -> Future[Grab]:
        future: Future[Grab] = Future()
        with self._lock:
            self._pending.append((request, future))
            if not self._scheduled:
                self._scheduled = True
                self._schedule()
        return future

    def grab(self, request: GrabRequest) -> Grab:
        return self.submit(request).result()

    def _schedule(self) -> None:
        taken: list[list[_Pending]] = []

        def unit(conn: Connection) -> list[Any]:
            if not taken:  # a group the committer retries runs this unit again: same batch
                with self._lock:
                    taken.append(self._pending[:GRABS_PER_BATCH_MAX])
                    del self._pending[:GRABS_PER_BATCH_MAX]
                    if self._pending:
                        self._schedule()  # the rest go in the next unit
                    else:
                        self._scheduled = False
            now: datetime = self.clock.now()
            return do_grab_many(conn, now, [req for req, _ in taken[0]])

        def done(f: Future[list[Any]]) -> None:
            batch = taken[0] if taken else []
            self.batches += 1
            exc = f.exception()
            if exc is not None:
                if not taken:  # the unit never ran: fail what is queued rather than strand it
                    with self._lock:
                        batch, self._pending, self._scheduled = self._pending, [], False
                for _, fut in batch:
                    fut.set_exception(exc)
                return
            for (_, fut), outcome in zip(batch, f.result(), strict=True):
                if isinstance(outcome, Exception):
                    fut.set_exception(outcome)
                else:
                    fut.set_result(outcome)

        self.committer.submit(unit).add_done_callback(done)
