"""The ``lianjie`` command.

    lianjie init        create or upgrade the database; print the operator API key
    lianjie serve       run the HTTP API (and background jobs) under uvicorn, in one process
                        or in --workers N processes
    lianjie verify      check every ledger invariant against the database; exit 1 on violation
    lianjie simulate    run the agent-based simulator against the database or a running server
    lianjie demo        init, simulate a day if the database is empty, then serve

The database is ``LIANJIE_DATABASE_URL`` or ``--database``; the default is a SQLite file under
``LIANJIE_HOME`` (``./var``), created on first run. The operator key is written to
``$LIANJIE_HOME/operator_key`` (readable by its owner only) the first time.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
import threading
import time
from datetime import date
from pathlib import Path
from typing import Literal

from sqlalchemy import Connection, Engine, select

from lianjie import ledger
from lianjie.clearing import cli as clearing_cli
from lianjie.committer import run_now
from lianjie.credit import cli as credit_cli
from lianjie.db import default_database_url, make_engine, migrate
from lianjie.errors import ConfigError, LianjieError
from lianjie.risk import cli as risk_cli

log = logging.getLogger("lianjie")
BANNER_WAIT_S = 60.0
_START_HELP = ("first simulated day, YYYY-MM-DD in Asia/Shanghai (default on an empty "
               "database: yesterday by the system clock)")


def _home() -> Path:
    return Path(os.environ.get("LIANJIE_HOME", "var"))


def _engine(args: argparse.Namespace) -> Engine:
    return make_engine(args.database or default_database_url())


def bootstrap(engine: Engine) -> str:
    """Migrate, make sure the platform party exists, and return the operator API key."""
    from lianjie.api.keys import Role, do_issue_key
    from lianjie.api.schema import api_keys
    from lianjie.clock import SystemClock
    from lianjie.payments import PLATFORM_ID, PaymentsConfig, ensure_platform

    migrate(engine)
    clock = SystemClock()
    key_file = _home() / "operator_key"

    def unit(conn: Connection) -> str | None:
        ensure_platform(conn, clock.now(), PaymentsConfig())
        has_key = conn.execute(select(api_keys.c.id).where(
            api_keys.c.party_id == PLATFORM_ID, api_keys.c.revoked_at.is_(None))).first()
        if has_key is not None and key_file.exists():
            return None
        _key_id, secret = do_issue_key(conn, clock.now(), PLATFORM_ID, Role.OPERATOR,
                                       "bootstrap")
        return secret

    secret = run_now(engine, unit)
    if secret is not None:
        key_file.parent.mkdir(parents=True, exist_ok=True)
        key_file.write_text(secret + "\n")
        key_file.chmod(0o600)
    return key_file.read_text().strip()


def cmd_init(args: argparse.Namespace) -> int:
    key = bootstrap(_engine(args))
    print(f"database ready: {args.database or default_database_url()}")
    print(f"operator API key: {key}  (also in {_home() / 'operator_key'})")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from lianjie.api import create_app, make_runtime
    from lianjie.payments import PaymentsConfig

    engine = _engine(args)
    key = bootstrap(engine)
    base_url = f"http://{args.host}:{args.port}"
    if args.workers != 1:
        return _serve_workers(args, engine, base_url, key)
    app = create_app(make_runtime(engine, cfg=PaymentsConfig(base_url=base_url)),
                     keep_heap=True)
    server = uvicorn.Server(uvicorn.Config(app, host=args.host, port=args.port,
                                           log_level=args.log_level,
                                           access_log=args.access_log))
    threading.Thread(target=_banner_when_listening, args=(server, base_url, key),
                     daemon=True).start()
    server.run()
    return 0


def _serve_workers(args: argparse.Namespace, engine: Engine, base_url: str, key: str) -> int:
    from lianjie.api.workers import WORKERS_MAX, serve_workers

    if not 1 <= args.workers <= WORKERS_MAX:
        raise ConfigError(f"--workers must be from 1 to {WORKERS_MAX}")
    engine.dispose()  # each worker opens its own pool
    threading.Thread(target=_banner_when_connectable, args=(args.host, args.port, base_url, key),
                     daemon=True).start()
    return serve_workers(args.workers, database_url=args.database or default_database_url(),
                         base_url=base_url, home=_home(), host=args.host, port=args.port,
                         log_level=args.log_level, access_log=args.access_log)


def _banner_when_connectable(host: str, port: int, base_url: str, key: str) -> None:
    deadline = time.monotonic() + BANNER_WAIT_S
    while time.monotonic() < deadline:
        try:
            socket.create_connection((host, port), timeout=1.0).close()
        except OSError:
            time.sleep(0.05)
            continue
        _banner(base_url, key)
        return


def _banner_when_listening(server: object, base_url: str, key: str) -> None:
    """Print where to look once the server accepts connections, not before."""
    deadline = time.monotonic() + BANNER_WAIT_S
    while not getattr(server, "started", False):
        if time.monotonic() > deadline:
            return
        time.sleep(0.05)
    _banner(base_url, key)


def _banner(base_url: str, key: str) -> None:
    console_password = _home() / "console_password"
    login = f"user admin, password {console_password.read_text().strip()} (in " \
            f"{console_password})" if console_password.exists() else \
            "add a user: lianjie console add-user NAME --role admin"
    print(f"""
