"""Red packet grabs and coupon claims go through the risk engine, over real HTTP on both
databases: a decline moves nothing, is logged, and refuses only the grab it was about."""

from __future__ import annotations

from typing import Any

from conftest import Api


def _packet(api: Api, sender: dict[str, Any], members: list[dict[str, Any]], amount: int,
            shares: int) -> dict[str, Any]:
    group = api.ok("POST", "/v1/groups", sender["api_key"], {"name": "friends"})
    api.ok("POST", f"/v1/groups/{group['id']}/members", sender["api_key"],
           {"consumer_ids": [m["id"] for m in members]})
    return api.ok("POST", "/v1/red_packets", sender["api_key"],
                  {"group_id": group["id"], "amount": amount, "shares": shares,
                   "split": "equal"})


def _decisions(api: Api, kind: str) -> list[dict[str, Any]]:
    data = api.ok("GET", "/v1/risk/decisions", api.operator_key)["data"]
    return [d for d in data if d["kind"] == kind]


def test_a_blocklisted_consumer_cannot_grab_and_nothing_moves(api: Api) -> None:
    alice, bob, carol = api.consumer(1000), api.consumer(), api.consumer()
    packet = _packet(api, alice, [bob, carol], 600, 2)
    api.ok("POST", "/v1/risk/lists", api.operator_key, {"list": "block", "value": bob["id"]})
    path = f"/v1/red_packets/{packet['id']}/grab"
    r = api.call("POST", path, bob["api_key"], {})
    assert r.status_code == 402 and r.json()["error"]["code"] == "risk_declined", r.text
    assert api.balance(bob) == 0
    found = api.ok("GET", f"/v1/red_packets/{packet['id']}", alice["api_key"])
    assert found["shares_taken"] == 0
    assert [d["outcome"] for d in _decisions(api, "red_packet_grab")] == ["block"]
    got = api.ok("POST", path, carol["api_key"], {})
    assert got["amount"] == 300 and api.balance(carol) == 300
    api.verify()


def test_a_grab_the_engine_would_review_is_blocked(api: Api) -> None:
    alice, bob = api.consumer(1000), api.consumer()
    packet = _packet(api, alice, [bob], 500, 1)
    api.ok("POST", "/v1/risk/rule_sets", api.operator_key, {"rules": [
        {"name": "review_grabs", "expression": "is_payment == 0", "action": "review"}]})
    r = api.call("POST", f"/v1/red_packets/{packet['id']}/grab", bob["api_key"], {})
    assert r.status_code == 402 and r.json()["error"]["code"] == "risk_declined", r.text
    assert api.balance(bob) == 0 and api.ok("GET", "/v1/risk/cases", api.operator_key)[
        "data"] == []
    api.verify()


def _spring_template(api: Api) -> dict[str, Any]:
    """A month-long campaign with a budget of 5000 and a claimable 3-off coupon template."""
    ends = int(api.clock.now().timestamp()) + 30 * 86_400
    campaign = api.ok("POST", "/v1/campaigns", api.operator_key,
                      {"name": "Spring", "budget": 5000, "ends_at": ends})
    return api.ok("POST", f"/v1/campaigns/{campaign['id']}/coupon_templates",
                  api.operator_key, {"name": "3 off", "kind": "fixed", "amount_off": 300})


def test_a_blocklisted_consumer_cannot_claim_a_coupon(api: Api) -> None:
    template = _spring_template(api)
    eve, dan = api.consumer(), api.consumer()
    api.ok("POST", "/v1/risk/lists", api.operator_key, {"list": "block", "value": eve["id"]})
    path = f"/v1/coupon_templates/{template['id']}/claim"
    r = api.call("POST", path, eve["api_key"], {})
    assert r.status_code == 402 and r.json()["error"]["code"] == "risk_declined", r.text
    assert api.count("mkt_coupons") == 0
    assert [d["outcome"] for d in _decisions(api, "coupon_claim")] == ["block"]
    api.ok("POST", path, dan["api_key"], {})
    assert api.count("mkt_coupons") == 1


def test_a_coupon_on_a_payment_review_rejects_is_the_payers_again(api: Api) -> None:
    template = _spring_template(api)
    shop, payer = api.merchant(), api.consumer(funds=10_000)
    coupon = api.ok("POST", f"/v1/coupon_templates/{template['id']}/claim", payer["api_key"], {})
    api.ok("POST", "/v1/risk/rule_sets", api.operator_key, {"rules": [
        {"name": "review_all", "expression": "amount >= 1", "action": "review"}]})
    order = api.order(shop, amount=2000)
    paid = api.ok("POST", f"/v1/orders/{order['id']}/pay", payer["api_key"],
                  {"coupon_id": coupon["id"]})
    assert paid["status"] == "reviewing"
    (case,) = api.ok("GET", "/v1/risk/cases?status=open", api.operator_key)["data"]
    api.ok("POST", f"/v1/risk/cases/{case['id']}/claim", api.operator_key)
    api.ok("POST", f"/v1/risk/cases/{case['id']}/decision", api.operator_key, {"approve": False})
    assert api.get_order(order)["status"] == "declined"
    assert api.balance(payer) == 10_000
    mine = api.ok("GET", "/v1/coupons", payer["api_key"])["data"]
    assert [(c["id"], c["status"]) for c in mine] == [(coupon["id"], "active")]
    budget = api.ok("GET", f"/v1/campaigns/{template['campaign_id']}",
                    api.operator_key)["budget_left"]
    assert budget == 5000
    # The coupon works again on the next payment, once the built-in rules are back.
    api.ok("POST", "/v1/risk/rule_sets/0/activate", api.operator_key, {})
    again = api.ok("POST", f"/v1/orders/{api.order(shop, amount=2000)['id']}/pay",
                   payer["api_key"], {"coupon_id": coupon["id"]})
    assert again["status"] == "paid" and api.balance(payer) == 10_000 - 1700
    api.verify()
