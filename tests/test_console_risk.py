"""The console's risk pages over real HTTP: the review queue (claim, approve, reject through the
risk context's own functions, so the ledger hold is posted or voided), rule set versions
(validated, rolled back), block and allow lists, shadow results and recent decisions, the
overview panel and the payment's risk section; roles, CSRF and bad input refused and audited."""

from __future__ import annotations

import html
import re
from datetime import timedelta
from typing import Any

import httpx

from conftest import Api
from console_support import Console, cheap_hashes, console

assert console and cheap_hashes  # fixtures

REVIEW_BIG = [{"name": "review_big", "expression": "amount >= 5000", "action": "review"}]


def _publish(api: Api, rules: list[dict[str, Any]]) -> None:
    api.ok("POST", "/v1/risk/rule_sets", api.operator_key, {"rules": rules})


def _reviewed_payment(api: Api, amount: int = 6_000) -> tuple[dict[str, Any], dict[str, Any],
                                                               dict[str, Any]]:
    """A payment held for review: (consumer, order, case)."""
    _publish(api, REVIEW_BIG)
    shop, alice = api.merchant(api.service_provider()), api.consumer(funds=10_000)
    order = api.order(shop, amount)
    assert api.pay(alice, order).json()["status"] == "reviewing"
    cases = api.ok("GET", "/v1/risk/cases?status=open", api.operator_key)["data"]
    (case,) = [c for c in cases if c["subject_id"] == order["id"]]
    return alice, order, case


def _post(console: Console, c: httpx.Client, path: str, form: dict[str, str],
          page: str = "/console/risk") -> str:
    """POST a console form with the session's CSRF token; the flash message shown after."""
    r = c.post(path, data={**form, "csrf_token": console.csrf(c, page)})
    assert r.status_code == 303, (r.status_code, r.text)
    text = c.get(r.headers["location"]).text
    found = re.search(r'<div class="flash (\w+)" role="status">([^<]*)</div>', text)
    assert found, "no message shown"
    return f"{found.group(1)}: {html.unescape(found.group(2))}"


def _audit(console: Console, action: str) -> list[Any]:
    return [a for a in console.audit_rows() if a.action == action]


def test_claim_and_approve_a_case_posts_the_hold(console: Console) -> None:
    api = console.api
    alice, order, case = _reviewed_payment(api)
    analyst = console.login("risk-analyst")
    page = analyst.get("/console/risk").text
    row = page[page.index(f'data-id="{case["id"]}"'):]
    row = row[:row.index("</tr>")]
    assert order["id"] in row and "¥60.00" in row and "review_big" in row
    assert alice["id"] in row and order["merchant_id"] in row
    assert _post(console, analyst, f"/console/risk/cases/{case['id']}/claim", {}) == "ok: Done."
    claimed = api.ok("GET", f"/v1/risk/cases/{case['id']}", api.operator_key)
    assert claimed["status"] == "claimed" and claimed["assignee"] == "risk-analyst"
    # Another operator may not decide a case someone holds; nothing changes.
    admin = console.login("admin")
    assert f'id="approve-{case["id"]}"' not in admin.get("/console/risk").text
    with console.unchanged("a claimed case"):
        shown = _post(console, admin, f"/console/risk/cases/{case['id']}/decide",
                      {"decision": "approve"})
    assert shown.startswith("error: risk_case_claimed")
    shown = _post(console, analyst, f"/console/risk/cases/{case['id']}/decide",
                  {"decision": "approve", "note": "called the payer"})
    assert shown == "ok: Done."
    assert api.get_order(order)["status"] == "paid" and api.balance(alice) == 4_000
    done = api.ok("GET", f"/v1/risk/cases/{case['id']}", api.operator_key)
    assert done["status"] == "approved" and done["note"] == "called the payer"
    assert case["id"] not in analyst.get("/console/risk").text
    rows = _audit(console, "risk_claim") + _audit(console, "risk_decide")
    assert [(a.username, a.outcome, a.target) for a in rows] == [
        ("risk-analyst", "ok", case["id"]), ("admin", "risk_case_claimed", case["id"]),
        ("risk-analyst", "ok", case["id"])]
    assert '"status":"claimed"' in rows[2].before and '"status":"approved"' in rows[2].after
    # The payment's page shows its decision; the overview's panel counts the review.
    detail = console.login("support").get(f"/console/payments/{order['id']}").text
    section = detail[detail.index('id="risk-decision"'):]
    assert "review_big" in section and "approved" in section and "called the payer" in section
    charts = analyst.get("/console/api/overview").json()["charts"]
    blocked, reviewed = charts["risk"]["datasets"]
    assert sum(reviewed["data"]) == 1 and sum(blocked["data"]) == 0
    assert "shown once the risk capability" not in analyst.get("/console/overview").text.lower()
    api.verify()


