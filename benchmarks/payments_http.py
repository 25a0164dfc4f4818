"""Payments over HTTP: create + pay QR orders against a real ``lianjie serve`` on this machine.

A "payment" is what a merchant's till and a consumer's wallet do for one purchase:

    POST /v1/orders                 merchant key, Idempotency-Key   -> 201, the open order
    POST /v1/orders/{id}/pay        consumer key, Idempotency-Key   -> 200, the paid order

and its latency is from sending the first request to reading the second response. The run:

1. starts ``lianjie serve`` as its own process on a fresh database (a SQLite file in a temporary
   ``LIANJIE_HOME``, or a PostgreSQL database made for the run and dropped afterwards), waits for
   ``/healthz`` and reads the operator key from ``$LIANJIE_HOME/operator_key``;
2. sets up over HTTP: service providers, approved merchants under them, one institution and
   consumers whose wallets are funded by top-ups; then (``--parties-age-days``, 30 by default)
   stops the server, moves every party's creation back that many days and starts it again on
   the same database, so the load is established merchants and consumers paying, not parties
   minutes old, which the risk engine's rules for young merchants and accounts rightly hold
   for review at these rates (0 keeps them new);
3. runs the load from a separate process: ``--concurrency`` clients, each a keep-alive HTTP/1.1
   connection doing one payment after another (so that many payments are in flight at any time),
   a warm-up, then ``--duration`` seconds that are measured. With ``--rate R`` the load is an
   open loop instead, as traffic from many tills is: a payment falls due every 1/R seconds and
   the next free connection (of ``--concurrency``) makes it; its latency runs from when it fell
   due, so a payment that waited for a connection counts its wait. A closed loop measures the
   most the server can do (and latency at that saturation, which is queueing); an open loop at
   the target rate measures the latency a given traffic sees. The client is a few dozen lines of
   raw asyncio on uvloop, not an HTTP library, so that on a two-core machine it takes as little
   CPU from the server as it can; the CPU it did take is measured and reported, as is the
   server's;
4. runs three races that must come out the same whatever the interleaving (and, with
   ``--workers``, whichever processes the connections land on): many consumers pay one order,
   one wallet pays many orders it can afford only one of, one Idempotency-Key is sent many
   times at once;
5. asks the server to verify the ledger (``GET /v1/ledger/verify``, must be ok) and reads back
   a sample of the payments the clients saw succeed: each must be a paid order of the right
   payer and amount.

It exits 1 on any error response during the load, a failed race, a ledger violation or a wrong
order. The server's CPU (all its processes) and the generator's own are read from ``/proc``
over the measured window, with how busy the whole machine was: on a shared machine other work
takes cores too, so ``server_cpu_ms_per_payment`` is the steadier figure to compare changes by.

Durability is the server's normal one (SQLite WAL with ``synchronous=FULL``; PostgreSQL with
``synchronous_commit=on``): a response is sent only after its group commit is on disk.

The headline figures are printed as one JSON object on the last line, for scripts to collect.

    .venv/bin/python benchmarks/payments_http.py --database sqlite
    .venv/bin/python benchmarks/payments_http.py --database sqlite --rate 1500 --concurrency 128
    .venv/bin/python benchmarks/payments_http.py --database postgresql --concurrency 64
    .venv/bin/python benchmarks/payments_http.py --workers 2 --concurrency 8 --duration 20
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

POSTGRES_URL_ENV = "LIANJIE_BENCH_POSTGRES_URL"
POSTGRES_URL_DEFAULT = "postgresql://lianjie@127.0.0.1:54329/lianjie"
# the run's own database, dropped and made afresh: give each concurrent run its own name
POSTGRES_BENCH_DB = os.environ.get("LIANJIE_BENCH_POSTGRES_DB", "lianjie_bench_http")
SERVER_START_TIMEOUT_S = 60.0
REQUEST_TIMEOUT_S = 30.0
SETUP_CONNECTIONS = 16
FUNDS_MINOR = 100_000_000  # each consumer's top-up: 1,000,000.00 CNY, never running out
AMOUNT_MINOR_MIN = 100
AMOUNT_MINOR_MAX = 20_000
RESPONSE_HEAD_BYTES_MAX = 64 * 1024
CLIENT_TICKS_PER_S = os.sysconf("SC_CLK_TCK")


# -- a small keep-alive HTTP/1.1 client -----------------------------------------------------------

class HttpError(Exception):
    pass


class Connection:
    """One keep-alive HTTP/1.1 connection; one request at a time, JSON bodies only."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def _open(self) -> None:
        self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        sock = self._writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None

    async def request(self, method: str, path: str, key: str | None = None,
                      body: Any = None, idem: str | None = None) -> tuple[int, bytes]:
        if self._writer is None:
            await self._open()
        assert self._reader is not None and self._writer is not None
        data = b"" if body is None else json.dumps(body, separators=(",", ":")).encode()
        head = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        if key is not None:
            head.append(f"Authorization: Bearer {key}")
        if idem is not None:
            head.append(f"Idempotency-Key: {idem}")
        if body is not None:
            head.append("Content-Type: application/json")
        head.append(f"Content-Length: {len(data)}")
        self._writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + data)
        try:
            raw = await asyncio.wait_for(self._read_response(), REQUEST_TIMEOUT_S)
        except BaseException:
            self.close()  # a half-read response leaves the connection unusable
            raise
        return raw

    async def _read_response(self) -> tuple[int, bytes]:
        assert self._reader is not None
        head = await self._reader.readuntil(b"\r\n\r\n")
        if len(head) > RESPONSE_HEAD_BYTES_MAX or not head.startswith(b"HTTP/1.1 "):
            raise HttpError(f"bad response head {head[:80]!r}")
        status = int(head[9:12])
        length = -1
        close = False
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection" and value.strip().lower() == b"close":
                close = True
        if length < 0:
            raise HttpError("response without Content-Length")
        body = await self._reader.readexactly(length)
        if close:
            self.close()
        return status, body


