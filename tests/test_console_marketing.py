"""The console's marketing pages over real HTTP, on both databases: campaigns with their budget
chart and report, coupon templates, segments and red packets rendering real data; creating,
funding and ending a campaign, issuing coupons and refreshing a segment through the marketing
context's own rules, audited; wrong roles, missing CSRF tokens and bad input refused with
nothing changed."""

from __future__ import annotations

import json
from typing import Any

import httpx

from conftest import Api
from console_support import Console, cheap_hashes, console
from lianjie.marketing.campaigns import in_holdout

assert console and cheap_hashes  # fixtures

DAY_S = 86_400


def _world(api: Api) -> dict[str, Any]:
    """A campaign with a 10% holdout, a segment of every consumer, a template issued to it, a
    coupon redeemed in a payment and a campaign red packet partly grabbed."""
    op = api.operator_key
    merchant = api.merchant(api.service_provider())
    ends = int(api.clock.now().timestamp()) + 30 * DAY_S
    campaign = api.ok("POST", "/v1/campaigns", op, {"name": "Spring Festival", "budget": 20_000,
                                                    "ends_at": ends, "holdout_bps": 1000})
    # Five consumers, one outside the holdout (which hashes the campaign's random id) first:
    # it holds a coupon and grabs. All five held out: odds 1e-5.
    consumers = sorted((api.consumer(funds=10_000) for _ in range(5)),
                       key=lambda c: in_holdout(campaign["id"], c["id"], 1000))
    assert not in_holdout(campaign["id"], consumers[0]["id"], 1000)
    segment = api.ok("POST", "/v1/segments", op, {"name": "Everyone", "rule": {"kind": "all"}})
    template = api.ok("POST", f"/v1/campaigns/{campaign['id']}/coupon_templates", op,
                      {"name": "3 off", "kind": "fixed", "amount_off": 300})
    issued = api.ok("POST", f"/v1/coupon_templates/{template['id']}/issue", op,
                    {"segment_id": segment["id"]})
    assert issued["issued"] >= 1
    holder = consumers[0]
    coupon = api.ok("GET", "/v1/coupons", holder["api_key"])["data"][0]
    order = api.order(merchant, 1_000)
    r = api.call("POST", f"/v1/orders/{order['id']}/pay", holder["api_key"],
                 {"coupon_id": coupon["id"]})
    assert r.status_code == 200, r.text
    packet = api.ok("POST", f"/v1/campaigns/{campaign['id']}/red_packets", op,
                    {"amount": 500, "shares": 5, "split": "equal"})
    api.ok("POST", f"/v1/red_packets/{packet['id']}/grab", consumers[0]["api_key"], {})
    return {"campaign": campaign, "segment": segment, "template": template, "order": order,
            "coupon": coupon, "packet": packet, "consumers": consumers}


def _post(console: Console, c: httpx.Client, path: str, **form: str) -> str:
    """Post a form with the session's token; the text of the page it goes back to."""
    r = c.post(path, data={**form, "csrf_token": console.csrf(c, "/console/marketing")})
    assert r.status_code == 303, (r.status_code, r.text)
    return c.get(r.headers["location"]).text


def _budget(api: Api, campaign_id: str) -> dict[str, Any]:
    return api.ok("GET", f"/v1/campaigns/{campaign_id}", api.operator_key)


