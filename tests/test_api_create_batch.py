"""Order creations over HTTP share units of work (``routes_payments.create_once`` through a
``Batcher``).

The writer is held busy while the requests queue, so that they are served together; then each
must get what it would get alone, in turn: the second use of an ``out_trade_no`` is refused
even under another Idempotency-Key, an Idempotency-Key sent twice has one effect (the second
request waits for the next unit and replays the first), a caller acting for a merchant it may
not is refused, and a refused request leaves nothing behind.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

import httpx
import pytest

from conftest import Api, assert_error
from lianjie.api import routes_payments


def _body(out_trade_no: str, amount: int = 1_000, **more: Any) -> dict[str, Any]:
    return {"out_trade_no": out_trade_no, "amount": amount, "description": "noodles", **more}


def _held_together(api: Api, calls: list[tuple[str, dict[str, Any], str]]
                   ) -> tuple[list[httpx.Response], int]:
    """``(api key, body, Idempotency-Key)`` calls served together: the responses, in order, and
    how many units the create batcher ran for them."""
    batcher = routes_payments._create_batcher(api.rt)
    before = batcher.batches
    responses = api.held_together(batcher, [("/v1/orders", key, body, idem)
                                            for key, body, idem in calls])
    return responses, batcher.batches - before


def test_creations_in_one_batch_come_out_as_one_by_one(api: Api,
                                                       caplog: pytest.LogCaptureFixture
                                                       ) -> None:
    sp = api.service_provider()
    shop, other = api.merchant(sp), api.merchant()
    pending = api.merchant(sp, approve=False)
    api.order(shop, out_trade_no="T-0")  # T-0 is taken before the batch
    orders_before = api.count("payment_orders")
    keys_before = api.count("idempotency_keys")
    again = str(uuid.uuid4())
    calls = [
        (shop["api_key"], _body("T-1"), str(uuid.uuid4())),
        (shop["api_key"], _body("T-1", 2_000), str(uuid.uuid4())),  # the same out_trade_no
        (shop["api_key"], _body("T-2"), again),
        (shop["api_key"], _body("T-2"), again),  # the same key: the next unit, a replay
        (shop["api_key"], _body("T-3", merchant_id=other["id"]), str(uuid.uuid4())),
        (shop["api_key"], _body("T-4", currency="USD"), str(uuid.uuid4())),
        (sp["api_key"], _body("T-5", merchant_id=shop["id"]), str(uuid.uuid4())),
        (sp["api_key"], _body("T-6", merchant_id=other["id"]), str(uuid.uuid4())),
        (other["api_key"], _body("T-1"), str(uuid.uuid4())),  # another merchant's T-1
        (shop["api_key"], _body("T-0"), str(uuid.uuid4())),  # used before this batch
        (api.operator_key, _body("T-7", merchant_id="mch_nobody"), str(uuid.uuid4())),
        (sp["api_key"], _body("T-8", merchant_id=pending["id"]), str(uuid.uuid4())),
        (api.operator_key, _body("T-9", merchant_id=shop["id"]), str(uuid.uuid4())),
        (shop["api_key"], _body("T-4"), str(uuid.uuid4())),  # T-4 in USD took nothing
        (api.operator_key, _body("T-10", merchant_id=sp["id"]), str(uuid.uuid4())),  # an SP
    ]
    with caplog.at_level(logging.ERROR, "lianjie"):
        responses, units = _held_together(api, calls)
    assert units == 2, units
    assert not caplog.records  # served as a batch: none fell back to running alone
    # The two T-1 requests race (the thread pool sends them in any order): one is served, with
    # its own amount, the other refused.
    won = [i for i in (0, 1) if responses[i].status_code == 201]
    assert len(won) == 1, [r.text for r in responses[:2]]
    winner = responses[won[0]]
    assert winner.json()["amount"] == calls[won[0]][1]["amount"]
    assert_error(responses[1 - won[0]], 409, "duplicate_out_trade_no", "out_trade_no")
    one, two = responses[2:4]
    assert one.status_code == two.status_code == 201 and one.text == two.text
    assert {one.headers.get("idempotent-replayed"), two.headers.get("idempotent-replayed")} \
        == {None, "true"}
    assert_error(responses[4], 403, "forbidden", "merchant_id")
    assert_error(responses[5], 400, "currency_mismatch", "currency")
    assert responses[6].status_code == 201
    assert responses[6].json()["merchant_id"] == shop["id"]
    assert_error(responses[7], 403, "not_your_sub_merchant", "merchant_id")
    assert responses[8].status_code == 201
    assert responses[8].json()["merchant_id"] == other["id"]
    assert_error(responses[9], 409, "duplicate_out_trade_no", "out_trade_no")
    assert_error(responses[10], 404, "party_not_found", "merchant_id")
    assert_error(responses[11], 400, "merchant_not_approved", "merchant_id")
    assert responses[12].status_code == 201
    assert responses[12].json()["merchant_id"] == shop["id"]
    assert responses[13].status_code == 201
    assert responses[13].json()["out_trade_no"] == "T-4"
    assert_error(responses[14], 404, "party_not_found", "merchant_id")

    # Six orders (T-1, T-2, T-4, T-5, T-9 for the shop; T-1 for the other), and a stored
    # response for each of the six requests that made one: refusals store nothing.
    assert api.count("payment_orders") == orders_before + 6
    assert api.count("idempotency_keys") == keys_before + 6
    for r in (winner, responses[2], responses[6], responses[8], responses[12], responses[13]):
        order = r.json()
        assert api.get_order(order) == order
    # A refused request stored nothing under its key: sent again, fixed, it is served.
    fixed = api.call("POST", "/v1/orders", shop["api_key"], _body("T-4b"), calls[5][2])
    assert fixed.status_code == 201, fixed.text
    api.verify()
