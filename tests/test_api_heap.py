"""The server's heap keeper: what is alive is frozen out of full collections, and cyclic
garbage among frozen objects is still collected at the next thaw."""

from __future__ import annotations

import gc
import time
import weakref
from collections.abc import Callable

from lianjie.api.heap import HeapKeeper


class _Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the cyclic collector can free it


def _wait(predicate: Callable[[], bool], timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return False


def test_frozen_cycles_outlive_full_collections_until_stopped() -> None:
    keeper = HeapKeeper(freeze_every_s=0.02, thaw_every_s=3600)
    node = _Node()
    freed = weakref.ref(node)
    keeper.start()
    try:
        assert gc.get_freeze_count() > 0
        del node
        gc.collect()
        assert freed() is not None  # frozen: the full collection did not look at it
        kept = [_Node() for _ in range(10_000)]
        target = gc.get_freeze_count() + len(kept)
        assert _wait(lambda: gc.get_freeze_count() >= target)  # the next freeze
        del kept
    finally:
        keeper.stop()
    assert gc.get_freeze_count() == 0
    gc.collect()
    assert freed() is None


def test_the_thaw_collects_cycles_among_frozen_objects() -> None:
    keeper = HeapKeeper(freeze_every_s=0.02, thaw_every_s=0.2)
    node = _Node()
    freed = weakref.ref(node)
    keeper.start()
    try:
        del node
        assert _wait(lambda: freed() is None)
        assert keeper.thaws >= 1
    finally:
        keeper.stop()
