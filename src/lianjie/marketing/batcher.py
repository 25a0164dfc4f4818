"""Coalesce concurrent grabs into one unit of work per batch.

A hot red packet gets many grabs at once. Run one by one, each grab reads and writes the packet
row, its ledger accounts and the outbox on its own; batched, a group of grabs costs one packet
read and write, one ledger call (whose cost grows slowly with its size) and one insert. The
machinery (queueing, ``Around`` for Idempotency-Keys, isolating a grab that fails unexpectedly)
is ``lianjie.batcher``'s; this is that batcher serving ``do_grab_many``, at most
``GRABS_PER_BATCH_MAX`` grabs a unit.
"""

from __future__ import annotations

from lianjie.batcher import Around, Batcher
from lianjie.clock import Clock
from lianjie.committer import Committer
from lianjie.marketing.redpackets import (
    GRABS_PER_BATCH_MAX,
    Grab,
    GrabRequest,
    do_grab_many,
)

__all__ = ["Around", "GrabBatcher"]


class GrabBatcher(Batcher[GrabRequest, Grab]):
    def __init__(self, committer: Committer, clock: Clock, around: Around | None = None
                 ) -> None:
        super().__init__(committer, clock, do_grab_many, GRABS_PER_BATCH_MAX, around)

    def grab(self, request: GrabRequest) -> Grab:
        return self.run_one(request)
