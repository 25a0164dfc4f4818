"""Marketing end to end over real HTTP, on both databases: red packets, campaigns with hard
budgets, coupons redeemed inside the payment, refunds, segments with a holdout, the report."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

from sqlalchemy import text

from conftest import Api, assert_error
from lianjie import marketing as mkt
from lianjie.api import routes_marketing
from lianjie.ledger import AccountFlags

DAY_S = 86_400


def _ends(api: Api, days: int = 30) -> int:
    return int(api.clock.now().timestamp()) + days * DAY_S


def _campaign(api: Api, budget: int = 10_000, key: str | None = None, **body: Any
              ) -> dict[str, Any]:
    return api.ok("POST", "/v1/campaigns", key or api.operator_key,
                  {"name": "Spring", "budget": budget, "ends_at": _ends(api), **body})


def _template(api: Api, campaign: dict[str, Any], key: str | None = None, **body: Any
              ) -> dict[str, Any]:
    return api.ok("POST", f"/v1/campaigns/{campaign['id']}/coupon_templates",
                  key or api.operator_key, {"name": "3 off", "kind": "fixed",
                                            "amount_off": 300, **body})


def _claim(api: Api, consumer: dict[str, Any], template: dict[str, Any]) -> dict[str, Any]:
    return api.ok("POST", f"/v1/coupon_templates/{template['id']}/claim", consumer["api_key"],
                  {})


def _pay(api: Api, consumer: dict[str, Any], order: dict[str, Any], coupon: str | None
         ) -> Any:
    return api.call("POST", f"/v1/orders/{order['id']}/pay", consumer["api_key"],
                    {"coupon_id": coupon})


def _budget(api: Api, campaign: dict[str, Any]) -> int:
    return int(api.ok("GET", f"/v1/campaigns/{campaign['id']}", api.operator_key)
               ["budget_left"])


def test_red_packet_end_to_end_with_refusals(api: Api) -> None:
    alice, bob, eve = api.consumer(5000), api.consumer(), api.consumer()
    group = api.ok("POST", "/v1/groups", alice["api_key"], {"name": "family"})
    api.ok("POST", f"/v1/groups/{group['id']}/members", alice["api_key"],
           {"consumer_ids": [bob["id"]]})
    packet = api.ok("POST", "/v1/red_packets", alice["api_key"],
                    {"group_id": group["id"], "amount": 888, "shares": 2, "split": "lucky"})
    assert api.balance(alice) == 4112 and packet["status"] == "open"
    got = api.ok("POST", f"/v1/red_packets/{packet['id']}/grab", bob["api_key"], {})
    assert 1 <= got["amount"] <= 887 and api.balance(bob) == got["amount"]
    path = f"/v1/red_packets/{packet['id']}/grab"
    api.refused(409, "already_grabbed", "POST", path, bob["api_key"], {})
    api.refused(403, "not_in_group", "POST", path, eve["api_key"], {})
    api.refused(404, "red_packet_not_found", "POST", "/v1/red_packets/rp_nope/grab",
                bob["api_key"], {})
    api.refused(403, "forbidden", "POST", path, api.operator_key, {})
    api.refused(400, "invalid_shares", "POST", "/v1/red_packets", alice["api_key"],
                {"group_id": group["id"], "amount": 3, "shares": 4})
    api.refused(402, "insufficient_funds", "POST", "/v1/red_packets", alice["api_key"],
                {"group_id": group["id"], "amount": 10_000, "shares": 4})
    api.refused(404, "group_not_found", "POST", "/v1/red_packets", eve["api_key"],
                {"group_id": group["id"], "amount": 10, "shares": 1})
    last = api.ok("POST", path, alice["api_key"], {})
    assert got["amount"] + last["amount"] == 888
    grabs = api.ok("GET", f"/v1/red_packets/{packet['id']}/grabs", alice["api_key"])
    assert [g["seq"] for g in grabs["data"]] == [0, 1]
    api.verify()


def test_racing_http_grabs_share_units_and_keep_idempotency_keys(api: Api) -> None:
    """Concurrent HTTP grabs go through one batcher: never overspent, each member at most
    once, and each Idempotency-Key answered once (the same response replayed, another body
    refused) even when the requests with one key race each other."""
    alice, outsider = api.consumer(5000), api.consumer()
    members = [api.consumer() for _ in range(12)]
    group = api.ok("POST", "/v1/groups", alice["api_key"], {"name": "family"})
    api.ok("POST", f"/v1/groups/{group['id']}/members", alice["api_key"],
           {"consumer_ids": [m["id"] for m in members]})
    packet = api.ok("POST", "/v1/red_packets", alice["api_key"],
                    {"group_id": group["id"], "amount": 1000, "shares": 12, "split": "lucky"})
    path = f"/v1/red_packets/{packet['id']}/grab"
    bob, carol = members[0], members[1]
    calls: list[tuple[dict[str, Any], dict[str, Any], str]] = [
        (m, {}, f"k-{m['id']}") for m in members[1:]]
    calls += [(bob, {}, "same-key")] * 6  # one key racing itself: one grab, the rest replays
    calls += [(bob, {"device_id": "other"}, "same-key")]  # the same key, another body
    calls += [(carol, {}, f"second-{i}") for i in range(3)]  # new keys: second grabs
    calls += [(outsider, {}, "outsider")]
    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda c: api.call("POST", path, c[0]["api_key"], c[1], c[2]),
                                calls))
    by_who: dict[str, list[Any]] = {}
    for (who, _body, key), r in zip(calls, results, strict=True):
        by_who.setdefault("bob" if key == "same-key" else who["id"], []).append(r)
    bobs = sorted(by_who.pop("bob"), key=lambda r: r.status_code)
    assert [r.status_code for r in bobs] in ([200] * 6 + [409], [200] + [409] * 6)
    assert all(r.json()["error"]["code"] == "idempotency_conflict" for r in bobs
               if r.status_code == 409)
    ok_bob = [r for r in bobs if r.status_code == 200]
    assert len({r.text for r in ok_bob}) == 1  # one grab, its response replayed
    assert [r.headers.get("Idempotent-Replayed") for r in ok_bob].count(None) == 1
    carols = sorted(by_who.pop(carol["id"]), key=lambda r: r.status_code)
    assert [r.status_code for r in carols] == [200, 409, 409, 409]
    assert {r.json()["error"]["code"] for r in carols[1:]} == {"already_grabbed"}
    assert by_who.pop(outsider["id"])[0].json()["error"]["code"] == "not_in_group"
    assert all(rs[0].status_code == 200 for rs in by_who.values())
    grabbed = api.ok("GET", f"{path}s?limit=100", alice["api_key"])["data"]
    assert len(grabbed) == 12 and len({g["consumer_id"] for g in grabbed}) == 12
    assert sorted(g["seq"] for g in grabbed) == list(range(12))
    assert sum(g["amount"] for g in grabbed) == 1000
    assert sum(api.balance(m) for m in members) == 1000
    assert api.ok("GET", f"/v1/red_packets/{packet['id']}", alice["api_key"])["status"] == \
        "emptied"
    again = api.call("POST", path, bob["api_key"], {}, "same-key")
    assert again.status_code in (200, 409)
    if again.status_code == 200:
        assert again.text == ok_bob[0].text and again.headers["Idempotent-Replayed"] == "true"
    api.verify()


def test_expired_red_packet_returns_money_and_refuses_grabs(api: Api) -> None:
    alice, bob = api.consumer(1000), api.consumer()
    group = api.ok("POST", "/v1/groups", alice["api_key"], {"name": "pair"})
    api.ok("POST", f"/v1/groups/{group['id']}/members", alice["api_key"],
           {"consumer_ids": [bob["id"]]})
    packet = api.ok("POST", "/v1/red_packets", alice["api_key"],
                    {"group_id": group["id"], "amount": 600, "shares": 3, "split": "equal"})
    api.clock.advance(timedelta(hours=24))
    api.refused(400, "red_packet_expired", "POST", f"/v1/red_packets/{packet['id']}/grab",
                bob["api_key"], {})
    api.background.tick()
    assert api.balance(alice) == 1000
    found = api.ok("GET", f"/v1/red_packets/{packet['id']}", alice["api_key"])
    assert found["status"] == "expired" and found["amount_returned"] == 600
    api.verify()


def test_coupon_is_redeemed_inside_the_payment_and_refunded_pro_rata(api: Api) -> None:
    shop, other = api.merchant(), api.merchant()
    campaign = _campaign(api, 1000)
    template = _template(api, campaign, min_spend=1000, merchant_id=shop["id"])
    buyer = api.consumer(10_000)
    coupon = _claim(api, buyer, template)
    platform_before = api.account_balance("plt_platform", "fee_revenue")
    order = api.order(shop, 2000)
    paid = _pay(api, buyer, order, coupon["id"])
    assert paid.status_code == 200, paid.text
    assert api.balance(buyer) == 10_000 - 1700
    assert _budget(api, campaign) == 700
    pending = api.account_balance(shop["id"], "merchant_pending")
    assert pending == 2000 - paid.json()["fee_amount"]
    assert api.account_balance("plt_platform", "fee_revenue") > platform_before - 1000
    # used, out of scope, under the minimum spend: refused, nothing moves
    for merchant, amount, code in ((shop, 2000, "coupon_already_used"),
                                   (other, 2000, "coupon_already_used")):
        again = api.order(merchant, amount)
        api.refused(409, code, "POST", f"/v1/orders/{again['id']}/pay", buyer["api_key"],
                    {"coupon_id": coupon["id"]})
    fresh = _claim(api, api.consumer(), template)  # another consumer's coupon
    api.refused(404, "coupon_not_found", "POST", f"/v1/orders/{api.order(shop)['id']}/pay",
                buyer["api_key"], {"coupon_id": fresh["id"]})
    # refund half: the consumer gets its paid share back, the budget its subsidy share
    api.ok("POST", f"/v1/orders/{order['id']}/refunds", shop["api_key"],
           {"out_refund_no": "r1", "amount": 1000})
    assert api.balance(buyer) == 10_000 - 1700 + 850
    assert _budget(api, campaign) == 850
    api.ok("POST", f"/v1/orders/{order['id']}/refunds", shop["api_key"],
           {"out_refund_no": "r2", "amount": 1000})
    assert api.balance(buyer) == 10_000 and _budget(api, campaign) == 1000
    mine = api.ok("GET", "/v1/coupons", buyer["api_key"])["data"]
    assert [c["status"] for c in mine] == ["redeemed"]  # not reinstated
    api.verify()


def test_coupon_refusals_move_nothing(api: Api) -> None:
    shop, cafe = api.merchant(), api.merchant(business_type="cafe")
    campaign = _campaign(api, 500)
    scoped = _template(api, campaign, business_type="cafe", amount_off=400, per_person_max=2,
                       total_max=3)
    buyer = api.consumer(10_000)
    c1, c2 = _claim(api, buyer, scoped), _claim(api, buyer, scoped)
    path = f"/v1/coupon_templates/{scoped['id']}/claim"
    api.refused(400, "per_person_limit_reached", "POST", path, buyer["api_key"], {})
    _claim(api, api.consumer(), scoped)
    api.refused(400, "coupon_sold_out", "POST", path, api.consumer()["api_key"], {})
    api.refused(400, "coupon_not_applicable", "POST",
                f"/v1/orders/{api.order(shop, 1000)['id']}/pay", buyer["api_key"],
                {"coupon_id": c1["id"]})
    assert _pay(api, buyer, api.order(cafe, 1000), c1["id"]).status_code == 200
    # 100 left in the budget: a 400 discount cannot be paid
    api.refused(402, "campaign_budget_exhausted", "POST",
                f"/v1/orders/{api.order(cafe, 1000)['id']}/pay", buyer["api_key"],
                {"coupon_id": c2["id"]})
    api.clock.advance(timedelta(days=8))
    api.refused(400, "coupon_expired", "POST",
                f"/v1/orders/{api.order(cafe, 1000)['id']}/pay", buyer["api_key"],
                {"coupon_id": c2["id"]})
    api.refused(400, "invalid_request", "POST", f"/v1/campaigns/{campaign['id']}/"
                "coupon_templates", api.operator_key, {"name": "x", "kind": "percent",
                                                       "percent_bps": 0, "discount_max": 1})
    assert _budget(api, campaign) == 100
    api.verify()


def test_two_payments_racing_with_one_coupon_use_it_once(api: Api) -> None:
    shop = api.merchant()
    template = _template(api, _campaign(api, 5000))
    buyer = api.consumer(100_000)
    coupon = _claim(api, buyer, template)
    orders = [api.order(shop, 1000) for _ in range(6)]
    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(lambda o: _pay(api, buyer, o, coupon["id"]), orders))
    assert sorted(r.status_code for r in results) == [200] + [409] * 5
    assert api.balance(buyer) == 100_000 - 700
    api.verify()


def test_segment_holdout_and_report_show_uplift(api: Api) -> None:
    shop = api.merchant()
    consumers = [api.consumer(50_000) for _ in range(24)]
    for c in consumers:
        assert api.pay(c, api.order(shop, 500)).status_code == 200
    segment = api.ok("POST", "/v1/segments", api.operator_key,
                     {"name": "buyers", "rule": {"kind": "frequent", "merchant_id": shop["id"],
                                                 "min_count": 1, "days": 30}})
    assert segment["size"] == 24
    api.clock.advance(timedelta(hours=1))  # the campaign counts payments from its start
    # Holdout membership hashes the campaign's random id: at half the audience, a split with
    # nobody on one side (which would leave nothing to compare) has odds of 2 x 0.5^24, 1e-7.
    campaign = _campaign(api, 100_000, holdout_bps=5000, segment_id=segment["id"])
    template = _template(api, campaign, amount_off=100, claimable=False)
    issued = api.ok("POST", f"/v1/coupon_templates/{template['id']}/issue", api.operator_key,
                    {"segment_id": segment["id"]})
    held = sum(mkt.in_holdout(campaign["id"], c["id"], 5000) for c in consumers)
    assert issued["held_out"] == held and issued["issued"] == 24 - held
    assert 0 < held < 24
    treated = {c["id"] for c in consumers if api.ok("GET", "/v1/coupons", c["api_key"])["data"]}
    for c in consumers:
        if c["id"] in treated:
            coupon = api.ok("GET", "/v1/coupons", c["api_key"])["data"][0]["id"]
            assert _pay(api, c, api.order(shop, 800), coupon).status_code == 200
            assert api.pay(c, api.order(shop, 800)).status_code == 200
    report = api.ok("GET", f"/v1/campaigns/{campaign['id']}/report", api.operator_key)
    assert report["coupons_issued"] == len(treated) == report["coupons_redeemed"]
    assert report["budget_spent"] == 100 * len(treated)
    assert report["treated"]["payments"] == 2 * len(treated)
    assert report["holdout"]["payments"] == 0
    assert report["incremental_payments"] == 2 * len(treated)
    assert report["cost_per_incremental_payment"] == 50.0
    api.refused(400, "invalid_rule", "POST", "/v1/segments", api.operator_key,
                {"name": "bad", "rule": {"kind": "rich"}})
    api.verify()


def test_campaign_red_packet_has_per_person_limit_and_returns_to_budget(api: Api) -> None:
    shop = api.merchant()
    campaign = _campaign(api, 1000, key=None)
    packet = api.ok("POST", f"/v1/campaigns/{campaign['id']}/red_packets", api.operator_key,
                    {"amount": 600, "shares": 6, "split": "equal", "merchant_id": shop["id"]})
    second = api.ok("POST", f"/v1/campaigns/{campaign['id']}/red_packets", api.operator_key,
                    {"amount": 300, "shares": 3, "split": "lucky"})
    api.refused(402, "campaign_budget_exhausted", "POST",
                f"/v1/campaigns/{campaign['id']}/red_packets", api.operator_key,
                {"amount": 200, "shares": 2})
    walker = api.consumer()
    api.ok("POST", f"/v1/red_packets/{packet['id']}/grab", walker["api_key"], {})
    api.refused(400, "per_person_limit_reached", "POST",
                f"/v1/red_packets/{second['id']}/grab", walker["api_key"], {})
    assert api.balance(walker) == 100
    api.clock.advance(timedelta(days=1))
    api.background.tick()
    assert _budget(api, campaign) == 1000 - 100
    late = api.ok("POST", f"/v1/campaigns/{campaign['id']}/red_packets", api.operator_key,
                  {"amount": 400, "shares": 4})
    fee_revenue = api.account_balance("plt_platform", "fee_revenue")
    ended = api.ok("POST", f"/v1/campaigns/{campaign['id']}/end", api.operator_key)
    assert ended["status"] == "ended" and ended["budget_left"] == 0
    # the open packet expired into the budget, and the budget went back to the platform
    assert api.account_balance("plt_platform", "fee_revenue") == fee_revenue + 900
    assert api.ok("GET", f"/v1/red_packets/{late['id']}", api.operator_key)["status"] == \
        "expired"
    report = api.ok("GET", f"/v1/campaigns/{campaign['id']}/report", api.operator_key)
    assert report["red_packet_grabs"] == 1 and report["budget_spent"] == 100
    api.verify()


def test_merchant_runs_its_own_campaign_and_cannot_see_others(api: Api) -> None:
    shop, rival = api.merchant(), api.merchant()
    mine = _campaign(api, 500, key=shop["api_key"])
    assert mine["funder_id"] == shop["id"]
    assert api.account_balance(shop["id"], "merchant_available") == -500
    r = api.call("GET", f"/v1/campaigns/{mine['id']}", rival["api_key"])
    assert r.status_code == 404 and r.json()["error"]["code"] == "campaign_not_found"
    api.refused(403, "forbidden", "POST", "/v1/campaigns", rival["api_key"],
                {"name": "x", "budget": 1, "ends_at": _ends(api), "funder_id": shop["id"]})
    api.verify()


def test_racing_claims_for_the_last_coupon_issue_it_once(api: Api) -> None:
    template = _template(api, _campaign(api, 5000), total_max=1)
    claimers = [api.consumer() for _ in range(6)]
    path = f"/v1/coupon_templates/{template['id']}/claim"
    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(lambda c: api.call("POST", path, c["api_key"], {}), claimers))
    assert sorted(r.status_code for r in results) == [201] + [400] * 5
    assert {r.json()["error"]["code"] for r in results if r.status_code == 400} == {
        "coupon_sold_out"}


def test_a_campaign_is_topped_up_by_its_funder_until_it_ends(api: Api) -> None:
    merchant = api.merchant(api.service_provider())
    assert api.pay(api.consumer(5_000), api.order(merchant, 4_000)).status_code == 200
    campaign = _campaign(api, budget=1_000, key=merchant["api_key"])
    available = api.account_balance(merchant["id"], "merchant_available")
    path = f"/v1/campaigns/{campaign['id']}/fund"
    topped = api.ok("POST", path, merchant["api_key"], {"amount": 500})
    assert (topped["budget"], topped["budget_left"]) == (1_500, 1_500)
    assert api.account_balance(merchant["id"], "merchant_available") == available - 500
    other = api.merchant(api.service_provider())
    api.refused(404, "campaign_not_found", "POST", path, other["api_key"], {"amount": 1})
    api.refused(400, "invalid_amount", "POST", path, merchant["api_key"], {"amount": 0})
    api.ok("POST", f"/v1/campaigns/{campaign['id']}/end", merchant["api_key"], {})
    api.refused(400, "campaign_not_active", "POST", path, merchant["api_key"], {"amount": 1})
    assert api.account_balance(merchant["id"], "merchant_available") == available + 1_000
    api.verify()


def _set_wallet_flags(api: Api, consumer: dict[str, Any], flags: AccountFlags) -> None:
    with api.rt.engine.begin() as conn:
        conn.execute(text("UPDATE ledger_accounts SET flags = :f WHERE owner_id = :o AND "
                          "purpose = 'wallet'"), {"f": int(flags), "o": consumer["id"]})


def test_an_unexpected_error_in_one_batched_grab_fails_only_that_grab(api: Api) -> None:
    """Grabs held back until they share one unit; one taker's wallet row is corrupt (flagged as
    an account that may only be drawn on, so the ledger refuses to credit it and the grab's
    assertion fails). That grab answers 500 ``internal_error`` and moves nothing; the others
    are granted, durable and exact."""
    alice = api.consumer(5000)
    members = [api.consumer() for _ in range(6)]
    bad = members[2]
    group = api.ok("POST", "/v1/groups", alice["api_key"], {"name": "family"})
    api.ok("POST", f"/v1/groups/{group['id']}/members", alice["api_key"],
           {"consumer_ids": [m["id"] for m in members]})
    packet = api.ok("POST", "/v1/red_packets", alice["api_key"],
                    {"group_id": group["id"], "amount": 600, "shares": 6, "split": "equal"})
    # The bad row: a wallet that may not be credited.
    _set_wallet_flags(api, bad, AccountFlags.CREDITS_MUST_NOT_EXCEED_DEBITS)
    batcher = routes_marketing._grab_batcher(api.rt)
    path = f"/v1/red_packets/{packet['id']}/grab"
    batches_before = batcher.batches
    results = api.held_together(batcher, [(path, m["api_key"], {}, None) for m in members])
    assert batcher.batches == batches_before + 1  # one unit held all six grabs
    for m, r in zip(members, results, strict=True):
        if m is bad:
            assert_error(r, 500, "internal_error", None)
        else:
            assert r.status_code == 200 and r.json()["amount"] == 100, r.text
    assert api.balance(bad) == 0
    assert sum(api.balance(m) for m in members) == 500
    grabbed = api.ok("GET", f"{path}s?limit=100", alice["api_key"])["data"]
    assert sorted(g["consumer_id"] for g in grabbed) == sorted(
        m["id"] for m in members if m is not bad)
    assert sorted(g["seq"] for g in grabbed) == list(range(5))
    assert api.ok("GET", f"/v1/red_packets/{packet['id']}", alice["api_key"])["status"] == \
        "open"
    # Mended, the same taker grabs the last share.
    _set_wallet_flags(api, bad, AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS)
    assert api.ok("POST", path, bad["api_key"], {})["amount"] == 100
    api.verify()


def test_discounts_refunded_after_the_campaign_ended_go_back_to_the_funder(api: Api) -> None:
    """A sponsoring merchant funds 1,000 (its available balance may go below zero); two coupons
    of 300 are redeemed in payments of 2,000 at another shop. The campaign passes its end: the
    background job ends it and sweeps the unspent 400 back. Refunds then return the subsidy
    shares (150, 150, then 300) to the sponsor, not to the ended budget, which stays at zero:
    the sponsor's cost is exactly the discounts not refunded, to the fen."""
    sponsor, shop = api.merchant(), api.merchant()
    campaign = api.ok("POST", "/v1/campaigns", sponsor["api_key"],
                      {"name": "Spring", "budget": 1000, "ends_at": _ends(api, 1)})
    template = _template(api, campaign, sponsor["api_key"])
    buyers = [api.consumer(10_000) for _ in range(2)]
    orders = []
    for buyer in buyers:
        order = api.order(shop, 2000)
        paid = _pay(api, buyer, order, _claim(api, buyer, template)["id"])
        assert paid.status_code == 200, paid.text
        orders.append(order)
    assert _budget(api, campaign) == 400

    def spent() -> int:
        return -api.account_balance(sponsor["id"], "merchant_available")

    assert spent() == 1000
    api.clock.advance(timedelta(days=1, seconds=1))
    api.background.tick()
    ended = api.ok("GET", f"/v1/campaigns/{campaign['id']}", api.operator_key)
    assert ended["status"] == "ended" and ended["budget_left"] == 0
    assert spent() == 600  # the unspent 400 swept back
    for order, no, amount, cost in ((orders[0], "r1", 1000, 450), (orders[0], "r2", 1000, 300),
                                    (orders[1], "r3", 2000, 0)):
        api.ok("POST", f"/v1/orders/{order['id']}/refunds", shop["api_key"],
               {"out_refund_no": no, "amount": amount})
        assert _budget(api, campaign) == 0  # nothing stranded in the ended budget
        assert spent() == cost
    assert api.accounts(campaign["id"])["campaign_budget"]["balance"] == 0
    assert [api.balance(b) for b in buyers] == [10_000, 10_000]
    api.verify()
