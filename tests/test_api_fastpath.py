"""The routes answered below FastAPI (``api.fastpath``) answer exactly as FastAPI's do.

Two real servers share one runtime: the app as served (create, pay and grab on the fast path)
and the same app entered through FastAPI's own ``__call__`` (every request through FastAPI's
routes). The same request sent to both gets the same status, headers and body, and one
Idempotency-Key used on one server is replayed by the other, so both fingerprint a request
alike. Refusals too: those the fast path hands to FastAPI and those its unit of work raises.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from starlette.datastructures import URL
from starlette.routing import Match

from conftest import Api, _free_port, serve_in_thread
from lianjie.api import create_app, idempotency
from lianjie.api.fastpath import BODY_BYTES_MAX, _match, _Request
from lianjie.api.routes_marketing import grab
from lianjie.api.routes_payments import create_order, pay_order

SERVER_STOP_TIMEOUT_S = 10.0
HEADERS_COMPARED = ("content-type", "content-length", "idempotent-replayed")


@pytest.fixture
def plain(api: Api) -> Iterator[httpx.Client]:
    """A second server on the same runtime that sends every request through FastAPI."""
    app = create_app(api.rt, background=False)

    async def through_fastapi(scope: Any, receive: Any, send: Any) -> None:
        await FastAPI.__call__(app, scope, receive, send)

    port = _free_port()
    # lifespan off: the first server's lifespan runs the shared committer
    server, thread = serve_in_thread(through_fastapi, port, lifespan="off")
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30.0)
    try:
        yield client
    finally:
        client.close()
        server.should_exit = True
        thread.join(SERVER_STOP_TIMEOUT_S)
        assert not thread.is_alive(), "server did not stop"


def _send(client: httpx.Client, path: str, key: str | None, body: Any, idem: str | None,
          **extra: Any) -> httpx.Response:
    headers = dict(extra.pop("headers", {}))
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    if idem is not None:
        headers["Idempotency-Key"] = idem
    if "content" in extra:
        return client.post(path, headers=headers, **extra)
    return client.post(path, json=body, headers=headers)


def _shape(r: httpx.Response) -> tuple[int, dict[str, str], bytes]:
    return r.status_code, {h: r.headers[h] for h in HEADERS_COMPARED if h in r.headers}, \
        r.content


Call = tuple[str, str, Any]  # path, API key, body


def _same_both_ways(api: Api, plain: httpx.Client, one: Call, other: Call) -> None:
    """``one`` sent fast then plain under one key, ``other`` plain then fast under another:
    each second request replays the first byte for byte."""
    for first, second, (path, key, body) in ((api.client, plain, one),
                                             (plain, api.client, other)):
        idem = str(uuid.uuid4())
        original = _send(first, path, key, body, idem)
        assert original.status_code < 300, original.text
        replay = _send(second, path, key, body, idem)
        assert replay.headers["idempotent-replayed"] == "true"
        assert "idempotent-replayed" not in original.headers
        assert _shape(replay)[2] == _shape(original)[2]
        assert replay.status_code == original.status_code
        for header in ("content-type", "content-length"):
            assert replay.headers[header] == original.headers[header]


def test_create_pay_and_grab_replay_across_fast_and_plain(api: Api,
                                                          plain: httpx.Client) -> None:
    shop = api.merchant(api.service_provider())
    alice, bob, carol = api.consumer(funds=50_000), api.consumer(), api.consumer()
    _same_both_ways(api, plain,
                    ("/v1/orders", shop["api_key"],
                     {"out_trade_no": "T-1", "amount": 1200, "description": "noodles"}),
                    ("/v1/orders", shop["api_key"],
                     {"out_trade_no": "T-2", "amount": 800, "description": "tea"}))
    orders = api.ok("GET", "/v1/orders", shop["api_key"])["data"]
    assert sorted(o["amount"] for o in orders) == [800, 1200]
    _same_both_ways(api, plain, (f"/v1/orders/{orders[0]['id']}/pay", alice["api_key"], {}),
                    (f"/v1/orders/{orders[1]['id']}/pay", alice["api_key"],
                     {"device_id": "phone"}))
    assert api.balance(alice) == 50_000 - 2000
    assert all(api.get_order(o)["status"] == "paid" for o in orders)
    group = api.ok("POST", "/v1/groups", alice["api_key"], {"name": "family"})
    api.ok("POST", f"/v1/groups/{group['id']}/members", alice["api_key"],
           {"consumer_ids": [bob["id"], carol["id"]]})
    packet = api.ok("POST", "/v1/red_packets", alice["api_key"],
                    {"group_id": group["id"], "amount": 500, "shares": 2, "split": "equal"})
    path = f"/v1/red_packets/{packet['id']}/grab"
    _same_both_ways(api, plain, (path, bob["api_key"], {}),
                    (path, carol["api_key"], {"device_id": "phone"}))
    assert api.balance(bob) == 250 and api.balance(carol) == 250  # replays moved nothing
    api.verify()


def test_refusals_are_the_same_from_both(api: Api, plain: httpx.Client) -> None:
    """What the fast path hands to FastAPI (bad body, key, role, media type) and what its unit
    of work raises (unknown order, paid twice): same status, headers and body."""
    shop = api.merchant(api.service_provider())
    alice = api.consumer(funds=5000)
    paid = api.order(shop, amount=100)
    api.ok("POST", f"/v1/orders/{paid['id']}/pay", alice["api_key"], {})
    order_body = {"out_trade_no": "T-x", "amount": 100, "description": "x"}
    cases: list[tuple[str, str | None, Any, str | None, dict[str, Any]]] = [
        ("/v1/orders", None, order_body, "k", {}),
        ("/v1/orders", "sk_nope", order_body, "k", {}),
        ("/v1/orders", shop["api_key"], order_body, None, {}),
        ("/v1/orders", shop["api_key"], {**order_body, "amount": 1.5}, "k", {}),
        ("/v1/orders", shop["api_key"], {**order_body, "amount": 10**40}, "k", {}),
        ("/v1/orders", shop["api_key"], {**order_body, "currency": "XXX"}, "k", {}),
        ("/v1/orders", shop["api_key"], None, "k",
         {"content": b"{not json", "headers": {"Content-Type": "application/json"}}),
        ("/v1/orders", shop["api_key"], None, "k",
         {"content": b'{"amount": 1}', "headers": {"Content-Type": "text/plain"}}),
        ("/v1/orders/ord_nope/pay", alice["api_key"], {}, "k", {}),
        ("/v1/orders/ord_nope/pay", shop["api_key"], {}, "k", {}),
        (f"/v1/orders/{paid['id']}/pay", alice["api_key"], {}, "k", {}),
        (f"/v1/orders/{paid['id']}/pay", alice["api_key"], [], "k", {}),
        ("/v1/red_packets/rp_nope/grab", alice["api_key"], {}, "k", {}),
        ("/v1/red_packets/rp_nope/grab", shop["api_key"], {}, "k", {}),
    ]
    with api.unchanged():
        for path, key, body, idem, extra in cases:
            idem = idem and str(uuid.uuid4())
            fast = _send(api.client, path, key, body, idem, **dict(extra))
            slow = _send(plain, path, key, body, idem and str(uuid.uuid4()), **dict(extra))
            assert 400 <= fast.status_code < 500, (path, fast.text)
            assert _shape(fast) == _shape(slow), (path, body, fast.text, slow.text)


def test_large_and_streamed_bodies_reach_fastapi_whole(api: Api,
                                                       plain: httpx.Client) -> None:
    shop = api.merchant(api.service_provider())
    big = {"out_trade_no": "T-big", "amount": 100, "description": "x" * (BODY_BYTES_MAX + 1)}
    fast = _send(api.client, "/v1/orders", shop["api_key"], big, "big-1")
    slow = _send(plain, "/v1/orders", shop["api_key"], big, "big-1")
    assert fast.status_code == slow.status_code
    assert slow.headers.get("idempotent-replayed") == ("true" if fast.status_code < 300
                                                       else None)

    def chunks() -> Iterator[bytes]:  # sent chunked: several http.request messages
        yield b'{"out_trade_no": "T-chunked", '
        yield b'"amount": 300, "description": "dumplings"}'

    r = _send(api.client, "/v1/orders", shop["api_key"], None, "chunked-1",
              content=chunks(), headers={"Content-Type": "application/json"})
    assert r.status_code == 201, r.text
    assert r.json()["amount"] == 300 and r.json()["out_trade_no"] == "T-chunked"


def _first_endpoint(routes: Any, scope: dict[str, Any]) -> Any:
    """The endpoint FastAPI's router sends ``scope`` to (an included router's routes are
    its candidates, in order)."""
    for route in routes:
        match, _child = route.matches(scope)
        if match != Match.FULL:
            continue
        for c in getattr(route, "_effective_candidates", None) or [route]:
            if c.path_regex.fullmatch(scope["path"]) and scope["method"] in c.methods:
                return c.endpoint
    return None


def test_fast_routes_are_the_routes_fastapi_would_take(api: Api) -> None:
    app = create_app(api.rt, background=False)
    endpoints = {create_order: "create", pay_order: "pay", grab: "grab"}
    paths = ["/v1/orders", "/v1/orders/ord_1/pay", "/v1/orders/ord 1%/pay",
             "/v1/red_packets/rp_1/grab", "/v1/orders/", "/v1/orders/ord_1",
             "/v1/orders/ord_1/pay/", "/v1/orders//pay", "/v1/orders/a/b/pay",
             "/v1/red_packets/rp_1/grabs", "/v1/qr_codes/qr_1/pay", "/v1/orders/ord_1/refunds"]
    for path in paths:
        scope = {"type": "http", "method": "POST", "path": path, "root_path": "",
                 "headers": []}
        taken = endpoints.get(_first_endpoint(app.router.routes, scope))
        fast = _match(scope)
        assert (fast is not None) == (taken is not None), path
        if fast is not None:
            assert fast[0].__name__.strip("_").split("_")[0] == taken, path
    get = {"type": "http", "method": "GET", "path": "/v1/orders", "root_path": "",
           "headers": []}
    assert _match(get) is None


def test_the_fingerprint_path_is_the_one_fastapi_sees() -> None:
    """The fast path reads the path from the scope when Starlette's URL gives it back as it is,
    and builds the URL otherwise: either way the request fingerprints as ``Runtime.mutate``'s
    does (``request.url.path``), so a key used on one path replays on the other."""
    paths = ["/v1/red_packets/rp_1/grab", "/v1/orders/ord 1%/pay", "/v1/orders/a?b/pay",
             "/v1/orders/a#b/pay", "/v1/orders/a\\b/pay", "/v1/orders/a\tb/pay",
             "/v1/red_packets/红包/grab", "//v1/orders/x/pay"]
    for path in paths:
        for headers in ([(b"host", b"127.0.0.1:8000")], []):
            scope = {"type": "http", "method": "POST", "path": path, "root_path": "",
                     "headers": [*headers, (b"idempotency-key", b"k1")],
                     "server": ("127.0.0.1", 8000), "query_string": b""}
            key, fp = _Request(scope, b"{}").idempotency()
            assert key == "k1"
            assert fp == idempotency.fingerprint("POST", URL(scope=scope).path, b"{}"), path