# -- the server under test ------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def postgres_database() -> Iterator[str]:
    """A fresh PostgreSQL database for the run, dropped afterwards; yields its URL."""
    from sqlalchemy import create_engine, text

    from lianjie.db import normalise_url

    base_url = os.environ.get(POSTGRES_URL_ENV, POSTGRES_URL_DEFAULT)
    admin = create_engine(normalise_url(base_url), isolation_level="AUTOCOMMIT")

    def recreate(create: bool) -> None:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{POSTGRES_BENCH_DB}" WITH (FORCE)'))
            if create:
                conn.execute(text(f'CREATE DATABASE "{POSTGRES_BENCH_DB}"'))

    recreate(True)
    try:
        yield base_url.rsplit("/", 1)[0] + "/" + POSTGRES_BENCH_DB
    finally:
        recreate(False)
        admin.dispose()


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    port: int
    home: Path

    @property
    def pid(self) -> int:
        return self.process.pid


def start_server(database_url: str, home: Path, workers: int,
                 launcher: list[str] | None = None) -> Server:
    """``lianjie serve`` on a free port; ``launcher`` replaces the ``lianjie`` command (a script
    that configures the process, then runs the command)."""
    port = _free_port()
    env = {**os.environ, "LIANJIE_HOME": str(home)}
    exe = launcher or [str(Path(sys.executable).parent / "lianjie")]
    cmd = [*exe, "--database", database_url, "serve", "--port", str(port)]
    if workers > 1:
        cmd += ["--workers", str(workers)]
    log = (home / "server.log").open("wb")
    process = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True)
    server = Server(process, port, home)
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while True:
        if process.poll() is not None:
            raise SystemExit(f"server exited with {process.returncode}; see {home}/server.log:\n"
                             + (home / "server.log").read_text()[-3000:])
        try:
            status, _ = asyncio.run(_get_once(port, "/healthz"))
            if status == 200:
                return server
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit("server did not answer /healthz in time")
        time.sleep(0.1)


