"""A drawn-down loan for the console's credit tests, made through the HTTP API."""

from __future__ import annotations

from typing import Any

from conftest import Api
from test_credit_api import _fund, _world


def drawn_loan(api: Api, funded: int = 100_000) -> dict[str, Any]:
    """A 150.00 loan funded 20/80 by the platform and a bank; the merchant holds ``funded``
    more than it borrowed in its available balance."""
    w = _world(api)
    mkey = w["merchant"]["api_key"]
    app = api.ok("POST", "/v1/credit/applications", mkey,
                 {"product_id": w["product"]["id"], "amount": 200_000})
    api.ok("POST", f"/v1/credit/applications/{app['id']}/accept", mkey)
    loan = api.ok("POST", f"/v1/credit/applications/{app['id']}/drawdown", mkey,
                  {"amount": 150_000})
    if funded:
        _fund(api, w["merchant"]["id"], w["bank"]["id"], funded)
    return {**w, "loan": loan}
