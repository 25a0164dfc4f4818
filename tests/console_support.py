"""Helpers for the console tests: console users of every role and logged-in HTTP clients."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
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