async def _get_once(port: int, path: str) -> tuple[int, bytes]:
    conn = Connection("127.0.0.1", port)
    try:
        return await conn.request("GET", path)
    finally:
        conn.close()


def stop_server(server: Server) -> None:
    if server.process.poll() is None:
        os.killpg(server.process.pid, signal.SIGINT)
        try:
            server.process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(server.process.pid, signal.SIGKILL)
            server.process.wait()


def process_tree_ticks(root_pid: int) -> int:
    """CPU time (user + system, in clock ticks) of ``root_pid`` and all its descendants."""
    parent_of: dict[int, int] = {}
    ticks_of: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            raw = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = raw[raw.rindex(")") + 2:].split()
        parent_of[int(entry)] = int(fields[1])
        ticks_of[int(entry)] = int(fields[11]) + int(fields[12])
    total, frontier = 0, [root_pid]
    while frontier:
        pid = frontier.pop()
        total += ticks_of.get(pid, 0)
        frontier.extend(child for child, parent in parent_of.items() if parent == pid)
    return total


def machine_ticks() -> tuple[int, int]:
    """(busy, total) clock ticks of all CPUs since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


# -- setup over HTTP ------------------------------------------------------------------------------

@dataclass
class World:
    port: int
    operator_key: str
    merchants: list[tuple[str, str]] = field(default_factory=list)  # (id, api key)
    consumers: list[tuple[str, str]] = field(default_factory=list)


async def _ok(conn: Connection, method: str, path: str, key: str, body: Any = None
              ) -> dict[str, Any]:
    idem = uuid.uuid4().hex if method == "POST" else None
    status, raw = await conn.request(method, path, key, body, idem)
    if status >= 300:
        raise SystemExit(f"setup {method} {path} failed: {status} {raw[:300]!r}")
    result: dict[str, Any] = json.loads(raw)
    return result


async def _fan_out(port: int, count: int,
                   make: Callable[[Connection, int], Awaitable[Any]]) -> list[Any]:
    results: list[Any] = [None] * count
    next_index = iter(range(count))

    async def worker() -> None:
        conn = Connection("127.0.0.1", port)
        try:
            for i in next_index:
                results[i] = await make(conn, i)
        finally:
            conn.close()

    await asyncio.gather(*(worker() for _ in range(min(SETUP_CONNECTIONS, count))))
    return results


async def build_world(port: int, operator_key: str, sps: int, merchants: int,
                      consumers: int) -> World:
    world = World(port, operator_key)
    op = operator_key

    async def sp(conn: Connection, i: int) -> dict[str, Any]:
        return await _ok(conn, "POST", "/v1/service_providers", op, {"name": f"SP {i}"})

    providers = await _fan_out(port, sps, sp)

    async def merchant(conn: Connection, i: int) -> tuple[str, str]:
        m = await _ok(conn, "POST", "/v1/merchants", providers[i % sps]["api_key"],
                      {"name": f"Shop {i}", "business_type": "street_food"})
        await _ok(conn, "POST", f"/v1/merchants/{m['id']}/kyc", op, {"decision": "approved"})
        return m["id"], m["api_key"]

    world.merchants = await _fan_out(port, merchants, merchant)
    conn = Connection("127.0.0.1", port)
    institution = await _ok(conn, "POST", "/v1/institutions", op, {"name": "Bank"})
    conn.close()

    async def consumer(conn: Connection, i: int) -> tuple[str, str]:
        c = await _ok(conn, "POST", "/v1/consumers", op, {"name": f"Consumer {i}"})
        await _ok(conn, "POST", "/v1/wallet/top_ups", c["api_key"],
                  {"institution_id": institution["id"], "amount": FUNDS_MINOR})
        return c["id"], c["api_key"]

    world.consumers = await _fan_out(port, consumers, consumer)
    return world


# -- the load generator (its own process) -------------------------------------------------------

OPEN_LOOP_DRAIN_S = 10.0  # open loop: payments still waiting this long after the window fail


@dataclass
class LoadConfig:
    port: int
    server_pid: int
    merchants: list[tuple[str, str]]
    consumers: list[tuple[str, str]]
    concurrency: int
    warmup_s: float
    duration_s: float
    seed: int
    rate: float | None = None  # payments started per second (open loop); None: closed loop


@dataclass
class LoadResult:
    payment_ms: list[float] = field(default_factory=list)
    create_ms: list[float] = field(default_factory=list)
    pay_ms: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    requests: int = 0
    paid: list[tuple[str, str, int]] = field(default_factory=list)  # (order, payer, amount)
    reviewed: int = 0  # payments the risk engine held for review (answered 200, not paid)
    window_s: float = 0.0
    generator_cpu_s: float = 0.0
    server_cpu_s: float = 0.0
    machine_busy_share: float = 0.0


def _error_code(raw: bytes) -> str:
    try:
        return str(json.loads(raw)["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return raw[:40].decode(errors="replace")


async def _client(cfg: LoadConfig, name: str, window: tuple[float, float],
                  result: LoadResult) -> None:
    """Closed loop: one payment after another on one connection."""
    start, end = window
    payment = _Payment(cfg, name, result)
    try:
        while (t0 := time.perf_counter()) < end:
            await payment.run(t0, t0 >= start)
    finally:
        payment.conn.close()


async def _open_loop_client(cfg: LoadConfig, name: str, window: tuple[float, float],
                            due: asyncio.Queue[float | None], result: LoadResult) -> None:
    """Open loop: take the next payment due (its scheduled start) and make it. Its latency runs
    from when it was due, so time spent waiting for a free connection counts (no coordinated
    omission)."""
    start, end = window
    payment = _Payment(cfg, name, result)
    try:
        while (t0 := await due.get()) is not None:
            if time.perf_counter() > end + OPEN_LOOP_DRAIN_S:  # far behind: not started
                if t0 >= start:
                    result.errors["not started: the server fell behind the rate"] += 1
                continue
            await payment.run(t0, t0 >= start, time.perf_counter())
    finally:
        payment.conn.close()


async def _schedule(rate: float, window: tuple[float, float], due: asyncio.Queue[float | None],
                    clients: int) -> None:
    """Payment k is due at ``first + k / rate``, from a warm-up start until the window ends."""
    _start, end = window
    clock = time.perf_counter
    first = clock()
    k = 0
    while (at := first + k / rate) < end:
        now = clock()
        while at <= now and at < end:
            due.put_nowait(at)
            k += 1
            at = first + k / rate
        await asyncio.sleep(min(0.001, max(0.0, at - clock())))
    for _ in range(clients):
        due.put_nowait(None)


class _Payment:
    """One connection's payments: create an order as a merchant, pay it as a consumer."""

    def __init__(self, cfg: LoadConfig, name: str, result: LoadResult) -> None:
        self.cfg, self.name, self.result = cfg, name, result
        self.rng = random.Random(name)
        self.conn = Connection("127.0.0.1", cfg.port)
        self.n = 0

    async def run(self, t0: float, measured: bool, sent: float | None = None) -> None:
        """One payment due at ``t0`` and started at ``sent`` (the same, in a closed loop),
        counted when ``measured``. The payment's latency runs from ``t0``; its create's and
        pay's from when each was sent."""
        cfg, name, result, rng = self.cfg, self.name, self.result, self.rng
        clock = time.perf_counter
        self.n += 1  # unique per run: out_trade_no and Idempotency-Keys need no uuid4 per call
        n = self.n
        _merchant_id, merchant_key = rng.choice(cfg.merchants)
        consumer_id, consumer_key = rng.choice(cfg.consumers)
        amount = rng.randint(AMOUNT_MINOR_MIN, AMOUNT_MINOR_MAX)
        try:
            status, raw = await self.conn.request(
                "POST", "/v1/orders", merchant_key,
                {"out_trade_no": f"{name}-{n}", "amount": amount,
                 "description": "noodles"}, f"{name}-{n}-create")
            t1 = clock()
            if status != 201:
                if measured:
                    result.requests += 1
                    result.errors[f"create {status} {_error_code(raw)}"] += 1
                return
            order_id = json.loads(raw)["id"]
            status, raw = await self.conn.request("POST", f"/v1/orders/{order_id}/pay",
                                                  consumer_key, {}, f"{name}-{n}-pay")
        except (TimeoutError, OSError, asyncio.IncompleteReadError, HttpError) as exc:
            if measured:
                result.errors[f"transport {type(exc).__name__}"] += 1
            return
        t2 = clock()
        if not measured:
            return
        result.requests += 2
        if status != 200:
            result.errors[f"pay {status} {_error_code(raw)}"] += 1
            return
        result.payment_ms.append((t2 - t0) * 1000)
        result.create_ms.append((t1 - (t0 if sent is None else sent)) * 1000)
        result.pay_ms.append((t2 - t1) * 1000)
        if json.loads(raw)["status"] == "paid":
            result.paid.append((order_id, consumer_id, amount))
        else:  # held for review: its money moves only if an operator approves
            result.reviewed += 1


