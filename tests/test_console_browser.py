"""The console in a real headless Chromium (Debian's ``chromium``, driven by Playwright): log in
and see the day's charts drawn, approve a merchant's KYC, find a payment and open its postings,
a wrong role refused, a form without its CSRF token refused, and the language switch.

One browser for the whole test session, a fresh context (cookies) per test. These run on SQLite
only: the HTTP tests cover both databases, and these are about what the browser does.
"""

from __future__ import annotations

import re
from typing import Any

from console_support import Console, browser, cheap_hashes, console, db_kind, log_in, page

assert console and cheap_hashes and browser and db_kind and page  # fixtures


def test_log_in_see_charts_and_approve_a_merchant(console: Console, page: Any) -> None:
    api = console.api
    merchant = api.merchant(api.service_provider(), approve=False, name="Auntie Wang Jianbing")
    paying = api.merchant(api.service_provider())
    assert api.pay(api.consumer(funds=5_000), api.order(paying, 1_234)).status_code == 200
    log_in(page, console, "admin")
    page.wait_for_selector("#chart-takings[data-drawn=true]")
    page.wait_for_function("document.querySelector('#figure-takings').textContent.includes('¥')")
    assert page.text_content("#figure-takings") == "¥12.34"
    # a payment while the page is open shows up at the next poll, without a reload
    assert api.pay(api.consumer(funds=5_000), api.order(paying, 1_000)).status_code == 200
    page.wait_for_function(
        "document.querySelector('#figure-takings').textContent === '¥22.34'")
    page.click("#nav-merchants")
    page.select_option("#kyc", "pending")
    page.click("#merchant-search button")
    page.click(f"tr[data-id='{merchant['id']}'] a")
    page.click("#kyc-approve")
    page.wait_for_selector(".flash.ok")
    assert "approved" in page.text_content(".toolbar")
    assert page.query_selector("#kyc-approve") is None
    assert api.ok("GET", f"/v1/merchants/{merchant['id']}", api.operator_key)[
        "kyc_status"] == "approved"


def test_find_a_payment_and_open_its_postings(console: Console, page: Any) -> None:
    api = console.api
    merchant = api.merchant(api.service_provider())
    order = api.order(merchant, 2_500, out_trade_no="POS-778899")
    assert api.pay(api.consumer(funds=5_000), order).status_code == 200
    entry = api.get_order(order)["entry_id"]
    log_in(page, console, "support")
    page.click("#nav-payments")
    page.fill("#q", "POS-778899")
    page.click("#payment-search button")
    page.wait_for_url(re.compile(f".*/console/payments/{order['id']}$"))
    rows = page.query_selector_all("#postings tbody tr")
    legs = api.ok("GET", f"/v1/ledger_entries/{entry}", api.operator_key)["postings"]
    assert len(rows) == len(legs) and all(entry in r.text_content() for r in rows)
    assert "¥25.00" in page.text_content("#postings")
    assert "Paid" in page.text_content("#timeline")


def test_wrong_role_is_refused(console: Console, page: Any) -> None:
    api = console.api
    merchant = api.merchant(api.service_provider(), approve=False)
    log_in(page, console, "support")
    assert page.query_selector("#nav-ledger") is None
    response = page.goto(console.url + "/ledger")
    assert response.status == 403
    assert "Your role (Support) may not do this" in page.text_content("#refusal")
    page.goto(f"{console.url}/merchants/{merchant['id']}")
    assert page.query_selector("#kyc-approve") is None


def test_a_form_without_its_csrf_token_is_refused(console: Console, page: Any) -> None:
    api = console.api
    merchant = api.merchant(api.service_provider(), approve=False)
    log_in(page, console, "risk-analyst")
    page.goto(f"{console.url}/merchants/{merchant['id']}")
    page.eval_on_selector_all("input[name=csrf_token]", "els => els.forEach(e => e.remove())")
    page.click("#kyc-approve")
    page.wait_for_selector("#refusal")
    assert "did not come from the console" in page.text_content("#refusal")
    assert api.ok("GET", f"/v1/merchants/{merchant['id']}", api.operator_key)[
        "kyc_status"] == "pending"


def test_language_switch(console: Console, page: Any) -> None:
    log_in(page, console, "finance")
    assert page.text_content("#nav-overview") == "Overview"
    page.click("#lang-switch")
    page.wait_for_selector("#nav-overview:has-text('总览')")
    page.click("#nav-ledger")
    assert page.text_content("#nav-ledger") == "账本"
    assert page.evaluate("document.documentElement.lang") == "zh-CN"
    page.click("#lang-switch")
    page.wait_for_selector("#nav-ledger:has-text('Ledger')")
