"""``lianjie console``: manage console users.

    lianjie console add-user NAME --role admin|risk_analyst|finance|support [--password-file F]
    lianjie console users

Without ``--password-file`` a password is generated and printed once. Adding an existing user
replaces their password and role and ends their sessions.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from sqlalchemy import Engine

from lianjie.clock import SystemClock
from lianjie.committer import run_now
from lianjie.console import operators
from lianjie.db import default_database_url, make_engine, migrate
from lianjie.errors import ConfigError, DomainError


def _engine(args: argparse.Namespace) -> Engine:
    engine = make_engine(args.database or default_database_url())
    migrate(engine)
    return engine


def add_user(engine: Engine, username: str, role: str, password: str) -> str:
    digest = operators.hash_password(password)
    return run_now(engine, lambda c: operators.do_add_user(c, SystemClock().now(), username,
                                                           role, digest))


DEMO_USER = "admin"


def ensure_demo_admin(engine: Engine, home: Path) -> tuple[str, str]:
    """The console administrator ``lianjie demo`` prints: created on first run with a generated
    password kept in ``$LIANJIE_HOME/console_password`` (owner-only), reused afterwards."""
    password_file = home / "console_password"
    if password_file.exists():
        password = password_file.read_text().strip()
        with engine.connect() as conn:
            user = operators.find_user(conn, DEMO_USER)
        if user is not None and operators.check_password(user.password_hash, password):
            return DEMO_USER, password
    password = operators.generate_password()
    add_user(engine, DEMO_USER, operators.ConsoleRole.ADMIN.value, password)
    password_file.parent.mkdir(parents=True, exist_ok=True)
    password_file.write_text(password + "\n")
    password_file.chmod(0o600)
    return DEMO_USER, password


def cmd_add_user(args: argparse.Namespace) -> int:
    password = Path(args.password_file).read_text().strip() if args.password_file else \
        operators.generate_password()
    try:
        add_user(_engine(args), args.username.strip().lower(), args.role, password)
    except DomainError as exc:
        raise ConfigError(exc.message) from exc
    print(f"console user {args.username} ({args.role}) ready")
    if not args.password_file:
        print(f"password: {password}  (shown once)")
    return 0


def cmd_users(args: argparse.Namespace) -> int:
    with _engine(args).connect() as conn:
        for username, role, user_id in operators.list_users(conn):
            print(f"{username}\t{role}\t{user_id}")
    return 0


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    console = sub.add_parser("console", help="manage operator console users")
    csub = console.add_subparsers(dest="console_command", required=True)
    add = csub.add_parser("add-user", help="create a console user or reset their password")
    add.add_argument("username")
    add.add_argument("--role", required=True, choices=sorted(operators.ALL_ROLES))
    add.add_argument("--password-file", help="read the password from this file")
    add.set_defaults(fn=cmd_add_user)
    csub.add_parser("users", help="list console users").set_defaults(fn=cmd_users)