async def _load(cfg: LoadConfig) -> LoadResult:
    result = LoadResult()
    run_id = uuid.uuid4().hex[:8]
    start = time.perf_counter() + cfg.warmup_s
    end = start + cfg.duration_s
    names = [f"{run_id}-{cfg.seed}-{i}" for i in range(cfg.concurrency)]
    if cfg.rate is None:
        clients = [asyncio.create_task(_client(cfg, name, (start, end), result))
                   for name in names]
    else:
        due: asyncio.Queue[float | None] = asyncio.Queue()
        clients = [asyncio.create_task(_open_loop_client(cfg, name, (start, end), due, result))
                   for name in names]
        clients.append(asyncio.create_task(_schedule(cfg.rate, (start, end), due, len(names))))
    await asyncio.sleep(max(0.0, start - time.perf_counter()))
    cpu0, server0, machine0 = time.process_time(), process_tree_ticks(cfg.server_pid), \
        machine_ticks()
    await asyncio.sleep(max(0.0, end - time.perf_counter()))
    cpu1, server1, machine1 = time.process_time(), process_tree_ticks(cfg.server_pid), \
        machine_ticks()
    await asyncio.gather(*clients)
    result.window_s = cfg.duration_s
    result.generator_cpu_s = cpu1 - cpu0
    result.server_cpu_s = (server1 - server0) / CLIENT_TICKS_PER_S
    busy, total = machine1[0] - machine0[0], machine1[1] - machine0[1]
    result.machine_busy_share = busy / total if total else 0.0
    return result


