"""Payments over HTTP share units of work (``payments.do_pay_many`` through a ``Batcher``).

The writer is held busy while requests queue, so that they are served together in one unit;
then what must hold whatever the batching holds: an order is paid once, a wallet pays only
what it has, a blocked payer is declined and logged, an Idempotency-Key has one effect (two
requests with one key are never in one unit: the second replays the first), and the ledger
verifies.
"""

from __future__ import annotations

import logging
import uuid
from collections import Counter
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from conftest import Api, assert_error
from lianjie.api import routes_payments

Call = tuple[dict[str, Any], str, str]  # consumer, order id, Idempotency-Key


def _held_together(api: Api, calls: list[Call]) -> tuple[list[httpx.Response], int]:
    """The calls served together: the responses, in order, and how many units the pay
    batcher ran for them."""
    batcher = routes_payments._pay_batcher(api.rt)
    before = batcher.batches
    responses = api.held_together(batcher, [(f"/v1/orders/{order_id}/pay", consumer["api_key"],
                                              {}, idem) for consumer, order_id, idem in calls])
    return responses, batcher.batches - before


def _code(r: httpx.Response) -> object:
    return r.status_code if r.status_code < 300 else r.json()["error"]["code"]


def test_races_inside_one_batch(api: Api, caplog: pytest.LogCaptureFixture) -> None:
    shop = api.merchant(fee_rate_bps=60)
    alice, bob, carol = (api.consumer(funds=10_000) for _ in range(3))
    poor = api.consumer(funds=1_500)
    blocked = api.consumer(funds=10_000)
    api.ok("POST", "/v1/risk/lists", api.operator_key, {"list": "block", "value": blocked["id"]})
    contested = api.order(shop, amount=1_000)
    first, second = api.order(shop, amount=1_000), api.order(shop, amount=1_000)
    plain, refused = api.order(shop, amount=2_000), api.order(shop, amount=500)
    again = str(uuid.uuid4())
    decisions = api.count("risk_decisions")
    calls: list[Call] = [
        (alice, contested["id"], str(uuid.uuid4())),
        (bob, contested["id"], str(uuid.uuid4())),
        (poor, first["id"], str(uuid.uuid4())),
        (poor, second["id"], str(uuid.uuid4())),
        (carol, plain["id"], again),
        (carol, plain["id"], again),  # the same key: the next unit, a replay
        (blocked, refused["id"], str(uuid.uuid4())),
    ]
    with caplog.at_level(logging.ERROR, "lianjie"):
        responses, units = _held_together(api, calls)
    assert units == 2, units
    assert not caplog.records  # served as a batch: none fell back to running alone
    assert Counter(_code(r) for r in responses[:2]) == Counter({200: 1,
                                                                 "order_already_paid": 1})
    assert Counter(_code(r) for r in responses[2:4]) == Counter({200: 1,
                                                                 "insufficient_funds": 1})
    one, two = responses[4:6]
    assert one.status_code == two.status_code == 200 and one.text == two.text
    assert {one.headers.get("idempotent-replayed"), two.headers.get("idempotent-replayed")} \
        == {None, "true"}
    assert_error(responses[6], 402, "risk_declined")
    # Logged: the contested order's winner (its loser was refused before the engine), the
    # poor payer's first, carol's and the declined one; the poor payer's second rolled back
    # with its refusal, as a unit's would.
    assert api.count("risk_decisions") == decisions + 4
    winner = alice if responses[0].status_code == 200 else bob
    loser = bob if winner is alice else alice
    assert api.balance(winner) == 9_000 and api.balance(loser) == 10_000
    assert api.balance(poor) == 500
    assert api.balance(carol) == 8_000 and api.balance(blocked) == 10_000
    paid = api.ok("GET", f"/v1/orders/{contested['id']}", shop["api_key"])
    assert paid["status"] == "paid" and paid["payer_id"] == winner["id"]
    assert api.ok("GET", f"/v1/orders/{refused['id']}", shop["api_key"])["status"] == "open"
    with api.rt.engine.connect() as conn:  # one payment event per paid order, none for others
        events = conn.execute(text("SELECT count(*) FROM outbox_events WHERE type = "
                                   "'payment.succeeded'")).scalar_one()
    assert events == 3
    api.verify()


def test_a_replay_and_a_conflict_in_later_batches(api: Api) -> None:
    shop = api.merchant()
    alice = api.consumer(funds=5_000)
    order, other = api.order(shop, amount=700), api.order(shop, amount=800)
    key = str(uuid.uuid4())
    first = api.call("POST", f"/v1/orders/{order['id']}/pay", alice["api_key"], {}, key)
    assert first.status_code == 200
    responses, _units = _held_together(api, [(alice, order["id"], key),
                                             (alice, other["id"], key)])
    assert responses[0].text == first.text
    assert responses[0].headers["idempotent-replayed"] == "true"
    assert_error(responses[1], 409, "idempotency_conflict")
    assert api.balance(alice) == 4_300
    assert api.ok("GET", f"/v1/orders/{other['id']}", shop["api_key"])["status"] == "open"
    api.verify()