def test_rejecting_a_case_voids_the_hold(console: Console) -> None:
    api = console.api
    alice, order, case = _reviewed_payment(api)
    analyst = console.login("risk-analyst")
    shown = _post(console, analyst, f"/console/risk/cases/{case['id']}/decide",
                  {"decision": "reject", "note": "stolen phone"})
    assert shown == "ok: Done."
    assert api.get_order(order)["status"] == "declined"
    wallet = api.ok("GET", "/v1/wallet", alice["api_key"])
    assert wallet["balance"] == wallet["available"] == 10_000
    # Deciding again is refused with the API's code, and audited.
    with console.unchanged("a closed case"):
        again = _post(console, analyst, f"/console/risk/cases/{case['id']}/decide",
                      {"decision": "approve"})
    assert again.startswith("error: risk_case_closed")
    assert [a.outcome for a in _audit(console, "risk_decide")] == ["ok", "risk_case_closed"]
    api.verify()


def test_other_roles_are_refused_the_risk_pages(console: Console) -> None:
    api = console.api
    _alice, _order, case = _reviewed_payment(api)
    for user in ("support", "finance"):
        c = console.login(user)
        assert 'id="nav-risk"' not in c.get("/console/overview").text
        for page in ("/console/risk", "/console/risk/rules", "/console/risk/decisions"):
            r = c.get(page)
            assert r.status_code == 403 and "may not do this" in r.text, page
        token = console.csrf(c)
        with console.unchanged("a refused role"):
            for path, form in ((f"/console/risk/cases/{case['id']}/decide",
                                {"decision": "approve"}),
                               ("/console/risk/lists", {"list": "block", "value": "dev-1"})):
                r = c.post(path, data={**form, "csrf_token": token})
                assert r.status_code == 403
    assert api.ok("GET", f"/v1/risk/cases/{case['id']}", api.operator_key)["status"] == "open"
    assert not [a for a in console.audit_rows() if a.action.startswith("risk_")]


def test_missing_csrf_and_bad_input_change_nothing(console: Console) -> None:
    api = console.api
    _alice, order, case = _reviewed_payment(api)
    analyst = console.login("risk-analyst")
    with console.unchanged("no CSRF token"):
        for path, form in ((f"/console/risk/cases/{case['id']}/claim", {}),
                           (f"/console/risk/cases/{case['id']}/decide", {"decision": "approve"}),
                           ("/console/risk/rules", {"rules": "[]"}),
                           ("/console/risk/rules/0/activate", {}),
                           ("/console/risk/lists", {"list": "block", "value": "dev-1"})):
            r = analyst.post(path, data=form)
            assert r.status_code == 403 and "did not come from the console" in r.text, path
    assert [a.outcome for a in console.audit_rows() if a.action.startswith("risk_")] == [
        "csrf_refused"] * 5
    with console.unchanged("bad input"):
        decide = f"/console/risk/cases/{case['id']}/decide"
        assert _post(console, analyst, decide, {"decision": "maybe"}).startswith(
            "error: invalid_request")
        assert _post(console, analyst, decide, {"decision": "reject", "note": "x" * 201}
                     ).startswith("error: invalid_request: note is too long")
        assert _post(console, analyst, "/console/risk/cases/case_nope/claim", {}).startswith(
            "error: risk_case_not_found")
        assert _post(console, analyst, "/console/risk/lists",
                     {"list": "block", "value": "dev-1", "ttl_h": "soon"}).startswith(
            "error: invalid_request: the expiry is a whole number of hours")
        assert _post(console, analyst, "/console/risk/lists",
                     {"list": "grey", "value": "dev-1"}).startswith("error: invalid_request")
        assert _post(console, analyst, "/console/risk/lists/remove",
                     {"list": "block", "value": "dev-absent"}).startswith("error: not_found")
    assert api.get_order(order)["status"] == "reviewing"


