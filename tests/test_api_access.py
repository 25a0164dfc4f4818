"""Who may do what, over real HTTP: merchants, service providers, consumers, operators, KYC,
freezing and revoked keys. Every refusal leaves the database as it was (``Api.refused``)."""

from __future__ import annotations

from typing import Any

from conftest import Api, assert_error


def _paid_order(api: Api, merchant: dict[str, Any], payer: dict[str, Any],
                amount: int = 1_000) -> dict[str, Any]:
    order = api.order(merchant, amount=amount)
    return api.ok("POST", f"/v1/orders/{order['id']}/pay", payer["api_key"], {})


def test_a_merchant_cannot_touch_another_merchants_orders(api: Api) -> None:
    mine, theirs = api.merchant(), api.merchant()
    alice = api.consumer(funds=10_000)
    open_order = api.order(theirs, amount=500, out_trade_no="T-theirs")
    paid = _paid_order(api, theirs, alice)
    key = mine["api_key"]
    for order in (open_order, paid):
        assert_error(api.call("GET", f"/v1/orders/{order['id']}", key), 404,
                     "order_not_found", "id")
        assert_error(api.call("GET", f"/v1/orders/{order['id']}/qr.png", key), 404,
                     "order_not_found", "id")
        assert_error(api.call("GET", f"/v1/orders/{order['id']}/refunds", key), 404,
                     "order_not_found", "id")
        api.refused(404, "order_not_found", "POST", f"/v1/orders/{order['id']}/close", key,
                    param="id")
        api.refused(404, "order_not_found", "POST", f"/v1/orders/{order['id']}/refunds", key,
                    {"out_refund_no": "R1", "amount": 100}, param="id")
    # Acting for another merchant is refused outright.
    api.refused(403, "forbidden", "POST", "/v1/orders", key,
                {"out_trade_no": "T1", "amount": 100, "description": "x",
                 "merchant_id": theirs["id"]}, param="merchant_id")
    api.refused(403, "forbidden", "POST", f"/v1/merchants/{theirs['id']}/qr_codes", key,
                {"description": "stall"}, param="merchant_id")
    api.refused(403, "forbidden", "POST", f"/v1/merchants/{theirs['id']}/stores", key,
                {"name": "Main St"}, param="merchant_id")
    for query in (f"merchant_id={theirs['id']}",
                  f"merchant_id={theirs['id']}&out_trade_no=T-theirs"):
        assert_error(api.call("GET", f"/v1/orders?{query}", key), 403, "forbidden",
                     "merchant_id")
    # Its own view has none of the other merchant's orders.
    assert api.ok("GET", "/v1/orders?out_trade_no=T-theirs", key)["data"] == []
    assert api.ok("GET", "/v1/orders", key)["data"] == []
    assert_error(api.call("GET", f"/v1/merchants/{theirs['id']}", key), 404,
                 "party_not_found", "merchant_id")
    assert_error(api.call("GET", f"/v1/accounts?owner_id={theirs['id']}", key), 404,
                 "party_not_found", "owner_id")
    acc = api.accounts(theirs["id"])["merchant_pending"]["id"]
    assert_error(api.call("GET", f"/v1/accounts/{acc}", key), 404, "account_not_found", "id")
    assert_error(api.call("GET", f"/v1/parties/{theirs['id']}", key), 404, "party_not_found")
    # The owner still can do all of it.
    api.ok("POST", f"/v1/orders/{paid['id']}/refunds", theirs["api_key"],
           {"out_refund_no": "R1", "amount": 100})
    api.ok("POST", f"/v1/orders/{open_order['id']}/close", theirs["api_key"])
    api.verify()


