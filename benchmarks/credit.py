"""Credit benchmarks on a SQLite file (or PostgreSQL with --database postgresql):

1. ``decision``: the 310 decision (``do_apply``: features from a year of history, score, limit,
   the application row) for merchants with a year of payments, each in its own transaction
   rolled back afterwards so every call decides afresh. Server time, in process: p50/p99.
2. ``accrual``: the end-of-day ``accrue`` step (one day of Actual/365 interest, set-based, and
   the funders' ledger entry) and the ``delinquency`` step (DPD for every loan) over
   ``--loans`` active loans (1,000,000 by default), each with three funders.
3. ``features``: the batch feature computation for ``--merchants`` merchants over ``--days``
   days of per merchant and day aggregates (``credit_merchant_days``, ``credit_payer_days``),
   generated in the database with one INSERT ... SELECT each.

Data is generated with bulk inserts (not timed). The headline figures are the last line, JSON.

    .venv/bin/python benchmarks/credit.py
    .venv/bin/python benchmarks/credit.py --loans 100000 --merchants 10000   # quicker
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from datetime import time as day_time
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Engine, create_engine, text

import lianjie.schema  # noqa: F401 - every table on the metadata
from lianjie import credit
from lianjie import payments as pay
from lianjie.clock import to_us
from lianjie.committer import run_now
from lianjie.credit import eod, schedule, synthetic
from lianjie.db import make_engine, migrate, normalise_url
from lianjie.payments import PaymentsConfig

NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)
CFG = PaymentsConfig()
INSERT_CHUNK = 50_000
DECISIONS = 300
PG_URL = os.environ.get("LIANJIE_BENCH_POSTGRES_URL",
                        "postgresql://lianjie@127.0.0.1:54329/lianjie")


def fresh_engine(kind: str, tag: str, tmp: str) -> Engine:
    if kind == "sqlite":
        engine = make_engine(f"sqlite:///{tmp}/{tag}.sqlite3")
    else:
        admin = create_engine(normalise_url(PG_URL), isolation_level="AUTOCOMMIT")
        name = f"lianjie_bench_credit_{tag}"
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        admin.dispose()
        engine = make_engine(PG_URL.rsplit("/", 1)[0] + "/" + name)
    migrate(engine)
    return engine


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def bench_decision(engine: Engine, merchants: int) -> dict[str, Any]:
    rng = random.Random(3)

    def setup(conn: Any) -> tuple[str, list[str], int]:
        pay.ensure_platform(conn, NOW, CFG)
        bank = pay.do_create_institution(conn, NOW, CFG, "Bank").id
        prod = credit.do_create_product(conn, NOW, name="310",
                                        funders=[(pay.PLATFORM_ID, 2000), (bank, 8000)]).id
        ids, rows = [], 0
        for i in range(merchants):
            m = pay.do_onboard_merchant(conn, NOW - timedelta(days=500), CFG, f"S{i}",
                                        sp_id=None, business_type="street_food")
            pay.do_decide_kyc(conn, NOW, m.id, True)
            profile = synthetic.Profile(level=300_000, trend=0.02, volatility=0.3,
                                        activity=0.9, loyalty=0.4, refund_rate=0.01)
            rows += synthetic.generate(conn, m.id, profile, NOW, 365, rng)
            ids.append(m.id)
        return prod, ids, rows

    prod, ids, rows = run_now(engine, setup)
    times = []
    for i in range(DECISIONS):
        with engine.connect() as conn:
            conn.execution_options(sqlite_begin="IMMEDIATE")
            with conn.begin() as tx:
                t = time.perf_counter()
                credit.do_apply(conn, NOW, ids[i % len(ids)], prod, 100_000)
                times.append((time.perf_counter() - t) * 1000)
                tx.rollback()
    return {"decision_payments_per_merchant": rows // merchants,
            "decision_p50_ms": round(statistics.median(times), 2),
            "decision_p99_ms": round(pct(times, 0.99), 2), "decisions": len(times)}


def bench_accrual(engine: Engine, loans: int) -> dict[str, Any]:
    day = schedule.day_of(NOW.date())

    def setup(conn: Any) -> list[str]:
        pay.ensure_platform(conn, NOW, CFG)
        banks = [pay.do_create_institution(conn, NOW, CFG, f"B{i}").id for i in range(2)]
        prod = credit.do_create_product(conn, NOW, name="310", funders=[
            (pay.PLATFORM_ID, 2000), (banks[0], 5000), (banks[1], 3000)]).id
        return [prod, *banks]

    prod, *banks = run_now(engine, setup)
    funders = [(pay.PLATFORM_ID, 2000), (banks[0], 5000), (banks[1], 3000)]
    rng = random.Random(5)
    t0 = time.perf_counter()
    for start in range(0, loans, INSERT_CHUNK):
        n = min(INSERT_CHUNK, loans - start)
        loan_rows, funder_rows, inst_rows = [], [], []
        for i in range(start, start + n):
            lid = f"loan_b{i:010d}"
            p = rng.randint(10_000, 5_000_000)
            unpaid = day - rng.randint(-30, 40)
            loan_rows.append((lid, f"app_b{i:010d}", f"mch_b{i % 100_000}", prod, "CNY",
                              "active", p, 1800, 2700, 600, day - 60, day + 120, p, 0, 0, 0,
                              0, 0, 0, 0, day - 1, unpaid, 0, None, 0, 0, 0, to_us(NOW)))
            for f, share in funders:
                funder_rows.append((lid, f, share, p * share // 10_000, p * share // 10_000))
            inst_rows.append((lid, 1, unpaid, p, 0, p))
        run_now(engine, lambda c, a=loan_rows, b=funder_rows, d=inst_rows: _insert(c, a, b, d))
    setup_s = time.perf_counter() - t0
    t = time.perf_counter()
    bounds = eod._Day("UTC", day_time(0), None)
    n_acc = run_now(engine, lambda c: eod._step(c, now=NOW, day=day, step="accrue",
                                                zone=ZoneInfo("UTC"), bounds=bounds))
    accrue_s = time.perf_counter() - t
    t = time.perf_counter()
    n_del = run_now(engine, lambda c: eod._step(c, now=NOW, day=day, step="delinquency",
                                                zone=ZoneInfo("UTC"), bounds=bounds))
    delinquency_s = time.perf_counter() - t
    return {"accrual_loans": n_acc, "accrual_s": round(accrue_s, 2),
            "accrual_loans_per_s": round(n_acc / accrue_s),
            "delinquency_loans_in_arrears": n_del, "delinquency_s": round(delinquency_s, 2),
            "accrual_setup_s": round(setup_s, 1)}


def _insert(conn: Any, loan_rows: list[tuple[Any, ...]], funder_rows: list[tuple[Any, ...]],
            inst_rows: list[tuple[Any, ...]]) -> None:
    marks = lambda k: ", ".join(["%s" if conn.dialect.name == "postgresql" else "?"] * k)  # noqa: E731
    conn.exec_driver_sql(
        "INSERT INTO credit_loans (id, application_id, merchant_id, product_id, currency, "
        "status, principal, rate_bps, penalty_rate_bps, score, disbursed_day, maturity_day, "
        "principal_outstanding, interest_unpaid, penalty_unpaid, fee_unpaid, scheduled_paid, "
        "interest_paid, penalty_paid, fee_paid, accrued_through_day, unpaid_since_day, dpd, "
        f"written_off_day, written_off_amount, recovered_amount, entry_id, created_at) "
        f"VALUES ({marks(28)})", loan_rows)
    conn.exec_driver_sql("INSERT INTO credit_loan_funders (loan_id, funder_id, share_bps, "
                         f"principal, principal_outstanding) VALUES ({marks(5)})", funder_rows)
    conn.exec_driver_sql("INSERT INTO credit_instalments VALUES (" + marks(6) + ")", inst_rows)


def bench_features(engine: Engine, merchants: int, days: int, payers: int) -> dict[str, Any]:
    """Batch features over ``days`` days of per merchant and day aggregates for every merchant,
    generated in the database (a deterministic mix: about 9 active days in 10, 1 to 80 payments
    a day, a refund on 1 day in 20) with one payer row per active day out of ``payers``
    regulars per merchant."""
    rng = random.Random(9)
    first_day = to_us(NOW) // eod.DAY_US - days
    t0 = time.perf_counter()
    party_rows = [(f"mch_f{i:08d}", "merchant", "S", "active", "approved", None, "other", 38,
                   None, None, None, (first_day - rng.randint(0, 900)) * eod.DAY_US)
                  for i in range(merchants)]

    def setup(c: Any) -> None:
        mark = "%s" if c.dialect.name == "postgresql" else "?"
        c.exec_driver_sql(
            "INSERT INTO parties (id, kind, name, status, kyc_status, parent_id, business_type, "
            "fee_rate_bps, commission_share_bps, webhook_url, webhook_secret, created_at) "
            "VALUES (" + ", ".join([mark] * 12) + ")", party_rows)
        c.exec_driver_sql("CREATE TABLE bench_m (i BIGINT, id VARCHAR(32))")
        c.exec_driver_sql("CREATE TABLE bench_d (n BIGINT)")
        c.exec_driver_sql(f"INSERT INTO bench_m VALUES ({mark}, {mark})",
                          [(i, r[0]) for i, r in enumerate(party_rows)])
        c.exec_driver_sql(f"INSERT INTO bench_d VALUES ({mark})", [(n,) for n in range(days)])
        grid = ("FROM bench_m m CROSS JOIN bench_d d WHERE (m.i * 31 + d.n * 17) % 10 < 9 "
                "ORDER BY m.id, d.n")
        c.exec_driver_sql(
            "INSERT INTO credit_merchant_days (merchant_id, day, payments, takings, refunded, "
            f"first_paid) SELECT m.id, {first_day} + d.n, 1 + (m.i * 7919 + d.n * 104729) % 80,"
            " (1 + (m.i * 7919 + d.n * 104729) % 80) * (3000 + (m.i * 13 + d.n * 7) % 5000), "
            "CASE WHEN (m.i + d.n) % 20 = 0 THEN 3000 ELSE 0 END, "
            f"({first_day} + d.n) * {eod.DAY_US} + ((m.i * d.n) % 36000) * 1000000 " + grid)
        c.exec_driver_sql(
            "INSERT INTO credit_payer_days (merchant_id, payer_id, day, payments) "
            f"SELECT m.id, 'cus_' || CAST((m.i * 3 + d.n * 7) % {payers} AS VARCHAR(8)), "
            f"{first_day} + d.n, 1 + (m.i + d.n) % 3 " + grid)
        c.exec_driver_sql("DROP TABLE bench_m")
        c.exec_driver_sql("DROP TABLE bench_d")

    run_now(engine, setup)
    with engine.connect() as conn:
        rows = int(conn.exec_driver_sql("SELECT COUNT(*) FROM credit_merchant_days").scalar()
                   or 0)
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql("ANALYZE")
    setup_s = time.perf_counter() - t0
    t = time.perf_counter()
    with engine.connect() as conn:
        frame = credit.compute_features(conn, NOW)
    features_s = time.perf_counter() - t
    assert frame.height == merchants
    return {"features_merchants": merchants, "features_merchant_days": rows,
            "features_s": round(features_s, 2),
            "features_merchants_per_s": round(merchants / features_s),
            "features_setup_s": round(setup_s, 1)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    ap.add_argument("--loans", type=int, default=1_000_000)
    ap.add_argument("--merchants", type=int, default=100_000)
    ap.add_argument("--days", type=int, default=365, help="of aggregates per merchant")
    ap.add_argument("--payers", type=int, default=60, help="regular payers per merchant")
    ap.add_argument("--decision-merchants", type=int, default=20)
    ap.add_argument("--only", choices=("decision", "accrual", "features"), default=None)
    args = ap.parse_args()
    out: dict[str, Any] = {"database": args.database}
    with tempfile.TemporaryDirectory() as tmp:
        for name, fn in (("decision", lambda e: bench_decision(e, args.decision_merchants)),
                         ("accrual", lambda e: bench_accrual(e, args.loans)),
                         ("features", lambda e: bench_features(e, args.merchants,
                                                               args.days, args.payers))):
            if args.only not in (None, name):
                continue
            engine = fresh_engine(args.database, name, tmp)
            result = fn(engine)
            engine.dispose()
            print(name, result, flush=True)
            out.update(result)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