def _generator_main(cfg: LoadConfig, out: Any) -> None:
    try:
        import uvloop
        runner: Callable[[Any], LoadResult] = uvloop.run
    except ImportError:
        runner = asyncio.run
    out.send(runner(_load(cfg)))
    out.close()


def run_load(cfg: LoadConfig) -> LoadResult:
    ctx = mp.get_context("spawn")
    receive, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_generator_main, args=(cfg, send), name="load-generator")
    proc.start()
    send.close()
    result: LoadResult = receive.recv()
    proc.join()
    assert proc.exitcode == 0, f"load generator exited with {proc.exitcode}"
    return result


# -- checks and the report ----------------------------------------------------------------------

async def check_outcome(world: World, result: LoadResult) -> dict[str, Any]:
    """The server's own ledger verification, and a sample of paid orders read back."""
    conn = Connection("127.0.0.1", world.port)
    try:
        report = await _ok(conn, "GET", "/v1/ledger/verify", world.operator_key)
        sample = random.Random(1).sample(result.paid, min(200, len(result.paid)))
        wrong = 0
        for order_id, payer_id, amount in sample:
            order = await _ok(conn, "GET", f"/v1/orders/{order_id}", world.operator_key)
            if (order["status"], order["payer_id"], order["amount"]) != \
                    ("paid", payer_id, amount):
                wrong += 1
    finally:
        conn.close()
    return {"ledger_ok": bool(report["ok"]), "violations": report["violations"][:5],
            "orders_checked": len(sample), "orders_wrong": wrong}


