"""Races over real HTTP: threads, each with its own connection, against one live server.

Each race lines its requests up on a barrier, then checks the outcome that must hold whatever the
interleaving: one order is paid once, a wallet never goes below zero, a refund never exceeds
what was paid, an Idempotency-Key has one effect.
"""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from conftest import Api, assert_error

Request = tuple[str, str, str, dict[str, Any], str]  # method, path, api key, body, idem key


def race(api: Api, requests: list[Request]) -> list[httpx.Response]:
    """Send every request at once, one thread and one connection each; responses in order."""
    barrier = threading.Barrier(len(requests))

    def send(req: Request) -> httpx.Response:
        method, path, key, body, idem = req
        # Plain HTTP to 127.0.0.1: no CA bundle to load (about 60 ms a client) nor proxies.
        with httpx.Client(base_url=api.base_url, timeout=30.0, verify=False,
                          trust_env=False) as client:
            client.get("/healthz")  # connect before the barrier, so the requests overlap
            barrier.wait()
            return client.request(method, path, json=body, headers={
                "Authorization": f"Bearer {key}", "Idempotency-Key": idem})

    with ThreadPoolExecutor(max_workers=len(requests)) as pool:
        return list(pool.map(send, requests))


def _idem() -> str:
    return str(uuid.uuid4())


def _codes(responses: list[httpx.Response]) -> Counter[object]:
    return Counter(r.status_code if r.status_code < 300 else r.json()["error"]["code"]
                   for r in responses)


def test_two_consumers_race_to_pay_one_order(api: Api) -> None:
    shop = api.merchant(fee_rate_bps=60)
    alice, bob = api.consumer(funds=10_000), api.consumer(funds=10_000)
    for _round in range(5):
        order = api.order(shop, amount=1_000)
        entries = api.count("ledger_entries")
        path = f"/v1/orders/{order['id']}/pay"
        responses = race(api, [("POST", path, alice["api_key"], {}, _idem()),
                               ("POST", path, bob["api_key"], {}, _idem())])
        assert sorted(r.status_code for r in responses) == [200, 409]
        winner = next(i for i, r in enumerate(responses) if r.status_code == 200)
        assert_error(responses[1 - winner], 409, "order_already_paid", "id")
        payer = (alice, bob)[winner]
        assert api.get_order(order)["payer_id"] == payer["id"]
        assert api.count("ledger_entries") == entries + 1
    paid_by_alice = api.ok("GET", "/v1/orders?status=paid", alice["api_key"])["data"]
    paid_by_bob = api.ok("GET", "/v1/orders?status=paid", bob["api_key"])["data"]
    assert len(paid_by_alice) + len(paid_by_bob) == 5
    assert api.balance(alice) == 10_000 - 1_000 * len(paid_by_alice)
    assert api.balance(bob) == 10_000 - 1_000 * len(paid_by_bob)
    assert api.account_balance(shop["id"], "merchant_pending") == 5 * (1_000 - 6)
    api.verify()


def test_twenty_consumers_race_to_pay_one_order(api: Api) -> None:
    shop = api.merchant()
    payers = [api.consumer(funds=500) for _ in range(20)]
    order = api.order(shop, amount=500)
    path = f"/v1/orders/{order['id']}/pay"
    responses = race(api, [("POST", path, c["api_key"], {}, _idem()) for c in payers])
    assert _codes(responses) == Counter({200: 1, "order_already_paid": 19})
    winner = payers[[r.status_code for r in responses].index(200)]
    assert api.get_order(order)["payer_id"] == winner["id"]
    assert sorted(api.balance(c) for c in payers) == [0] + [500] * 19
    api.verify()


def test_many_requests_race_on_one_wallet(api: Api) -> None:
    funds, amount = 10_000, 700  # floor(10_000 / 700) = 14 of them fit
    shop = api.merchant()
    alice, bob = api.consumer(funds=funds), api.consumer()
    bank = api.institution["id"]
    orders = [api.order(shop, amount=amount) for _ in range(8)]
    key = alice["api_key"]
    requests: list[Request] = [("POST", f"/v1/orders/{o['id']}/pay", key, {}, _idem())
                               for o in orders]
    requests += [("POST", "/v1/wallet/withdrawals", key,
                  {"institution_id": bank, "amount": amount}, _idem()) for _ in range(8)]
    requests += [("POST", "/v1/wallet/transfers", key,
                  {"recipient_id": bob["id"], "amount": amount}, _idem()) for _ in range(8)]
    entries = api.count("ledger_entries")
    responses = race(api, requests)
    succeeded = sum(1 for r in responses if r.status_code < 300)
    assert succeeded == funds // amount
    assert _codes(responses)["insufficient_funds"] == len(requests) - succeeded
    for r in responses:
        if r.status_code >= 300:
            assert_error(r, 402, "insufficient_funds")
    wallet = api.ok("GET", "/v1/wallet", key)
    assert wallet["balance"] == wallet["available"] == funds - succeeded * amount == 200
    assert api.count("ledger_entries") == entries + succeeded
    paid = sum(1 for o in orders if api.get_order(o)["status"] == "paid")
    moved = sum(1 for r in responses[16:] if r.status_code < 300)
    assert api.balance(bob) == moved * amount
    assert api.account_balance(shop["id"], "merchant_pending") == paid * (amount - 3)
    api.verify()


