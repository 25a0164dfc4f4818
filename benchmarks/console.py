"""The operator console's pages and live endpoints on a simulated business day.

Simulates one day (the demo's: 60 merchants, 600 consumers) into a fresh SQLite file (or
``--database URL``), serves it with uvicorn in this process, logs in an administrator and
measures, one request at a time, the latency of what an operator's browser asks for most:

- ``overview_json``: ``/console/api/overview``, every figure and chart of the day (what each open
  overview polls every 5 s);
- ``overview``, ``merchants``, ``payments``: page renders;
- ``payment_detail``: a paid and refunded order with its timeline, postings and webhooks;
- ``search``: ``/console/payments?q=<out_trade_no>`` (a redirect to the detail);
- ``login``: a log-in (an argon2id verification at the library's default cost).

Then ``--pollers`` clients poll ``overview_json`` at once for ``--duration`` seconds, to show how
many open overviews the server can feed. Percentiles are in milliseconds; the headline figures
are the JSON object on the last line. On a shared machine other work takes cores too: compare
runs made on a quiet machine.

    .venv/bin/python benchmarks/console.py
    .venv/bin/python benchmarks/console.py --requests 50 --pollers 8 --duration 10
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import statistics
import tempfile
import threading
import time
from pathlib import Path

import httpx
import uvicorn
from sqlalchemy import select

from lianjie.api import create_app, make_runtime
from lianjie.cli import bootstrap
from lianjie.console.cli import add_user
from lianjie.db import make_engine
from lianjie.payments.schema import orders, refunds
from lianjie.sim import SimConfig, run_simulation

PASSWORD = "benchmark-password"
START_TIMEOUT_S = 30.0
LOGINS = 10


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)


def timed(client: httpx.Client, path: str, n: int, expect: int = 200) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        r = client.get(path)
        out.append((time.perf_counter() - t0) * 1000)
        assert r.status_code == expect, (path, r.status_code)
    return out


def poll(base: str, cookies: httpx.Cookies, until: float, counts: list[int]) -> None:
    with httpx.Client(base_url=base, cookies=cookies, timeout=30.0) as c:
        n = 0
        while time.monotonic() < until:
            assert c.get("/console/api/overview").status_code == 200
            n += 1
        counts.append(n)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database", default=None)
    parser.add_argument("--requests", type=int, default=30)
    parser.add_argument("--pollers", type=int, default=8)
    parser.add_argument("--duration", type=float, default=10.0)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="lianjie-bench-console-"))
    os.environ["LIANJIE_HOME"] = str(home)
    engine = make_engine(args.database or f"sqlite:///{home / 'lianjie.sqlite3'}")
    bootstrap(engine)
    run_simulation(engine, SimConfig(seed=7))
    add_user(engine, "bench", "admin", PASSWORD)
    with engine.connect() as conn:
        order_id = conn.execute(select(refunds.c.order_id).limit(1)).scalar_one()
        trade_no = conn.execute(select(orders.c.out_trade_no).where(orders.c.id == order_id)
                                ).scalar_one()
        paid = conn.execute(select(orders.c.id).where(orders.c.status == "paid")).all()
    port = _port()
    server = uvicorn.Server(uvicorn.Config(create_app(make_runtime(engine), background=False),
                                           host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    deadline = time.monotonic() + START_TIMEOUT_S
    while not server.started:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    base = f"http://127.0.0.1:{port}"
    client = httpx.Client(base_url=base, timeout=30.0)
    logins = []
    for _ in range(LOGINS):
        client.cookies.clear()
        t0 = time.perf_counter()
        r = client.post("/console/login", data={"username": "bench", "password": PASSWORD})
        logins.append((time.perf_counter() - t0) * 1000)
        assert r.status_code == 303 and re.search("overview", r.headers["location"])
    n = args.requests
    results = {
        "login": logins,
        "overview_json": timed(client, "/console/api/overview", n),
        "overview": timed(client, "/console/overview", n),
        "merchants": timed(client, "/console/merchants", n),
        "payments": timed(client, "/console/payments", n),
        "payment_detail": timed(client, f"/console/payments/{order_id}", n),
        "search": timed(client, f"/console/payments?q={trade_no}", n, expect=303),
    }
    for name, samples in results.items():
        print(f"{name:15s} p50 {pct(samples, 0.5):8.2f} ms  p99 {pct(samples, 0.99):8.2f} ms  "
              f"mean {statistics.mean(samples):8.2f} ms  (n={len(samples)})")
    counts: list[int] = []
    until = time.monotonic() + args.duration
    threads = [threading.Thread(target=poll, args=(base, client.cookies, until, counts))
               for _ in range(args.pollers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rate = sum(counts) / args.duration
    print(f"{args.pollers} pollers: {rate:.1f} overview refreshes/s "
          f"(each open overview asks for one every 5 s: ~{int(rate * 5)} open overviews)")
    server.should_exit = True
    print(json.dumps({"benchmark": "console", "paid_orders": len(paid),
                      **{f"{k}_p50_ms": pct(v, 0.5) for k, v in results.items()},
                      **{f"{k}_p99_ms": pct(v, 0.99) for k, v in results.items()},
                      "overview_json_per_s": round(rate, 1)}))


if __name__ == "__main__":
    main()
