"""Marketing: grabs per second on one hot red packet, in process and over HTTP, and what a
coupon adds to a payment.

1. In process (``--part inprocess``): one campaign red packet ("scan to get") with ``--shares``
   lucky shares, grabbed by as many consumers plus 10% more requests (consumers grabbing a
   second time, and latecomers once it is empty) from ``--producers`` threads keeping up to
   ``--window`` grabs in flight. Grabs go through ``GrabBatcher`` and the group committer, so a
   grab's future resolves only once its group is durable. Each producer hands over ``--chunk``
   grabs at a time (``GrabBatcher.submit_many``: one future for them all; 1 submits each grab
   with its own future). The same load is also run with one
   unit of work per grab (``unbatched``) on a smaller packet, for comparison. The process runs
   the way ``lianjie serve`` runs its writer: once it has set up, it starts the heap keeper
   (``lianjie.heap.HeapKeeper``: ``gc.freeze`` of what is alive, again every 5 s), so full
   garbage collections walk only what the load adds, not the imported libraries and the
   fixtures (``--heap-keeper off`` leaves the collector as it is by default, for comparison).
2. Over HTTP (``--part http``): ``lianjie serve`` in its own process, ``--concurrency``
   keep-alive connections each grabbing for its own consumers (``POST
   /v1/red_packets/{id}/grab`` with an Idempotency-Key) until the packet is empty.
3. Coupon (``--part coupon``): the time ``do_pay_order`` takes inside its transaction, with and
   without a coupon, over the same orders; the difference of the medians is what redemption
   adds.

Every part checks that the shares taken sum to the packet's amount exactly, that nothing was
overspent (the escrow ends at zero, never below), that each consumer got at most one share,
and that the ledger verifies. The headline figures are one JSON object on the last line.

    .venv/bin/python benchmarks/marketing.py --database sqlite
    .venv/bin/python benchmarks/marketing.py --database postgresql --part inprocess
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, select

sys.path.insert(0, str(Path(__file__).resolve().parent))
from payments_http import (
    Connection as HttpConnection,
)
from payments_http import (
    _fan_out,
    _ok,
    latency_line,
    pct,
    postgres_database,
    process_tree_ticks,
    start_server,
    stop_server,
)

from lianjie import ledger, risk
from lianjie import marketing as mkt
from lianjie import payments as pay
from lianjie.clock import SystemClock
from lianjie.committer import Committer, run_now
from lianjie.db import make_engine, migrate
from lianjie.errors import DomainError
from lianjie.heap import HeapKeeper
from lianjie.ledger import Purpose
from lianjie.marketing.schema import grabs

CFG = pay.PaymentsConfig()
CONSUMERS_PER_TXN = 2000
EXTRA_SHARE = 0.10  # requests beyond the shares: second grabs and latecomers
WAIT_S = 600
TICK_S = os.sysconf("SC_CLK_TCK")


@contextmanager
def database(kind: str) -> Iterator[str]:
    if kind == "postgresql":
        with postgres_database() as url:
            yield url
        return
    with tempfile.TemporaryDirectory() as tmp:
        yield f"sqlite:///{tmp}/bench.sqlite3"


def make_consumers(engine: Engine, n: int) -> list[str]:
    clock = SystemClock()
    out: list[str] = []
    while len(out) < n:
        k = min(CONSUMERS_PER_TXN, n - len(out))
        out += run_now(engine, lambda c, k=k: [
            pay.do_create_consumer(c, clock.now(), CFG, "c").id for _ in range(k)])
    return out


def hot_packet(engine: Engine, shares: int, amount: int) -> mkt.RedPacket:
    clock = SystemClock()

    def unit(conn: Connection) -> mkt.RedPacket:
        now = clock.now()
        pay.ensure_platform(conn, now, CFG)
        campaign = mkt.do_create_campaign(conn, now, name="hot", funder_id=pay.PLATFORM_ID,
                                          budget=amount, currency_code="CNY", starts_at=now,
                                          ends_at=now + timedelta(days=1))
        return mkt.do_create_campaign_packet(conn, now, campaign.id, amount=amount,
                                             shares=shares, split_kind="lucky",
                                             per_person_max=1)
    return run_now(engine, unit)


def requests_for(packet: mkt.RedPacket, consumers: list[str]) -> list[str]:
    extra = consumers[: int(len(consumers) * EXTRA_SHARE)]
    return consumers + extra  # the extra are second grabs: each must be refused


def check(engine: Engine, packet: mkt.RedPacket, consumers: int) -> dict[str, Any]:
    with engine.connect() as conn:
        rows = conn.execute(select(grabs.c.consumer_id, grabs.c.amount).where(
            grabs.c.packet_id == packet.id)).all()
        escrow = ledger.find_account(conn, packet.id, Purpose.RED_PACKET, "CNY")
        problems = ledger.verify(conn)
    taken = sum(r.amount for r in rows)
    per_consumer = Counter(r.consumer_id for r in rows)
    assert escrow is not None
    ok = (taken == packet.amount and escrow.balance == 0 and len(rows) == packet.shares
          and max(per_consumer.values()) == 1 and min(r.amount for r in rows) >= 1
          and not problems)
    return {"ok": ok, "grabs": len(rows), "taken": taken, "amount": packet.amount,
            "escrow_balance": escrow.balance, "ledger_violations": len(problems),
            "consumers": consumers}


class Window:
    """At most ``size`` grabs in flight: ``take`` waits for room for ``n`` more. One waiter is
    woken per ``give`` (as a semaphore does), and one that gets its room wakes the next while
    room is left, so no producer waits with room free once nothing is in flight."""

    def __init__(self, size: int) -> None:
        self.free = size
        self.cond = threading.Condition()

    def take(self, n: int) -> None:
        with self.cond:
            while self.free < n:
                self.cond.wait()
            self.free -= n
            if self.free:
                self.cond.notify()

    def give(self, n: int) -> None:
        with self.cond:
            self.free += n
            self.cond.notify()


def drive(submit: Any, consumers: list[str], producers: int, window: int, chunk: int = 1
          ) -> tuple[float, list[float], Counter[str]]:
    """Submit every grab, at most ``window`` in flight; (seconds, latencies ms, outcomes).

    ``chunk`` > 1: each producer hands over that many grabs at a time (``submit`` takes a
    list and its future gives a list of outcomes, as ``GrabBatcher.submit_many``); every grab
    of a chunk gets the chunk's latency."""
    gate = Window(window)
    latencies: list[float] = []
    outcomes: Counter[str] = Counter()
    lock = threading.Lock()
    done_all = threading.Event()
    left = [len(consumers)]

    def code(outcome: Any) -> str:
        if not isinstance(outcome, BaseException):
            return "ok"
        return outcome.code.value if isinstance(outcome, DomainError) else repr(outcome)

    def finished(started: float, n: int, fut: Future[Any]) -> None:
        elapsed = (time.perf_counter() - started) * 1000
        exc = fut.exception()
        if exc is not None:
            codes = [code(exc)] * n
        else:
            codes = [code(o) for o in fut.result()] if chunk > 1 else ["ok"]
        with lock:
            latencies.extend([elapsed] * n)
            outcomes.update(codes)
            left[0] -= n
            if left[0] == 0:
                done_all.set()
        gate.give(n)

    def producer(part: list[str]) -> None:
        for i in range(0, len(part), chunk):
            who: Any = part[i:i + chunk] if chunk > 1 else part[i]
            n = len(who) if chunk > 1 else 1
            gate.take(n)
            started = time.perf_counter()
            fut = submit(who)
            fut.add_done_callback(lambda f, s=started, n=n: finished(s, n, f))

    parts = [consumers[i::producers] for i in range(producers)]
    threads = [threading.Thread(target=producer, args=(p,)) for p in parts]
    t0, cpu0 = time.perf_counter(), time.process_time()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert done_all.wait(WAIT_S)
    CPU_S[0] = time.process_time() - cpu0
    return time.perf_counter() - t0, latencies, outcomes


