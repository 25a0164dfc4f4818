"""Fixtures shared by every test: a real database of each kind, a clock, a committer.

Every test that takes ``engine`` runs once on a SQLite file and once on PostgreSQL when
``LIANJIE_TEST_POSTGRES_URL`` names a server (``./dev test`` starts one). Each test gets an empty,
fully migrated database:

- SQLite: a copy of a template file migrated once per session.
- PostgreSQL: one database per xdist worker, migrated once, truncated before each test.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text

import lianjie.schema  # noqa: F401 - every table on the metadata
from lianjie.clock import ManualClock
from lianjie.committer import Committer
from lianjie.db import make_engine, metadata, migrate, normalise_url

PG_URL = os.environ.get("LIANJIE_TEST_POSTGRES_URL")
DB_KINDS = ["sqlite", "postgresql"] if PG_URL else ["sqlite"]


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "template.sqlite3"
    engine = make_engine(f"sqlite:///{path}")
    migrate(engine)
    engine.dispose()
    return path


def _worker() -> str:
    return os.environ.get("PYTEST_XDIST_WORKER", "main")


@pytest.fixture(scope="session")
def pg_engine() -> Iterator[Engine]:
    assert PG_URL
    name = f"lianjie_test_{_worker()}"
    admin = create_engine(normalise_url(PG_URL), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    base = PG_URL.rsplit("/", 1)[0]
    engine = make_engine(f"{base}/{name}")
    migrate(engine)
    yield engine
    engine.dispose()


def _truncate_all(engine: Engine) -> None:
    names = ", ".join(f'"{t.name}"' for t in metadata.sorted_tables)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))


@pytest.fixture(params=DB_KINDS)
def db_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def engine(db_kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    if db_kind == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        path = tmp_path / "lianjie.sqlite3"
        shutil.copyfile(template, path)
        eng = make_engine(f"sqlite:///{path}")
        yield eng
        eng.dispose()
    else:
        eng = request.getfixturevalue("pg_engine")
        _truncate_all(eng)
        yield eng


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def committer(engine: Engine) -> Iterator[Committer]:
    c = Committer(engine)
    c.start()
    yield c
    c.stop()
