"""A Lianjie server the simulator starts for itself, for ``--mode http`` without ``--url``.

The server runs in a thread of this process on a free port of 127.0.0.1, around a runtime whose
clock is the simulator's ``ManualClock``, so what it records follows the simulated day. Its
background worker is off: the simulator runs expiry and webhook enqueuing itself, at simulated
times, through the server's own committer, so that nothing happens at wall-clock moments a seed
cannot repeat.

This module is the simulator's only use of the ``api`` package: it plays the part of
``lianjie serve``, as the CLI does.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn
from sqlalchemy import Engine

from lianjie.api import create_app, make_runtime
from lianjie.api.runtime import Runtime
from lianjie.clock import Clock
from lianjie.errors import LianjieError
from lianjie.payments import PaymentsConfig
from lianjie.sim.config import SERVER_START_TIMEOUT_S

SERVER_STOP_TIMEOUT_S = 10.0
HOST = "127.0.0.1"
POLL_S = 0.02


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


@contextmanager
def owned_server(engine: Engine, clock: Clock) -> Iterator[tuple[str, Runtime]]:
    """Serve the API on a free port until the block ends; yields its URL and runtime."""
    port = free_port()
    base_url = f"http://{HOST}:{port}"
    rt = make_runtime(engine, clock=clock, cfg=PaymentsConfig(base_url=base_url))
    app = create_app(rt, background=False)
    server = uvicorn.Server(uvicorn.Config(app, host=HOST, port=port, log_level="warning",
                                           access_log=False, lifespan="on"))
    thread = threading.Thread(target=server.run, name="lianjie-sim-server", daemon=True)
    thread.start()
    try:
        _wait_started(server, thread)
        yield base_url, rt
    finally:
        server.should_exit = True
        thread.join(SERVER_STOP_TIMEOUT_S)


def _wait_started(server: uvicorn.Server, thread: threading.Thread) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while not server.started:
        if not thread.is_alive():
            raise LianjieError("the simulator's API server stopped while starting")
        if time.monotonic() > deadline:
            raise LianjieError(f"the simulator's API server did not start within "
                               f"{SERVER_START_TIMEOUT_S} s")
        time.sleep(POLL_S)