CPU_S = [0.0]  # the process's CPU seconds over the last ``drive``: steadier than wall time


def run_inprocess(url: str, shares: int, producers: int, window: int, batched: bool,
                  risk_on: bool = True, keep_heap: bool = True, chunk: int = 1
                  ) -> dict[str, Any]:
    engine = make_engine(url)
    migrate(engine)
    if not risk_on:  # the grab path alone, without asking the risk engine
        risk.configure(engine, risk.RiskConfig(enabled=False))
    consumers = make_consumers(engine, shares)
    packet = hot_packet(engine, shares, shares * 88)
    load0 = _load_1m()
    committer = Committer(engine)
    committer.start()
    clock = SystemClock()
    batcher = mkt.GrabBatcher(committer, clock)

    chunk = chunk if batched else 1

    def submit(who: Any) -> Future[Any]:
        if batched and chunk > 1:
            return batcher.submit_many([mkt.GrabRequest(packet.id, w) for w in who])
        if batched:
            return batcher.submit(mkt.GrabRequest(packet.id, who))
        return committer.submit(lambda c: mkt.do_grab(c, clock.now(), packet.id, who))

    load = requests_for(packet, consumers)
    keeper = HeapKeeper() if keep_heap else None
    if keeper:
        keeper.start()
    try:
        seconds, latencies, outcomes = drive(submit, load, producers, window, chunk)
    finally:
        if keeper:
            keeper.stop()
    committer.stop()
    verdict = check(engine, packet, len(consumers))
    engine.dispose()
    ok_grabs = outcomes["ok"]
    return {"mode": "batched" if batched else "unbatched", "risk": risk_on,
            "heap_keeper": keep_heap, "chunk": chunk, "load_average": [load0, _load_1m()],
            "requests": len(load),
            "grabs": ok_grabs, "seconds": round(seconds, 3),
            "grabs_per_s": round(ok_grabs / seconds), "requests_per_s":
            round(len(load) / seconds), "outcomes": dict(outcomes),
            "groups": committer.groups_committed, "batches": batcher.batches,
            "cpu_s": round(CPU_S[0], 3), "grabs_per_cpu_s": round(ok_grabs / CPU_S[0]),
            "unit_cpu_s": round(batcher.unit_cpu_s, 3),
            "grabs_per_unit_cpu_s": round(ok_grabs / batcher.unit_cpu_s) if batched else None,
            "latency_ms": {q: round(pct(latencies, v), 2) for q, v in
                           (("p50", 0.5), ("p90", 0.9), ("p99", 0.99))},
            "latencies": latencies, "check": verdict}


