"""Webhooks over real HTTP: a small receiver in the test gets signed events from the server's
background job, for the merchant and its service provider, and failed deliveries are retried
after their backoff, never before."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from conftest import Api
from lianjie.payments import verify_signature
from lianjie.payments.webhooks import ATTEMPTS_MAX, backoff


class Receiver:
    """An HTTP endpoint that records every POST and answers with the planned statuses."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.planned: list[int] = []  # answered in order; 200 once they run out
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with receiver._lock:
                    receiver.requests.append({"path": self.path, "body": body,
                                              "headers": dict(self.headers)})
                    status = receiver.planned.pop(0) if receiver.planned else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def to(self, path: str) -> list[dict[str, Any]]:
        with self._lock:
            return [r for r in self.requests if r["path"] == path]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(5)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def _deliveries(api: Api, event_id: str) -> dict[str, dict[str, Any]]:
    found = api.ok("GET", f"/v1/webhook_deliveries?event_id={event_id}", api.operator_key)
    return {d["party_id"]: d for d in found["data"]}


def _now_s(api: Api) -> int:
    return int(api.clock.now().timestamp())


def test_a_payment_is_notified_signed_to_the_merchant_and_its_sp(api: Api,
                                                                   receiver: Receiver) -> None:
    sp = api.service_provider(webhook_url=f"{receiver.url}/sp")
    shop = api.merchant(sp, fee_rate_bps=60, webhook_url=f"{receiver.url}/shop")
    alice = api.consumer(funds=10_000)
    order = api.order(shop, amount=2_000)
    api.ok("POST", f"/v1/orders/{order['id']}/pay", alice["api_key"], {})
    assert receiver.requests == []  # nothing is sent inline with the payment
    api.background.tick()

    (to_shop,), (to_sp,) = receiver.to("/shop"), receiver.to("/sp")
    event = json.loads(to_shop["body"])
    assert event["id"].startswith("evt_") and event["object"] == "event"
    assert event["type"] == "payment.succeeded"
    data = event["data"]
    assert (data["id"], data["status"], data["amount"]) == (order["id"], "paid", 2_000)
    assert (data["fee_amount"], data["payer_id"]) == (12, alice["id"])
    assert to_sp["body"] == to_shop["body"]  # the same event, with the same id
    assert to_shop["headers"]["Lianjie-Event-Id"] == event["id"]
    assert to_shop["headers"]["Content-Type"] == "application/json"

    shop_secret, sp_secret = api.webhook_secret(shop["id"]), api.webhook_secret(sp["id"])
    assert shop_secret != sp_secret
    now_s = _now_s(api)
    for request, secret, other in ((to_shop, shop_secret, sp_secret),
                                   (to_sp, sp_secret, shop_secret)):
        header, body = request["headers"]["Lianjie-Signature"], request["body"]
        assert header.startswith(f"t={now_s},v1=")
        assert verify_signature(secret, header, body, now_s)
        assert not verify_signature(other, header, body, now_s)
        assert not verify_signature(secret, header, body.replace(b"2000", b"2001"), now_s)
        assert not verify_signature(secret, header, body, now_s + 301)  # too old to trust

    deliveries = _deliveries(api, event["id"])
    assert set(deliveries) == {shop["id"], sp["id"]}
    for d in deliveries.values():
        assert (d["status"], d["attempts"], d["event_type"]) == ("delivered", 1,
                                                                 "payment.succeeded")
    api.background.tick()
    assert len(receiver.requests) == 2  # delivered once, not again

    api.ok("POST", f"/v1/orders/{order['id']}/refunds", shop["api_key"],
           {"out_refund_no": "R1", "amount": 500})
    closing = api.order(shop, amount=100)
    api.ok("POST", f"/v1/orders/{closing['id']}/close", shop["api_key"])
    expiring = api.order(shop, amount=100, expires_in_s=30)
    api.background.tick()
    api.clock.advance(timedelta(seconds=30))
    api.background.tick()  # expires the order, then notifies
    events = [json.loads(r["body"]) for r in receiver.to("/shop")]
    assert [e["type"] for e in events] == ["payment.succeeded", "refund.succeeded",
                                           "order.closed", "order.expired"]
    assert events[1]["data"]["amount"] == 500 and events[1]["data"]["order_id"] == order["id"]
    assert events[2]["data"]["id"] == closing["id"]
    assert events[3]["data"]["id"] == expiring["id"]
    assert len({e["id"] for e in events}) == 4
    assert [r["body"] for r in receiver.to("/sp")] == [r["body"] for r in receiver.to("/shop")]
    mine = api.ok("GET", "/v1/webhook_deliveries", shop["api_key"])["data"]
    assert len(mine) == 4 and {d["party_id"] for d in mine} == {shop["id"]}
    assert {d["status"] for d in mine} == {"delivered"}


