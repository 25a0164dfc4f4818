"""Helpers for the console tests: console users of every role and logged-in HTTP clients."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from conftest import Api
from lianjie.console import operators
from lianjie.console.cli import add_user
from lianjie.console.schema import audit

PASSWORD = "correct horse battery"
ROLES = ("admin", "risk_analyst", "finance", "support")


@dataclass
class Console:
    api: Api
    clients: list[httpx.Client] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.api.base_url + "/console"

    def client(self) -> httpx.Client:
        c = httpx.Client(base_url=self.api.base_url, timeout=30.0, follow_redirects=False)
        self.clients.append(c)
        return c

    def login(self, username: str, password: str = PASSWORD) -> httpx.Client:
        c = self.client()
        r = c.post("/console/login", data={"username": username, "password": password})
        assert r.status_code == 303, (r.status_code, r.text)
        return c

    def csrf(self, c: httpx.Client, page: str = "/console/overview") -> str:
        found = re.search(r'name="csrf_token" value="([^"]+)"', c.get(page).text)
        assert found, "no CSRF token on the page"
        return found.group(1)

    @contextmanager
    def unchanged(self, what: str) -> Iterator[None]:
        """No row changes inside the block except the console's own (audit, sessions)."""
        before = self.api.dump()
        yield
        after = self.api.dump()
        changed = [t for t in before if before[t] != after[t] and not t.startswith("console_")]
        assert not changed, f"{what} changed {changed}"

    def audit_rows(self) -> list[Any]:
        with self.api.rt.engine.connect() as conn:
            return list(conn.execute(select(audit).order_by(audit.c.id)))


@pytest.fixture(scope="session")
def cheap_hashes() -> Iterator[None]:
    """Argon2 at its lowest cost: the same code path, a fraction of the CPU per log-in."""
    operators.set_hash_cost(1, 1024)
    yield
    operators.set_hash_cost(3, 65536)


@pytest.fixture
def console(api: Api, cheap_hashes: None) -> Iterator[Console]:
    for role in ROLES:
        add_user(api.rt.engine, role.replace("_", "-"), role, PASSWORD)
    con = Console(api)
    yield con
    for c in con.clients:
        c.close()


# -- the browser tests: one Chromium per test process ----------------------------------------

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
TIMEOUT_MS = 15_000
# Each module that imports ``browser`` gets its own session fixture; they share one Playwright
# and one Chromium (Playwright's sync API runs one event loop per thread), closed by the last.
_SHARED: dict[str, Any] = {"users": 0}


@pytest.fixture(params=["sqlite"])
def db_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        if os.environ.get("CI"):
            pytest.fail("Debian's chromium is missing: .ci/run installs it")
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    if not _SHARED["users"]:
        _SHARED["playwright"] = sync_api.sync_playwright().start()
        _SHARED["browser"] = _SHARED["playwright"].chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
    _SHARED["users"] += 1
    yield _SHARED["browser"]
    _SHARED["users"] -= 1
    if not _SHARED["users"]:
        _SHARED.pop("browser").close()
        _SHARED.pop("playwright").stop()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    pg = context.new_page()
    yield pg
    context.close()


def log_in(page: Any, console: Console, username: str) -> None:
    page.goto(console.url + "/overview")
    assert "/console/login" in page.url
    page.fill("#username", username)
    page.fill("#password", PASSWORD)
    page.click("#login-submit")
    page.wait_for_url(re.compile(r".*/console/overview.*"))
