"""``lianjie.batcher.Batcher`` when the committer stops under it."""

from __future__ import annotations

import threading
from datetime import datetime
from typing import Any

import pytest
from sqlalchemy import Connection, Engine

from lianjie.batcher import Batcher
from lianjie.clock import ManualClock
from lianjie.committer import Committer, CommitterStopped


def _echo(_conn: Connection, _now: datetime, requests: list[Any]) -> list[Any]:
    return list(requests)


def test_requests_queued_when_the_committer_stops_are_answered(engine: Engine) -> None:
    """The committer is told to stop while a batch's unit waits in its queue and a second
    request waits in the batcher's: the queued unit still runs and commits its request, and the
    second request, which no unit will ever run, fails with ``CommitterStopped`` at once rather
    than waiting forever."""
    committer = Committer(engine)
    committer.start()
    release = threading.Event()
    blocking = committer.submit(lambda _c: release.wait(10))  # holds the writer thread
    batcher: Batcher[str, str] = Batcher(committer, ManualClock(), _echo, batch_max=1)
    first = batcher.submit("first")  # its unit is queued behind the blocking one
    second = batcher.submit("second")  # waits in the batcher for the next unit
    stopping = threading.Thread(target=committer.stop)
    stopping.start()
    while True:  # until stop() has been called: then no unit is accepted any more
        try:
            committer.submit(lambda _c: None)  # a probe; one accepted runs and does nothing
        except CommitterStopped:
            break
        threading.Event().wait(0.01)
    release.set()
    stopping.join(30)
    assert blocking.result(10) is True
    assert first.result(10) == "first"
    with pytest.raises(CommitterStopped):
        second.result(10)
