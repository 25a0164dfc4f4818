"""``lianjie marketing ...``: the batch jobs an operator runs by hand or from cron.

    lianjie marketing expire-red-packets   return unclaimed red packet money to senders
    lianjie marketing refresh-segments     re-evaluate segments (all, or those due daily)
    lianjie marketing report CAMPAIGN_ID   print a campaign's report as JSON
    lianjie marketing simulate             run the marketing scenario (red packets, a coupon
                                           campaign with a holdout) and print its report

The server runs the first two in its background jobs as well; these are for operators and
for deployments that run jobs from a scheduler.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import contextmanager

import orjson
from sqlalchemy import Connection, Engine, select

from lianjie.clock import SystemClock
from lianjie.committer import run_now
from lianjie.db import default_database_url, make_engine, migrate
from lianjie.marketing import redpackets, report, segments
from lianjie.marketing.schema import segments as segments_table

ROUNDS_MAX = 1000  # batches per run, so one run is bounded


@contextmanager
def _engine(args: argparse.Namespace) -> Iterator[Engine]:
    engine = make_engine(args.database or default_database_url())
    try:
        migrate(engine)
        yield engine
    finally:
        engine.dispose()


def cmd_expire(args: argparse.Namespace) -> int:
    clock = SystemClock()
    total = 0
    with _engine(args) as engine:
        for _ in range(ROUNDS_MAX):
            done = run_now(engine, lambda c: redpackets.do_expire_packets(c, clock.now()))
            total += done
            if done < redpackets.EXPIRE_BATCH_MAX:
                break
    print(f"expired {total} red packet(s)")
    return 0


def cmd_refresh(args: argparse.Namespace) -> int:
    clock = SystemClock()

    def everything(conn: Connection) -> int:
        ids = conn.execute(select(segments_table.c.id)).scalars().all()
        for segment_id in ids:
            segments.do_refresh_segment(conn, clock.now(), segment_id)
        return len(ids)

    with _engine(args) as engine:
        if args.all:
            count = run_now(engine, everything)
        else:
            count = run_now(engine, lambda c: segments.do_refresh_due(c, clock.now()))
    print(f"refreshed {count} segment(s)")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    with _engine(args) as engine, engine.connect() as conn:
        found = report.campaign_report(conn, args.campaign_id)
    print(orjson.dumps(found, option=orjson.OPT_INDENT_2).decode())
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    from lianjie.cli import bootstrap
    from lianjie.sim.marketing import MarketingSimConfig, run_marketing_simulation

    with _engine(args) as engine:
        bootstrap(engine)
        result = run_marketing_simulation(engine, MarketingSimConfig(
            seed=args.seed, consumers=args.consumers))
    print(orjson.dumps(result.campaign, option=orjson.OPT_INDENT_2).decode())
    print(result.summary())
    return 0 if result.ok else 1


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    m = sub.add_parser("marketing", help="marketing batch jobs and reports")
    msub = m.add_subparsers(dest="marketing_command", required=True)
    msub.add_parser("expire-red-packets", help="return unclaimed red packet money"
                    ).set_defaults(fn=cmd_expire)
    r = msub.add_parser("refresh-segments", help="re-evaluate segments due (or --all)")
    r.add_argument("--all", action="store_true")
    r.set_defaults(fn=cmd_refresh)
    rep = msub.add_parser("report", help="a campaign's report as JSON")
    rep.add_argument("campaign_id")
    rep.set_defaults(fn=cmd_report)
    sim = msub.add_parser("simulate", help="run the marketing scenario")
    sim.add_argument("--seed", type=int, default=7)
    sim.add_argument("--consumers", type=int, default=200)
    sim.set_defaults(fn=cmd_simulate)
