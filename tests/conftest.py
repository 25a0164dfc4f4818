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


# -- a real server over real HTTP ---------------------------------------------------------------

import socket  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from typing import Any  # noqa: E402

import httpx  # noqa: E402
import uvicorn  # noqa: E402

from lianjie.api import create_app, make_runtime  # noqa: E402
from lianjie.api.background import Background  # noqa: E402
from lianjie.api.runtime import Runtime  # noqa: E402
from lianjie.cli import bootstrap  # noqa: E402
from lianjie.payments import PaymentsConfig  # noqa: E402

SERVER_START_TIMEOUT_S = 20.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Api:
    """A running server and helpers to call it as each kind of party."""

    base_url: str
    operator_key: str
    rt: Runtime
    clock: ManualClock
    client: httpx.Client
    background: Background
    institution: dict[str, Any] = field(default_factory=dict)

    def call(self, method: str, path: str, key: str | None, body: Any = None,
             idem: str | None = None, headers: dict[str, str] | None = None) -> httpx.Response:
        h = dict(headers or {})
        if key is not None:
            h["Authorization"] = f"Bearer {key}"
        if method == "POST" and idem != "":
            h["Idempotency-Key"] = idem or str(uuid.uuid4())
        return self.client.request(method, path, json=body, headers=h)

    def ok(self, method: str, path: str, key: str | None, body: Any = None,
           idem: str | None = None) -> dict[str, Any]:
        r = self.call(method, path, key, body, idem)
        assert r.status_code < 300, (r.status_code, r.text)
        return dict(r.json())

    def service_provider(self, **body: Any) -> dict[str, Any]:
        return self.ok("POST", "/v1/service_providers", self.operator_key,
                       {"name": "SP", **body})

    def merchant(self, sp: dict[str, Any] | None = None, approve: bool = True,
                 **body: Any) -> dict[str, Any]:
        key = sp["api_key"] if sp else self.operator_key
        m = self.ok("POST", "/v1/merchants", key, {"name": "Shop", "business_type":
                                                   "street_food", **body})
        if approve:
            self.ok("POST", f"/v1/merchants/{m['id']}/kyc", self.operator_key,
                    {"decision": "approved"})
        return m

    def consumer(self, funds: int = 0) -> dict[str, Any]:
        c = self.ok("POST", "/v1/consumers", self.operator_key, {"name": "Consumer"})
        if funds:
            if not self.institution:
                self.institution = self.ok("POST", "/v1/institutions", self.operator_key,
                                           {"name": "Bank"})
            self.ok("POST", "/v1/wallet/top_ups", c["api_key"],
                    {"institution_id": self.institution["id"], "amount": funds})
        return c

    def order(self, merchant: dict[str, Any], amount: int = 1000, **body: Any
              ) -> dict[str, Any]:
        return self.ok("POST", "/v1/orders", merchant["api_key"],
                       {"out_trade_no": str(uuid.uuid4()), "amount": amount,
                        "description": "noodles", **body})

    def balance(self, consumer: dict[str, Any]) -> int:
        return int(self.ok("GET", "/v1/wallet", consumer["api_key"])["balance"])


@pytest.fixture
def api(engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Api]:
    monkeypatch.setenv("LIANJIE_HOME", str(tmp_path / "home"))
    key = bootstrap(engine)
    clock = ManualClock()
    port = _free_port()
    rt = make_runtime(engine, clock=clock,
                      cfg=PaymentsConfig(base_url=f"http://127.0.0.1:{port}"))
    app = create_app(rt, background=False)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error",
                                           lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while not server.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.02)
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30.0)
    try:
        yield Api(f"http://127.0.0.1:{port}", key, rt, clock, client, Background(rt))
    finally:
        client.close()
        server.should_exit = True
        thread.join(10)
