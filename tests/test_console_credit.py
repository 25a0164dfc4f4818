"""The console's credit pages over HTTP: the loan list and a loan's detail show real data; a
repayment goes through ``do_repay`` and is audited; support is refused; no CSRF token is
refused; bad input is a clear error with nothing changed."""

from __future__ import annotations

from datetime import UTC, date, datetime

from console_support import Console, cheap_hashes, console
from credit_console_helpers import drawn_loan
from lianjie.committer import run_now
from lianjie.credit import require_loan

assert console and cheap_hashes  # fixtures


def _owed(console: Console, loan_id: str) -> int:
    return int(run_now(console.api.rt.engine, lambda c: require_loan(c, loan_id))["owed"])


def test_loans_and_repayment(console: Console) -> None:
    w = drawn_loan(console.api)
    loan_id, bank = w["loan"]["id"], w["bank"]["id"]
    finance = console.login("finance")
    listed = finance.get("/console/loans").text
    assert f'data-loan="{loan_id}"' in listed and "active" in listed
    assert loan_id not in finance.get("/console/loans?status=paid_off").text
    detail = finance.get(f"/console/loans/{loan_id}")
    assert detail.status_code == 200
    assert f'data-funder="{bank}"' in detail.text and "80.00%" in detail.text
    assert "20.00%" in detail.text and 'id="loan-schedule"' in detail.text
    assert finance.get("/console/loans/loan_nope").status_code == 404

    owed = _owed(console, loan_id)
    path = f"/console/loans/{loan_id}/repay"
    csrf = console.csrf(finance, f"/console/loans/{loan_id}")
    r = finance.post(path, data={"amount": "100.00", "csrf_token": csrf})
    assert r.status_code == 303
    assert _owed(console, loan_id) == owed - 10_000
    row = console.audit_rows()[-1]
    assert row.action == "credit_repay" and row.target == loan_id and row.outcome == "ok"

    # bad input: more than owed, and not a number; a clear error, nothing changed
    with console.unchanged("a refused repayment"):
        r = finance.post(path, data={"amount": "99999.00", "csrf_token": csrf})
        flash = finance.get(r.headers["location"]).text
        assert "repayment_exceeds_owed" in flash
        r = finance.post(path, data={"amount": "ten", "csrf_token": csrf})
        assert r.status_code == 303
        assert console.audit_rows()[-1].outcome != "ok"

        # support may look but not repay; no CSRF token is refused
        support = console.login("support")
        assert support.get(f"/console/loans/{loan_id}").status_code == 200
        assert 'id="repay-form"' not in support.get(f"/console/loans/{loan_id}").text
        r = support.post(path, data={"amount": "1.00",
                                     "csrf_token": console.csrf(support)})
        assert r.status_code == 403 and "Your role (Support) may not do this" in r.text
        assert finance.post(path, data={"amount": "1.00"}).status_code == 403


def test_funders_exposure_and_limit(console: Console) -> None:
    w = drawn_loan(console.api, funded=0)
    bank = w["bank"]["id"]
    finance = console.login("finance")
    text = finance.get("/console/funders").text
    assert f'data-funder="{bank}"' in text and "¥1,200.00" in text
    path = f"/console/funders/{bank}/limit"
    csrf = console.csrf(finance, "/console/funders")
    r = finance.post(path, data={"exposure_max": "5000", "currency": "CNY", "csrf_token": csrf})
    assert r.status_code == 303
    assert "¥5,000.00" in finance.get("/console/funders").text
    assert console.audit_rows()[-1].action == "credit_funder_limit"
    with console.unchanged("a refused limit"):
        finance.post(path, data={"exposure_max": "-1", "currency": "CNY", "csrf_token": csrf})
        assert console.audit_rows()[-1].outcome != "ok"
        support = console.login("support")
        r = support.post(path, data={"exposure_max": "1", "currency": "CNY",
                                     "csrf_token": console.csrf(support)})
        assert r.status_code == 403


def test_applications_filtered_by_status(console: Console) -> None:
    w = drawn_loan(console.api, funded=0)
    app_id = w["loan"]["application_id"]
    support = console.login("support")
    text = support.get("/console/applications").text
    assert f'data-app="{app_id}"' in text and "drawn" in text
    assert app_id in support.get("/console/applications?status=drawn").text
    assert app_id not in support.get("/console/applications?status=declined").text


def test_portfolio_buckets_and_products(console: Console) -> None:
    w = drawn_loan(console.api, funded=0)
    support = console.login("support")
    text = support.get("/console/portfolio").text
    assert w["product"]["id"] in text and "80.00%" in text
    assert "¥1,500.00" in text  # the drawn loan, current
    chart = support.get("/console/api/portfolio").json()["charts"]["credit_buckets"]
    assert chart["datasets"][0]["data"][0] == 1500.0


def test_portfolio_vintage_curves(console: Console) -> None:
    """Two 150.00 loans drawn on 5 January: one repaid at once, one never. The unpaid one's
    first instalment falls due a month later and it is 30 days past due 61 days after
    disbursal: month on book 3 (days 60-89). So the January vintage is 0%, 0%, 50% at months on
    book 1-3 when the end of day has closed 16 March (day 70: three months shown)."""
    api = console.api
    paid, unpaid = drawn_loan(api), drawn_loan(api, funded=0)
    mkey = paid["merchant"]["api_key"]
    api.ok("POST", f"/v1/credit/loans/{paid['loan']['id']}/repayments", mkey,
           {"amount": 150_000})
    last = date(2026, 3, 16)
    api.clock.set(datetime(2026, 3, 17, 0, 0, tzinfo=UTC))  # 08:00 in Shanghai
    api.ok("POST", "/v1/credit/end_of_day", api.operator_key,
           {"business_date": last.isoformat()})
    loan = run_now(api.rt.engine, lambda c: require_loan(c, unpaid["loan"]["id"]))
    assert loan["dpd30_day"] - loan["disbursed_day"] == 61

    support = console.login("support")
    text = support.get("/console/portfolio").text
    row = text[text.index('data-vintage="2026-01"'):]
    row = row[:row.index("</tr>")]
    assert "¥3,000.00" in row
    assert [c.split(">")[1] for c in row.split('data-mob="')[1:]] == [
        "0.00%</td", "0.00%</td", "50.00%</td"]
    chart = support.get("/console/api/portfolio").json()["charts"]["credit_vintages"]
    assert chart["labels"] == ["MOB 1", "MOB 2", "MOB 3"]
    assert chart["datasets"] == [{"label": "2026-01", "data": [0.0, 0.0, 50.0]}]
    support.get("/console/lang/zh", params={"next": "/console/portfolio"})
    assert "账龄曲线" in support.get("/console/portfolio").text
    chart = support.get("/console/api/portfolio").json()["charts"]["credit_vintages"]
    assert chart["labels"] == ["第1月", "第2月", "第3月"]
