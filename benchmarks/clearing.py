"""End-of-day benchmark: settlement, clearing, the Merkle log and statements for N payments.

The data set is written with bulk inserts straight into the ledger tables (not through the API):
M merchants, C consumers funded by top-ups from one partner bank, then N payments of two legs
each (wallet to merchant_pending, merchant_pending to the platform's fee), spread over one
business day, with running balances and sequence numbers as the ledger would write them. Then
``run_end_of_day`` for that day, timed step by step, one statement per kind rendered, and an
inclusion proof generated and verified many times.

    .venv/bin/python benchmarks/clearing.py --n 200000
    .venv/bin/python benchmarks/clearing.py --n 1000000 --database postgresql://...

The last line of output is one JSON object with the headline figures.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, text

import lianjie.schema  # noqa: F401
from lianjie.clearing import ClearingConfig, log, merkle, run_end_of_day, statements
from lianjie.clearing.signing import load_signer
from lianjie.clock import ManualClock, to_us
from lianjie.db import make_engine, metadata, migrate, normalise_url

DAY = date(2026, 3, 2)
INSERT_CHUNK = 50_000
PROOF_RUNS = 2000


class _Loader:
    """Bulk rows into the ledger tables on one raw connection, in one transaction.

    10 million payments are 40 million postings: rows are written chunk by chunk as they are
    generated (never all in memory), and the postings' account index is dropped for the load and
    rebuilt once at the end (a sorted build instead of 40 million random index inserts)."""

    def __init__(self, engine: Engine) -> None:
        self.pg = engine.dialect.name == "postgresql"
        self.raw = engine.raw_connection()
        self.cur = self.raw.cursor()
        if not self.pg:
            self.cur.execute("PRAGMA synchronous=OFF")  # a throwaway file: no fsync per load
            self.cur.execute("BEGIN")
        self.cur.execute("DROP INDEX ix_ledger_postings_account")

    def rows(self, table: str, cols: list[str], rows: list[tuple[Any, ...]]) -> None:
        if self.pg:
            with self.cur.copy(f"COPY {table} ({', '.join(cols)}) FROM STDIN") as cp:
                for r in rows:
                    cp.write_row(r)
            return
        marks = ", ".join("?" for _ in cols)
        self.cur.executemany(f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({marks})", rows)

    def finish(self) -> None:
        self.cur.execute("CREATE UNIQUE INDEX ix_ledger_postings_account "
                         "ON ledger_postings (account_id, account_seq)")
        if self.pg:
            self.raw.commit()
        else:
            self.cur.execute("COMMIT")
            self.cur.execute("PRAGMA synchronous=FULL")
        self.raw.close()


ENTRY_COLS = ["id", "key", "kind", "code", "fingerprint", "created_at"]
POSTING_COLS = ["entry_id", "leg_no", "side", "account_id", "account_seq", "amount",
                "balance_after", "created_at"]


def generate(engine: Engine, n: int, merchants: int, consumers: int, cfg: ClearingConfig
             ) -> dict[str, Any]:
    t0 = time.perf_counter()
    start = cfg.day_start(DAY)
    created = to_us(start - timedelta(hours=1))
    load = _Loader(engine)
    parties = [("plt_platform", "platform", "Platform"), ("ins_bench", "institution", "Bank")]
    parties += [(f"mch_{i}", "merchant", f"M{i}") for i in range(merchants)]
    parties += [(f"cus_{i}", "consumer", f"C{i}") for i in range(consumers)]
    load.rows("parties", ["id", "kind", "name", "status", "kyc_status", "fee_rate_bps",
                          "created_at"],
              [(p, k, nm, "active", "approved", 50 if k == "merchant" else None, created)
               for p, k, nm in parties])
    # accounts: 1 fee, 2 bank, then pending/available per merchant, then wallets
    accts: list[list[Any]] = [[1, "plt_platform", "fee_revenue", 0], [2, "ins_bench",
                                                                    "institution_settlement", 0]]
    for i in range(merchants):
        accts.append([3 + 2 * i, f"mch_{i}", "merchant_pending", 0])
        accts.append([4 + 2 * i, f"mch_{i}", "merchant_available", 0])
    wallet0 = 3 + 2 * merchants
    for i in range(consumers):
        accts.append([wallet0 + i, f"cus_{i}", "wallet", 1])
    debits = [0] * (len(accts) + 1)
    credits = [0] * (len(accts) + 1)
    seqs = [0] * (len(accts) + 1)
    entries: list[tuple[Any, ...]] = []
    postings: list[tuple[Any, ...]] = []
    posting_count = 0

    def post(entry_id: int, leg: int, debit: int, credit: int, amount: int, at: int) -> None:
        for side, acc, signed in ((0, debit, -amount), (1, credit, amount)):
            seqs[acc] += 1
            if signed < 0:
                debits[acc] -= signed
            else:
                credits[acc] += signed
            postings.append((entry_id, leg, side, acc, seqs[acc], signed,
                             credits[acc] - debits[acc], at))

    def flush() -> None:
        nonlocal posting_count
        load.rows("ledger_entries", ENTRY_COLS, entries)
        load.rows("ledger_postings", POSTING_COLS, postings)
        posting_count += len(postings)
        entries.clear()
        postings.clear()

    eid = 0
    fp = b"\x00" * 16
    funding = 10**12 // max(consumers, 1)
    for i in range(consumers):
        eid += 1
        entries.append((eid, f"topup:bench{i:08d}", 0, "topup", fp, created))
        post(eid, 0, 2, wallet0 + i, funding, created)
    day_us = to_us(start)
    step = max(1, 86_400_000_000 // max(n, 1))
    for k in range(n):
        eid += 1
        at = day_us + k * step
        amount = 1000 + (k * 7919) % 90_000
        fee = amount * 50 // 10_000
        pending = 3 + 2 * (k % merchants)
        entries.append((eid, f"pay:bench{k:09d}", 0, "payment", fp, at))
        post(eid, 0, wallet0 + (k * 31) % consumers, pending, amount, at)
        post(eid, 1, pending, 1, fee, at)
        if len(entries) >= INSERT_CHUNK:
            flush()
    flush()
    load.rows("ledger_accounts", ["id", "owner_id", "purpose", "currency", "flags", "status",
                                  "debits_posted", "credits_posted", "debits_pending",
                                  "credits_pending", "posting_count", "created_at"],
              [(a[0], a[1], a[2], "CNY", a[3], "open", debits[a[0]], credits[a[0]], 0, 0,
                seqs[a[0]], created) for a in accts])
    load.finish()
    if engine.dialect.name == "postgresql":
        with engine.begin() as c:
            c.execute(text("SELECT setval('ledger_account_id_seq', :a)"), {"a": len(accts)})
            c.execute(text("SELECT setval('ledger_entry_id_seq', :e)"), {"e": eid})
            c.execute(text("ANALYZE"))
    return {"entries": eid, "postings": posting_count, "load_s": time.perf_counter() - t0}


def _cpu_s(who: int = resource.RUSAGE_SELF) -> float:
    """CPU time of this process, or of its children that have ended (the seal's second
    process)."""
    used = resource.getrusage(who)
    return used.ru_utime + used.ru_stime


def _database(arg: str, tmp: Path) -> Engine:
    if arg == "sqlite":
        return make_engine(f"sqlite:///{tmp / 'bench.sqlite3'}")
    from sqlalchemy import create_engine

    name = f"lianjie_bench_clearing_{os.getpid()}"
    admin = create_engine(normalise_url(arg), isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return make_engine(f"{arg.rsplit('/', 1)[0]}/{name}")


def _drop(admin_url: str, name: str) -> None:
    from sqlalchemy import create_engine

    admin = create_engine(normalise_url(admin_url), isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
    admin.dispose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=200_000, help="payments in the day")
    parser.add_argument("--merchants", type=int, default=2_000)
    parser.add_argument("--consumers", type=int, default=20_000)
    parser.add_argument("--database", default="sqlite")
    args = parser.parse_args(argv)
    cfg = ClearingConfig(payout_institution_id="ins_bench")
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        os.environ["LIANJIE_HOME"] = str(tmp)
        engine = _database(args.database, tmp)
        migrate(engine)
        data = generate(engine, args.n, args.merchants, args.consumers, cfg)
        clock = ManualClock(datetime.combine(DAY + timedelta(days=1), datetime.min.time(),
                                             tzinfo=UTC))
        t0, cpu0, child0 = time.perf_counter(), _cpu_s(), _cpu_s(resource.RUSAGE_CHILDREN)
        report = run_end_of_day(engine, DAY, clock=clock, cfg=cfg, signer=load_signer())
        eod_s = time.perf_counter() - t0
        child_cpu_s = _cpu_s(resource.RUSAGE_CHILDREN) - child0
        eod_cpu_s = _cpu_s() - cpu0 + child_cpu_s
        t0 = time.perf_counter()
        with engine.connect() as c:
            for owner, fmt in (("ins_bench", "camt053"), ("mch_0", "camt053"),
                               ("mch_0", "mt940"), ("mch_0", "csv"), ("mch_0", "proofs")):
                statements.render(c, cfg, owner, DAY, fmt, clock.now())
        statements_s = time.perf_counter() - t0
        with engine.connect() as c:
            t0 = time.perf_counter()
            proof = log.inclusion_proof(c, data["entries"] // 2)
            proof_gen_ms = (time.perf_counter() - t0) * 1000
        assert proof is not None
        leaf = merkle.leaf_hash(proof["entry"].encode())
        path = [bytes.fromhex(p) for p in proof["audit_path"]]
        body = json.loads(proof["head"]["body"])
        root = bytes.fromhex(body["root_hash"])
        times = []
        for _ in range(PROOF_RUNS):
            t = time.perf_counter()
            assert merkle.verify_inclusion(leaf, proof["leaf_index"], proof["tree_size"], path,
                                           root)
            times.append((time.perf_counter() - t) * 1e6)
        times.sort()
        from lianjie.clearing import verify as v
        key = v.load_public_key(load_signer().public_pem)
        t = time.perf_counter()
        for _ in range(200):
            v.check_inclusion(proof, v.check_head(proof["head"], key))
        full_us = (time.perf_counter() - t) / 200 * 1e6
        engine.dispose()
    n = args.n
    per_tx_us = eod_s / max(n, 1) * 1e6
    out = {
        "benchmark": "clearing_eod", "database": engine.dialect.name, "n_payments": n,
        "entries": data["entries"], "postings": data["postings"],
        "load_s": round(data["load_s"], 2), "eod_s": round(eod_s, 2),
        # this process's CPU and its children's (the seal's second process): on a shared
        # machine a steadier figure than wall time (SQLite runs in the process; a PostgreSQL
        # server's CPU is not in it)
        "eod_cpu_s": round(eod_cpu_s, 2),
        "eod_cpu_s_second_process": round(child_cpu_s, 2),
        "eod_steps_s": {k: round(x, 2) for k, x in report.seconds.items()},
        "statements_s": round(statements_s, 2),
        "eod_payments_per_s": round(n / eod_s),
        "extrapolated_eod_10m_s": round(per_tx_us * 10_000_000 / 1e6, 1),
        "settled": report.steps["settle"]["settled"],
        "proof_generate_ms": round(proof_gen_ms, 2),
        "proof_verify_us_p50": round(statistics.median(times), 1),
        "proof_verify_us_p99": round(times[int(len(times) * 0.99)], 1),
        "receipt_check_with_signature_us": round(full_us, 1),
        "load_average_1m": round(os.getloadavg()[0], 2),
    }
    print(f"EOD for {n:,} payments ({data['entries']:,} entries, {data['postings']:,} "
          f"postings) on {out['database']}: {eod_s:.2f} s  steps {out['eod_steps_s']}")
    print(f"  statements (5 renders): {statements_s:.2f} s; proof generation "
          f"{proof_gen_ms:.2f} ms; verification p50 {out['proof_verify_us_p50']} µs, p99 "
          f"{out['proof_verify_us_p99']} µs; with signature check {full_us:.0f} µs")
    print(f"  linear extrapolation to 10,000,000 payments: {out['extrapolated_eod_10m_s']} s")
    print(json.dumps(out), flush=True)
    if engine.dialect.name == "postgresql":  # after the figures: a failed drop loses nothing
        _drop(args.database, engine.url.database or "")
    _ = metadata
    return 0


if __name__ == "__main__":
    sys.exit(main())
