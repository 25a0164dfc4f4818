"""Simulate a business day into a scratch database, serve it, and photograph the console's main
pages with Debian's headless chromium into docs/screenshots/ (see scripts/console-screenshots).
"""

from __future__ import annotations

import argparse
import os
import socket
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from playwright.sync_api import Page, sync_playwright
from sqlalchemy import func, select

from lianjie.api import create_app, make_runtime
from lianjie.clearing import ClearingConfig, run_end_of_day
from lianjie.cli import bootstrap
from lianjie.console.cli import add_user
from lianjie.db import make_engine
from lianjie.marketing.schema import campaigns
from lianjie.payments.schema import orders, parties, refunds
from lianjie.risk import rules as rulesets
from lianjie.sim import SimConfig, run_simulation
from lianjie.sim.marketing import MarketingSimConfig, run_marketing_simulation

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
PASSWORD = "screenshots-only"
VIEWPORT = {"width": 1360, "height": 900}
START_TIMEOUT_S = 30.0


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _shoot(page: Page, url: str, path: Path, *, full: bool = False, charts: bool = False
           ) -> None:
    page.goto(url)
    if charts:
        page.wait_for_selector("canvas[data-drawn=true]")
        page.wait_for_timeout(400)
    page.screenshot(path=str(path), full_page=full)
    print(f"wrote {path}")


def _risk_cases(url: str, key: str) -> None:
    """A few payments held for review (the simulated day has none), for the risk queue."""
    def call(path: str, bearer: str, body: dict[str, Any]) -> dict[str, Any]:
        r = httpx.post(url + path, json=body, headers={"Authorization": f"Bearer {bearer}",
                                                       "Idempotency-Key": str(uuid.uuid4())})
        r.raise_for_status()
        return dict(r.json())

    rules = [rulesets.rule_json(r) for r in rulesets.DEFAULT_RULES]
    rules += [{"name": "review_large", "expression": "amount >= 80000", "action": "review",
               "description": "large payments are looked at"},
              {"name": "watch_medium", "expression": "amount >= 30000", "shadow": True,
               "weight": 20.0}]
    call("/v1/risk/rule_sets", key, {"rules": rules, "note": "review large payments"})
    bank = call("/v1/institutions", key, {"name": "Bank"})
    shop = call("/v1/merchants", key, {"name": "Harbour Electronics",
                                       "business_type": "online_shop"})
    call(f"/v1/merchants/{shop['id']}/kyc", key, {"decision": "approved"})
    for i, amount in enumerate((88_000, 125_000, 99_900)):
        payer = call("/v1/consumers", key, {"name": f"Buyer {i}"})
        call("/v1/wallet/top_ups", payer["api_key"], {"institution_id": bank["id"],
                                                      "amount": 200_000})
        order = call("/v1/orders", shop["api_key"], {"out_trade_no": f"HE-{i}",
                                                     "amount": amount, "description": "phone"})
        call(f"/v1/orders/{order['id']}/pay", payer["api_key"], {"device_id": f"dev-{i}"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="docs/screenshots")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--only", choices=["marketing"], default=None,
                        help="photograph only this capability's page")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    home = Path(tempfile.mkdtemp(prefix="lianjie-shots-"))
    os.environ["LIANJIE_HOME"] = str(home)
    engine = make_engine(f"sqlite:///{home / 'lianjie.sqlite3'}")
    operator_key = bootstrap(engine)
    if args.only is None:
        print(run_simulation(engine, SimConfig(seed=args.seed)).summary())
    add_user(engine, "admin", "admin", PASSWORD)
    with engine.connect() as conn:
        paid = conn.execute(select(func.max(orders.c.paid_at))).scalar_one()
    day = ClearingConfig().business_date(paid) if paid is not None else None
    if day is not None:
        run_end_of_day(engine, day)  # settle, seal and clear the simulated day
    with engine.connect() as conn:
        refunded = conn.execute(select(refunds.c.order_id).limit(1)).scalar()
        merchant = conn.execute(select(orders.c.merchant_id).where(orders.c.id == refunded)
                                ).scalar()
        pending = conn.execute(select(parties.c.id).where(parties.c.kyc_status == "pending")
                               .limit(1)).scalar()
    port = _port()
    server = uvicorn.Server(uvicorn.Config(create_app(make_runtime(engine), background=False),
                                           host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    deadline = time.monotonic() + START_TIMEOUT_S
    while not server.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.05)
    base = f"http://127.0.0.1:{port}/console"
    _risk_cases(f"http://127.0.0.1:{port}", operator_key)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        page = browser.new_context(viewport=VIEWPORT).new_page()
        page.goto(base + "/login")
        if args.only is None:
            _shoot(page, base + "/login", out / "login.png")
        page.fill("#username", "admin")
        page.fill("#password", PASSWORD)
        page.click("#login-submit")
        page.wait_for_url(base + "/overview")
        if args.only is None and day is not None:
            _shoot_payments(page, base, out, pending or merchant, refunded)
            _shoot(page, f"{base}/eod?day={day.isoformat()}", out / "console-clearing.png")
            page.goto(base + "/risk")
            page.click("button[id^=claim-]")  # one case claimed, as an analyst would
            _shoot(page, base + "/risk", out / "console-risk.png")
        # Last, so its simulated days do not move the overview's day in the shots above.
        print(run_marketing_simulation(engine, MarketingSimConfig(seed=args.seed)).summary())
        with engine.connect() as conn:
            campaign = conn.execute(select(campaigns.c.id).limit(1)).scalar_one()
        _shoot(page, f"{base}/marketing/campaigns/{campaign}", out / "console-marketing.png",
               full=True, charts=True)
        browser.close()
    server.should_exit = True


def _shoot_payments(page: Page, base: str, out: Path, merchant: str, refunded: str) -> None:
    """The console's other pages, from the day the main simulation made."""
    _shoot(page, base + "/overview", out / "overview.png", charts=True)
    _shoot(page, base + "/merchants", out / "merchants.png")
    _shoot(page, f"{base}/merchants/{merchant}", out / "merchant.png", full=True)
    _shoot(page, base + "/payments", out / "payments.png")
    _shoot(page, f"{base}/payments/{refunded}", out / "payment.png", full=True)
    _shoot(page, base + "/ledger", out / "ledger.png")
    page.goto(base + "/lang/zh?next=/console/overview")
    _shoot(page, base + "/overview", out / "overview-zh.png", charts=True)
    page.goto(base + "/lang/en?next=/console/overview")


if __name__ == "__main__":
    main()
