"""Bad input over real HTTP: a clear 4xx with a stable code, and nothing changes.

Every refusal goes through ``Api.refused``, which compares a dump of every table before and after
the request: a refused request leaves no order, entry, posting, event, refund or stored
idempotent response behind. Idempotency keys are tested here too (missing, replayed,
conflicting); their concurrent use is in ``test_api_races``.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from conftest import Api, assert_error
from lianjie.money import AMOUNT_MAX
from marketing_world import marketing_post_routes
from test_credit_api import credit_post_routes

BAD_AMOUNTS: list[tuple[Any, str]] = [
    (0, "invalid_amount"),
    (-1, "invalid_amount"),
    (-AMOUNT_MAX, "invalid_amount"),
    (10.5, "invalid_amount"),
    (100.0, "invalid_amount"),
    ("100", "invalid_amount"),
    (True, "invalid_amount"),
    (None, "invalid_amount"),
    ([100], "invalid_amount"),
    (AMOUNT_MAX + 1, "amount_too_large"),
    (10**40, "amount_too_large"),
]


def _world(api: Api) -> dict[str, Any]:
    sp = api.service_provider(commission_share_bps=3000)
    shop = api.merchant(sp, fee_rate_bps=60)
    alice = api.consumer(funds=50_000)
    bob = api.consumer(funds=50_000)
    return {"sp": sp, "shop": shop, "alice": alice, "bob": bob}


def test_bad_amounts_are_refused_everywhere_money_moves(api: Api) -> None:
    w = _world(api)
    shop, alice, bob = w["shop"], w["alice"], w["bob"]
    bank = api.institution["id"]
    paid = api.order(shop, amount=10_000)
    api.ok("POST", f"/v1/orders/{paid['id']}/pay", alice["api_key"], {})
    code = api.ok("POST", f"/v1/merchants/{shop['id']}/qr_codes", shop["api_key"],
                  {"description": "stall"})
    with api.unchanged():
        for amount, expected in BAD_AMOUNTS:
            api.refused(400, expected, "POST", "/v1/orders", shop["api_key"],
                        {"out_trade_no": "T-bad", "amount": amount, "description": "x"},
                        param="amount")
            api.refused(400, expected, "POST", f"/v1/orders/{paid['id']}/refunds",
                        shop["api_key"], {"out_refund_no": "R-bad", "amount": amount},
                        param="amount")
            api.refused(400, expected, "POST", f"/v1/qr_codes/{code['id']}/pay", alice["api_key"],
                        {"amount": amount}, param="amount")
            for path, body in (("/v1/wallet/top_ups", {"institution_id": bank}),
                               ("/v1/wallet/withdrawals", {"institution_id": bank}),
                               ("/v1/wallet/transfers", {"recipient_id": bob["id"]})):
                api.refused(400, expected, "POST", path, alice["api_key"],
                            {**body, "amount": amount}, param="amount")
    # Leaving the amount out is an invalid amount too.
    api.refused(400, "invalid_amount", "POST", "/v1/orders", shop["api_key"],
                {"out_trade_no": "T-none", "description": "x"}, param="amount")
    # The boundary: one fen and AMOUNT_MAX are valid.
    assert api.order(shop, amount=1)["amount"] == 1
    assert api.order(shop, amount=AMOUNT_MAX)["amount"] == AMOUNT_MAX
    assert api.balance(alice) == 40_000 and api.balance(bob) == 50_000
    api.verify()


def test_unknown_and_mismatched_currencies(api: Api) -> None:
    w = _world(api)
    shop, alice = w["shop"], w["alice"]
    bank = api.institution["id"]
    with api.unchanged():
        for cur in ("XYZ", "cny", "", "CNYY", 156):
            api.refused(400, "unknown_currency", "POST", "/v1/orders", shop["api_key"],
                        {"out_trade_no": "T1", "amount": 100, "description": "x", "currency": cur},
                        param="currency")
            api.refused(400, "unknown_currency", "POST", "/v1/wallet/top_ups", alice["api_key"],
                        {"institution_id": bank, "amount": 100, "currency": cur},
                        param="currency")
        # A known currency the merchant does not settle in: the platform's currency is CNY.
        for cur in ("USD", "JPY"):
            api.refused(400, "currency_mismatch", "POST", "/v1/orders", shop["api_key"],
                        {"out_trade_no": "T1", "amount": 100, "description": "x", "currency": cur},
                        param="currency")
    assert_error(api.call("GET", "/v1/wallet?currency=XYZ", alice["api_key"]), 400,
                 "unknown_currency", "currency")
    assert api.order(shop, amount=100, currency="CNY")["currency"] == "CNY"
    api.verify()


def test_duplicate_out_trade_no(api: Api) -> None:
    w = _world(api)
    sp, shop = w["sp"], w["shop"]
    other = api.merchant()
    first = api.order(shop, amount=500, out_trade_no="T-2026-0001")
    for body in ({"amount": 500}, {"amount": 700}):
        api.refused(409, "duplicate_out_trade_no", "POST", "/v1/orders", shop["api_key"],
                    {"out_trade_no": "T-2026-0001", "description": "again", **body},
                    param="out_trade_no")
    # The service provider acting for the merchant hits the same number.
    api.refused(409, "duplicate_out_trade_no", "POST", "/v1/orders", sp["api_key"],
                {"out_trade_no": "T-2026-0001", "amount": 500, "description": "again",
                 "merchant_id": shop["id"]}, param="out_trade_no")
    # Numbers are per merchant: another merchant may use it.
    theirs = api.order(other, amount=500, out_trade_no="T-2026-0001")
    assert theirs["id"] != first["id"]
    found = api.ok("GET", "/v1/orders?out_trade_no=T-2026-0001", shop["api_key"])
    assert [o["id"] for o in found["data"]] == [first["id"]]


def test_paying_a_closed_expired_or_paid_order(api: Api) -> None:
    w = _world(api)
    shop, alice, bob = w["shop"], w["alice"], w["bob"]
    closed = api.order(shop, amount=300)
    api.ok("POST", f"/v1/orders/{closed['id']}/close", shop["api_key"])
    expiring = api.order(shop, amount=300, expires_in_s=60)
    paid = api.order(shop, amount=300)
    api.ok("POST", f"/v1/orders/{paid['id']}/pay", alice["api_key"], {})

    api.refused(400, "order_closed", "POST", f"/v1/orders/{closed['id']}/pay",
                bob["api_key"], {}, param="id")
    for payer in (alice, bob):  # the payer itself, and anyone else
        api.refused(409, "order_already_paid", "POST", f"/v1/orders/{paid['id']}/pay",
                    payer["api_key"], {}, param="id")
    api.clock.advance(timedelta(seconds=60))
    api.refused(400, "order_expired", "POST", f"/v1/orders/{expiring['id']}/pay",
                bob["api_key"], {}, param="id")
    api.background.tick()
    assert api.get_order(expiring)["status"] == "expired"
    api.refused(400, "order_expired", "POST", f"/v1/orders/{expiring['id']}/pay",
                bob["api_key"], {}, param="id")
    api.refused(404, "order_not_found", "POST", "/v1/orders/ord_doesnotexist/pay",
                bob["api_key"], {}, param="id")
    assert api.balance(alice) == 49_700 and api.balance(bob) == 50_000
    api.verify()


def test_refunds_above_the_paid_amount(api: Api) -> None:
    w = _world(api)
    shop, alice = w["shop"], w["alice"]
    order = api.order(shop, amount=10_000)
    api.ok("POST", f"/v1/orders/{order['id']}/pay", alice["api_key"], {})
    path = f"/v1/orders/{order['id']}/refunds"
    api.refused(400, "refund_exceeds_paid", "POST", path, shop["api_key"],
                {"out_refund_no": "R1", "amount": 10_001}, param="amount")
    api.ok("POST", path, shop["api_key"], {"out_refund_no": "R1", "amount": 6_000})
    api.refused(400, "refund_exceeds_paid", "POST", path, shop["api_key"],
                {"out_refund_no": "R2", "amount": 4_001}, param="amount")
    api.ok("POST", path, shop["api_key"], {"out_refund_no": "R2", "amount": 4_000})
    api.refused(400, "refund_exceeds_paid", "POST", path, shop["api_key"],
                {"out_refund_no": "R3", "amount": 1}, param="amount")
    assert api.get_order(order)["refunded_amount"] == 10_000
    assert api.balance(alice) == 50_000
    assert api.count("refunds") == 2
    api.verify()


def test_request_shape_errors(api: Api) -> None:
    w = _world(api)
    sp, shop = w["sp"], w["shop"]
    good = {"out_trade_no": "T-shape", "amount": 100, "description": "noodles"}
    cases: list[tuple[dict[str, Any], str, str]] = [
        ({"out_trade_no": "x" * 65}, "invalid_request", "out_trade_no"),
        ({"out_trade_no": "   "}, "invalid_request", "out_trade_no"),
        ({"description": ""}, "invalid_request", "description"),
        ({"description": "d" * 201}, "invalid_request", "description"),
        ({"expires_in_s": 29}, "invalid_expiry", "expires_in_s"),
        ({"expires_in_s": 7 * 86_400 + 1}, "invalid_expiry", "expires_in_s"),
        ({"expires_in_s": 60.0}, "invalid_request", "expires_in_s"),
        ({"colour": "red"}, "invalid_request", "colour"),
        ({"store_id": "sto_nope"}, "not_found", "store_id"),
        # A NUL character is refused, not stored (PostgreSQL cannot store it in text at all)
        ({"out_trade_no": "T-\u0000"}, "invalid_request", "out_trade_no"),
        ({"description": "noo\u0000dles"}, "invalid_request", "description"),
        ({"merchant_id": "mch_\u0000"}, "invalid_request", "merchant_id"),
        ({"currency": "CN\u0000"}, "unknown_currency", "currency"),
    ]
    with api.unchanged():
        for change, code, param in cases:
            api.refused(400 if code != "not_found" else 404, code, "POST", "/v1/orders",
                        shop["api_key"], {**good, **change}, param=param)
    # The boundaries are valid.
    assert api.order(shop, out_trade_no="x" * 64, expires_in_s=30)["status"] == "open"
    assert api.order(shop, expires_in_s=7 * 86_400)["status"] == "open"
    # Fee rates outside the platform's bounds (20..100 bps), and KYC decisions.
    for rate in (19, 101, -1):
        api.refused(400, "fee_rate_out_of_bounds", "POST", "/v1/merchants", sp["api_key"],
                    {"name": "Shop", "fee_rate_bps": rate}, param="fee_rate_bps")
    assert api.merchant(sp, fee_rate_bps=20)["fee_rate_bps"] == 20
    api.refused(400, "invalid_request", "POST", "/v1/merchants", api.operator_key,
                {"name": "Shop", "business_type": "casino"}, param="business_type")
    api.refused(400, "invalid_request", "POST", "/v1/merchants", api.operator_key,
                {"name": "Sh\u0000op"}, param="name")
    api.refused(400, "invalid_request", "POST", "/v1/merchants", api.operator_key,
                {"name": "Shop", "webhook_url": "ftp://example.com"}, param="webhook_url")
    api.refused(400, "invalid_request", "POST", f"/v1/merchants/{shop['id']}/kyc",
                api.operator_key, {"decision": "maybe"}, param="decision")
    api.refused(400, "invalid_state_transition", "POST", f"/v1/merchants/{shop['id']}/kyc",
                api.operator_key, {"decision": "rejected"}, param="decision")
    api.refused(404, "party_not_found", "POST", "/v1/merchants/mch_nope/kyc",
                api.operator_key, {"decision": "approved"}, param="merchant_id")
    api.verify()


def test_malformed_json(api: Api) -> None:
    w = _world(api)
    shop, alice = w["shop"], w["alice"]
    with api.unchanged():
        for content in (b"{not json", b'{"amount": 100,', b"\xff\xfe{}", b"{'a': 1}"):
            api.refused(400, "invalid_json", "POST", "/v1/orders", shop["api_key"],
                        content=content, param=None)
            api.refused(400, "invalid_json", "POST", "/v1/wallet/top_ups", alice["api_key"],
                        content=content, param=None)
        for content in (b"[]", b'"order"', b"42", b"null", b""):
            api.refused(400, "invalid_request", "POST", "/v1/orders", shop["api_key"],
                        content=content)
    # NaN is no number of fen.
    api.refused(400, "invalid_amount", "POST", "/v1/orders", shop["api_key"],
                content=b'{"out_trade_no": "T", "amount": NaN, "description": "x"}',
                param="amount")


def test_missing_or_wrong_api_keys(api: Api) -> None:
    w = _world(api)
    shop = w["shop"]
    body = {"out_trade_no": "T-key", "amount": 100, "description": "x"}
    api.refused(401, "missing_api_key", "POST", "/v1/orders", None, body)
    with api.unchanged():
        for header in ("Bearer lj_mch_notakey", "Bearer", "Basic " + shop["api_key"],
                       shop["api_key"], "Bearer " + "k" * 300, "Bearer " + shop["api_key"] + "x"):
            api.refused(401, "invalid_api_key", "POST", "/v1/orders", None, body,
                        headers={"Authorization": header})
            assert_error(api.client.get("/v1/orders", headers={"Authorization": header}), 401,
                         "invalid_api_key")
    assert_error(api.client.get("/v1/wallet"), 401, "missing_api_key")
    assert api.order(shop, **body)["out_trade_no"] == "T-key"


# -- Idempotency-Key ---------------------------------------------------------------------------


def _post_routes(api: Api, w: dict[str, Any]) -> dict[str, tuple[str, str, dict[str, Any]]]:
    """One valid request for every POST route: (OpenAPI path) -> (path, key, body)."""
    shop, alice, bob, sp = w["shop"], w["alice"], w["bob"], w["sp"]
    op = api.operator_key
    order = api.order(shop)
    closing = api.order(shop)
    paid = api.order(shop)
    api.ok("POST", f"/v1/orders/{paid['id']}/pay", alice["api_key"], {})
    code = api.ok("POST", f"/v1/merchants/{shop['id']}/qr_codes", shop["api_key"],
                  {"description": "stall"})
    pending = api.merchant(approve=False)
    key = api.ok("POST", "/v1/api_keys", op, {"party_id": shop["id"]})
    bank = api.institution["id"]
    case = _review_case(api, shop, bob)
    api.ok("POST", "/v1/clearing/end_of_day", op, {"business_date": "2026-01-03"})
    item = api.ok("POST", "/v1/clearing/reconciliations", op, {
        "institution_id": bank, "business_date": "2026-01-03", "format": "csv",
        "content": "reference,amount,currency,date\ntxf_998,1.00,CNY,2026-01-03\n"})["items"][0]
    return {
        "/v1/service_providers": ("/v1/service_providers", op, {"name": "SP"}),
        "/v1/merchants": ("/v1/merchants", sp["api_key"], {"name": "Shop"}),
        "/v1/merchants/{merchant_id}/kyc": (f"/v1/merchants/{pending['id']}/kyc", op,
                                            {"decision": "approved"}),
        "/v1/merchants/{merchant_id}/fee_rate": (f"/v1/merchants/{shop['id']}/fee_rate",
                                                 sp["api_key"], {"fee_rate_bps": 50}),
        "/v1/parties/{party_id}/freeze": (f"/v1/parties/{bob['id']}/freeze", op, {}),
        "/v1/parties/{party_id}/unfreeze": (f"/v1/parties/{bob['id']}/unfreeze", op, {}),
        "/v1/merchants/{merchant_id}/stores": (f"/v1/merchants/{shop['id']}/stores",
                                               shop["api_key"], {"name": "Main St"}),
        "/v1/merchants/{merchant_id}/qr_codes": (f"/v1/merchants/{shop['id']}/qr_codes",
                                                 shop["api_key"], {"description": "till"}),
        "/v1/consumers": ("/v1/consumers", op, {"name": "Carol"}),
        "/v1/institutions": ("/v1/institutions", op, {"name": "Bank"}),
        "/v1/api_keys": ("/v1/api_keys", op, {"party_id": shop["id"]}),
        "/v1/api_keys/{key_id}/revoke": (f"/v1/api_keys/{key['id']}/revoke", op, {}),
        "/v1/orders": ("/v1/orders", shop["api_key"],
                       {"out_trade_no": "T-idem", "amount": 100, "description": "x"}),
        "/v1/orders/{order_id}/pay": (f"/v1/orders/{order['id']}/pay", alice["api_key"], {}),
        "/v1/qr_codes/{qr_code_id}/pay": (f"/v1/qr_codes/{code['id']}/pay", alice["api_key"],
                                          {"amount": 100}),
        "/v1/orders/{order_id}/close": (f"/v1/orders/{closing['id']}/close",
                                        shop["api_key"], {}),
        "/v1/orders/{order_id}/refunds": (f"/v1/orders/{paid['id']}/refunds", shop["api_key"],
                                          {"out_refund_no": "R1", "amount": 100}),
        "/v1/wallet/top_ups": ("/v1/wallet/top_ups", alice["api_key"],
                               {"institution_id": bank, "amount": 100}),
        "/v1/wallet/withdrawals": ("/v1/wallet/withdrawals", alice["api_key"],
                                   {"institution_id": bank, "amount": 100}),
        "/v1/wallet/transfers": ("/v1/wallet/transfers", alice["api_key"],
                                 {"recipient_id": bob["id"], "amount": 100}),
        **marketing_post_routes(api, w),
        # risk
        "/v1/risk/cases/{case_id}/claim": (f"/v1/risk/cases/{case}/claim", op, {}),
        "/v1/risk/cases/{case_id}/decision": (f"/v1/risk/cases/{case}/decision", op,
                                              {"approve": True}),
        "/v1/risk/rule_sets": ("/v1/risk/rule_sets", op, {"rules": []}),
        "/v1/risk/rule_sets/{version}/activate": ("/v1/risk/rule_sets/0/activate", op, {}),
        "/v1/risk/lists": ("/v1/risk/lists", op, {"list": "block", "value": "dev_x"}),
        "/v1/risk/lists/{list_name}/{value}/remove": ("/v1/risk/lists/block/dev_x/remove", op,
                                                      {}),
        "/v1/risk/models/train": ("/v1/risk/models/train", op, {"csv": _LABELLED_CSV}),
        "/v1/risk/backtests": ("/v1/risk/backtests", op, {}),
        # clearing
        "/v1/clearing/end_of_day": ("/v1/clearing/end_of_day", op,
                                    {"business_date": "2026-01-04"}),
        "/v1/clearing/reconciliations": ("/v1/clearing/reconciliations", op, {
            "institution_id": bank, "business_date": "2026-01-04", "format": "csv",
            "content": "reference,amount,currency,date\ntxf_999,1.00,CNY,2026-01-04\n"}),
        "/v1/clearing/reconciliation_items/{item_id}/resolve": (
            f"/v1/clearing/reconciliation_items/{item['id']}/resolve", op, {"reason": "ok"}),
        "/v1/receipts/verify": ("/v1/receipts/verify", op, {}),
        "/v1/clearing/merchant_terms/{merchant_id}": (
            f"/v1/clearing/merchant_terms/{shop['id']}", op, {"delay_days": 0}),
        "/v1/clearing/net_debit_caps/{institution_id}": (
            f"/v1/clearing/net_debit_caps/{bank}", op, {"net_debit_cap": 100}),
        **credit_post_routes(api, shop),
    }


_LABELLED_CSV = "time,payer,payee,amount,label\n" + "".join(
    f"2026-03-0{1 + i // 20}T{i % 20:02d}:00:00,cus_{i % 7},mch_{i % 3},{100 + i * 37},"
    f"{int(i % 5 == 0)}\n" for i in range(60))


def _review_case(api: Api, shop: dict[str, Any], payer: dict[str, Any]) -> str:
    """A review case: a payment held by a one-off rule set, then the built-in set again."""
    op = api.operator_key
    api.ok("POST", "/v1/risk/rule_sets", op, {"rules": [
        {"name": "review_all", "expression": "amount >= 1", "action": "review"}]})
    api.ok("POST", f"/v1/orders/{api.order(shop)['id']}/pay", payer["api_key"], {})
    api.ok("POST", "/v1/risk/rule_sets/0/activate", op, {})
    return str(api.ok("GET", "/v1/risk/cases", op)["data"][0]["id"])


def test_every_post_needs_an_idempotency_key(api: Api) -> None:
    w = _world(api)
    routes = _post_routes(api, w)
    spec = api.ok("GET", "/openapi.json", None)
    posts = {path for path, ops in spec["paths"].items() if "post" in ops}
    assert posts == set(routes), posts ^ set(routes)
    with api.unchanged():
        for path, key, body in routes.values():
            for headers in (None, {"Idempotency-Key": ""}):
                api.refused(400, "idempotency_key_required", "POST", path, key, body,
                            idem="", headers=headers, param="Idempotency-Key")
    # A key longer than 255 characters is refused; 255 is fine.
    path, key, body = routes["/v1/wallet/top_ups"]
    api.refused(400, "invalid_request", "POST", path, key, body, idem="k" * 256,
                param="Idempotency-Key")
    assert api.call("POST", path, key, body, idem="k" * 255).status_code == 201
    # With a key, every one of these requests succeeds.
    for path, key, body in routes.values():
        r = api.call("POST", path, key, body)
        assert r.status_code in (200, 201), (path, r.text)
    api.verify()


def test_same_key_same_body_replays_without_a_second_effect(api: Api) -> None:
    w = _world(api)
    shop, alice = w["shop"], w["alice"]
    order_body = {"out_trade_no": "T-replay", "amount": 2_000, "description": "x"}
    first = api.call("POST", "/v1/orders", shop["api_key"], order_body, idem="create-1")
    assert first.status_code == 201 and "idempotent-replayed" not in first.headers
    before = api.dump()
    again = api.call("POST", "/v1/orders", shop["api_key"], order_body, idem="create-1")
    assert again.status_code == 201 and again.headers["idempotent-replayed"] == "true"
    assert again.content == first.content
    assert api.dump() == before

    order = first.json()
    paid = api.call("POST", f"/v1/orders/{order['id']}/pay", alice["api_key"], {}, idem="pay-1")
    assert paid.status_code == 200
    before = api.dump()
    replay = api.call("POST", f"/v1/orders/{order['id']}/pay", alice["api_key"], {},
                      idem="pay-1")
    assert replay.status_code == 200 and replay.headers["idempotent-replayed"] == "true"
    assert replay.content == paid.content
    assert api.dump() == before
    assert api.balance(alice) == 48_000

    bank = api.institution["id"]
    top = {"institution_id": bank, "amount": 1_000}
    one = api.ok("POST", "/v1/wallet/top_ups", alice["api_key"], top, idem="top-1")
    two = api.ok("POST", "/v1/wallet/top_ups", alice["api_key"], top, idem="top-1")
    assert one == two and api.balance(alice) == 49_000
    # Keys belong to the API key that sent them: another consumer's "top-1" is its own.
    bob = w["bob"]
    api.ok("POST", "/v1/wallet/top_ups", bob["api_key"], top, idem="top-1")
    assert api.balance(bob) == 51_000 and api.balance(alice) == 49_000
    api.verify()


def test_same_key_different_request_is_a_conflict(api: Api) -> None:
    w = _world(api)
    shop, alice = w["shop"], w["alice"]
    bank = api.institution["id"]
    api.ok("POST", "/v1/wallet/top_ups", alice["api_key"],
           {"institution_id": bank, "amount": 1_000}, idem="k-1")
    api.refused(409, "idempotency_conflict", "POST", "/v1/wallet/top_ups", alice["api_key"],
                {"institution_id": bank, "amount": 1_001}, idem="k-1", param="Idempotency-Key")
    api.refused(409, "idempotency_conflict", "POST", "/v1/wallet/withdrawals",
                alice["api_key"], {"institution_id": bank, "amount": 1_000}, idem="k-1",
                param="Idempotency-Key")
    order = api.order(shop, amount=100)
    api.refused(409, "idempotency_conflict", "POST", f"/v1/orders/{order['id']}/pay",
                alice["api_key"], {}, idem="k-1", param="Idempotency-Key")
    assert api.balance(alice) == 51_000
    api.verify()


def test_a_refused_request_is_not_stored_and_can_be_retried(api: Api) -> None:
    w = _world(api)
    shop = w["shop"]
    poor = api.consumer(funds=500)
    order = api.order(shop, amount=800)
    api.refused(402, "insufficient_funds", "POST", f"/v1/orders/{order['id']}/pay",
                poor["api_key"], {}, idem="pay-poor")
    api.ok("POST", "/v1/wallet/top_ups", poor["api_key"],
           {"institution_id": api.institution["id"], "amount": 300})
    r = api.call("POST", f"/v1/orders/{order['id']}/pay", poor["api_key"], {}, idem="pay-poor")
    assert r.status_code == 200 and "idempotent-replayed" not in r.headers
    assert r.json()["status"] == "paid" and api.balance(poor) == 0
    api.verify()


def test_malformed_ids_and_paths(api: Api) -> None:
    alice = api.consumer(funds=100)
    wallet = api.accounts(alice["id"])["wallet"]["id"]
    op = api.operator_key
    # Past a 64-bit column, or digits that are not ASCII: no such object, never a 500.
    for path, code in (("/v1/accounts/acc_9223372036854775808", "account_not_found"),
                       ("/v1/accounts/acc_99999999999999999999", "account_not_found"),
                       ("/v1/accounts/acc_\uff11", "account_not_found"),
                       ("/v1/accounts/txf_1", "account_not_found"),
                       ("/v1/ledger_entries/txf_9223372036854775808", "entry_not_found"),
                       ("/v1/ledger_entries/txf_\u0661", "entry_not_found")):
        assert_error(api.call("GET", path, op), 404, code, "id")
    for after in ("9223372036854775808", "-1", "x"):
        assert_error(api.call("GET", f"/v1/accounts/{wallet}/postings?after={after}", op), 400,
                     "invalid_request", "after")
    postings = api.ok("GET", f"/v1/accounts/{wallet}/postings?after=0", op)["data"]
    assert [(p["amount"], p["balance_after"]) for p in postings] == [(100, 100)]
    assert_error(api.call("GET", "/v1/nowhere", op), 404, "not_found", None)
    assert_error(api.call("DELETE", "/v1/orders", op), 405, "method_not_allowed", None)
    api.refused(404, "not_found", "POST", "/v1/api_keys/key_nope/revoke", op, param="id")


def test_a_nul_character_in_the_url_is_refused(api: Api) -> None:
    """PostgreSQL cannot hold a NUL in text: a path or query parameter carrying one is refused
    with 400 ``invalid_request`` (it was a 500 there), on every database alike."""
    shop = api.merchant(api.service_provider())
    order = api.order(shop)
    with api.unchanged():
        for path in ("/v1/orders?out_trade_no=a%00b", f"/v1/orders?merchant_id={shop['id']}%00",
                     "/v1/orders?after=ord_%00", "/v1/orders/ord_%00x",
                     f"/v1/orders/{order['id']}%00"):
            assert_error(api.call("GET", path, shop["api_key"]), 400, "invalid_request")
        api.refused(400, "invalid_request", "POST", "/v1/orders/ord_%00/close", shop["api_key"],
                    {})
    assert api.call("GET", "/v1/orders?out_trade_no=a%01b", shop["api_key"]).status_code == 200