def test_concurrent_refunds_never_exceed_what_was_paid(api: Api) -> None:
    shop = api.merchant(fee_rate_bps=60)
    alice = api.consumer(funds=10_000)
    order = api.order(shop, amount=10_000)
    api.ok("POST", f"/v1/orders/{order['id']}/pay", alice["api_key"], {})
    path = f"/v1/orders/{order['id']}/refunds"
    responses = race(api, [("POST", path, shop["api_key"],
                            {"out_refund_no": f"R{i}", "amount": 700}, _idem())
                           for i in range(20)])
    assert _codes(responses) == Counter({201: 14, "refund_exceeds_paid": 6})
    assert api.get_order(order)["refunded_amount"] == 14 * 700
    assert api.balance(alice) == 14 * 700
    refunds = api.ok("GET", path, shop["api_key"])["data"]
    assert len(refunds) == 14 and sum(r["amount"] for r in refunds) == 9_800
    assert sum(r["fee_refunded"] for r in refunds) == 60 * 9_800 // 10_000
    api.verify()


def test_concurrent_requests_with_one_idempotency_key_have_one_effect(api: Api) -> None:
    shop = api.merchant()
    alice = api.consumer(funds=1_000)
    bank = api.institution["id"]
    body = {"institution_id": bank, "amount": 250}
    responses = race(api, [("POST", "/v1/wallet/top_ups", alice["api_key"], body, "same-key")
                           for _ in range(10)])
    assert [r.status_code for r in responses] == [201] * 10
    assert len({r.content for r in responses}) == 1
    assert sum(1 for r in responses if "idempotent-replayed" not in r.headers) == 1
    assert api.balance(alice) == 1_250
    ops = api.ok("GET", "/v1/wallet/operations", alice["api_key"])["data"]
    assert [o["kind"] for o in ops].count("topup") == 2

    order = api.order(shop, amount=400)
    path = f"/v1/orders/{order['id']}/pay"
    responses = race(api, [("POST", path, alice["api_key"], {}, "pay-once")
                           for _ in range(10)])
    assert [r.status_code for r in responses] == [200] * 10
    assert len({r.content for r in responses}) == 1
    assert sum(1 for r in responses if "idempotent-replayed" not in r.headers) == 1
    assert api.balance(alice) == 850
    api.verify()


def test_concurrent_orders_with_one_out_trade_no(api: Api) -> None:
    shop = api.merchant()
    body = {"out_trade_no": "T-race", "amount": 100, "description": "x"}
    responses = race(api, [("POST", "/v1/orders", shop["api_key"], body, _idem())
                           for _ in range(10)])
    assert _codes(responses) == Counter({201: 1, "duplicate_out_trade_no": 9})
    listed = api.ok("GET", "/v1/orders", shop["api_key"])["data"]
    assert [o["out_trade_no"] for o in listed] == ["T-race"]


def test_one_idempotency_key_with_different_bodies_at_once(api: Api) -> None:
    alice = api.consumer(funds=1_000)
    bank = api.institution["id"]
    responses = race(api, [("POST", "/v1/wallet/top_ups", alice["api_key"],
                            {"institution_id": bank, "amount": 100 + i}, "one-key")
                           for i in range(10)])
    assert _codes(responses) == Counter({201: 1, "idempotency_conflict": 9})
    (won,) = [r.json() for r in responses if r.status_code == 201]
    assert api.balance(alice) == 1_000 + won["amount"]
    api.verify()


def test_paying_and_closing_one_order_at_once(api: Api) -> None:
    shop = api.merchant()
    alice = api.consumer(funds=5_000)
    for _round in range(4):
        order = api.order(shop, amount=1_000)
        pay, close = race(api, [
            ("POST", f"/v1/orders/{order['id']}/pay", alice["api_key"], {}, _idem()),
            ("POST", f"/v1/orders/{order['id']}/close", shop["api_key"], {}, _idem())])
        status = api.get_order(order)["status"]
        if status == "paid":
            assert pay.status_code == 200
            assert_error(close, 409, "order_already_paid", "id")
        else:
            assert status == "closed" and close.status_code == 200
            assert_error(pay, 400, "order_closed", "id")
    paid = len(api.ok("GET", "/v1/orders?status=paid", shop["api_key"])["data"])
    assert api.balance(alice) == 5_000 - 1_000 * paid
    api.verify()