def test_a_service_provider_acts_for_its_own_sub_merchants_only(api: Api) -> None:
    sp1, sp2 = api.service_provider(), api.service_provider()
    m1, m2 = api.merchant(sp1), api.merchant(sp2)
    alice = api.consumer(funds=10_000)
    key = sp1["api_key"]
    order = api.ok("POST", "/v1/orders", key, {"out_trade_no": "T1", "amount": 1_000,
                                                "description": "x", "merchant_id": m1["id"]})
    assert order["merchant_id"] == m1["id"] and order["service_provider_id"] == sp1["id"]
    api.ok("POST", f"/v1/orders/{order['id']}/pay", alice["api_key"], {})
    api.ok("POST", f"/v1/orders/{order['id']}/refunds", key,
           {"out_refund_no": "R1", "amount": 100})
    found = api.ok("GET", f"/v1/orders?merchant_id={m1['id']}&out_trade_no=T1", key)
    assert [o["id"] for o in found["data"]] == [order["id"]]
    api.ok("POST", f"/v1/merchants/{m1['id']}/fee_rate", key, {"fee_rate_bps": 45})

    other = _paid_order(api, m2, alice)
    api.refused(403, "not_your_sub_merchant", "POST", "/v1/orders", key,
                {"out_trade_no": "T2", "amount": 100, "description": "x",
                 "merchant_id": m2["id"]}, param="merchant_id")
    api.refused(403, "not_your_sub_merchant", "POST", f"/v1/merchants/{m2['id']}/fee_rate",
                key, {"fee_rate_bps": 45}, param="merchant_id")
    api.refused(403, "not_your_sub_merchant", "POST", f"/v1/merchants/{m2['id']}/qr_codes",
                key, {"description": "stall"}, param="merchant_id")
    api.refused(404, "order_not_found", "POST", f"/v1/orders/{other['id']}/refunds", key,
                {"out_refund_no": "R2", "amount": 100}, param="id")
    api.refused(404, "order_not_found", "POST", f"/v1/orders/{other['id']}/close", key,
                param="id")
    assert_error(api.call("GET", f"/v1/orders/{other['id']}", key), 404, "order_not_found")
    assert_error(api.call("GET", f"/v1/orders?merchant_id={m2['id']}", key), 403,
                 "not_your_sub_merchant", "merchant_id")
    api.refused(400, "invalid_request", "POST", "/v1/orders", key,
                {"out_trade_no": "T3", "amount": 100, "description": "x"}, param="merchant_id")
    api.refused(403, "forbidden", "POST", "/v1/merchants", key,
                {"name": "Poached", "service_provider_id": sp2["id"]},
                param="service_provider_id")
    listed = api.ok("GET", "/v1/merchants", key)["data"]
    assert [m["id"] for m in listed] == [m1["id"]]
    assert api.accounts(m1["id"]) == {a["purpose"]: a for a in api.ok(
        "GET", f"/v1/accounts?owner_id={m1['id']}", key)["data"]}
    assert_error(api.call("GET", f"/v1/accounts?owner_id={m2['id']}", key), 404,
                 "party_not_found", "owner_id")
    api.verify()


def test_roles_keep_to_their_own_actions(api: Api) -> None:
    sp = api.service_provider()
    shop = api.merchant(sp)
    pending = api.merchant(sp, approve=False)
    alice = api.consumer(funds=5_000)
    paid = _paid_order(api, shop, alice)
    open_order = api.order(shop, amount=100)
    bank = api.institution["id"]
    with api.unchanged():
        # Consumers cannot refund, close or create orders, even their own.
        api.refused(403, "forbidden", "POST", f"/v1/orders/{paid['id']}/refunds",
                    alice["api_key"], {"out_refund_no": "R1", "amount": 100})
        api.refused(403, "forbidden", "POST", f"/v1/orders/{open_order['id']}/close",
                    alice["api_key"])
        api.refused(403, "forbidden", "POST", "/v1/orders", alice["api_key"],
                    {"out_trade_no": "T1", "amount": 100, "description": "x",
                     "merchant_id": shop["id"]})
        # Only the operator approves KYC, freezes, creates parties and keys, verifies the ledger.
        for key in (shop["api_key"], sp["api_key"], alice["api_key"]):
            api.refused(403, "forbidden", "POST", f"/v1/merchants/{pending['id']}/kyc", key,
                        {"decision": "approved"})
            api.refused(403, "forbidden", "POST", f"/v1/parties/{shop['id']}/freeze", key)
            api.refused(403, "forbidden", "POST", "/v1/consumers", key, {"name": "Mallory"})
            api.refused(403, "forbidden", "POST", "/v1/service_providers", key, {"name": "SP"})
            api.refused(403, "forbidden", "POST", "/v1/api_keys", key, {"party_id": shop["id"]})
            assert_error(api.call("GET", "/v1/ledger/verify", key), 403, "forbidden")
        # Only consumers pay and hold wallets.
        for key in (shop["api_key"], sp["api_key"], api.operator_key):
            api.refused(403, "forbidden", "POST", f"/v1/orders/{open_order['id']}/pay", key, {})
            api.refused(403, "forbidden", "POST", "/v1/wallet/top_ups", key,
                        {"institution_id": bank, "amount": 100})
            assert_error(api.call("GET", "/v1/wallet", key), 403, "forbidden")
    # A consumer sees open orders (to pay them) and its own paid ones, not others' paid ones.
    bob = api.consumer()
    assert api.ok("GET", f"/v1/orders/{open_order['id']}", bob["api_key"])["status"] == "open"
    assert api.ok("GET", f"/v1/orders/{paid['id']}", alice["api_key"])["status"] == "paid"
    assert_error(api.call("GET", f"/v1/orders/{paid['id']}", bob["api_key"]), 404,
                 "order_not_found")
    assert_error(api.call("GET", f"/v1/webhook_deliveries?party_id={sp['id']}",
                          shop["api_key"]), 403, "forbidden", "party_id")
    api.ok("POST", f"/v1/merchants/{pending['id']}/kyc", api.operator_key,
           {"decision": "approved"})
    api.verify()


