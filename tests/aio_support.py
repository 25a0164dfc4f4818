"""Running a test's coroutine on an event loop of its own."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")


def run_in_own_loop(coro: Coroutine[Any, Any, T], timeout_s: float) -> T:
    """``asyncio.run(coro)`` in a thread of its own, bounded by ``timeout_s``: the browser tests'
    Playwright (its sync API) keeps an event loop running in the main thread of the test worker
    they ran in, where ``asyncio.run`` refuses to start another."""
    with ThreadPoolExecutor(1, thread_name_prefix="test-loop") as pool:
        return pool.submit(asyncio.run, asyncio.wait_for(coro, timeout_s)).result()