# -- over HTTP ----------------------------------------------------------------------------

async def http_world(port: int, operator_key: str, shares: int) -> tuple[str, list[str]]:
    async def consumer(conn: HttpConnection, _i: int) -> str:
        return str((await _ok(conn, "POST", "/v1/consumers", operator_key,
                              {"name": "c"}))["api_key"])

    keys = await _fan_out(port, shares, consumer)
    setup = HttpConnection("127.0.0.1", port)
    ends = int(time.time()) + 86_400
    campaign = await _ok(setup, "POST", "/v1/campaigns", operator_key,
                         {"name": "hot", "budget": shares * 88, "ends_at": ends})
    packet = await _ok(setup, "POST", f"/v1/campaigns/{campaign['id']}/red_packets",
                       operator_key, {"amount": shares * 88, "shares": shares,
                                      "split": "lucky", "per_person_max": 1})
    setup.close()
    return str(packet["id"]), keys


async def http_load(port: int, packet_id: str, keys: list[str], concurrency: int
                    ) -> tuple[float, list[float], Counter[str]]:
    latencies: list[float] = []
    outcomes: Counter[str] = Counter()
    queue = iter(keys + keys[: int(len(keys) * EXTRA_SHARE)])
    path = f"/v1/red_packets/{packet_id}/grab"

    async def worker() -> None:
        conn = HttpConnection("127.0.0.1", port)
        try:
            for key in queue:
                started = time.perf_counter()
                status, raw = await conn.request("POST", path, key, {}, uuid.uuid4().hex)
                latencies.append((time.perf_counter() - started) * 1000)
                outcomes["ok" if status == 200 else json.loads(raw)["error"]["code"]] += 1
        finally:
            conn.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - t0, latencies, outcomes


RISK_OFF_SERVER = [sys.executable, str(Path(__file__).resolve().parent / "serve_risk_off.py")]


def run_http(url: str, shares: int, concurrency: int, workers: int = 1, risk_on: bool = True
             ) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as home:
        engine = make_engine(url)
        migrate(engine)
        server = start_server(url, Path(home), workers,
                              None if risk_on else RISK_OFF_SERVER)
        try:
            operator_key = (Path(home) / "operator_key").read_text().strip()
            packet_id, keys = asyncio.run(http_world(server.port, operator_key, shares))
            server_cpu0, cpu0 = process_tree_ticks(server.pid) / TICK_S, time.process_time()
            loop_cpu0, load0 = thread_ticks(server.pid) / TICK_S, _load_1m()
            seconds, latencies, outcomes = asyncio.run(
                http_load(server.port, packet_id, keys, concurrency))
            server_cpu = process_tree_ticks(server.pid) / TICK_S - server_cpu0
            loop_cpu = thread_ticks(server.pid) / TICK_S - loop_cpu0
            client_cpu = time.process_time() - cpu0
        finally:
            stop_server(server)
        with engine.connect() as conn:
            packet = mkt.require_packet(conn, packet_id)
        verdict = check(engine, packet, shares)
        engine.dispose()
    return {"mode": "http", "workers": workers, "requests": sum(outcomes.values()),
            "grabs": outcomes["ok"],
            "seconds": round(seconds, 3), "grabs_per_s": round(outcomes["ok"] / seconds),
            "requests_per_s": round(sum(outcomes.values()) / seconds),
            "outcomes": dict(outcomes), "latencies": latencies,
            "server_cpu_s": round(server_cpu, 3), "client_cpu_s": round(client_cpu, 3),
            "grabs_per_server_cpu_s": round(outcomes["ok"] / server_cpu),
            "server_cpu_ms_per_grab": round(server_cpu * 1000 / outcomes["ok"], 3),
            # one process: its main thread runs the event loop; the rest is the committer
            # (every grab unit), the key lookups' worker thread and background jobs
            "server_loop_cpu_ms_per_grab": round(loop_cpu * 1000 / outcomes["ok"], 3)
            if workers == 1 else None,
            "load_average": [load0, _load_1m()],
            "latency_ms": {q: round(pct(latencies, v), 2) for q, v in
                           (("p50", 0.5), ("p90", 0.9), ("p99", 0.99))}, "check": verdict}