def test_only_kyc_approved_merchants_collect(api: Api) -> None:
    pending = api.merchant(approve=False)
    rejected = api.merchant(approve=False)
    api.ok("POST", f"/v1/merchants/{rejected['id']}/kyc", api.operator_key,
           {"decision": "rejected"})
    alice = api.consumer(funds=1_000)
    body = {"out_trade_no": "T1", "amount": 100, "description": "x"}
    for m in (pending, rejected):
        assert m["kyc_status"] == "pending"
        api.refused(400, "merchant_not_approved", "POST", "/v1/orders", m["api_key"], body,
                    param="merchant_id")
        code = api.ok("POST", f"/v1/merchants/{m['id']}/qr_codes", m["api_key"],
                      {"description": "stall"})
        api.refused(400, "merchant_not_approved", "POST", f"/v1/qr_codes/{code['id']}/pay",
                    alice["api_key"], {"amount": 100}, param="merchant_id")
    assert api.ok("GET", f"/v1/merchants/{rejected['id']}", api.operator_key)[
        "kyc_status"] == "rejected"
    api.refused(400, "invalid_state_transition", "POST", f"/v1/merchants/{rejected['id']}/kyc",
                api.operator_key, {"decision": "approved"})
    approved = api.ok("POST", f"/v1/merchants/{pending['id']}/kyc", api.operator_key,
                      {"decision": "approved"})
    assert approved["kyc_status"] == "approved"
    order = api.ok("POST", "/v1/orders", pending["api_key"], body)
    api.ok("POST", f"/v1/orders/{order['id']}/pay", alice["api_key"], {})
    assert api.balance(alice) == 900


