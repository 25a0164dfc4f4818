"""``lianjie credit ...``: end of day, features, training, reports and the portfolio simulator.

    lianjie credit eod --date 2026-03-01       run the credit end of day (idempotent)
    lianjie credit features --out f.csv        features of every merchant (batch path; from the
                                               daily aggregates, --rebuild to rebuild them first)
    lianjie credit train --csv data.csv --target default [--register]
    lianjie credit report [--version N] --out report.html
    lianjie credit simulate --merchants 200 --days 240 --out loans.csv [--http]
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import Engine, select


def _day_begun(text: str) -> date:
    """A date, YYYY-MM-DD, no later than today (UTC)."""
    try:
        day = date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from None
    if day > datetime.now(UTC).date():
        raise argparse.ArgumentTypeError(f"{text} is after today (UTC)")
    return day


def _engine(args: argparse.Namespace) -> Engine:
    from lianjie.db import default_database_url, make_engine, migrate

    engine = make_engine(args.database or default_database_url())
    migrate(engine)
    return engine


def cmd_eod(args: argparse.Namespace) -> int:
    from lianjie.credit import require_day_over, run_end_of_day

    day, now = date.fromisoformat(args.date), datetime.now(UTC)
    require_day_over(day, now)
    done = run_end_of_day(_engine(args), day, now=now)
    print(orjson.dumps({"business_date": args.date, "steps": done}).decode())
    return 0


def cmd_features(args: argparse.Namespace) -> int:
    from lianjie.clock import to_us
    from lianjie.committer import run_now
    from lianjie.credit import compute_features, refresh_daily
    from lianjie.credit.features import BUCKET_DAYS, BUCKETS, DAY_US

    engine = _engine(args)
    now = datetime.now(UTC) if args.as_of is None else \
        datetime(args.as_of.year, args.as_of.month, args.as_of.day, tzinfo=UTC)
    if args.rebuild:  # the year's aggregates from the orders, e.g. after a bulk import
        today = to_us(now) // DAY_US
        run_now(engine, lambda c: refresh_daily(c, today - BUCKETS * BUCKET_DAYS - 1, today))
    with engine.connect() as conn:
        frame = compute_features(conn, now)
    frame.write_csv(args.out)
    print(f"{frame.height} merchants -> {args.out}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    import pandas as pd

    from lianjie.committer import run_now
    from lianjie.credit import train

    frame = pd.read_csv(args.csv)
    features = args.features.split(",") if args.features else None
    try:
        trained = train.train(frame, args.target, features, args.folds)
    except ValueError as exc:
        print(f"lianjie credit train: {exc}", file=sys.stderr)
        return 2
    print(train.summary(trained))
    if args.register:
        version = run_now(_engine(args), lambda c: train.register(
            c, datetime.now(UTC), trained, args.name, activate=not args.inactive))
        print(f"registered scorecard version {version} (challenger {version + 1})")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    import numpy as np

    from lianjie.credit import report
    from lianjie.credit.schema import applications, models

    with _engine(args).connect() as conn:
        q = select(models).where(models.c.kind == "scorecard")
        q = q.where(models.c.version == args.version) if args.version else \
            q.order_by(models.c.version.desc())
        row = conn.execute(q.limit(1)).first()
        if row is None:
            print("lianjie credit report: no scorecard registered; run train --register",
                  file=sys.stderr)
            return 2
        label = f"{row.name}-v{row.version}"
        scores = conn.execute(select(applications.c.score).where(
            applications.c.model_version == label)).scalars().all()
    portfolio: dict[str, Any] | None = None
    if args.portfolio:
        portfolio = orjson.loads(Path(args.portfolio).read_bytes())
    page = report.render(label, orjson.loads(row.metrics),
                         np.array(scores, dtype=float) if scores else None, portfolio)
    Path(args.out).write_text(page)
    print(f"report for {label} -> {args.out}")
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    import pandas as pd

    from lianjie.credit import portfolio

    engine = _engine(args)
    if args.http:  # the same world, every credit step through the API of an in-process server
        from lianjie.sim.credit import simulate_http

        result: portfolio.SimResult = simulate_http(engine, merchants=args.merchants,
                                                    days=args.days, seed=args.seed)
    else:
        result = portfolio.simulate(engine, merchants=args.merchants, days=args.days,
                                    seed=args.seed)
    pd.DataFrame(result.rows).to_csv(args.out, index=False)
    with engine.connect() as conn:
        summary = portfolio.report(conn, result.loans, result.funders)
    Path(args.out).with_suffix(".portfolio.json").write_bytes(
        orjson.dumps(summary, option=orjson.OPT_INDENT_2))
    print(orjson.dumps(summary, option=orjson.OPT_INDENT_2).decode())
    print(f"{len(result.rows)} loans with outcomes -> {args.out}")
    violations = getattr(result, "violations", [])
    for v in violations:  # over HTTP: what GET /v1/ledger/verify reported
        print(f"ledger violation: {v}", file=sys.stderr)
    return 1 if violations else 0


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    credit = sub.add_parser("credit", help="merchant credit: eod, features, train, report, "
                            "simulate")
    cs = credit.add_subparsers(dest="credit_command", required=True)
    p = cs.add_parser("eod", help="run the credit end of day for a business date")
    p.add_argument("--date", default=datetime.now(UTC).date().isoformat())
    p.set_defaults(fn=cmd_eod)
    p = cs.add_parser("features", help="compute every merchant's features to a CSV")
    p.add_argument("--out", default="features.csv")
    p.add_argument("--rebuild", action="store_true",
                   help="rebuild the daily aggregates for the year from the orders first")
    p.add_argument("--as-of", default=None, type=_day_begun,
                   help="the features as at the start of this UTC date, YYYY-MM-DD, today or "
                        "earlier (default: now; they cover whole days before it)")
    p.set_defaults(fn=cmd_features)
    p = cs.add_parser("train", help="train a WoE scorecard and a LightGBM challenger")
    p.add_argument("--csv", required=True, help="labelled CSV: a target and feature columns")
    p.add_argument("--target", default="default")
    p.add_argument("--features", default=None, help="comma-separated (default: all numeric)")
    p.add_argument("--folds", type=int, default=5, help="cross-validation folds")
    p.add_argument("--register", action="store_true", help="store in the model registry")
    p.add_argument("--inactive", action="store_true", help="register without activating")
    p.add_argument("--name", default="merchant310")
    p.set_defaults(fn=cmd_train)
    p = cs.add_parser("report", help="write the model report as one HTML page")
    p.add_argument("--version", type=int, default=None)
    p.add_argument("--portfolio", default=None, help="a portfolio JSON from simulate")
    p.add_argument("--out", default="credit-report.html")
    p.set_defaults(fn=cmd_report)
    p = cs.add_parser("simulate", help="simulate a loan portfolio with ground truth")
    p.add_argument("--merchants", type=int, default=200)
    p.add_argument("--days", type=int, default=240)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", default="credit-loans.csv")
    p.add_argument("--http", action="store_true",
                   help="apply, draw down, repay and close days over HTTP (in-process server)")
    p.set_defaults(fn=cmd_simulate)
