"""The credit portfolio simulator over HTTP: the 310 life cycle through the real API.

``simulate_http`` builds the same world as ``lianjie.credit.portfolio.simulate`` (merchants
with a year of payment history drawn from latent cash-flow profiles, a product co-funded by the
platform and two banks) and starts a Lianjie server in this process (``sim.server``) whose
clock is the simulator's ``ManualClock``. Each party then acts with its own API key:

- a merchant applies (``POST /v1/credit/applications``), accepts the offer and draws it down;
- a merchant with an open loan sometimes repays part of it early from its available balance;
- the operator closes each business day (``POST /v1/credit/end_of_day``), which takes
  repayments from receipts, accrues, charges penalties and writes off;
- each funder reads its position (``GET /v1/credit/funders/{id}/position``) and the operator
  verifies the ledger (``GET /v1/ledger/verify``) at the end.

The day's takings are paid in process through the server's own committer (they are payments,
not credit), so every money movement of credit goes through HTTP.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import Engine, select

from lianjie.api.keys import Role, do_issue_key
from lianjie.clock import ManualClock
from lianjie.committer import run_now
from lianjie.credit import portfolio, schedule, synthetic
from lianjie.credit.schema import loans
from lianjie.errors import LianjieError
from lianjie.payments import PLATFORM_ID
from lianjie.sim.config import HTTP_TIMEOUT_S
from lianjie.sim.server import owned_server

REPAY_SHARE_PER_DAY = 0.03  # chance a merchant with an open loan repays part of it early
EARLY_REPAYMENT = 20_00
APPLY_AMOUNT = 5_000_000
Json = dict[str, Any]


@dataclass
class HttpSimResult(portfolio.SimResult):
    positions: dict[str, Json] = field(default_factory=dict)  # funder -> position over HTTP
    violations: list[Json] = field(default_factory=list)  # from GET /v1/ledger/verify
    requests: dict[str, int] = field(default_factory=dict)  # what was done, by kind


class _Client:
    def __init__(self, base_url: str) -> None:
        self.http = httpx.Client(base_url=base_url, timeout=HTTP_TIMEOUT_S)
        self.counts: dict[str, int] = {}

    def call(self, kind: str, method: str, path: str, key: str,
             body: Json | None = None) -> httpx.Response:
        headers = {"Authorization": f"Bearer {key}"}
        if method == "POST":
            headers["Idempotency-Key"] = uuid.uuid4().hex
        r = self.http.request(method, path, headers=headers, json=body)
        if r.status_code >= 500:
            raise LianjieError(f"{method} {path}: HTTP {r.status_code} {r.text}")
        self.counts[kind] = self.counts.get(kind, 0) + 1
        return r

    def ok(self, kind: str, method: str, path: str, key: str, body: Json | None = None) -> Json:
        r = self.call(kind, method, path, key, body)
        if r.status_code >= 300:
            raise LianjieError(f"{method} {path}: HTTP {r.status_code} {r.text}")
        out: Json = r.json()
        return out


def _keys(engine: Engine, clock: ManualClock, merchants: list[str],
          funders: list[str]) -> dict[str, str]:
    """An operator key ("operator"), one key per merchant and per bank funder."""
    def unit(conn: Any) -> dict[str, str]:
        now = clock.now()
        out = {"operator": do_issue_key(conn, now, PLATFORM_ID, Role.OPERATOR)[1]}
        out.update({m: do_issue_key(conn, now, m, Role.MERCHANT)[1] for m in merchants})
        out.update({f: do_issue_key(conn, now, f, Role.INSTITUTION)[1]
                    for f in funders if f != PLATFORM_ID})
        return out

    return run_now(engine, unit)


def simulate_http(engine: Engine, *, merchants: int = 20, days: int = 60, seed: int = 1,
                  history_days: int = 365, start: datetime | None = None) -> HttpSimResult:
    rng = random.Random(seed)
    clock = ManualClock(start)
    product, funders, profiles, consumer, bank = portfolio.setup(
        engine, clock, merchants, rng, history_days)
    keys = _keys(engine, clock, list(profiles), funders)
    result = HttpSimResult(product, funders)
    trading = set(profiles)
    first_bad: dict[str, int] = {}
    open_loan: dict[str, str] = {}  # merchant -> its active loan's id
    with owned_server(engine, clock) as (url, rt):
        client = _Client(url)
        try:
            for _ in range(days):
                clock.advance(timedelta(hours=10))
                rt.committer.run(lambda c: portfolio.trade(c, clock.now(), profiles, trading,
                                                           consumer, bank, rng))
                for m in [m for m in profiles if m in trading]:
                    if rng.random() < synthetic.default_probability(profiles[m]) / 120:
                        trading.discard(m)
                _apply(client, keys, product, list(profiles), open_loan, rng)
                _repay_early(client, keys, open_loan, rng)
                clock.advance(timedelta(hours=13, minutes=59))
                client.ok("eod", "POST", "/v1/credit/end_of_day", keys["operator"],
                          {"business_date": clock.now().date().isoformat()})
                with engine.connect() as conn:
                    for loan_id, status, dpd in conn.execute(select(
                            loans.c.id, loans.c.status, loans.c.dpd)).all():
                        if dpd >= portfolio.BAD_DPD:
                            first_bad.setdefault(loan_id, schedule.day_of(clock.now()))
                        if status != "active":
                            open_loan = {m: x for m, x in open_loan.items() if x != loan_id}
                clock.advance(timedelta(minutes=1))
            for f in funders:
                key = keys["operator"] if f == PLATFORM_ID else keys[f]
                result.positions[f] = client.ok("position", "GET",
                                                f"/v1/credit/funders/{f}/position", key)
            result.violations = client.ok("verify", "GET", "/v1/ledger/verify",
                                          keys["operator"])["violations"]
            result.requests = dict(sorted(client.counts.items()))
        finally:
            client.http.close()
    with engine.connect() as conn:
        result.loans, result.rows = portfolio.outcomes(conn, first_bad)
    return result


def _apply(client: _Client, keys: dict[str, str], product: str, merchants: list[str],
           open_loan: dict[str, str], rng: random.Random) -> None:
    for m in merchants:
        if rng.random() >= portfolio.APPLY_SHARE_PER_DAY or m in open_loan:
            continue
        r = client.call("apply", "POST", "/v1/credit/applications", keys[m],
                        {"product_id": product, "amount": APPLY_AMOUNT})
        if r.status_code != 201:
            continue  # too little history, a prior write-off: the merchant waits
        app = r.json()
        if app["status"] != "approved":
            continue
        client.ok("accept", "POST", f"/v1/credit/applications/{app['id']}/accept", keys[m])
        loan = client.ok("drawdown", "POST", f"/v1/credit/applications/{app['id']}/drawdown",
                         keys[m], {"amount": app["limit_amount"]})
        open_loan[m] = loan["id"]


def _repay_early(client: _Client, keys: dict[str, str], open_loan: dict[str, str],
                 rng: random.Random) -> None:
    for m, loan_id in sorted(open_loan.items()):
        if rng.random() >= REPAY_SHARE_PER_DAY:
            continue
        loan = client.ok("loan", "GET", f"/v1/credit/loans/{loan_id}", keys[m])
        amount = min(EARLY_REPAYMENT, loan["owed"])
        if loan["status"] == "active" and amount > 0:
            # Refused (insufficient funds) when the merchant has spent its balance: fine.
            client.call("repay", "POST", f"/v1/credit/loans/{loan_id}/repayments", keys[m],
                        {"amount": amount})
