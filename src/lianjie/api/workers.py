"""Serving in several processes: ``lianjie serve --workers N``.

One process runs Python on one core at a time (the GIL), and a request spends most of its CPU
in Python: parsing HTTP, FastAPI, and building the SQL of its unit of work. N worker processes
each run their own uvicorn server, app, connection pool and committer.

Each worker binds the port itself with ``SO_REUSEPORT``, so the kernel spreads connections over
the workers. (uvicorn's own ``--workers`` shares one listening socket, and a burst of keep-alive
connections all lands in whichever worker wakes first.)

Writes stay correct across processes because every group commit is one database transaction:
SQLite lets one writer in at a time (the committers take turns, see ``lianjie.committer``);
PostgreSQL units lock the rows they change. Background jobs run only in the worker that holds
``$LIANJIE_HOME/background.lock``, so a webhook is not sent once per worker.

The parent only supervises: SIGINT or SIGTERM to it stops every worker gracefully; a worker
that dies stops the others, and the service manager restarts the whole server. A worker whose
parent is gone stops itself.
"""

from __future__ import annotations

import fcntl
import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

WORKERS_MAX = 64
LISTEN_BACKLOG = 2048
PARENT_CHECK_S = 1.0
STOP_TIMEOUT_S = 60.0


def serve_workers(workers: int, *, database_url: str, base_url: str, home: Path, host: str,
                  port: int, log_level: str, access_log: bool) -> int:
    """Run ``workers`` server processes until told to stop; 0 if they all stopped cleanly."""
    assert 1 <= workers <= WORKERS_MAX
    ctx = multiprocessing.get_context("spawn")
    options = dict(database_url=database_url, base_url=base_url, home=str(home), host=host,
                   port=port, log_level=log_level, access_log=access_log)
    procs = [ctx.Process(target=_worker_main, kwargs=options, name=f"lianjie-worker-{i}")
             for i in range(workers)]
    stopping = threading.Event()

    def stop(_signum: int = 0, _frame: FrameType | None = None) -> None:
        if not stopping.is_set():
            stopping.set()
            for p in procs:
                if p.pid is not None and p.is_alive():
                    os.kill(p.pid, signal.SIGTERM)

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    for p in procs:
        p.start()
    multiprocessing.connection.wait([p.sentinel for p in procs])  # any worker ends
    stop()
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for p in procs:
        p.join(max(0.0, deadline - time.monotonic()))
        if p.is_alive():
            p.kill()
            p.join()
    # uvicorn re-raises the signal it stopped on once it has shut down, so a worker that
    # stopped because it was told to ends "killed by SIGTERM".
    stopped = (0, -signal.SIGTERM)
    return 0 if all(p.exitcode in stopped for p in procs) else 1


def listening_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(LISTEN_BACKLOG)
    sock.set_inheritable(True)
    return sock


def _worker_main(*, database_url: str, base_url: str, home: str, host: str, port: int,
                 log_level: str, access_log: bool) -> None:
    import uvicorn

    from lianjie.api.app import create_app, make_runtime
    from lianjie.db import make_engine
    from lianjie.payments import PaymentsConfig

    # Out of the terminal's process group: Ctrl-C reaches the parent, which stops each worker
    # once (a second SIGINT would make uvicorn skip the lifespan shutdown that stops the
    # committer).
    os.setpgid(0, 0)
    lock = _background_lock(Path(home))
    runtime = make_runtime(make_engine(database_url), cfg=PaymentsConfig(base_url=base_url))
    app = create_app(runtime, background=lock is not None, keep_heap=True)
    server = uvicorn.Server(uvicorn.Config(app, log_level=log_level, access_log=access_log))
    threading.Thread(target=_stop_when_orphaned, args=(os.getppid(),), daemon=True).start()
    server.run(sockets=[listening_socket(host, port)])


def _background_lock(home: Path) -> Any:
    """The open lock file if this worker runs the background jobs, else None."""
    home.mkdir(parents=True, exist_ok=True)
    lock = (home / "background.lock").open("w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        return None
    return lock  # held until the process exits


def _stop_when_orphaned(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(PARENT_CHECK_S)
    os.kill(os.getpid(), signal.SIGTERM)