def test_a_failed_delivery_is_retried_after_its_backoff(api: Api, receiver: Receiver) -> None:
    shop = api.merchant(webhook_url=f"{receiver.url}/shop")
    alice = api.consumer(funds=1_000)
    order = api.order(shop, amount=100)
    api.ok("POST", f"/v1/orders/{order['id']}/pay", alice["api_key"], {})
    receiver.planned = [500, 503]
    paid_at = api.clock.now()
    api.background.tick()
    (first,) = receiver.to("/shop")
    event_id = json.loads(first["body"])["id"]
    d = _deliveries(api, event_id)[shop["id"]]
    assert (d["status"], d["attempts"], d["last_error"]) == ("pending", 1, "HTTP 500")
    assert d["next_attempt_at"] == (paid_at + timedelta(seconds=5)).isoformat().replace(
        "+00:00", "Z")

    api.background.tick()
    api.clock.advance(timedelta(seconds=4))
    api.background.tick()
    assert len(receiver.requests) == 1  # not before the backoff
    api.clock.advance(timedelta(seconds=1))
    api.background.tick()
    assert len(receiver.requests) == 2
    d = _deliveries(api, event_id)[shop["id"]]
    assert (d["status"], d["attempts"], d["last_error"]) == ("pending", 2, "HTTP 503")

    api.clock.advance(timedelta(seconds=9))  # the backoff doubles to 10 s
    api.background.tick()
    assert len(receiver.requests) == 2
    api.clock.advance(timedelta(seconds=1))
    api.background.tick()
    assert len(receiver.requests) == 3
    d = _deliveries(api, event_id)[shop["id"]]
    assert (d["status"], d["attempts"], d["last_error"]) == ("delivered", 3, None)
    assert d["delivered_at"] is not None
    bodies = {r["body"] for r in receiver.requests}
    assert len(bodies) == 1  # every attempt carries the same event
    last = receiver.requests[-1]
    assert verify_signature(api.webhook_secret(shop["id"]),
                            last["headers"]["Lianjie-Signature"], last["body"], _now_s(api))
    api.clock.advance(timedelta(hours=2))
    api.background.tick()
    assert len(receiver.requests) == 3


def test_an_unreachable_endpoint_stays_pending(api: Api) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]  # nothing listens here once the socket is closed
    shop = api.merchant(webhook_url=f"http://127.0.0.1:{closed_port}/hook")
    alice = api.consumer(funds=1_000)
    order = api.order(shop, amount=100)
    api.ok("POST", f"/v1/orders/{order['id']}/pay", alice["api_key"], {})
    api.background.tick()
    (d,) = api.ok("GET", "/v1/webhook_deliveries", shop["api_key"])["data"]
    assert (d["status"], d["attempts"]) == ("pending", 1)
    assert d["last_error"].startswith("ConnectError")
    assert api.get_order(order)["status"] == "paid"  # the payment stands regardless


def test_a_delivery_that_keeps_failing_ends_failed(api: Api, receiver: Receiver) -> None:
    shop = api.merchant(webhook_url=f"{receiver.url}/shop")
    alice = api.consumer(funds=1_000)
    order = api.order(shop, amount=100)
    api.ok("POST", f"/v1/orders/{order['id']}/pay", alice["api_key"], {})
    receiver.planned = [500] * ATTEMPTS_MAX
    api.background.tick()
    for attempt in range(1, ATTEMPTS_MAX):
        (d,) = api.ok("GET", "/v1/webhook_deliveries", shop["api_key"])["data"]
        assert (d["status"], d["attempts"]) == ("pending", attempt)
        api.clock.advance(backoff(attempt))  # 5 s, 10 s, ... up to an hour
        api.background.tick()
    (d,) = api.ok("GET", "/v1/webhook_deliveries", shop["api_key"])["data"]
    assert (d["status"], d["attempts"], d["last_error"]) == ("failed", ATTEMPTS_MAX, "HTTP 500")
    api.clock.advance(timedelta(days=1))
    api.background.tick()
    assert len(receiver.requests) == ATTEMPTS_MAX  # a failed delivery is not tried again