def test_a_frozen_merchant_cannot_collect_until_unfrozen(api: Api) -> None:
    shop = api.merchant(fee_rate_bps=60)
    alice = api.consumer(funds=10_000)
    paid = _paid_order(api, shop, alice, 5_000)
    waiting = api.order(shop, amount=1_000)
    code = api.ok("POST", f"/v1/merchants/{shop['id']}/qr_codes", shop["api_key"],
                  {"description": "stall"})
    frozen = api.ok("POST", f"/v1/parties/{shop['id']}/freeze", api.operator_key)
    assert frozen["status"] == "frozen"
    assert {a["status"] for a in api.accounts(shop["id"]).values()} == {"frozen"}
    api.refused(400, "merchant_frozen", "POST", "/v1/orders", shop["api_key"],
                {"out_trade_no": "T1", "amount": 100, "description": "x"},
                param="merchant_id")
    api.refused(400, "merchant_frozen", "POST", f"/v1/orders/{waiting['id']}/pay",
                alice["api_key"], {}, param="merchant_id")
    api.refused(400, "merchant_frozen", "POST", f"/v1/qr_codes/{code['id']}/pay",
                alice["api_key"], {"amount": 100}, param="merchant_id")
    api.refused(400, "account_frozen", "POST", f"/v1/orders/{paid['id']}/refunds",
                shop["api_key"], {"out_refund_no": "R1", "amount": 100})
    assert api.balance(alice) == 5_000
    assert api.ok("POST", f"/v1/parties/{shop['id']}/unfreeze", api.operator_key)[
        "status"] == "active"
    assert {a["status"] for a in api.accounts(shop["id"]).values()} == {"open"}
    api.ok("POST", f"/v1/orders/{waiting['id']}/pay", alice["api_key"], {})
    api.ok("POST", f"/v1/orders/{paid['id']}/refunds", shop["api_key"],
           {"out_refund_no": "R1", "amount": 100})
    assert api.balance(alice) == 4_100
    # 5_000 and 1_000 paid with fees of 30 and 6; no fee comes back with 100 of 5_000.
    assert api.account_balance(shop["id"], "merchant_pending") == 6_000 - 30 - 6 - 100
    api.verify()


def test_a_frozen_consumer_cannot_pay_until_unfrozen(api: Api) -> None:
    shop = api.merchant()
    alice, bob = api.consumer(funds=3_000), api.consumer(funds=3_000)
    bank = api.institution["id"]
    order = api.order(shop, amount=1_000)
    api.ok("POST", f"/v1/parties/{alice['id']}/freeze", api.operator_key)
    assert api.accounts(alice["id"])["wallet"]["status"] == "frozen"
    key = alice["api_key"]
    api.refused(400, "account_frozen", "POST", f"/v1/orders/{order['id']}/pay", key, {},
                param="payer_id")
    api.refused(400, "account_frozen", "POST", "/v1/wallet/top_ups", key,
                {"institution_id": bank, "amount": 100}, param="consumer_id")
    api.refused(400, "account_frozen", "POST", "/v1/wallet/withdrawals", key,
                {"institution_id": bank, "amount": 100}, param="consumer_id")
    api.refused(400, "account_frozen", "POST", "/v1/wallet/transfers", key,
                {"recipient_id": bob["id"], "amount": 100}, param="consumer_id")
    api.refused(400, "account_frozen", "POST", "/v1/wallet/transfers", bob["api_key"],
                {"recipient_id": alice["id"], "amount": 100}, param="recipient_id")
    assert api.balance(alice) == 3_000  # it may still look
    api.ok("POST", f"/v1/parties/{alice['id']}/unfreeze", api.operator_key)
    assert api.accounts(alice["id"])["wallet"]["status"] == "open"
    api.ok("POST", f"/v1/orders/{order['id']}/pay", key, {})
    api.ok("POST", "/v1/wallet/transfers", bob["api_key"],
           {"recipient_id": alice["id"], "amount": 100})
    assert api.balance(alice) == 2_100 and api.balance(bob) == 2_900
    api.refused(403, "forbidden", "POST", "/v1/parties/plt_platform/freeze", api.operator_key,
                param="id")
    api.verify()


def test_a_revoked_key_stops_working(api: Api) -> None:
    shop = api.merchant()
    issued = api.ok("POST", "/v1/api_keys", api.operator_key,
                    {"party_id": shop["id"], "label": "till 2"})
    assert issued["role"] == "merchant" and issued["secret"].startswith("lj_mch_")
    second = issued["secret"]
    order = api.order({"api_key": second}, amount=100)
    assert api.ok("GET", f"/v1/orders/{order['id']}", second)["merchant_id"] == shop["id"]
    api.ok("POST", f"/v1/api_keys/{issued['id']}/revoke", api.operator_key)
    assert_error(api.call("GET", f"/v1/orders/{order['id']}", second), 401,
                 "invalid_api_key")
    api.refused(401, "invalid_api_key", "POST", "/v1/orders", second,
                {"out_trade_no": "T1", "amount": 100, "description": "x"})
    # The merchant's first key is untouched.
    assert api.ok("GET", f"/v1/orders/{order['id']}", shop["api_key"])["id"] == order["id"]