def thread_ticks(pid: int) -> int:
    """CPU time (clock ticks) of the main thread of process ``pid``."""
    raw = Path(f"/proc/{pid}/task/{pid}/stat").read_text()
    fields = raw[raw.rindex(")") + 2:].split()
    return int(fields[11]) + int(fields[12])


def _load_1m() -> float:
    return round(os.getloadavg()[0], 2)


# -- coupon redemption's cost inside a payment ----------------------------------------------

def run_coupon(url: str, payments: int) -> dict[str, Any]:
    engine = make_engine(url)
    migrate(engine)
    clock = SystemClock()
    now = clock.now()

    def setup(conn: Connection) -> tuple[str, list[str], str]:
        pay.ensure_platform(conn, now, CFG)
        bank = pay.do_create_institution(conn, now, CFG, "bank").id
        shop = pay.do_onboard_merchant(conn, now, CFG, "shop", sp_id=None,
                                       business_type="cafe")
        pay.do_decide_kyc(conn, now, shop.id, True)
        campaign = mkt.do_create_campaign(conn, now, name="c", funder_id=pay.PLATFORM_ID,
                                          budget=payments * 100, currency_code="CNY",
                                          starts_at=now, ends_at=now + timedelta(days=1))
        template = mkt.do_create_template(conn, now, campaign.id, name="1 off", kind="fixed",
                                          amount_off=100, total_max=payments,
                                          per_person_max=1)
        buyers = [pay.do_create_consumer(conn, now, CFG, "b").id for _ in range(payments)]
        for b in buyers:
            pay.do_top_up(conn, now, b, bank, 1_000_000, "CNY")
        return shop.id, buyers, template.id

    shop, buyers, template_id = run_now(engine, setup)
    timings: dict[str, list[float]] = {"without": [], "with": []}
    for i, buyer in enumerate(buyers):
        for kind in ("without", "with"):
            def unit(conn: Connection, kind: str = kind, i: int = i, buyer: str = buyer
                     ) -> None:
                t = clock.now()
                order = pay.do_create_order(conn, t, CFG, shop, out_trade_no=f"{kind}{i}",
                                            amount=1000, currency_code="CNY",
                                            description="tea")
                coupon = mkt.do_claim(conn, t, template_id, buyer).id if kind == "with" \
                    else None
                started = time.perf_counter()
                pay.do_pay_order(conn, t, order.id, buyer, coupon_id=coupon)
                timings[kind].append((time.perf_counter() - started) * 1000)
            run_now(engine, unit)
    with engine.connect() as conn:
        problems = ledger.verify(conn)
    engine.dispose()
    p50_with, p50_without = pct(timings["with"], 0.5), pct(timings["without"], 0.5)
    return {"payments": payments, "pay_ms_p50_without": round(p50_without, 3),
            "pay_ms_p50_with": round(p50_with, 3),
            "pay_ms_p99_without": round(pct(timings["without"], 0.99), 3),
            "pay_ms_p99_with": round(pct(timings["with"], 0.99), 3),
            "coupon_added_ms_p50": round(p50_with - p50_without, 3),
            "ledger_violations": len(problems), "timings": timings}


