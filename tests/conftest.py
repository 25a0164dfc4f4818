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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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
    """A database of this test process's own, so concurrent test runs never share one."""
    assert PG_URL
    name = f"lianjie_test_{_worker()}_{os.getpid()}"
    admin = create_engine(normalise_url(PG_URL), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    base = PG_URL.rsplit("/", 1)[0]
    engine = make_engine(f"{base}/{name}")
    migrate(engine)
    yield engine
    engine.dispose()
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


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


@pytest.fixture
def fresh(engine: Engine, db_kind: str, request: pytest.FixtureRequest, tmp_path: Path
          ) -> Iterator[Callable[[], Engine]]:
    """Makes another empty database of ``db_kind``, with an engine (so a process state of the
    risk engine) of its own. On PostgreSQL each empties the one test database."""
    made: list[Engine] = []

    def make() -> Engine:
        if db_kind == "sqlite":
            path = tmp_path / f"fresh{len(made)}.sqlite3"
            shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
            other = make_engine(f"sqlite:///{path}")
        else:
            _truncate_all(engine)
            other = make_engine(engine.url.render_as_string(hide_password=False))
        made.append(other)
        return other

    yield make
    for e in made:
        e.dispose()


# -- a real server over real HTTP ---------------------------------------------------------------

import socket  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from concurrent.futures import ThreadPoolExecutor  # noqa: E402
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
QUEUE_WAIT_S = 30.0  # a bound on waiting for requests to queue (``held_together``), not a timing
ANY_PARAM = object()  # assert_error: any param will do


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
    watching: bool = False  # inside ``unchanged()``

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

    # -- for the end-to-end suites: errors, "nothing changed", balances, raw bodies ---------

    def raw(self, method: str, path: str, key: str | None, content: bytes,
            idem: str | None = None) -> httpx.Response:
        """Send ``content`` as the body, as is (malformed JSON, non-objects, ...)."""
        h = {"Content-Type": "application/json"}
        if key is not None:
            h["Authorization"] = f"Bearer {key}"
        if method == "POST" and idem != "":
            h["Idempotency-Key"] = idem or str(uuid.uuid4())
        return self.client.request(method, path, content=content, headers=h)

    def dump(self) -> dict[str, list[tuple[Any, ...]]]:
        """Every row of every table; two equal dumps mean nothing changed in between."""
        with self.rt.engine.connect() as conn:
            return {t.name: sorted((tuple(r) for r in conn.execute(t.select())), key=repr)
                    for t in metadata.sorted_tables}

    def count(self, table: str) -> int:
        with self.rt.engine.connect() as conn:
            return int(conn.execute(text(f'SELECT count(*) FROM "{table}"')).scalar_one())

    def refused(self, status: int, code: str, method: str, path: str, key: str | None,
                body: Any = None, *, param: Any = ANY_PARAM, idem: str | None = None,
                content: bytes | None = None, headers: dict[str, str] | None = None
                ) -> dict[str, Any]:
        """Make a request that must fail with ``status`` and ``code`` and change nothing."""
        with self.unchanged(f"{method} {path} -> {code}"):
            if content is not None:
                r = self.raw(method, path, key, content, idem)
            else:
                r = self.call(method, path, key, body, idem, headers)
            return assert_error(r, status, code, param)

    @contextmanager
    def unchanged(self, what: str = "the block") -> Iterator[None]:
        """Assert that no row of any table changes inside the block (one check when nested)."""
        if self.watching:
            yield
            return
        before = self.dump()
        self.watching = True
        try:
            yield
        finally:
            self.watching = False
        after = self.dump()
        changed = [name for name in before if before[name] != after[name]]
        assert not changed, f"{what} changed {changed}"

    def held_together(self, batcher: Any, calls: list[tuple[str, str, Any, str | None]]
                      ) -> list[httpx.Response]:
        """POST each ``(path, key, body, idem)`` while the writer is held busy, and release it
        once ``batcher`` has queued them all, so that they are served together (in as few
        units as the batcher may). The responses, in order."""
        gate = threading.Event()
        held = self.rt.committer.submit(lambda _conn: gate.wait(QUEUE_WAIT_S))
        with ThreadPoolExecutor(len(calls)) as pool:
            futures = [pool.submit(self.call, "POST", path, key, body, idem)
                       for path, key, body, idem in calls]
            deadline = time.monotonic() + QUEUE_WAIT_S
            while len(batcher._pending) < len(calls):  # every request queued behind the gate
                assert time.monotonic() < deadline, "the requests did not queue"
                time.sleep(0.01)
            gate.set()
            responses = [f.result(timeout=2 * QUEUE_WAIT_S) for f in futures]
        held.result(timeout=QUEUE_WAIT_S)
        return responses

    def verify(self) -> None:
        verdict = self.ok("GET", "/v1/ledger/verify", self.operator_key)
        assert verdict["ok"] and verdict["violations"] == [], verdict

    def accounts(self, owner_id: str) -> dict[str, dict[str, Any]]:
        """The owner's ledger accounts by purpose, as the operator sees them."""
        found = self.ok("GET", f"/v1/accounts?owner_id={owner_id}", self.operator_key)
        return {a["purpose"]: a for a in found["data"]}

    def account_balance(self, owner_id: str, purpose: str) -> int:
        return int(self.accounts(owner_id)[purpose]["balance"])

    def pay(self, consumer: dict[str, Any], order: dict[str, Any],
            idem: str | None = None) -> httpx.Response:
        return self.call("POST", f"/v1/orders/{order['id']}/pay", consumer["api_key"], {},
                         idem)

    def get_order(self, order: dict[str, Any]) -> dict[str, Any]:
        return self.ok("GET", f"/v1/orders/{order['id']}", self.operator_key)

    def webhook_secret(self, party_id: str) -> str:
        with self.rt.engine.connect() as conn:
            return str(conn.execute(text("SELECT webhook_secret FROM parties WHERE id = :id"),
                                    {"id": party_id}).scalar_one())


_ERROR_TYPE = {400: "invalid_request_error", 401: "authentication_error",
               402: "payment_error", 403: "permission_error", 404: "invalid_request_error",
               405: "invalid_request_error", 409: "invalid_request_error", 500: "api_error"}


def assert_error(r: httpx.Response, status: int, code: str, param: Any = ANY_PARAM
                 ) -> dict[str, Any]:
    """A Stripe-shaped error with this status and stable code (and ``param``, if given)."""
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"] == "application/json", r.headers
    body = r.json()
    assert list(body) == ["error"], body
    err = dict(body["error"])
    assert set(err) == {"type", "code", "message", "param"}, err
    assert err["code"] == code, err
    expected_type = "idempotency_error" if code.startswith("idempotency") else \
        _ERROR_TYPE[status]
    assert err["type"] == expected_type, err
    assert isinstance(err["message"], str) and err["message"], err
    if param is not ANY_PARAM:
        assert err["param"] == param, err
    return err


def serve_in_thread(app: Any, port: int, *, lifespan: str
                    ) -> tuple[uvicorn.Server, threading.Thread]:
    """A uvicorn server for ``app`` on ``port`` in a daemon thread, once it accepts."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error",
                                           lifespan=lifespan))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while not server.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.02)
    return server, thread


@pytest.fixture
def api(engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Api]:
    monkeypatch.setenv("LIANJIE_HOME", str(tmp_path / "home"))
    key = bootstrap(engine)
    clock = ManualClock()
    port = _free_port()
    rt = make_runtime(engine, clock=clock,
                      cfg=PaymentsConfig(base_url=f"http://127.0.0.1:{port}"))
    app = create_app(rt, background=False)
    server, thread = serve_in_thread(app, port, lifespan="on")
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30.0)
    try:
        yield Api(f"http://127.0.0.1:{port}", key, rt, clock, client, Background(rt))
    finally:
        client.close()
        server.should_exit = True
        thread.join(10)
