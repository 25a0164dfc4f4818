"""End to end over HTTP: onboard, collect, refund, and the ledger balances to the fen."""

from conftest import Api


def test_qr_payment_through_a_service_provider(api: Api) -> None:
    sp = api.service_provider(commission_share_bps=3000)
    shop = api.merchant(sp, fee_rate_bps=60)
    alice = api.consumer(funds=50_000)
    order = api.order(shop, amount=10_000)
    assert order["status"] == "open" and order["qr_code"]["content"].endswith(order["id"])
    paid = api.ok("POST", f"/v1/orders/{order['id']}/pay", alice["api_key"], {})
    assert paid["status"] == "paid" and paid["fee_amount"] == 60
    assert paid["commission_amount"] == 18
    assert api.balance(alice) == 40_000
    refund = api.ok("POST", f"/v1/orders/{order['id']}/refunds", shop["api_key"],
                    {"out_refund_no": "r1", "amount": 2_500})
    assert refund["fee_refunded"] == 15
    assert api.balance(alice) == 42_500
    verdict = api.ok("GET", "/v1/ledger/verify", api.operator_key)
    assert verdict["ok"], verdict
