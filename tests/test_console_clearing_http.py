"""The console's clearing pages over real HTTP: end of day, settlement and caps, statements and
the signed log, reconciliation; each action through the clearing context's own functions,
audited, refused for the wrong role or without the CSRF token, and bad input shown as a clear
error with nothing changed."""

from __future__ import annotations

import re
import threading
from datetime import timedelta

import httpx
from sqlalchemy import text

from clearing_helpers import API_DAY, paid_day, plant_break
from console_support import Console, cheap_hashes, console

assert console and cheap_hashes  # fixtures


def _post(console: Console, c: httpx.Client, path: str, form: dict[str, str],
          page: str) -> str:
    """Post a console form with the session's CSRF token; the page it leads back to."""
    r = c.post(path, data={**form, "csrf_token": console.csrf(c, page)})
    assert r.status_code == 303, (r.status_code, r.text)
    return c.get(r.headers["location"]).text


def _refused_for(console: Console, path: str, form: dict[str, str], page: str) -> None:
    """Support is refused; a form without the CSRF token is refused; nothing changes."""
    support = console.login("support")
    finance = console.login("finance")
    with console.unchanged(path):
        r = support.post(path, data={**form, "csrf_token": console.csrf(support, page)})
        assert r.status_code == 403 and "Your role (Support) may not do this" in r.text
        assert finance.post(path, data=form).status_code == 403


def _last_audit(console: Console, action: str) -> object:
    return [r for r in console.audit_rows() if r.action == action][-1]


def test_end_of_day_page_runs_a_finished_day(console: Console) -> None:
    api = console.api
    paid_day(api)
    c = console.login("finance")
    page = c.get(f"/console/eod?day={API_DAY}")
    assert page.status_code == 200 and 'data-day="2026-01-05"' in page.text
    assert "not run" in page.text and "¥12.00" in page.text
    with console.unchanged("a day not over"):
        shown = _post(console, c, "/console/eod/run", {"business_date": API_DAY}, "/console/eod")
        assert "business_day_not_over" in shown and "flash error" in shown
        shown = _post(console, c, "/console/eod/run", {"business_date": "2026-02-30"},
                      "/console/eod")
        assert "invalid_request: business_date must be a date" in shown
    assert _last_audit(console, "end_of_day").outcome == "invalid_request"
    api.clock.advance(timedelta(hours=17))  # the day is over (and the sessions too)
    c = console.login("finance")
    _refused_for(console, "/console/eod/run", {"business_date": API_DAY}, "/console/eod")
    shown = _post(console, c, "/console/eod/run", {"business_date": API_DAY}, "/console/eod")
    assert "flash ok" in shown and "1 settlements, ¥11.95" in shown and "2 log entries" in shown
    assert re.search(r"[1-9] positions, \d+ instructions", shown)
    assert shown.count("Run end of day") == 1  # the form; no day before the sealed one runs
    row = _last_audit(console, "end_of_day")
    assert row.outcome == "ok" and row.username == "finance" and row.target == API_DAY
    assert '"settled": 1' in row.after or '"settled":1' in row.after
    again = api.ok("POST", "/v1/clearing/end_of_day", api.operator_key,
                   {"business_date": API_DAY})
    # the console ran the API's job
    assert again["resumed"] == ["settle", "credit", "seal", "clear"]
    api.verify()


def test_settlement_page_caps_and_terms(console: Console) -> None:
    api = console.api
    merchant, _ = paid_day(api)
    bank = api.institution["id"]
    c = console.login("admin")
    with console.unchanged("bad caps and terms"):
        shown = _post(console, c, "/console/settlement/caps",
                      {"institution_id": bank, "net_debit_cap": "1.234"}, "/console/settlement")
        assert "invalid_amount: net_debit_cap" in shown
        shown = _post(console, c, "/console/settlement/terms",
                      {"merchant_id": merchant["id"], "delay_days": "31"}, "/console/settlement")
        assert "invalid_request: delay_days must be from 0 to 30" in shown
        shown = _post(console, c, "/console/settlement/terms",
                      {"merchant_id": "mch_nobody", "delay_days": "0"}, "/console/settlement")
        assert "party_not_found" in shown
    _refused_for(console, "/console/settlement/caps",
                 {"institution_id": bank, "net_debit_cap": "100.00"}, "/console/settlement")
    _post(console, c, "/console/settlement/caps", {"institution_id": bank,
                                                   "net_debit_cap": "100.00"},
          "/console/settlement")
    shown = _post(console, c, "/console/settlement/terms",
                  {"merchant_id": merchant["id"], "delay_days": "0"}, "/console/settlement")
    assert "T+0" in shown and "¥100.00" in shown
    row = _last_audit(console, "net_debit_cap")
    assert row.outcome == "ok" and row.target == bank and "10000" in row.after
    api.clock.advance(timedelta(hours=17))
    api.ok("POST", "/v1/clearing/end_of_day", api.operator_key, {"business_date": API_DAY})
    page = console.login("support").get(f"/console/settlement?day={API_DAY}").text
    assert "¥11.95" in page and merchant["id"] in page and "1 in all" in page  # T+0
    assert "cap exceeded" in page  # owes ¥500.00 (the top-up), cap ¥100.00
    assert 'id="set-cap"' not in page  # support reads, does not set