def test_pages_show_real_data_to_every_role(console: Console) -> None:
    api = console.api
    w = _world(api)
    cid = w["campaign"]["id"]
    c = console.login("support")
    assert 'id="nav-marketing"' in c.get("/console/overview").text
    listing = c.get("/console/marketing").text
    assert "Spring Festival" in listing and "¥200.00" in listing and "10.00%" in listing
    assert 'id="campaign-create"' not in listing  # support may look, not act
    detail = c.get(f"/console/marketing/campaigns/{cid}")
    assert detail.status_code == 200
    report = api.ok("GET", f"/v1/campaigns/{cid}/report", api.operator_key)
    assert report["coupons_redeemed"] == 1 and report["budget_spent"] == 400
    assert "¥4.00" in detail.text and 'id="end-campaign"' not in detail.text
    assert 'data-chart="budget"' in detail.text and 'data-chart="uplift"' in detail.text
    charts = c.get(f"/console/api/marketing/campaigns/{cid}").json()["charts"]
    funded, spent, remaining = (d["data"] for d in charts["budget"]["datasets"])
    # fund, coupon subsidy, red packet: the budget burns down posting by posting
    assert funded == [200.0] * 3 and spent == [0.0, 3.0, 8.0]  # packets' money is out too
    assert remaining == [200.0, 197.0, 192.0]
    assert [d["label"] for d in charts["uplift"]["datasets"]] == ["Treated", "Holdout"]
    assert c.get("/console/api/marketing/campaigns/cmp_nope").status_code == 404
    assert c.get("/console/marketing/campaigns/cmp_nope").status_code == 404
    coupons = c.get("/console/marketing/coupons").text
    assert "3 off" in coupons and 'class="inline issue"' not in coupons
    segments = c.get("/console/marketing/segments").text
    assert "Everyone" in segments and "refresh-" not in segments
    packets = c.get("/console/marketing/red_packets").text
    assert w["packet"]["id"] in packets and "1 / 5" in packets
    payment = c.get(f"/console/payments/{w['order']['id']}").text
    assert w["coupon"]["id"] in payment and "Subsidy leg" in payment and "¥3.00" in payment
    panel = c.get("/console/api/overview").json()["charts"]["marketing"]
    assert sum(panel["datasets"][0]["data"]) == 3.0 and sum(panel["datasets"][1]["data"]) == 1.0
    c.get("/console/lang/zh")
    assert "营销活动" in c.get("/console/marketing").text


def test_finance_creates_funds_and_ends_a_campaign_audited(console: Console) -> None:
    api = console.api
    finance = console.login("finance")
    r = finance.post("/console/marketing/campaigns", data={
        "name": "Store visits", "budget": "150.50", "days": "7", "holdout_pct": "10",
        "csrf_token": console.csrf(finance, "/console/marketing")})
    assert r.status_code == 303
    cid = r.headers["location"].rsplit("/", 1)[1]
    assert cid.startswith("cmp_") and "Store visits" in finance.get("/console/marketing").text
    created = _budget(api, cid)
    assert (created["budget"], created["budget_left"], created["holdout_bps"]) == \
        (15_050, 15_050, 1000)
    page = _post(console, finance, f"/console/marketing/campaigns/{cid}/fund", amount="49.50")
    assert "Done." in page and "¥200.00" in page
    assert _budget(api, cid)["budget"] == 20_000
    page = _post(console, finance, f"/console/marketing/campaigns/{cid}/end")
    assert "Done." in page and 'id="end-campaign"' not in page
    ended = _budget(api, cid)
    assert (ended["status"], ended["budget_left"]) == ("ended", 0)
    charts = finance.get(f"/console/api/marketing/campaigns/{cid}").json()["charts"]
    funded, spent, remaining = (d["data"] for d in charts["budget"]["datasets"])
    assert funded == [150.5, 200.0, 200.0] and remaining == [150.5, 200.0, 0.0]
    assert spent == [0.0, 0.0, 0.0]
    rows = [a for a in console.audit_rows() if a.action.startswith("campaign_")]
    assert [(a.action, a.outcome, a.username) for a in rows] == [
        ("campaign_create", "ok", "finance"), ("campaign_fund", "ok", "finance"),
        ("campaign_end", "ok", "finance")]
    assert '"budget_left":15050' in rows[1].before and '"budget_left":20000' in rows[1].after
    assert '"status":"active"' in rows[2].before and '"status":"ended"' in rows[2].after
    api.verify()


def test_issue_and_refresh_are_audited(console: Console) -> None:
    api = console.api
    w = _world(api)
    before = api.ok("GET", f"/v1/campaigns/{w['campaign']['id']}/report", api.operator_key)
    api.consumer()
    admin = console.login("admin")
    page = _post(console, admin, f"/console/marketing/segments/{w['segment']['id']}/refresh")
    assert "Done." in page and ">6<" in page
    page = _post(console, admin, f"/console/marketing/coupon_templates/{w['template']['id']}"
                 "/issue", segment_id=w["segment"]["id"])
    assert "Done." in page
    after = api.ok("GET", f"/v1/campaigns/{w['campaign']['id']}/report", api.operator_key)
    rows = [a for a in console.audit_rows() if a.action in ("segment_refresh", "coupon_issue")]
    assert [(a.action, a.outcome) for a in rows] == [("segment_refresh", "ok"),
                                                      ("coupon_issue", "ok")]
    assert '"size":6' in rows[0].after
    done = json.loads(rows[1].after)  # every member: issued, held out or already holding one
    assert done["issued"] + done["held_out"] + done["skipped"] == 6
    assert done["skipped"] == before["coupons_issued"]
    assert after["coupons_issued"] == before["coupons_issued"] + done["issued"]


