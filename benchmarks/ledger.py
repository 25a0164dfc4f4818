"""Ledger throughput: in-process, batched, durable two-leg transfers on SQLite or PostgreSQL.

A "transfer" is one ledger ``Entry`` with one ``Leg`` (wallet -> merchant): one entry row and
two posting rows, plus the two accounts' running totals. The run:

1. creates a fresh database (a SQLite file in a temporary directory, or a dedicated PostgreSQL
   database that is dropped afterwards) and migrates it;
2. opens the accounts: one institution settlement account, wallets that must not go below zero
   (``DEBITS_MUST_NOT_EXCEED_CREDITS``) funded from it, and merchant accounts;
3. times batches of random wallet -> merchant transfers, each batch one ``create_entries`` call
   committed durably in its own write transaction (SQLite: WAL with ``synchronous=FULL``;
   PostgreSQL: ``synchronous_commit=on``). Building the requests is not timed: the figure is
   what the ledger does with a batch, from ``BEGIN`` to a durable ``COMMIT``;
4. runs ``lianjie.ledger.verify`` on the result (timed separately; it must find nothing).

The headline figures are printed as one JSON object on the last line, for scripts to collect.

    .venv/bin/python benchmarks/ledger.py --database sqlite
    .venv/bin/python benchmarks/ledger.py --database postgresql
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Connection, Engine, create_engine, text
from sqlalchemy.exc import DBAPIError

import lianjie.schema  # noqa: F401 - every table on the metadata
from lianjie import ledger as L
from lianjie.committer import Committer
from lianjie.db import make_engine, migrate, normalise_url, reader, writer

POSTGRES_URL_ENV = "LIANJIE_BENCH_POSTGRES_URL"
POSTGRES_URL_DEFAULT = "postgresql://lianjie@127.0.0.1:54329/lianjie"
POSTGRES_BENCH_DB = "lianjie_bench"
TRANSFERS_DEFAULT = {"sqlite": 1_000_000, "postgresql": 200_000}
MERCHANT_SHARE = 0.1  # of --accounts; the rest are wallets
AMOUNT_MINOR_MAX = 10_000  # a transfer moves 0.01 to 100.00 CNY
ACCOUNT_OPEN_BATCH_MAX = 1_000  # accounts opened per setup transaction
PG_DROP_ATTEMPTS_MAX = 10
DURATION_S_MAX_DEFAULT = 90.0  # the timed loop stops after this, whatever --transfers says
WALLET = L.AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS


@dataclass
class Accounts:
    bank: int
    wallets: list[int]
    merchants: list[int]


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    transfers = args.transfers or TRANSFERS_DEFAULT[args.database]
    assert 0 < args.batch <= L.BATCH_ENTRIES_MAX, f"--batch must be 1..{L.BATCH_ENTRIES_MAX}"
    assert args.accounts >= 20, "--accounts must leave room for wallets and merchants"
    with _database(args.database, args.dir) as (engine, where):
        settings = _durability(engine)
        t0 = time.perf_counter()
        accts = _open_accounts(engine, args.accounts)
        _fund(engine, accts, transfers, args.batch)
        setup_s = time.perf_counter() - t0
        with _profiled(args.profile):
            run = _run(engine, accts, transfers, args)
        t0 = time.perf_counter()
        with reader(engine) as conn:
            violations = L.verify(conn)
        verify_s = time.perf_counter() - t0
    summary = _summary(args, transfers, run, len(violations), verify_s)
    _report(args, where, settings, setup_s, run, violations, verify_s, summary)
    print(json.dumps(summary), flush=True)
    return 0 if not violations and run.rejected == 0 else 1


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    p.add_argument("--transfers", type=int, default=0,
                   help="transfers to time (default: 1,000,000 sqlite, 200,000 postgresql)")
    p.add_argument("--batch", type=int, default=L.BATCH_ENTRIES_MAX, help="entries per batch")
    p.add_argument("--accounts", type=int, default=10_000,
                   help="wallets and merchants (10%% merchants), plus one settlement account")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--via", choices=("writer", "committer"), default="writer",
                   help="commit each batch with db.writer() or as one Committer unit")
    p.add_argument("--duration-max-s", type=float, default=DURATION_S_MAX_DEFAULT,
                   help="stop the timed loop after this many seconds")
    p.add_argument("--profile", action="store_true",
                   help="profile the timed loop with pyinstrument; the report goes to stderr")
    p.add_argument("--dir", default=None, help="directory for the SQLite file (default: a "
                   "temporary directory, removed afterwards)")
    return p.parse_args(argv)


# -- the database --------------------------------------------------------------------------------

@contextmanager
def _database(kind: str, directory: str | None) -> Iterator[tuple[Engine, str]]:
    if kind == "sqlite":
        with tempfile.TemporaryDirectory(prefix="lianjie-bench-", dir=directory) as tmp:
            path = os.path.join(tmp, "ledger.sqlite3")
            engine = make_engine(f"sqlite:///{path}")
            migrate(engine)
            try:
                yield engine, path
            finally:
                engine.dispose()
        return
    url = os.environ.get(POSTGRES_URL_ENV, POSTGRES_URL_DEFAULT)
    admin = create_engine(normalise_url(url), isolation_level="AUTOCOMMIT")
    _pg_drop(admin)
    _pg_admin(admin, f'CREATE DATABASE "{POSTGRES_BENCH_DB}"')
    bench_url = f"{url.rsplit('/', 1)[0]}/{POSTGRES_BENCH_DB}"
    engine = make_engine(bench_url)
    try:
        migrate(engine)
        yield engine, bench_url
    finally:
        engine.dispose()
        _pg_drop(admin)
        admin.dispose()


def _pg_drop(admin: Engine) -> None:
    """Drop the benchmark database, waiting out an autovacuum worker still in it.

    A plain DROP DATABASE stops autovacuum itself; ``WITH (FORCE)`` would also end a session
    left over from a killed run, but a non-superuser may not use it on autovacuum workers.
    """
    for attempt in range(PG_DROP_ATTEMPTS_MAX):
        try:
            _pg_admin(admin, f'DROP DATABASE IF EXISTS "{POSTGRES_BENCH_DB}"')
            return
        except DBAPIError:
            if attempt + 1 == PG_DROP_ATTEMPTS_MAX:
                raise
        try:
            _pg_admin(admin, f'DROP DATABASE IF EXISTS "{POSTGRES_BENCH_DB}" WITH (FORCE)')
            return
        except DBAPIError:
            time.sleep(1.0)


def _pg_admin(admin: Engine, *statements: str) -> None:
    with admin.connect() as conn:
        for sql in statements:
            conn.execute(text(sql))


def _durability(engine: Engine) -> dict[str, str]:
    """The settings that make a commit durable, read back from the live connection."""
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            got = {name: str(conn.exec_driver_sql(f"PRAGMA {name}").scalar_one())
                   for name in ("journal_mode", "synchronous", "foreign_keys")}
            assert got["journal_mode"] == "wal" and got["synchronous"] == "2", got  # 2: FULL
            got["synchronous"] = "FULL"
            return got
        got = {name: str(conn.exec_driver_sql(f"SHOW {name}").scalar_one())
               for name in ("server_version", "fsync", "synchronous_commit", "wal_sync_method",
                            "full_page_writes", "shared_buffers")}
        assert got["fsync"] == "on" and got["synchronous_commit"] == "on", got
        return got


# -- setup: accounts and funding -----------------------------------------------------------------

def _open_accounts(engine: Engine, n: int) -> Accounts:
    now = datetime.now(UTC)
    n_merchants = max(1, int(n * MERCHANT_SHARE))
    specs = [(f"cus_{i:07d}", L.Purpose.WALLET, WALLET) for i in range(n - n_merchants)]
    specs += [(f"mch_{i:07d}", L.Purpose.MERCHANT_PENDING, L.AccountFlags.NONE)
              for i in range(n_merchants)]
    with writer(engine) as conn:
        bank = L.open_account(conn, now, "ins_bench_bank", L.Purpose.INSTITUTION_SETTLEMENT).id
    ids: list[int] = []
    for i in range(0, len(specs), ACCOUNT_OPEN_BATCH_MAX):
        with writer(engine) as conn:
            ids += [L.open_account(conn, now, owner, purpose, flags=flags).id
                    for owner, purpose, flags in specs[i:i + ACCOUNT_OPEN_BATCH_MAX]]
    n_wallets = n - n_merchants
    return Accounts(bank, ids[:n_wallets], ids[n_wallets:])


def _fund(engine: Engine, accts: Accounts, transfers: int, batch: int) -> None:
    """Give every wallet enough that no timed transfer is refused for insufficient funds."""
    per_wallet = AMOUNT_MINOR_MAX * (4 * transfers // len(accts.wallets) + 100)
    entries = [L.Entry(f"fund-{w}", (L.Leg(accts.bank, w, per_wallet),), code="top_up")
               for w in accts.wallets]
    for i in range(0, len(entries), batch):
        with writer(engine) as conn:
            results = L.create_entries(conn, datetime.now(UTC), entries[i:i + batch])
        assert all(r.ok for r in results), [r for r in results if not r.ok][:3]


@contextmanager
def _profiled(enabled: bool) -> Iterator[None]:
    if not enabled:
        yield
        return
    from pyinstrument import Profiler  # a dev dependency, needed only here

    profiler = Profiler(interval=0.001)
    with profiler:
        yield
    sys.stderr.write(profiler.output_text(unicode=True, color=False,
                                          show_all=bool(os.environ.get("BENCH_PROFILE_ALL"))))


# -- the timed loop ------------------------------------------------------------------------------

@dataclass
class Run:
    transfers: int = 0
    rejected: int = 0
    batches: int = 0
    ledger_s: float = 0.0  # sum of batch latencies: BEGIN .. durable COMMIT
    wall_s: float = 0.0  # the whole loop, including building the requests
    ledger_cpu_s: float = 0.0  # this process's CPU time inside the batches (not the server's)
    server_cpu_s: float | None = None  # PostgreSQL backends' CPU time in the loop, when local
    load_before: float = 0.0  # 1-minute load average: other work on the machine skews the figures
    load_after: float = 0.0
    stopped_early: bool = False
    latencies_s: list[float] | None = None


def _run(engine: Engine, accts: Accounts, transfers: int, args: argparse.Namespace) -> Run:
    rng = random.Random(args.seed)
    commit = _committer(engine) if args.via == "committer" else _writer(engine)
    run = Run(latencies_s=[])
    assert run.latencies_s is not None
    run.load_before = os.getloadavg()[0]
    server_before = _server_cpu(engine)
    start = time.perf_counter()
    while run.transfers < transfers:
        if time.perf_counter() - start > args.duration_max_s:
            run.stopped_early = True
            break
        n = min(args.batch, transfers - run.transfers)
        entries = _batch(rng, accts, args.seed, run.transfers, n)
        cpu0, t0 = time.process_time(), time.perf_counter()
        results = commit(entries)
        elapsed = time.perf_counter() - t0
        run.ledger_cpu_s += time.process_time() - cpu0
        run.latencies_s.append(elapsed)
        run.ledger_s += elapsed
        run.batches += 1
        run.transfers += n
        run.rejected += sum(1 for r in results if not r.ok or r.replayed)
    run.wall_s = time.perf_counter() - start
    run.load_after = os.getloadavg()[0]
    server_after = _server_cpu(engine)
    if server_after is not None and server_before is not None:
        run.server_cpu_s = sum(cpu - server_before.get(pid, 0.0)
                               for pid, cpu in server_after.items())
    return run


def _server_cpu(engine: Engine) -> dict[int, float] | None:
    """CPU seconds of each PostgreSQL backend serving this database, if the server is local.

    Read from /proc, so it needs the server on this machine; None otherwise (and on SQLite,
    which runs inside this process and is counted in its CPU time).
    """
    if engine.dialect.name != "postgresql":
        return None
    with engine.connect() as conn:
        pids = conn.exec_driver_sql("SELECT pid FROM pg_stat_activity "
                                    "WHERE datname = current_database()").scalars().all()
    ticks_s = os.sysconf("SC_CLK_TCK")
    out: dict[int, float] = {}
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            return None
        out[pid] = (int(fields[11]) + int(fields[12])) / ticks_s  # utime + stime
    return out


def _batch(rng: random.Random, accts: Accounts, seed: int, first: int, n: int
           ) -> list[L.Entry]:
    wallets, merchants = accts.wallets, accts.merchants
    choice, randint = rng.choice, rng.randint
    return [L.Entry(f"bench-{seed}-{first + i}",
                    (L.Leg(choice(wallets), choice(merchants), randint(1, AMOUNT_MINOR_MAX)),))
            for i in range(n)]


def _writer(engine: Engine) -> Callable[[list[L.Entry]], list[L.EntryResult]]:
    def commit(entries: list[L.Entry]) -> list[L.EntryResult]:
        with writer(engine) as conn:
            return L.create_entries(conn, datetime.now(UTC), entries)
    return commit


def _committer(engine: Engine) -> Callable[[list[L.Entry]], list[L.EntryResult]]:
    committer = Committer(engine, batch_units_max=1)
    committer.start()

    def commit(entries: list[L.Entry]) -> list[L.EntryResult]:
        def unit(conn: Connection) -> list[L.EntryResult]:
            return L.create_entries(conn, datetime.now(UTC), entries)
        return committer.run(unit)
    return commit


# -- report --------------------------------------------------------------------------------------

def _percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    assert sorted_values and 0 < q <= 100
    rank = max(1, -(-len(sorted_values) * q // 100))
    return sorted_values[int(rank) - 1]


def _tenths(values: list[float]) -> list[float]:
    """Means of ten consecutive slices: how latency moves as the database grows."""
    n = len(values)
    slices = [values[n * i // 10:n * (i + 1) // 10] for i in range(10)]
    return [sum(part) / len(part) for part in slices if part]


def _summary(args: argparse.Namespace, transfers: int, run: Run, violations: int,
             verify_s: float) -> dict[str, object]:
    lat = sorted(run.latencies_s or [0.0])
    ms = {f"batch_{name}_ms": round(_percentile(lat, q) * 1000, 2)
          for name, q in (("p50", 50), ("p90", 90), ("p99", 99), ("max", 100))}
    return {
        "benchmark": "ledger", "database": args.database, "via": args.via,
        "transfers": run.transfers, "transfers_requested": transfers, "batch": args.batch,
        "accounts": args.accounts, "seed": args.seed,
        "transfers_per_s": round(run.transfers / run.ledger_s) if run.ledger_s else 0,
        "transfers_per_s_wall": round(run.transfers / run.wall_s) if run.wall_s else 0,
        **ms, "rejected": run.rejected, "violations": violations,
        "verify_s": round(verify_s, 2), "ledger_cpu_s": round(run.ledger_cpu_s, 2),
        "server_cpu_s": None if run.server_cpu_s is None else round(run.server_cpu_s, 2),
        "load_before": round(run.load_before, 2), "stopped_early": run.stopped_early,
    }


def _report(args: argparse.Namespace, where: str, settings: dict[str, str], setup_s: float,
            run: Run, violations: list[L.Violation], verify_s: float,
            summary: dict[str, object]) -> None:
    out = sys.stdout
    out.write(f"ledger benchmark: {args.database} ({where})\n")
    out.write(f"  python {platform.python_version()}, sqlite {sqlite3.sqlite_version}, "
              f"{os.cpu_count()} CPUs\n")
    out.write("  durability: " + ", ".join(f"{k}={v}" for k, v in settings.items()) + "\n")
    out.write(f"  accounts: {args.accounts} (+1 settlement), batch {args.batch}, "
              f"via {args.via}, seed {args.seed}; setup {setup_s:.1f} s\n")
    if run.stopped_early:
        out.write(f"  stopped after {args.duration_max_s:.0f} s (--duration-max-s)\n")
    out.write(f"  transfers:   {run.transfers:>12,} in {run.batches} batches "
              f"({run.rejected} rejected)\n")
    out.write(f"  throughput:  {summary['transfers_per_s']:>12,} transfers/s "
              f"(ledger time {run.ledger_s:.2f} s)\n")
    out.write(f"               {summary['transfers_per_s_wall']:>12,} transfers/s "
              f"(wall, incl. building requests, {run.wall_s:.2f} s)\n")
    out.write(f"  client CPU:  {run.ledger_cpu_s:.2f} s in the batches "
              f"({run.ledger_cpu_s / run.ledger_s:.0%} of ledger time)")
    if run.server_cpu_s is not None:
        out.write(f"; server backends {run.server_cpu_s:.2f} s")
    out.write("\n")
    out.write("               1-min load average "
              f"{run.load_before:.2f} before, {run.load_after:.2f} after "
              f"({os.cpu_count()} CPUs)\n")
    out.write("  batch commit latency (ms): " + ", ".join(
        f"{name} {summary[f'batch_{name}_ms']}" for name in ("p50", "p90", "p99", "max")) + "\n")
    out.write("  mean batch latency by tenth of the run (ms): "
              + " ".join(f"{t * 1000:.0f}" for t in _tenths(run.latencies_s or [])) + "\n")
    out.write(f"  verify:      {len(violations)} violations in {verify_s:.2f} s\n")
    for v in violations[:10]:
        out.write(f"    {v.code} {v.subject}: {v.detail}\n")
    out.flush()


if __name__ == "__main__":
    sys.exit(main())
