"""The end client's IP and device reach the risk engine when a service provider calls on its
behalf (``Lianjie-Client-Ip`` / ``Lianjie-Device-Id``), over HTTP; other keys may not name
them, and a malformed address is refused, with nothing changed."""

from __future__ import annotations

import random
from typing import Any

from conftest import Api
from lianjie.committer import run_now
from lianjie.credit import synthetic

GOOD = synthetic.Profile(level=300_000, trend=0.02, volatility=0.2, activity=0.95,
                         loyalty=0.5, refund_rate=0.0)
CLIENT = {"Lianjie-Client-Ip": "203.0.113.7", "Lianjie-Device-Id": "dev-shop-till"}


def _decision(api: Api, subject_id: str) -> dict[str, Any]:
    found = api.ok("GET", f"/v1/risk/decisions?subject_id={subject_id}", api.operator_key)
    (d,) = found["data"]
    return dict(d)


def _sp_world(api: Api) -> tuple[dict[str, Any], dict[str, Any], str]:
    sp = api.service_provider()
    shop = api.merchant(sp)
    run_now(api.rt.engine, lambda c: synthetic.generate(
        c, shop["id"], GOOD, api.clock.now(), 200, random.Random(3)))
    bank = api.ok("POST", "/v1/institutions", api.operator_key, {"name": "Bank A"})
    product = api.ok("POST", "/v1/credit/products", api.operator_key, {
        "name": "310", "funders": [{"funder_id": bank["id"], "share_bps": 10_000}],
        "term_count": 3})
    return sp, shop, product["id"]


def _apply(api: Api, key: str, shop: dict[str, Any], product_id: str,
           headers: dict[str, str] | None = None) -> dict[str, Any]:
    r = api.call("POST", "/v1/credit/applications", key,
                 {"product_id": product_id, "amount": 100_000, "merchant_id": shop["id"]},
                 headers=headers)
    assert r.status_code == 201, r.text
    return dict(r.json())


def test_a_service_provider_passes_its_clients_ip_and_device(api: Api) -> None:
    sp, shop, product_id = _sp_world(api)
    app = _apply(api, sp["api_key"], shop, product_id,
                 {"Lianjie-Client-Ip": "2001:DB8::1", "Lianjie-Device-Id": "dev-shop-till"})
    d = _decision(api, app["id"])
    assert (d["client_ip"], d["device_id"], d["sp_id"]) == ("2001:db8::1", "dev-shop-till",
                                                            sp["id"])
    assert d["features"]["ip_blocked"] == 0
    api.ok("POST", f"/v1/credit/applications/{app['id']}/accept", sp["api_key"])


def test_a_blocked_client_ip_sent_by_the_service_provider_is_declined(api: Api) -> None:
    sp, shop, product_id = _sp_world(api)
    api.ok("POST", "/v1/risk/lists", api.operator_key,
           {"list": "block", "value": "203.0.113.7", "reason": "fraud ring"})
    app = _apply(api, sp["api_key"], shop, product_id, CLIENT)
    assert app["status"] == "declined" and "risk_declined" in app["reasons"], app
    d = _decision(api, app["id"])
    assert d["outcome"] == "block" and d["features"]["ip_blocked"] == 1


def test_without_the_headers_the_service_providers_own_address_is_not_used(api: Api) -> None:
    sp, shop, product_id = _sp_world(api)
    app = _apply(api, sp["api_key"], shop, product_id)
    d = _decision(api, app["id"])
    assert d["client_ip"] is None and d["device_id"] is None


def test_other_keys_may_not_name_the_client(api: Api) -> None:
    shop, alice = api.merchant(), api.consumer(funds=5000)
    order = api.order(shop, 1000)
    for header, value in CLIENT.items():
        api.refused(403, "untrusted_client_context", "POST", f"/v1/orders/{order['id']}/pay",
                    alice["api_key"], {}, param=header, headers={header: value})
        api.refused(403, "untrusted_client_context", "POST", "/v1/wallet/transfers",
                    alice["api_key"], {"recipient_id": api.consumer()["id"], "amount": 10},
                    param=header, headers={header: value})
    r = api.call("POST", f"/v1/orders/{order['id']}/pay", alice["api_key"],
                 {"device_id": "dev-alice"})
    assert r.status_code == 200, r.text
    d = _decision(api, order["id"])
    assert d["client_ip"] == "127.0.0.1" and d["device_id"] == "dev-alice"


def test_a_malformed_client_address_or_device_is_refused(api: Api) -> None:
    sp, shop, product_id = _sp_world(api)
    body = {"product_id": product_id, "amount": 100_000, "merchant_id": shop["id"]}
    for bad in ("203.0.113.999", "localhost", ""):
        api.refused(400, "invalid_request", "POST", "/v1/credit/applications", sp["api_key"],
                    body, param="Lianjie-Client-Ip", headers={"Lianjie-Client-Ip": bad})
    for bad in ("", "d" * 65):
        api.refused(400, "invalid_request", "POST", "/v1/credit/applications", sp["api_key"],
                    body, param="Lianjie-Device-Id", headers={"Lianjie-Device-Id": bad})
    api.refused(403, "untrusted_client_context", "POST", "/v1/credit/applications",
                shop["api_key"], body, param="Lianjie-Client-Ip", headers=CLIENT)