def test_rule_sets_are_validated_versioned_and_rolled_back(console: Console) -> None:
    api = console.api
    analyst = console.login("risk-analyst")
    page = analyst.get("/console/risk/rules").text
    assert "Active rule set: version built-in (0)" in page
    assert 'data-rule="burst_1m"' in page and "c_count_1m &gt;= 10" in page
    with console.unchanged("refused rule sets"):
        for rules, error in (
                ('[{"name": "odd", "expression": "amount >>= 1"}]', "'odd' does not compile"),
                ('[{"name": "ghost", "expression": "ghost_feature > 1"}]',
                 "'ghost' names unknown features: ghost_feature"),
                ("[{not json", "the rules are not valid JSON"),
                ('{"name": "x"}', "the rules are a JSON list")):
            shown = _post(console, analyst, "/console/risk/rules",
                          {"rules": rules, "review_score": "60", "block_score": "100"},
                          "/console/risk/rules")
            assert shown.startswith("error: risk_rule_invalid") and error in shown, shown
    assert api.ok("GET", "/v1/risk/rules", api.operator_key)["version"] == 0
    rules = ('[{"name": "review_big", "expression": "amount >= 5000", "action": "review"},'
             ' {"name": "watch_small", "expression": "amount < 100", "shadow": true,'
             ' "weight": 5, "description": "watching"}]')
    assert _post(console, analyst, "/console/risk/rules",
                 {"rules": rules, "review_score": "50", "block_score": "90", "note": "v1"},
                 "/console/risk/rules") == "ok: Done."
    active = api.ok("GET", "/v1/risk/rules", api.operator_key)
    assert active["version"] == 1 and active["review_score"] == 50.0
    assert [(r["name"], r["shadow"]) for r in active["rules"]] == [("review_big", False),
                                                                    ("watch_small", True)]
    page = analyst.get("/console/risk/rules").text
    assert "Active rule set: version 1" in page and 'data-rule="watch_small"' in page
    assert 'id="activate-0"' in page and 'id="activate-1"' not in page
    # Roll back to the built-in set, and look at version 1 again.
    assert _post(console, analyst, "/console/risk/rules/0/activate", {},
                 "/console/risk/rules") == "ok: Done."
    assert api.ok("GET", "/v1/risk/rules", api.operator_key)["version"] == 0
    old = analyst.get("/console/risk/rules?version=1").text
    assert "Rules of version 1" in old and 'data-rule="watch_small"' in old
    assert _post(console, analyst, "/console/risk/rules/7/activate", {},
                 "/console/risk/rules").startswith("error: not_found")
    assert [a.outcome for a in _audit(console, "risk_publish")] == ["risk_rule_invalid"] * 4 + [
        "ok"]
    assert [a.outcome for a in _audit(console, "risk_activate")] == ["ok", "not_found"]


def test_block_and_allow_lists_with_expiry(console: Console) -> None:
    api = console.api
    admin = console.login("admin")
    assert _post(console, admin, "/console/risk/lists",
                 {"list": "block", "value": "dev-stolen", "reason": "reported", "ttl_h": "48"},
                 "/console/risk/rules") == "ok: Done."
    assert _post(console, admin, "/console/risk/lists",
                 {"list": "allow", "value": "cus_trusted"}, "/console/risk/rules") == "ok: Done."
    entries = {e["value"]: e for e in api.ok("GET", "/v1/risk/lists", api.operator_key)["data"]}
    assert entries["dev-stolen"]["list"] == "block" and entries["dev-stolen"]["expires_at"]
    assert entries["cus_trusted"]["expires_at"] is None
    page = admin.get("/console/risk/rules").text
    assert 'data-entry="block:dev-stolen"' in page and "reported" in page
    # The list acts at once: a payment from the blocked device is declined.
    shop, mallory = api.merchant(api.service_provider()), api.consumer(funds=5_000)
    r = api.call("POST", f"/v1/orders/{api.order(shop, 300)['id']}/pay", mallory["api_key"],
                 {"device_id": "dev-stolen"})
    assert r.status_code == 402
    assert _post(console, admin, "/console/risk/lists/remove",
                 {"list": "block", "value": "dev-stolen"}, "/console/risk/rules") == "ok: Done."
    assert [e["value"] for e in api.ok("GET", "/v1/risk/lists", api.operator_key)["data"]] == [
        "cus_trusted"]
    rows = _audit(console, "risk_list_add") + _audit(console, "risk_list_remove")
    assert [(a.target, a.outcome) for a in rows] == [
        ("block:dev-stolen", "ok"), ("allow:cus_trusted", "ok"), ("block:dev-stolen", "ok")]
    assert '"reason":"reported"' in rows[2].before and rows[2].after is None


def test_shadow_results_and_recent_decisions(console: Console) -> None:
    api = console.api
    _publish(api, [*REVIEW_BIG, {"name": "watch_small", "expression": "amount < 1000",
                                 "shadow": True}])
    shop, alice = api.merchant(api.service_provider()), api.consumer(funds=50_000)
    for amount in (100, 200, 6_000):
        assert api.pay(alice, api.order(shop, amount)).status_code == 200
    analyst = console.login("risk-analyst")
    page = analyst.get("/console/risk/decisions").text
    assert "3 decisions in the last 24 h" in page

    def counts(name: str) -> tuple[str, str]:
        row = page[page.index(f'data-rule="{name}"'):]
        row = row[:row.index("</tr>")]
        live = re.search(r'class="num live">(\d+)<', row)
        shadow = re.search(r'class="num shadowed">(\d+)<', row)
        assert live and shadow
        return live.group(1), shadow.group(1)

    assert counts("review_big") == ("1", "0") and counts("watch_small") == ("0", "2")
    assert page.count('data-outcome="allow"') == 2 and page.count('data-outcome="review"') == 1
    only = analyst.get("/console/risk/decisions", params={"outcome": "review"}).text
    assert only.count('data-outcome="review"') == 1 and 'data-outcome="allow"' not in only
    api.clock.advance(timedelta(hours=25))
    analyst = console.login("risk-analyst")  # the session ended; the window moved on
    assert "0 decisions in the last 24 h" in analyst.get("/console/risk/decisions").text
    # Chinese too.
    analyst.get("/console/lang/zh")
    assert "近 24 小时规则命中" in analyst.get("/console/risk/decisions").text
