"""The operator console over real HTTP: log-in, sessions that expire, throttling, CSRF, roles,
actions that go through the payments context's own rules, and the audit log."""

from __future__ import annotations

import re
import threading
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, select

from conftest import Api
from console_support import PASSWORD, Console, cheap_hashes, console
from lianjie.cli import main
from lianjie.console import operators
from lianjie.console.cli import ensure_demo_admin
from lianjie.console.schema import sessions

assert console and cheap_hashes  # fixtures


def _merchant(api: Api) -> dict[str, object]:
    return api.merchant(api.service_provider(), approve=False)


def test_log_in_sets_a_safe_cookie_and_expires(console: Console) -> None:
    c = console.client()
    r = c.get("/console/merchants")
    assert r.status_code == 303 and r.headers["location"].startswith("/console/login?next=")
    bad = c.post("/console/login", data={"username": "admin", "password": "wrong password!"})
    assert bad.status_code == 401 and "Wrong user name or password" in bad.text
    assert "lianjie_console" not in c.cookies
    r = c.post("/console/login", data={"username": "admin", "password": PASSWORD,
                                       "next": "/console/merchants"})
    assert r.status_code == 303 and r.headers["location"] == "/console/merchants"
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Path=/console" in cookie
    page = c.get("/console/merchants")
    assert page.status_code == 200 and page.headers["x-frame-options"] == "DENY"
    with console.api.rt.engine.connect() as conn:  # only a hash of the token is stored
        stored = conn.execute(select(sessions.c.token_hash)).scalars().all()
    assert c.cookies["lianjie_console"].encode() not in stored and len(stored) == 1
    console.api.clock.advance(operators.SESSION_TTL + timedelta(seconds=1))
    assert c.get("/console/merchants").status_code == 303
    assert c.get("/console/api/overview").status_code == 401


def test_log_out_ends_the_session(console: Console) -> None:
    c = console.login("support")
    token = console.csrf(c)
    stolen = dict(c.cookies)
    assert c.post("/console/logout", data={"csrf_token": token}).status_code == 303
    replay = console.client()
    replay.cookies.update(stolen)
    assert replay.get("/console/overview").status_code == 303


def test_password_guessing_is_throttled(console: Console) -> None:
    c = console.client()
    for _ in range(operators.LOGIN_FAILURES_MAX):
        r = c.post("/console/login", data={"username": "finance", "password": "guess" * 3})
        assert r.status_code == 401
    r = c.post("/console/login", data={"username": "finance", "password": PASSWORD})
    assert r.status_code == 429 and "lianjie_console" not in c.cookies
    console.login("admin")  # other users are not locked out
    console.api.clock.advance(operators.LOGIN_WINDOW + timedelta(seconds=1))
    console.login("finance")


def test_actions_need_the_session_csrf_token(console: Console) -> None:
    api = console.api
    merchant = _merchant(api)
    c = console.login("admin")
    path = f"/console/merchants/{merchant['id']}/kyc"
    other = console.csrf(console.login("risk-analyst"))
    with console.unchanged("payments"):
        for form in ({"decision": "approved"},
                     {"decision": "approved", "csrf_token": ""},
                     {"decision": "approved", "csrf_token": other}):
            r = c.post(path, data=form)
            assert r.status_code == 403 and "did not come from the console" in r.text
    assert api.ok("GET", f"/v1/merchants/{merchant['id']}", api.operator_key)[
        "kyc_status"] == "pending"
    refused = [a for a in console.audit_rows() if a.action == "kyc"]
    assert [a.outcome for a in refused] == ["csrf_refused"] * 3


@pytest.mark.parametrize("page", ["/console/ledger", "/console/ledger/verify", "/console/audit",
                                  "/console/audit/operators"])
def test_support_may_not_open_finance_and_admin_pages(console: Console, page: str) -> None:
    c = console.login("support")
    r = c.get(page)
    assert r.status_code == 403 and "Your role (Support) may not do this" in r.text
    assert f'href="{page}"' not in c.get("/console/overview").text