RACE_WIDTH = 16  # requests sent at once in each race (one connection each)


async def _race(port: int, requests: list[tuple[str, str, str, Any, str]]
                ) -> list[tuple[int, Any]]:
    """Send every request at once, each on its own (already open) connection."""
    conns = [Connection("127.0.0.1", port) for _ in requests]
    try:
        for conn in conns:  # connect first, so that the requests overlap
            await conn.request("GET", "/healthz")
        replies = await asyncio.gather(*(conn.request(m, path, key, body, idem) for conn,
                                         (m, path, key, body, idem) in zip(conns, requests,
                                                                          strict=True)))
    finally:
        for conn in conns:
            conn.close()
    return [(status, json.loads(raw)) for status, raw in replies]


def _outcome(status: int, body: Any) -> Any:
    return status if status < 300 else body["error"]["code"]


async def check_races(world: World) -> list[str]:
    """The races that must come out the same whatever the interleaving, and with ``--workers``
    whichever processes the connections land on. Returns what went wrong (nothing, we hope)."""
    port, op = world.port, world.operator_key
    conn = Connection("127.0.0.1", port)
    problems: list[str] = []
    try:
        merchant_key = world.merchants[0][1]
        order = await _ok(conn, "POST", "/v1/orders", merchant_key,
                          {"out_trade_no": uuid.uuid4().hex, "amount": 1_000,
                           "description": "race"})
        # Many consumers pay one order at once: one wins, the others learn it is paid.
        replies = await _race(port, [("POST", f"/v1/orders/{order['id']}/pay", key, {},
                                      uuid.uuid4().hex)
                                     for _, key in world.consumers[:RACE_WIDTH]])
        outcomes = Counter(_outcome(*r) for r in replies)
        # The winner may be held for review (the load before makes these consumers busy):
        # then the others learn that it is under review instead.
        held = any(r[0] == 200 and r[1].get("status") == "reviewing" for r in replies)
        lost = "risk_review_pending" if held else "order_already_paid"
        if outcomes != Counter({200: 1, lost: RACE_WIDTH - 1}):
            problems.append(f"one order paid by many: {dict(outcomes)}")
        # One wallet holding enough for one payment pays many orders at once: one succeeds.
        institution = await _ok(conn, "POST", "/v1/institutions", op, {"name": "Race bank"})
        payer = await _ok(conn, "POST", "/v1/consumers", op, {"name": "Race payer"})
        await _ok(conn, "POST", "/v1/wallet/top_ups", payer["api_key"],
                  {"institution_id": institution["id"], "amount": 5_000})
        orders = [await _ok(conn, "POST", "/v1/orders", key,
                            {"out_trade_no": uuid.uuid4().hex, "amount": 5_000,
                             "description": "race"})
                  for _, key in world.merchants[:RACE_WIDTH]]
        replies = await _race(port, [("POST", f"/v1/orders/{o['id']}/pay", payer["api_key"],
                                      {}, uuid.uuid4().hex) for o in orders])
        outcomes = Counter(_outcome(*r) for r in replies)
        wallet = await _ok(conn, "GET", "/v1/wallet", payer["api_key"])
        if outcomes != Counter({200: 1, "insufficient_funds": RACE_WIDTH - 1}) or \
                wallet["available"] != 0:  # paid, or held for review
            problems.append(f"one wallet, many orders: {dict(outcomes)}, "
                            f"available {wallet['available']}")
        # One Idempotency-Key sent many times at once: one order, the same reply every time.
        body = {"out_trade_no": uuid.uuid4().hex, "amount": 700, "description": "race"}
        idem = uuid.uuid4().hex
        replies = await _race(port, [("POST", "/v1/orders", merchant_key, body, idem)] *
                              RACE_WIDTH)
        ids = Counter(r[1].get("id") for r in replies if r[0] == 201)
        others = Counter(_outcome(*r) for r in replies if r[0] != 201)
        if len(ids) != 1 or others:
            problems.append(f"one Idempotency-Key many times: ids {dict(ids)}, "
                            f"others {dict(others)}")
    finally:
        conn.close()
    return problems


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def latency_line(name: str, values: list[float]) -> str:
    return (f"  {name:<9} p50 {pct(values, 0.50):7.2f}  p90 {pct(values, 0.90):7.2f}  "
            f"p99 {pct(values, 0.99):7.2f}  max {max(values, default=float('nan')):7.2f} ms")