def test_wrong_role_and_missing_csrf_are_refused(console: Console) -> None:
    api = console.api
    w = _world(api)
    cid = w["campaign"]["id"]
    support, finance = console.login("support"), console.login("finance")
    posts = [(support, f"/console/marketing/campaigns/{cid}/end", {}, "end a campaign"),
             (support, f"/console/marketing/campaigns/{cid}/fund", {"amount": "10"},
              "fund a campaign"),
             (support, "/console/marketing/campaigns", {"name": "X", "budget": "1",
                                                        "days": "1"}, "create a campaign"),
             (support, f"/console/marketing/coupon_templates/{w['template']['id']}/issue",
              {"segment_id": w["segment"]["id"]}, "issue coupons"),
             (finance, f"/console/marketing/segments/{w['segment']['id']}/refresh", {},
              "refresh a segment")]
    with console.unchanged("refused marketing actions"):
        for client, path, form, what in posts:
            token = console.csrf(client, "/console/marketing")
            r = client.post(path, data={**form, "csrf_token": token})
            assert r.status_code == 403 and what in r.text
        admin = console.login("admin")
        for form in ({}, {"csrf_token": ""}, {"csrf_token": console.csrf(finance)}):
            r = admin.post(f"/console/marketing/campaigns/{cid}/end", data=form)
            assert r.status_code == 403 and "did not come from the console" in r.text
    assert _budget(api, cid)["status"] == "active"
    outcomes = [(a.username, a.action, a.outcome) for a in console.audit_rows()
                if a.action.startswith(("campaign_", "coupon_", "segment_"))]
    assert outcomes == [("support", "campaign_end", "role_refused"),
                        ("support", "campaign_fund", "role_refused"),
                        ("support", "campaign_create", "role_refused"),
                        ("support", "coupon_issue", "role_refused"),
                        ("finance", "segment_refresh", "role_refused")] + \
        [("admin", "campaign_end", "csrf_refused")] * 3


def test_bad_input_is_shown_and_changes_nothing(console: Console) -> None:
    api = console.api
    w = _world(api)
    cid = w["campaign"]["id"]
    finance = console.login("finance")
    create = "/console/marketing/campaigns"
    good = {"name": "Ok", "budget": "10", "days": "7", "holdout_pct": "0"}
    cases = [(create, {**good, "budget": "abc"}, "invalid_amount"),
             (create, {**good, "budget": "1.234"}, "invalid_amount"),
             (create, {**good, "budget": "-5"}, "invalid_amount"),
             (create, {**good, "budget": ""}, "invalid_request"),
             (create, {**good, "days": "0"}, "invalid_request"),
             (create, {**good, "holdout_pct": "90"}, "invalid_request"),
             (create, {**good, "name": ""}, "invalid_request"),
             (create, {**good, "funder_id": "mch_nobody"}, "not_found"),
             (create, {**good, "segment_id": "seg_nope"}, "segment_not_found"),
             (f"/console/marketing/campaigns/{cid}/fund", {"amount": "0"}, "invalid_amount"),
             ("/console/marketing/campaigns/cmp_nope/fund", {"amount": "1"},
              "campaign_not_found"),
             ("/console/marketing/campaigns/cmp_nope/end", {}, "campaign_not_found"),
             (f"/console/marketing/coupon_templates/{w['template']['id']}/issue",
              {"segment_id": "seg_nope"}, "segment_not_found")]
    with console.unchanged("bad marketing input"):
        for path, form, code in cases:
            page = _post(console, finance, path, **form)
            assert f"{code}" in page and 'class="flash error"' in page, (form, code)
    _post(console, finance, f"/console/marketing/campaigns/{cid}/end")
    with console.unchanged("funding an ended campaign"):
        page = _post(console, finance, f"/console/marketing/campaigns/{cid}/fund", amount="5")
        assert "campaign_not_active" in page
    refusals = [a.outcome for a in console.audit_rows() if a.outcome not in ("ok",)
                and a.action.startswith(("campaign_", "coupon_"))]
    assert len(refusals) == len(cases) + 1