def test_wrong_role_is_refused_and_audited(console: Console) -> None:
    api = console.api
    merchant = _merchant(api)
    mid = merchant["id"]
    for user in ("support", "finance"):
        c = console.login(user)
        token = console.csrf(c, f"/console/merchants/{mid}")
        page = c.get(f"/console/merchants/{mid}").text
        assert 'id="kyc-approve"' not in page  # not offered ...
        r = c.post(f"/console/merchants/{mid}/kyc",
                   data={"decision": "approved", "csrf_token": token})
        assert r.status_code == 403 and "decide KYC" in r.text  # ... and refused if forced
    assert api.ok("GET", f"/v1/merchants/{mid}", api.operator_key)["kyc_status"] == "pending"
    rows = [a for a in console.audit_rows() if a.action == "kyc"]
    assert [(a.username, a.outcome) for a in rows] == [("support", "role_refused"),
                                                       ("finance", "role_refused")]


def test_kyc_approval_shares_the_api_rules_and_is_audited(console: Console) -> None:
    api = console.api
    merchant = _merchant(api)
    mid = merchant["id"]
    c = console.login("risk-analyst")
    token = console.csrf(c, f"/console/merchants/{mid}")
    r = c.post(f"/console/merchants/{mid}/kyc", data={"decision": "approved",
                                                      "csrf_token": token})
    assert r.status_code == 303 and r.headers["location"] == f"/console/merchants/{mid}"
    assert "Done." in c.get(r.headers["location"]).text
    assert api.ok("GET", f"/v1/merchants/{mid}", api.operator_key)["kyc_status"] == "approved"
    again = c.post(f"/console/merchants/{mid}/kyc", data={"decision": "rejected",
                                                          "csrf_token": token})
    assert "invalid_state_transition" in c.get(again.headers["location"]).text
    rows = [a for a in console.audit_rows() if a.action == "kyc"]
    assert [(r.outcome, r.target) for r in rows] == [("ok", mid),
                                                     ("invalid_state_transition", mid)]
    assert '"kyc_status":"pending"' in rows[0].before
    assert '"kyc_status":"approved"' in rows[0].after
    # The merchant now collects, as the API says once KYC is approved.
    consumer = api.consumer(funds=5_000)
    assert api.pay(consumer, api.order(merchant, 1_000)).status_code == 200