def machine_facts() -> dict[str, Any]:
    model = next((line.split(":", 1)[1].strip() for line in
                  Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), "unknown")
    return {"cpus": os.cpu_count(), "cpu_model": model}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--duration", type=float, default=20.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=3.0, help="unmeasured seconds first")
    parser.add_argument("--concurrency", type=int, default=48,
                        help="payments in flight (one keep-alive connection each)")
    parser.add_argument("--rate", type=float, default=None,
                        help="open loop: start this many payments a second, on at most "
                             "--concurrency connections, and time each from when it was due "
                             "(default: closed loop, --concurrency payments always in flight)")
    parser.add_argument("--workers", type=int, default=1, help="server processes")
    parser.add_argument("--service-providers", type=int, default=3)
    parser.add_argument("--merchants", type=int, default=50)
    parser.add_argument("--consumers", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--parties-age-days", type=int, default=30,
                        help="move the parties' creation this many days back before the load "
                             "(0: parties minutes old)")
    args = parser.parse_args(argv)
    assert 0 < args.concurrency <= 1000 and 0 < args.duration <= 3600
    assert args.rate is None or 0 < args.rate <= 100_000

    home = Path(tempfile.mkdtemp(prefix="lianjie-bench-http-"))
    with _database(args.database, home) as url:
        servers = [start_server(url, home, args.workers)]
        try:
            summary = _run(args, servers, url)
        finally:
            stop_server(servers[-1])
    shutil.rmtree(home, ignore_errors=True)
    print(json.dumps(summary))
    ok = summary["ledger_ok"] and summary["errors"] == 0 and summary["orders_wrong"] == 0 \
        and summary["races_ok"]
    return 0 if ok else 1


@contextmanager
def _database(kind: str, home: Path) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{home / 'bench.sqlite3'}"
    else:
        with postgres_database() as url:
            yield url


def _age_parties(database_url: str, days: int) -> None:
    """Every party created ``days`` earlier than it was (timestamps are microseconds)."""
    from sqlalchemy import text

    from lianjie.db import make_engine

    engine = make_engine(database_url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE parties SET created_at = created_at - :us"),
                     {"us": days * 86_400 * 1_000_000})
    engine.dispose()


