"""The clearing pages in a real headless Chromium: a finance operator runs end of day for a
finished day, downloads a statement, uploads the partner's file with a planted break and
resolves it with a reason; support is refused running end of day.

Shares the browser fixtures of ``console_support`` (SQLite only, one Chromium per session).
"""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Any

from clearing_helpers import API_DAY, paid_day, plant_break
from console_support import Console, browser, cheap_hashes, console, db_kind, log_in, page

assert console and cheap_hashes and browser and db_kind and page  # fixtures


def test_finance_closes_a_day_and_reconciles(console: Console, page: Any) -> None:
    api = console.api
    paid_day(api)
    bank = api.institution["id"]
    api.clock.advance(timedelta(hours=17))  # the business day is over
    log_in(page, console, "finance")
    page.click("#nav-eod")
    row = f"tr[data-day='{API_DAY}']"
    assert "not run" in page.text_content(row)
    page.fill("#eod-date", API_DAY)
    page.click("#eod-submit")
    page.wait_for_selector(".flash.ok")
    assert "done" in page.text_content(f"{row} .status")
    assert "1 settlements, ¥11.95" in page.text_content(f"{row} .step-settle")
    # the statement the bank will check against its own books
    page.click("#nav-statements")
    page.fill("#owner", bank)
    page.fill("#statement-pick input[name=day]", API_DAY)
    page.click("#statement-pick button")
    with page.expect_download() as download:
        page.click("#dl-csv")
    statement = Path(download.value.path()).read_text()
    assert "opening_balance" in statement and download.value.suggested_filename.endswith(".csv")
    page.click("#verify-button")
    assert "The chain verifies" in page.text_content("#verify-result")
    # the bank's file, a cent off on one line
    partner, ref = plant_break(statement)
    page.click("#nav-reconciliation")
    page.select_option("#recon-institution", bank)
    page.fill("#recon-date", API_DAY)
    page.select_option("#recon-format", "csv")
    page.set_input_files("#recon-file", files=[{"name": "bank.csv", "mimeType": "text/csv",
                                                "buffer": partner.encode()}])
    page.wait_for_function("document.querySelector('#recon-content').value.length > 0")
    page.click("#recon-submit")
    page.wait_for_selector(".flash.ok")
    item = "#items tr[data-outcome=amount_mismatch]"
    assert ref in page.text_content(item) and "open" in page.text_content(item)
    page.fill(f"{item} input[name=reason]", "the bank booked a cent too much; it corrects")
    page.click(f"{item} button[type=submit]")
    page.wait_for_selector(".flash.ok")
    assert "the bank booked a cent too much" in page.text_content(item)
    assert "resolved" in page.text_content(item)
    assert [r.action for r in console.audit_rows() if r.outcome == "ok"][-3:] == [
        "end_of_day", "recon_import", "recon_resolve"]


def test_support_is_refused_end_of_day(console: Console, page: Any) -> None:
    api = console.api
    paid_day(api)
    api.clock.advance(timedelta(hours=17))
    log_in(page, console, "support")
    page.click("#nav-eod")
    assert page.query_selector("#eod-run") is None  # no button to press
    status = page.evaluate("""async (day) => {
        const token = document.querySelector('input[name=csrf_token]').value;
        const r = await fetch('/console/eod/run', {method: 'POST', body: new URLSearchParams(
            {csrf_token: token, business_date: day})});
        return r.status;
    }""", API_DAY)
    assert status == 403
    page.reload()
    assert "not run" in page.text_content(f"tr[data-day='{API_DAY}']")
    assert re.search("role_refused", str([r.outcome for r in console.audit_rows()]))