def test_two_operators_racing_to_decide_one_kyc(console: Console) -> None:
    api = console.api
    mid = _merchant(api)["id"]
    clients = [console.login("admin"), console.login("risk-analyst")]
    tokens = [console.csrf(c) for c in clients]
    results: list[str] = []

    def decide(i: int) -> None:
        r = clients[i].post(f"/console/merchants/{mid}/kyc",
                            data={"decision": ("approved", "rejected")[i],
                                  "csrf_token": tokens[i]})
        results.append(r.headers["location"])

    threads = [threading.Thread(target=decide, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    outcomes = sorted(a.outcome for a in console.audit_rows() if a.action == "kyc")
    assert outcomes == ["invalid_state_transition", "ok"]
    winner = next(a for a in console.audit_rows() if a.action == "kyc" and a.outcome == "ok")
    final = api.ok("GET", f"/v1/merchants/{mid}", api.operator_key)["kyc_status"]
    assert final in winner.after


def test_fee_rate_bounds_and_freezing(console: Console) -> None:
    api = console.api
    merchant = api.merchant(api.service_provider())
    mid = merchant["id"]
    finance = console.login("finance")
    token = console.csrf(finance)
    with console.unchanged("bad fee rate"):
        for raw in ("100000", "-1", "abc", "3.5"):
            r = finance.post(f"/console/merchants/{mid}/fee_rate",
                             data={"fee_rate_bps": raw, "csrf_token": token})
            assert "fee_rate_out_of_bounds" in finance.get(r.headers["location"]).text
    r = finance.post(f"/console/merchants/{mid}/fee_rate",
                     data={"fee_rate_bps": "45", "csrf_token": token})
    assert api.ok("GET", f"/v1/merchants/{mid}", api.operator_key)["fee_rate_bps"] == 45
    assert finance.post(f"/console/parties/{mid}/freeze",
                        data={"csrf_token": token}).status_code == 403
    risk = console.login("risk-analyst")
    r = risk.post(f"/console/parties/{mid}/freeze", data={"csrf_token": console.csrf(risk)})
    assert r.status_code == 303
    refused = api.call("POST", "/v1/orders", merchant["api_key"],
                       {"out_trade_no": "F1", "amount": 100, "description": "x"})
    assert refused.json()["error"]["code"] == "merchant_frozen"
    api.verify()


def test_find_a_payment_and_read_its_postings(console: Console) -> None:
    api = console.api
    # a receiver that is not listening: the delivery is recorded as failed, with its error
    merchant = api.merchant(api.service_provider(), webhook_url="http://127.0.0.1:9/hook")
    consumer = api.consumer(funds=10_000)
    order = api.order(merchant, 2_500, out_trade_no="T-2024-0001")
    assert api.pay(consumer, order).status_code == 200
    refund = api.ok("POST", f"/v1/orders/{order['id']}/refunds", merchant["api_key"],
                    {"out_refund_no": "R1", "amount": 500, "reason": "cold"})
    paid = api.get_order(order)
    api.background.tick()  # enqueue and attempt the webhooks
    c = console.login("support")
    for q in ("T-2024-0001", order["id"], refund["id"], paid["entry_id"], refund["entry_id"]):
        r = c.get("/console/payments", params={"q": q})
        assert r.status_code == 303 and r.headers["location"] == f"/console/payments/{order['id']}"
    page = c.get(f"/console/payments/{order['id']}").text
    postings = page.split('id="postings"')[1].split("</table>")[0]
    assert paid["entry_id"] in postings and refund["entry_id"] in postings
    legs = sum(len(api.ok("GET", f"/v1/ledger_entries/{e}", api.operator_key)["postings"])
               for e in (paid["entry_id"], refund["entry_id"]))
    assert postings.count("<tr>") == 1 + legs  # the header, then every posting of both
    assert "¥25.00" in postings and "¥5.00" in postings
    assert "R1" in page and "Refund ¥5.00" in page
    webhooks = page.split('id="webhooks"')[1].split("</table>")[0]
    assert "payment.succeeded" in webhooks and "refund.succeeded" in webhooks
    assert "http://127.0.0.1:9/hook" in webhooks
    assert c.get("/console/payments/ord_missing").status_code == 404
    second = api.order(merchant, 700)
    many = c.get("/console/payments", params={"q": merchant["id"]})
    assert many.status_code == 200 and order["id"] in many.text and second["id"] in many.text


def test_overview_shows_the_last_day_with_payments(console: Console) -> None:
    api = console.api
    merchant = api.merchant(api.service_provider())
    consumer = api.consumer(funds=10_000)
    for amount in (1_000, 2_000):
        assert api.pay(consumer, api.order(merchant, amount)).status_code == 200
    api.order(merchant, 500)  # created, never paid
    api.clock.advance(timedelta(days=40))  # the data is old; the overview still finds it
    c = console.login("support")
    data = c.get("/console/api/overview").json()
    assert data["day"] == "2026-01-05"
    assert data["figures"]["takings"] == "¥30.00" and data["figures"]["payments"] == "2"
    assert set(data["charts"]) >= {"takings", "per_minute", "success_rate", "refunds",
                                   "top_merchants", "top_sps"}
    assert sum(data["charts"]["takings"]["datasets"][0]["data"]) == 30.0
    assert data["charts"]["top_merchants"]["datasets"][0]["data"] == [30.0]
    empty = c.get("/console/api/overview", params={"day": "2026-01-04"}).json()
    assert empty["figures"]["payments"] == "0"
    assert 'value="2026-01-05"' in c.get("/console/overview").text


def test_language_switch_and_safe_redirects(console: Console) -> None:
    c = console.login("admin")
    r = c.get("/console/lang/zh", params={"next": "/console/merchants"})
    assert r.status_code == 303 and r.headers["location"] == "/console/merchants"
    page = c.get("/console/merchants").text
    assert "商户" in page and "退出" in page
    c.get("/console/lang/en", params={"next": "/console/merchants"})
    assert "Log out" in c.get("/console/merchants").text
    for evil in ("//evil.example/", "https://evil.example/", "/console/..\\x"):
        assert c.get("/console/lang/zh", params={"next": evil}).headers["location"] == \
            "/console/overview"
        fresh = console.client()
        r = fresh.post("/console/login", data={"username": "admin", "password": PASSWORD,
                                               "next": evil})
        assert r.headers["location"] == "/console/overview"


def test_admin_onboards_and_reads_the_audit_log(console: Console) -> None:
    api = console.api
    sp = api.service_provider()
    c = console.login("admin")
    token = console.csrf(c, "/console/merchants")
    r = c.post("/console/merchants", data={"csrf_token": token, "name": "Auntie Wang",
                                           "business_type": "street_food",
                                           "service_provider_id": sp["id"]})
    mid = r.headers["location"].rsplit("/", 1)[1]
    assert mid.startswith("mch_")
    assert api.ok("GET", f"/v1/merchants/{mid}", api.operator_key)["kyc_status"] == "pending"
    log = c.get("/console/audit").text
    assert "onboard" in log and "Auntie Wang" in log and "login" in log
    users = c.get("/console/audit/operators").text.split('id="operators"')[1]
    rows = re.findall(r"<tr><td>([a-z-]+)</td><td>([^<]+)</td><td class=\"num\">(\d+)</td>",
                      users)
    assert rows == [("admin", "Administrator", "1"), ("finance", "Finance", "0"),
                    ("risk-analyst", "Risk analyst", "0"), ("support", "Support", "0")]


def test_add_user_command(engine: Engine, tmp_path: Path,
                          capsys: pytest.CaptureFixture[str]) -> None:
    url = engine.url.render_as_string(hide_password=False)
    assert main(["--database", url, "console", "add-user", "Ops.Lead", "--role",
                 "finance"]) == 0
    out = capsys.readouterr().out
    password = re.search(r"password: (\S+)", out)
    assert password and len(password.group(1)) >= operators.PASSWORD_LENGTH_MIN
    with engine.connect() as conn:
        user = operators.find_user(conn, "ops.lead")
    assert user and user.role == "finance" and password.group(1) not in user.password_hash
    assert operators.check_password(user.password_hash, password.group(1))
    short = tmp_path / "pw"
    short.write_text("short")
    assert main(["--database", url, "console", "add-user", "x1", "--role", "admin",
                 "--password-file", str(short)]) == 2
    assert main(["--database", url, "console", "add-user", "bad name", "--role",
                 "admin"]) == 2


def test_demo_admin_is_created_once_and_logs_in(console: Console, tmp_path: Path) -> None:
    engine = console.api.rt.engine
    user, password = ensure_demo_admin(engine, tmp_path)
    assert (tmp_path / "console_password").read_text().strip() == password
    assert (tmp_path / "console_password").stat().st_mode & 0o077 == 0
    assert ensure_demo_admin(engine, tmp_path) == (user, password)  # kept across runs
    c = console.login(user, password)
    assert 'id="nav-audit"' in c.get("/console/overview").text  # an administrator


def test_the_migration_creates_the_console_tables_as_declared(engine: Engine) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from lianjie.db import metadata

    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    console_diff = [d for d in diff if "console_" in repr(d)]
    assert console_diff == []
