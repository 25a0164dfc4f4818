"""The risk review queue in a real headless Chromium: an analyst claims and approves a held
payment, which then shows as paid; a support operator is refused the queue. Shares the
browser of ``console_support`` (SQLite only, as the other browser tests)."""

from __future__ import annotations

import re
from typing import Any

from console_support import Console, browser, cheap_hashes, console, db_kind, log_in, page

assert console and cheap_hashes and browser and db_kind and page  # fixtures


def test_analyst_claims_and_approves_a_case(console: Console, page: Any) -> None:
    api = console.api
    api.ok("POST", "/v1/risk/rule_sets", api.operator_key, {"rules": [
        {"name": "review_big", "expression": "amount >= 5000", "action": "review"}]})
    shop, alice = api.merchant(api.service_provider()), api.consumer(funds=10_000)
    order = api.order(shop, 6_000)
    assert api.pay(alice, order).json()["status"] == "reviewing"
    (case,) = api.ok("GET", "/v1/risk/cases?status=open", api.operator_key)["data"]
    log_in(page, console, "risk-analyst")
    page.click("#nav-risk")
    row = f"#risk-cases tr[data-id='{case['id']}']"
    assert "review_big" in page.text_content(row) and "¥60.00" in page.text_content(row)
    page.click(f"#claim-{case['id']}")
    page.wait_for_selector(".flash.ok")
    assert "risk-analyst" in page.text_content(row)
    assert page.query_selector(f"#claim-{case['id']}") is None
    page.fill(f"#decide-{case['id']} input[name=note]", "known customer")
    page.click(f"#approve-{case['id']}")
    page.wait_for_selector(".flash.ok")
    assert page.query_selector(row) is None
    assert api.get_order(order)["status"] == "paid"
    page.goto(f"{console.url}/payments/{order['id']}")
    assert "paid" in page.text_content(".toolbar")
    assert "known customer" in page.text_content("#risk-decision")


def test_support_is_refused_the_queue(console: Console, page: Any) -> None:
    log_in(page, console, "support")
    assert page.query_selector("#nav-risk") is None
    response = page.goto(console.url + "/risk")
    assert response.status == 403
    assert re.search("Your role \\(Support\\) may not do this", page.text_content("#refusal"))
