"""Orders, refunds and wallets over real HTTP: query, pagination, close, expiry, QR codes,
static collection codes, partial refunds to the fen, and wallet moves. Also the OpenAPI
document."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from conftest import Api, assert_error
from lianjie.payments import render

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_query_an_order_by_id_and_by_out_trade_no(api: Api) -> None:
    sp = api.service_provider()
    shop = api.merchant(sp)
    order = api.order(shop, amount=1_234, out_trade_no="T-2026-42")
    assert order["object"] == "payment_order" and order["id"].startswith("ord_")
    assert order["merchant_id"] == shop["id"] and order["service_provider_id"] == sp["id"]
    for key in (shop["api_key"], sp["api_key"], api.operator_key):
        assert api.ok("GET", f"/v1/orders/{order['id']}", key) == order
        found = api.ok("GET", f"/v1/orders?merchant_id={shop['id']}&out_trade_no=T-2026-42",
                       key)
        assert found == {"object": "list", "data": [order], "has_more": False,
                         "next_cursor": None}
    assert api.ok("GET", "/v1/orders?out_trade_no=T-2026-42", shop["api_key"])["data"] == \
        [order]
    assert api.ok("GET", "/v1/orders?out_trade_no=T-none", shop["api_key"])["data"] == []
    assert_error(api.call("GET", "/v1/orders?out_trade_no=T-2026-42", api.operator_key), 400,
                 "invalid_request", "merchant_id")
    assert_error(api.call("GET", "/v1/orders/ord_unknown", shop["api_key"]), 404,
                 "order_not_found", "id")


def test_list_orders_in_pages(api: Api) -> None:
    shop = api.merchant()
    alice = api.consumer(funds=10_000)
    created = [api.order(shop, amount=100 + i) for i in range(7)]
    for o in created[:2]:
        api.ok("POST", f"/v1/orders/{o['id']}/pay", alice["api_key"], {})
    seen: list[str] = []
    cursor = None
    pages = []
    while True:
        query = "limit=3" + (f"&after={cursor}" if cursor else "")
        page = api.ok("GET", f"/v1/orders?{query}", shop["api_key"])
        pages.append((len(page["data"]), page["has_more"]))
        seen += [o["id"] for o in page["data"]]
        if not page["has_more"]:
            assert page["next_cursor"] is None
            break
        assert page["next_cursor"] == page["data"][-1]["id"]
        cursor = page["next_cursor"]
    assert pages == [(3, True), (3, True), (1, False)]
    assert sorted(seen) == sorted(o["id"] for o in created) and len(set(seen)) == 7
    # An exact page has no next page.
    assert api.ok("GET", "/v1/orders?limit=7", shop["api_key"])["has_more"] is False
    paid = api.ok("GET", "/v1/orders?status=paid", shop["api_key"])["data"]
    assert sorted(o["id"] for o in paid) == sorted(o["id"] for o in created[:2])
    mine = api.ok("GET", "/v1/orders?limit=1", alice["api_key"])
    assert mine["has_more"] is True and mine["data"][0]["payer_id"] == alice["id"]
    for limit in (0, 101, -1):
        assert_error(api.call("GET", f"/v1/orders?limit={limit}", shop["api_key"]), 400,
                     "invalid_request", "limit")
    # The largest page works on every list.
    wallet = api.accounts(alice["id"])["wallet"]["id"]
    for path, key, count in (("/v1/orders", shop["api_key"], 7),
                             ("/v1/orders", alice["api_key"], 2),
                             ("/v1/merchants", api.operator_key, 1),
                             ("/v1/wallet/operations", alice["api_key"], 1),
                             (f"/v1/accounts/{wallet}/postings", api.operator_key, 3)):
        page = api.ok("GET", f"{path}?limit=100", key)
        assert (len(page["data"]), page["has_more"]) == (count, False), path


def test_close_an_order(api: Api) -> None:
    shop = api.merchant()
    alice = api.consumer(funds=1_000)
    order = api.order(shop, amount=500)
    closed = api.ok("POST", f"/v1/orders/{order['id']}/close", shop["api_key"])
    assert closed["status"] == "closed" and closed["closed_at"] is not None
    events = api.count("outbox_events")
    again = api.ok("POST", f"/v1/orders/{order['id']}/close", shop["api_key"])
    assert again == closed and api.count("outbox_events") == events
    api.refused(400, "order_closed", "POST", f"/v1/orders/{order['id']}/pay",
                alice["api_key"], {})
    api.refused(400, "order_not_paid", "POST", f"/v1/orders/{order['id']}/refunds",
                shop["api_key"], {"out_refund_no": "R1", "amount": 100})
    paid = api.order(shop, amount=500)
    api.ok("POST", f"/v1/orders/{paid['id']}/pay", alice["api_key"], {})
    api.refused(409, "order_already_paid", "POST", f"/v1/orders/{paid['id']}/close",
                shop["api_key"])
    assert api.get_order(paid)["status"] == "paid" and api.balance(alice) == 500


def test_an_order_expires(api: Api) -> None:
    shop = api.merchant()
    alice = api.consumer(funds=1_000)
    early = api.order(shop, amount=100, expires_in_s=60)
    late = api.order(shop, amount=100, expires_in_s=60)
    api.clock.advance(timedelta(seconds=59))
    api.ok("POST", f"/v1/orders/{early['id']}/pay", alice["api_key"], {})
    api.clock.advance(timedelta(seconds=1))  # exactly at expires_at: too late
    api.refused(400, "order_expired", "POST", f"/v1/orders/{late['id']}/pay",
                alice["api_key"], {}, param="id")
    assert api.get_order(late)["status"] == "open"  # until the background job runs
    api.background.tick()
    expired = api.get_order(late)
    assert expired["status"] == "expired" and expired["closed_at"] is not None
    assert api.get_order(early)["status"] == "paid"
    api.refused(400, "order_expired", "POST", f"/v1/orders/{late['id']}/pay",
                alice["api_key"], {}, param="id")
    api.refused(400, "order_expired", "POST", f"/v1/orders/{late['id']}/close",
                shop["api_key"], param="id")
    assert api.balance(alice) == 900
    default = api.order(shop, amount=100)
    api.clock.advance(timedelta(hours=2) - timedelta(microseconds=1))
    api.background.tick()
    assert api.get_order(default)["status"] == "open"
    api.clock.advance(timedelta(microseconds=1))
    api.background.tick()
    assert api.get_order(default)["status"] == "expired"
    api.verify()


def test_qr_codes_render_as_png_and_svg(api: Api) -> None:
    shop = api.merchant()
    order = api.order(shop, amount=100)
    content = order["qr_code"]["content"]
    assert content == f"{api.base_url}/q/{order['id']}"
    png = api.client.get(order["qr_code"]["png_url"],
                         headers={"Authorization": f"Bearer {shop['api_key']}"})
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    assert png.content.startswith(PNG_SIGNATURE) and png.content == render(content, "png")
    svg = api.client.get(order["qr_code"]["svg_url"],
                         headers={"Authorization": f"Bearer {shop['api_key']}"})
    assert svg.status_code == 200 and svg.headers["content-type"].startswith("image/svg+xml")
    assert b"<svg" in svg.content and svg.content == render(content, "svg")
    code = api.ok("POST", f"/v1/merchants/{shop['id']}/qr_codes", shop["api_key"],
                  {"description": "stall"})
    assert code["content"] == f"{api.base_url}/c/{code['id']}"
    for kind, check in (("png", PNG_SIGNATURE), ("svg", b"<svg")):
        r = api.call("GET", f"/v1/qr_codes/{code['id']}/qr.{kind}", shop["api_key"])
        assert r.status_code == 200 and check in r.content[:200]
        assert r.content == render(code["content"], kind)
    assert api.call("GET", f"/v1/orders/{order['id']}/qr.gif", shop["api_key"]
                    ).status_code == 400
    assert_error(api.call("GET", "/v1/qr_codes/qr_nope/qr.png", shop["api_key"]), 404,
                 "qr_code_not_found", "id")


def test_pay_a_static_collection_code(api: Api) -> None:
    sp = api.service_provider(commission_share_bps=5000)
    shop = api.merchant(sp, fee_rate_bps=100)
    alice = api.consumer(funds=5_000)
    store = api.ok("POST", f"/v1/merchants/{shop['id']}/stores", shop["api_key"],
                   {"name": "Main St"})
    code = api.ok("POST", f"/v1/merchants/{shop['id']}/qr_codes", shop["api_key"],
                  {"description": "till 1", "store_id": store["id"]})
    assert code["object"] == "qr_code" and code["active"] is True
    assert api.ok("GET", f"/v1/qr_codes/{code['id']}", alice["api_key"]) == code
    order = api.ok("POST", f"/v1/qr_codes/{code['id']}/pay", alice["api_key"],
                   {"amount": 1_250})
    assert order["status"] == "paid" and order["amount"] == 1_250
    assert order["qr_code_id"] == code["id"] and order["store_id"] == store["id"]
    assert order["payer_id"] == alice["id"] and order["description"] == "till 1"
    assert order["fee_amount"] == 13 and order["commission_amount"] in (6, 7)
    assert api.balance(alice) == 3_750
    assert api.account_balance(shop["id"], "merchant_pending") == 1_250 - 13
    assert api.account_balance(sp["id"], "sp_commission") == order["commission_amount"]
    assert api.account_balance("plt_platform", "fee_revenue") == \
        13 - order["commission_amount"]
    api.refused(404, "qr_code_not_found", "POST", "/v1/qr_codes/qr_nope/pay",
                alice["api_key"], {"amount": 100}, param="id")
    api.refused(402, "insufficient_funds", "POST", f"/v1/qr_codes/{code['id']}/pay",
                alice["api_key"], {"amount": 3_751})
    api.verify()


def _refund(api: Api, merchant: dict[str, Any], order: dict[str, Any], no: str,
            amount: int) -> dict[str, Any]:
    return api.ok("POST", f"/v1/orders/{order['id']}/refunds", merchant["api_key"],
                  {"out_refund_no": no, "amount": amount})


def test_partial_refunds_return_fee_and_commission_to_the_fen(api: Api) -> None:
    sp = api.service_provider(commission_share_bps=3000)
    shop = api.merchant(sp, fee_rate_bps=60)
    alice = api.consumer(funds=30_000)
    order = api.order(shop, amount=10_000)
    paid = api.ok("POST", f"/v1/orders/{order['id']}/pay", alice["api_key"], {})
    assert (paid["fee_amount"], paid["commission_amount"]) == (60, 18)
    assert api.account_balance("plt_platform", "fee_revenue") == 42
    assert api.account_balance(sp["id"], "sp_commission") == 18
    backs = []
    for no, amount in (("R1", 3_333), ("R2", 3_333), ("R3", 3_334)):
        api.clock.advance(timedelta(seconds=1))  # refunds are listed oldest first
        r = _refund(api, shop, order, no, amount)
        assert r["object"] == "refund" and r["status"] == "succeeded"
        backs.append((r["fee_refunded"], r["commission_refunded"]))
    # Running totals: floor(60 * 3333 / 10000) = 19, floor(60 * 6666 / 10000) = 39, then 60.
    assert backs == [(19, 5), (20, 6), (21, 7)]
    assert api.account_balance("plt_platform", "fee_revenue") == 0
    assert api.account_balance(sp["id"], "sp_commission") == 0
    assert api.account_balance(shop["id"], "merchant_pending") == 0
    assert api.balance(alice) == 30_000
    final = api.get_order(order)
    assert final["refunded_amount"] == 10_000 and final["status"] == "paid"
    listed = api.ok("GET", f"/v1/orders/{order['id']}/refunds", shop["api_key"])["data"]
    assert [r["out_refund_no"] for r in listed] == ["R1", "R2", "R3"]

    # An awkward amount and rate, refunded one fen at a time and then the rest.
    api.ok("POST", f"/v1/merchants/{shop['id']}/fee_rate", sp["api_key"], {"fee_rate_bps": 38})
    odd = api.order(shop, amount=9_999)
    odd_paid = api.ok("POST", f"/v1/orders/{odd['id']}/pay", alice["api_key"], {})
    fee, commission = odd_paid["fee_amount"], odd_paid["commission_amount"]
    assert fee == 38 and commission in (11, 12)
    parts = [_refund(api, shop, odd, f"S{i}", 1) for i in range(7)]
    parts.append(_refund(api, shop, odd, "S-rest", 9_999 - 7))
    assert sum(p["fee_refunded"] for p in parts) == fee
    assert sum(p["commission_refunded"] for p in parts) == commission
    assert api.account_balance("plt_platform", "fee_revenue") == 0
    assert api.account_balance(sp["id"], "sp_commission") == 0
    assert api.balance(alice) == 30_000
    api.verify()


def test_refunds_are_idempotent_by_out_refund_no(api: Api) -> None:
    shop = api.merchant(fee_rate_bps=60)
    alice = api.consumer(funds=20_000)
    order = api.order(shop, amount=10_000)
    other = api.order(shop, amount=5_000)
    unpaid = api.order(shop, amount=5_000)
    for o in (order, other):
        api.ok("POST", f"/v1/orders/{o['id']}/pay", alice["api_key"], {})
    first = _refund(api, shop, order, "R-1", 2_500)
    before = api.dump()
    again = _refund(api, shop, order, "R-1", 2_500)  # a new Idempotency-Key, same refund
    assert again == first
    after = api.dump()
    assert len(after.pop("idempotency_keys")) == len(before.pop("idempotency_keys")) + 1
    assert after == before  # no money moved, no refund or event added
    api.refused(409, "duplicate_out_refund_no", "POST", f"/v1/orders/{order['id']}/refunds",
                shop["api_key"], {"out_refund_no": "R-1", "amount": 2_000},
                param="out_refund_no")
    api.refused(409, "duplicate_out_refund_no", "POST", f"/v1/orders/{other['id']}/refunds",
                shop["api_key"], {"out_refund_no": "R-1", "amount": 2_500},
                param="out_refund_no")
    api.refused(400, "order_not_paid", "POST", f"/v1/orders/{unpaid['id']}/refunds",
                shop["api_key"], {"out_refund_no": "R-2", "amount": 100}, param="id")
    api.refused(404, "order_not_found", "POST", "/v1/orders/ord_nope/refunds",
                shop["api_key"], {"out_refund_no": "R-2", "amount": 100}, param="id")
    for bad in ("", "r" * 65):
        api.refused(400, "invalid_request", "POST", f"/v1/orders/{order['id']}/refunds",
                    shop["api_key"], {"out_refund_no": bad, "amount": 100},
                    param="out_refund_no")
    assert api.count("refunds") == 1 and api.balance(alice) == 7_500
    assert api.get_order(order)["refunded_amount"] == 2_500
    api.verify()


def test_wallet_top_up_withdraw_and_transfer(api: Api) -> None:
    alice, bob = api.consumer(funds=5_000), api.consumer()
    bank = api.institution["id"]
    key = alice["api_key"]
    top = api.ok("POST", "/v1/wallet/top_ups", key, {"institution_id": bank, "amount": 1_000})
    assert top["kind"] == "topup" and top["counterparty_id"] == bank
    out = api.ok("POST", "/v1/wallet/withdrawals", key,
                 {"institution_id": bank, "amount": 2_000})
    assert out["kind"] == "withdrawal"
    api.refused(402, "insufficient_funds", "POST", "/v1/wallet/withdrawals", key,
                {"institution_id": bank, "amount": 4_001})
    sent = api.ok("POST", "/v1/wallet/transfers", key,
                  {"recipient_id": bob["id"], "amount": 1_500, "note": "dinner"})
    assert sent["kind"] == "p2p" and sent["note"] == "dinner"
    api.refused(402, "insufficient_funds", "POST", "/v1/wallet/transfers", key,
                {"recipient_id": bob["id"], "amount": 2_501})
    api.refused(400, "same_wallet", "POST", "/v1/wallet/transfers", key,
                {"recipient_id": alice["id"], "amount": 1}, param="recipient_id")
    shop = api.merchant()
    api.refused(404, "party_not_found", "POST", "/v1/wallet/transfers", key,
                {"recipient_id": shop["id"], "amount": 1}, param="recipient_id")
    api.refused(404, "party_not_found", "POST", "/v1/wallet/withdrawals", key,
                {"institution_id": shop["id"], "amount": 1}, param="institution_id")
    api.refused(400, "invalid_request", "POST", "/v1/wallet/transfers", key,
                {"recipient_id": bob["id"], "amount": 1, "note": "n" * 201}, param="note")
    wallet = api.ok("GET", "/v1/wallet", key)
    assert wallet == {"object": "wallet", "consumer_id": alice["id"], "currency": "CNY",
                      "balance": 2_500, "available": 2_500, "pending": 0}
    assert api.balance(bob) == 1_500
    # Everything the bank paid in, less what it paid out, is in the two wallets.
    assert api.account_balance(bank, "institution_settlement") == -(2_500 + 1_500)
    # Withdrawing to the fen is fine; one more fen is not.
    api.ok("POST", "/v1/wallet/withdrawals", key, {"institution_id": bank, "amount": 2_500})
    api.refused(402, "insufficient_funds", "POST", "/v1/wallet/withdrawals", key,
                {"institution_id": bank, "amount": 1})
    ops = api.ok("GET", "/v1/wallet/operations", key)["data"]
    assert sorted(o["kind"] for o in ops) == ["p2p", "topup", "topup", "withdrawal",
                                              "withdrawal"]
    api.verify()


def test_openapi_lists_the_v1_paths(api: Api) -> None:
    spec = api.ok("GET", "/openapi.json", None)
    assert spec["openapi"].startswith("3.") and spec["info"]["title"] == "Lianjie"
    paths = spec["paths"]
    for path, method in (("/v1/orders", "post"), ("/v1/orders", "get"),
                         ("/v1/orders/{order_id}", "get"), ("/v1/orders/{order_id}/pay", "post"),
                         ("/v1/orders/{order_id}/close", "post"),
                         ("/v1/orders/{order_id}/refunds", "post"),
                         ("/v1/qr_codes/{qr_code_id}/pay", "post"),
                         ("/v1/merchants", "post"), ("/v1/wallet", "get"),
                         ("/v1/wallet/transfers", "post"), ("/v1/ledger/verify", "get"),
                         ("/v1/webhook_deliveries", "get")):
        assert method in paths[path], (path, method)
    assert all(p.startswith("/v1/") for p in paths), sorted(paths)