def test_statements_downloads_and_verify_chain(console: Console) -> None:
    api = console.api
    merchant, order = paid_day(api)
    api.clock.advance(timedelta(hours=17))
    api.ok("POST", "/v1/clearing/end_of_day", api.operator_key, {"business_date": API_DAY})
    c = console.login("support")
    page = c.get(f"/console/statements?owner={merchant['id']}&day={API_DAY}").text
    assert f"/console/statements/{merchant['id']}/{API_DAY}.mt940" in page
    assert "2026-01-05" in page.split('id="heads"')[1]
    for fmt, marker in (("csv", "opening_balance"), ("camt053", "<Stmt>"), (
            "mt940", ":60F:"), ("proofs", "statement_proofs")):
        r = c.get(f"/console/statements/{merchant['id']}/{API_DAY}.{fmt}")
        assert r.status_code == 200 and marker in r.text, (fmt, r.text[:200])
        assert "attachment" in r.headers["content-disposition"]
        ours = api.client.get(f"/v1/clearing/statements/{merchant['id']}/{API_DAY}.{fmt}",
                              headers={"Authorization": f"Bearer {api.operator_key}"})
        assert fmt == "camt053" or r.content == ours.content
    assert c.get(f"/console/statements/mch_nobody/{API_DAY}.csv").status_code == 404
    assert c.get(f"/console/statements/{merchant['id']}/{API_DAY}.pdf").status_code == 404
    assert "The chain verifies: 1 signed heads" in c.get("/console/statements?verify=1").text
    c.get("/console/lang/zh?next=/console/statements")
    assert "哈希链校验通过" in c.get("/console/statements?verify=1").text
    c.get("/console/lang/en?next=/console/statements")
    receipt = c.get(f"/console/receipts/{order['id']}.json")
    assert receipt.status_code == 200 and receipt.json()["object"] == "e_receipt"
    detail = c.get(f"/console/payments/{order['id']}").text
    assert "sealed in the head of 2026-01-05" in detail
    with api.rt.engine.begin() as conn:  # someone edits the sealed log behind our back
        conn.execute(text("UPDATE clearing_log_leaves SET leaf_hash = :h WHERE leaf_index = 0"),
                      {"h": b"\x00" * 32})
    shown = c.get("/console/statements?verify=1").text
    assert "does NOT verify" in shown and "entry_edited" in shown


def test_reconciliation_upload_and_resolve(console: Console) -> None:
    api = console.api
    paid_day(api)
    bank = api.institution["id"]
    api.clock.advance(timedelta(hours=17))
    api.ok("POST", "/v1/clearing/end_of_day", api.operator_key, {"business_date": API_DAY})
    c = console.login("finance")
    statement = c.get(f"/console/statements/{bank}/{API_DAY}.csv").text
    partner, ref = plant_break(statement)
    form = {"institution_id": bank, "business_date": API_DAY, "format": "csv",
            "content": partner}
    _refused_for(console, "/console/reconciliation", form, "/console/reconciliation")
    with console.unchanged("bad files"):
        shown = _post(console, c, "/console/reconciliation", {**form, "content": ""},
                      "/console/reconciliation")
        assert "invalid_file" in shown
        shown = _post(console, c, "/console/reconciliation",
                      {**form, "content": partner.replace("CNY", "USD")},
                      "/console/reconciliation")
        assert "currency_mismatch" in shown
    shown = _post(console, c, "/console/reconciliation", form, "/console/reconciliation")
    assert 'data-kind="amount_mismatch"' in shown and ref in shown
    item = api.count("clearing_recon_items")
    assert item >= 1
    with api.rt.engine.connect() as conn:
        item_id, import_id = conn.execute(text(
            "SELECT id, import_id FROM clearing_recon_items WHERE outcome = 'amount_mismatch'"
        )).one()
    path = f"/console/reconciliation/items/{item_id}/resolve"
    with console.unchanged("a resolution without a reason"):
        shown = _post(console, c, path, {"reason": "  ", "import_id": import_id},
                      "/console/reconciliation")
        assert "a reason of 1 to 200 characters is required" in shown
        shown = _post(console, c, path, {"reason": "typo", "debit_account_id": "acc_x",
                                         "credit_account_id": "1", "amount": "0.01"},
                      "/console/reconciliation")
        assert "debit_account_id must be an account id" in shown
    _refused_for(console, path, {"reason": "bank typo"}, "/console/reconciliation")
    accounts = api.accounts(bank)
    debit = accounts["institution_settlement"]["id"].removeprefix("acc_")
    credit_id = api.accounts("plt_platform")["fee_revenue"]["id"]
    entries = api.count("ledger_entries")
    shown = _post(console, c, path, {"reason": "bank booked it a cent high",
                                     "import_id": import_id, "debit_account_id": debit,
                                     "credit_account_id": credit_id, "amount": "0.01"},
                  f"/console/reconciliation?id={import_id}")
    assert "bank booked it a cent high" in shown and "flash ok" in shown
    assert api.count("ledger_entries") == entries + 1  # the correction, through the ledger
    row = _last_audit(console, "recon_resolve")
    assert row.outcome == "ok" and row.target == item_id and "resolved" in row.after
    shown = _post(console, c, path, {"reason": "again"}, "/console/reconciliation")
    assert "invalid_state_transition" in shown
    api.verify()


def test_two_operators_run_end_of_day_at_once(console: Console) -> None:
    api = console.api
    paid_day(api)
    api.clock.advance(timedelta(hours=17))
    clients = [console.login("finance"), console.login("admin")]
    tokens = [console.csrf(c, "/console/eod") for c in clients]
    results: list[int] = []

    def run(i: int) -> None:
        r = clients[i].post("/console/eod/run", data={"business_date": API_DAY,
                                                      "csrf_token": tokens[i]})
        results.append(r.status_code)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [303, 303]
    assert api.count("clearing_settlements") == 1 and api.count("clearing_log_heads") == 1
    assert [r.outcome for r in console.audit_rows() if r.action == "end_of_day"] == ["ok", "ok"]
    api.verify()
