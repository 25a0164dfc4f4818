"""The loan page in a real headless Chromium: a finance operator opens a loan, sees its
funders' shares and schedule, records a repayment and the owed amount drops; support is
refused the repayment."""

from __future__ import annotations

from typing import Any

from console_support import Console, browser, cheap_hashes, console, db_kind, log_in, page
from credit_console_helpers import drawn_loan

assert console and cheap_hashes and browser and db_kind and page  # fixtures


def test_finance_repays_support_refused(console: Console, page: Any) -> None:
    w = drawn_loan(console.api)
    loan_id, bank = w["loan"]["id"], w["bank"]["id"]
    log_in(page, console, "finance")
    page.click("#nav-loans")
    page.click(f"tr[data-loan='{loan_id}'] a")
    assert "80.00%" in page.text_content(f"#loan-funders tr[data-funder='{bank}'] .share")
    assert page.locator("#loan-schedule tbody tr").count() == 3
    before = page.text_content("#loan-owed")
    page.fill("#repay-amount", "50.00")
    page.click("#repay-submit")
    page.wait_for_selector(".flash.ok")
    after = page.text_content("#loan-owed")
    assert before != after
    assert float(after.strip("¥").replace(",", "")) == float(
        before.strip("¥").replace(",", "")) - 50.0
    assert "manual" in page.text_content("#loan-repayments")

    page.context.clear_cookies()
    log_in(page, console, "support")
    page.goto(f"{console.url}/loans/{loan_id}")
    assert page.locator("#repay-form").count() == 0
    token = page.get_attribute("input[name=csrf_token]", "value")
    r = page.request.post(f"{console.url}/loans/{loan_id}/repay",
                          form={"amount": "1.00", "csrf_token": token})
    assert r.status == 403 and "may not do this" in r.text()