def report(name: str, result: dict[str, Any]) -> None:
    print(f"{name}: {result.get('grabs', '')} grabs in {result.get('seconds', '')} s = "
          f"{result.get('grabs_per_s', '')} grabs/s ({result.get('requests_per_s', '')} "
          f"requests/s); outcomes {result.get('outcomes')}")
    if "cpu_s" in result:
        print(f"  process CPU {result['cpu_s']} s: {result['grabs_per_cpu_s']} grabs per CPU "
              f"second; {result['groups']} group commits, {result['batches']} grab batches")
        if result.get("grabs_per_unit_cpu_s"):
            print(f"  CPU inside the grab units {result['unit_cpu_s']} s: "
                  f"{result['grabs_per_unit_cpu_s']} grabs per CPU second of the grab path")
    if "server_cpu_s" in result:
        print(f"  server CPU {result['server_cpu_s']} s: {result['grabs_per_server_cpu_s']} "
              f"grabs per server CPU second, {result['server_cpu_ms_per_grab']} ms a grab "
              f"({result['server_loop_cpu_ms_per_grab']} on the event loop); client CPU "
              f"{result['client_cpu_s']} s; load average {result['load_average']}")
    if "latencies" in result:
        print(latency_line("grab", result.pop("latencies")))
    if "check" in result:
        print(f"  check: {result['check']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--part", choices=("all", "inprocess", "http", "coupon"),
                        default="all")
    parser.add_argument("--shares", type=int, default=30_000)
    parser.add_argument("--unbatched-shares", type=int, default=3000)
    parser.add_argument("--http-shares", type=int, default=3000)
    parser.add_argument("--producers", type=int, default=4)
    parser.add_argument("--window", type=int, default=2048)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--coupon-payments", type=int, default=500)
    parser.add_argument("--workers", type=int, default=1, help="HTTP: server processes")
    parser.add_argument("--chunk", type=int, default=64,
                        help="in process, batched: grabs each producer hands over at a time "
                        "(GrabBatcher.submit_many); 1 submits them one by one")
    parser.add_argument("--heap-keeper", choices=("on", "off"), default="on",
                        help="in process: run lianjie.heap.HeapKeeper as a server does (on) "
                        "or leave the collector at its defaults")
    parser.add_argument("--risk", choices=("on", "off"), default="on",
                        help="ask the risk engine on every grab (as served) or not; over "
                        "HTTP, off starts the server through serve_risk_off.py")
    args = parser.parse_args(argv)
    if args.risk == "off" and args.workers > 1 and args.part in ("all", "http"):
        parser.error("--risk off over HTTP needs one worker (workers are spawned afresh)")
    headline: dict[str, Any] = {"benchmark": "marketing", "database": args.database,
                                "risk": args.risk,
                                "cpus": os.cpu_count(),
                                "at": datetime.now(UTC).isoformat(timespec="seconds")}
    ok = True
    if args.part in ("all", "inprocess"):
        for batched, shares in ((True, args.shares), (False, args.unbatched_shares)):
            with database(args.database) as url:
                result = run_inprocess(url, shares, args.producers, args.window, batched,
                                       args.risk == "on", args.heap_keeper == "on",
                                       args.chunk)
            report(f"in process, {result['mode']}, risk {args.risk}", result)
            ok = ok and result["check"]["ok"]
            headline[f"inprocess_{result['mode']}_grabs_per_s"] = result["grabs_per_s"]
            headline[f"inprocess_{result['mode']}_p99_ms"] = result["latency_ms"]["p99"]
            headline[f"inprocess_{result['mode']}_grabs_per_cpu_s"] = result["grabs_per_cpu_s"]
            if batched:
                headline["inprocess_batched_grabs_per_unit_cpu_s"] = \
                    result["grabs_per_unit_cpu_s"]
                headline["inprocess_heap_keeper"] = args.heap_keeper
                headline["inprocess_chunk"] = args.chunk
                headline["inprocess_load_average"] = result["load_average"]
    if args.part in ("all", "http"):
        with database(args.database) as url:
            result = run_http(url, args.http_shares, args.concurrency, args.workers,
                              args.risk == "on")
        report("over HTTP", result)
        ok = ok and result["check"]["ok"]
        headline["http_grabs_per_s"] = result["grabs_per_s"]
        headline["http_p99_ms"] = result["latency_ms"]["p99"]
        headline["http_grabs_per_server_cpu_s"] = result["grabs_per_server_cpu_s"]
        headline["http_server_cpu_ms_per_grab"] = result["server_cpu_ms_per_grab"]
        headline["http_load_average"] = result["load_average"]
    if args.part in ("all", "coupon"):
        with database(args.database) as url:
            result = run_coupon(url, args.coupon_payments)
        timings = result.pop("timings")
        print(f"coupon: {result}")
        print(latency_line("pay", timings["without"]))
        print(latency_line("pay+cpn", timings["with"]))
        ok = ok and result["ledger_violations"] == 0
        headline["coupon_added_ms_p50"] = result["coupon_added_ms_p50"]
    headline["ok"] = ok
    print(json.dumps(headline))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
