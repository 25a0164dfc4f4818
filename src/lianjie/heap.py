"""Keep Python's full garbage collections off the request path of a running server.

CPython's cyclic collector runs a full (generation 2) collection whenever the objects that
survived earlier collections have grown by a quarter since the last full one, and a full
collection walks every tracked object in the process. A server's heap is mostly long-lived
state that only grows (the risk engine's feature windows, the API-key cache, compiled
statements), so under load it ran a full collection every few seconds, each pausing every
request for about 100 ms on a heap of a few hundred thousand objects, about 4% of the server's
CPU (benchmarks/RESULTS.md, "Payments over HTTP").

``HeapKeeper`` moves the objects alive now into the collector's permanent generation
(``gc.freeze``) every ``FREEZE_EVERY_S``, so full collections only walk what is newer than
that. Objects frozen are still freed by reference counting as usual; only garbage held in
reference cycles among them waits for the next thaw: every ``THAW_EVERY_S`` everything is put
back (``gc.unfreeze``) and collected once, then frozen again, so such garbage lives at most that
long. This is the approach of servers that ``gc.freeze`` after start-up; the thaw bounds what it
can leak. It runs in each server process (``lianjie serve``, and every ``--workers`` process,
through ``api.heap``), not in tests; any other long-running process that embeds Lianjie and
writes through it (a committer fed by producer threads, as ``benchmarks/marketing.py`` runs the
grab path in process) starts one the same way once it has set up: ``HeapKeeper().start()``.
"""

from __future__ import annotations

import gc
import threading
import time

FREEZE_EVERY_S = 5.0
THAW_EVERY_S = 600.0


class HeapKeeper:
    def __init__(self, *, freeze_every_s: float = FREEZE_EVERY_S,
                 thaw_every_s: float = THAW_EVERY_S) -> None:
        assert 0 < freeze_every_s <= thaw_every_s
        self.freeze_every_s = freeze_every_s
        self.thaw_every_s = thaw_every_s
        self.thaws = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="lianjie-heap", daemon=True)

    def start(self) -> None:
        gc.freeze()  # what start-up built: modules, routes, the app's caches
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        gc.unfreeze()

    def _loop(self) -> None:
        thawed = time.monotonic()
        while not self._stop.wait(self.freeze_every_s):
            if time.monotonic() - thawed >= self.thaw_every_s:
                self.thaws += 1
                gc.unfreeze()
                gc.collect()
                thawed = time.monotonic()
            gc.freeze()