def _run(args: argparse.Namespace, servers: list[Server], url: str) -> dict[str, Any]:
    server = servers[-1]
    operator_key = (server.home / "operator_key").read_text().strip()
    t = time.perf_counter()
    world = asyncio.run(build_world(server.port, operator_key, args.service_providers,
                                    args.merchants, args.consumers))
    print(f"setup: {args.service_providers} SPs, {len(world.merchants)} merchants, "
          f"{len(world.consumers)} funded consumers over HTTP in "
          f"{time.perf_counter() - t:.1f} s", flush=True)
    if args.parties_age_days:
        stop_server(server)
        _age_parties(url, args.parties_age_days)
        server = start_server(url, server.home, args.workers)
        servers.append(server)
        world.port = server.port
        print(f"parties aged {args.parties_age_days} days; server restarted", flush=True)
    shape = f"{args.concurrency} payments in flight" if args.rate is None else \
        f"{args.rate:g} payments started a second on up to {args.concurrency} connections"
    print(f"load: {shape}, {args.warmup:g} s warm-up, {args.duration:g} s measured, server pid "
          f"{server.pid} ({args.workers} worker(s))", flush=True)
    r = run_load(LoadConfig(server.port, server.pid, world.merchants, world.consumers,
                            args.concurrency, args.warmup, args.duration, args.seed,
                            args.rate))
    races = asyncio.run(check_races(world))
    checks = asyncio.run(check_outcome(world, r))  # after the races: they move money too
    payments_s = len(r.payment_ms) / r.window_s
    errors = sum(r.errors.values())
    print(f"payments/s {payments_s:,.0f}   requests/s {r.requests / r.window_s:,.0f}   "
          f"errors {errors}")
    print("latency (ms):")
    print(latency_line("payment", r.payment_ms))
    print(latency_line("create", r.create_ms))
    print(latency_line("pay", r.pay_ms))
    for name, count in sorted(r.errors.items()):
        print(f"  error {name}: {count}")
    print(f"held for risk review (answered, not paid): {r.reviewed}")
    print(f"cpu: server {r.server_cpu_s / r.window_s:.2f} cores "
          f"({1000 * r.server_cpu_s / max(1, len(r.payment_ms)):.2f} ms a payment), generator "
          f"{r.generator_cpu_s / r.window_s:.2f} cores, machine busy "
          f"{r.machine_busy_share:.0%} of {os.cpu_count()} cpus")
    print(f"races (one order, many payers; one wallet, many orders; one key, many sends): "
          f"{'ok' if not races else races}")
    print(f"ledger verify: {'ok' if checks['ledger_ok'] else checks['violations']}; "
          f"{checks['orders_checked']} paid orders read back, {checks['orders_wrong']} wrong")
    return {
        "benchmark": "payments_http", "database": args.database, "workers": args.workers,
        "concurrency": args.concurrency, "rate": args.rate, "duration_s": args.duration,
        "parties_age_days": args.parties_age_days, "payments": len(r.payment_ms),
        "payments_per_s": round(payments_s, 1),
        "requests_per_s": round(r.requests / r.window_s, 1),
        "payment_p50_ms": round(pct(r.payment_ms, 0.5), 2),
        "payment_p90_ms": round(pct(r.payment_ms, 0.9), 2),
        "payment_p99_ms": round(pct(r.payment_ms, 0.99), 2),
        "payment_max_ms": round(max(r.payment_ms, default=float("nan")), 2),
        "create_p50_ms": round(pct(r.create_ms, 0.5), 2),
        "create_p99_ms": round(pct(r.create_ms, 0.99), 2),
        "pay_p50_ms": round(pct(r.pay_ms, 0.5), 2),
        "pay_p99_ms": round(pct(r.pay_ms, 0.99), 2),
        "errors": errors, "errors_by_code": dict(r.errors),
        "reviewed": r.reviewed, "reviewed_share": round(r.reviewed / max(1, len(r.payment_ms)),
                                                        3),
        "server_cpu_cores": round(r.server_cpu_s / r.window_s, 2),
        "server_cpu_ms_per_payment": round(1000 * r.server_cpu_s / max(1, len(r.payment_ms)),
                                           2),
        "generator_cpu_cores": round(r.generator_cpu_s / r.window_s, 2),
        "machine_busy_share": round(r.machine_busy_share, 3),
        "ledger_ok": checks["ledger_ok"], "orders_wrong": checks["orders_wrong"],
        "races_ok": not races,
        **machine_facts(),
    }


if __name__ == "__main__":
    sys.exit(main())