Lianjie is serving at {base_url}
  Operator console:    {base_url}/console  ({login})
  API docs (try it):   {base_url}/docs
  OpenAPI document:    {base_url}/openapi.json
  Operator API key:    {key}
  Example:             curl -H 'Authorization: Bearer {key}' {base_url}/v1/merchants
  Check the ledger:    lianjie verify
Press Ctrl-C to stop.
""", flush=True)


def cmd_verify(args: argparse.Namespace) -> int:
    engine = _engine(args)
    migrate(engine)
    with engine.connect() as conn:
        problems = ledger.verify(conn)
        accounts = conn.execute(select(ledger.schema.accounts.c.id)).all()
    if problems:
        for v in problems:
            print(f"VIOLATION {v.code} {v.subject}: {v.detail}")
        print(f"{len(problems)} violation(s) in {len(accounts)} accounts")
        return 1
    print(f"ledger verified: {len(accounts)} accounts, every invariant holds")
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    from lianjie.sim import SimConfig, run_simulation

    engine = _engine(args)
    bootstrap(engine)
    # a server URL implies driving it over HTTP
    mode: Literal["inprocess", "http"] = "http" if args.url else args.mode
    cfg = SimConfig(seed=args.seed, service_providers=args.service_providers,
                    merchants=args.merchants, consumers=args.consumers, days=args.days,
                    mode=mode, url=args.url,
                    start_date=args.start or (None if _has_orders(engine) else _yesterday()))
    report = run_simulation(engine, cfg, progress=not args.quiet)
    print(report.summary())
    return 0 if report.ok else 1


def _has_orders(engine: Engine) -> bool:
    from lianjie.payments.schema import orders

    with engine.connect() as conn:
        return conn.execute(select(orders.c.id).limit(1)).first() is not None


def _yesterday() -> date:
    """A simulation on an empty database ends its day shortly before now (see ``yesterday``)."""
    from lianjie.clock import SystemClock
    from lianjie.sim.config import yesterday

    return yesterday(SystemClock().now())


def cmd_demo(args: argparse.Namespace) -> int:
    from lianjie.sim import SimConfig, run_simulation

    engine = _engine(args)
    bootstrap(engine)
    if not _has_orders(engine):
        print("Loading a simulated day of QR payments (once; kept in the database) ...")
        cfg = SimConfig(seed=args.seed, start_date=args.start or _yesterday())
        report = run_simulation(engine, cfg, progress=True)
        print(report.summary())
    from lianjie.console.cli import ensure_demo_admin

    ensure_demo_admin(engine, _home())
    return cmd_serve(args)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lianjie", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database", help="database URL (default: LIANJIE_DATABASE_URL or "
                        "a SQLite file under ./var)")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("init", help="create or upgrade the database").set_defaults(fn=cmd_init)
    for name, fn in (("serve", cmd_serve), ("demo", cmd_demo)):
        p = sub.add_parser(name, help=f"{name} the HTTP API")
        p.add_argument("--host", default="127.0.0.1")
        p.add_argument("--port", type=int, default=8000)
        p.add_argument("--log-level", default="warning")
        p.add_argument("--access-log", action="store_true")
        p.add_argument("--workers", type=int, default=1,
                       help="server processes, each with its own committer (default 1)")
        p.add_argument("--seed", type=int, default=7)
        if name == "demo":
            p.add_argument("--start", type=date.fromisoformat, default=None, help=_START_HELP)
        p.set_defaults(fn=fn)
    sub.add_parser("verify", help="check the ledger's invariants").set_defaults(fn=cmd_verify)
    s = sub.add_parser("simulate", help="run the traffic simulator")
    s.add_argument("--seed", type=int, default=7)
    s.add_argument("--service-providers", type=int, default=3)
    s.add_argument("--merchants", type=int, default=60)
    s.add_argument("--consumers", type=int, default=600)
    s.add_argument("--days", type=int, default=1)
    s.add_argument("--mode", choices=("inprocess", "http"), default="inprocess")
    s.add_argument("--url", default=None, help="server URL for --mode http "
                   "(default: start one in this process)")
    s.add_argument("--start", type=date.fromisoformat, default=None,
                   help=_START_HELP + "; a database with orders continues after its last day")
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(fn=cmd_simulate)
    from lianjie.console.cli import add_commands as console_commands

    console_commands(sub)
    from lianjie.marketing.cli import add_commands as add_marketing_commands
    add_marketing_commands(sub)
    risk_cli.add_commands(sub)
    clearing_cli.add_commands(sub)
    credit_cli.add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    args = _parser().parse_args(argv)
    try:
        return int(args.fn(args))
    except LianjieError as exc:
        print(f"lianjie: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
