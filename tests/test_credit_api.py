"""The 310 flow over real HTTP: apply, accept, draw down, repay; funders see their loans and
positions; bad input is refused with a clear code and changes nothing; racing applications."""

from __future__ import annotations

import random
import threading
from datetime import timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx

from conftest import Api
from lianjie import ledger
from lianjie.committer import run_now
from lianjie.credit import synthetic
from lianjie.ledger import Purpose, check_invariants

GOOD = synthetic.Profile(level=300_000, trend=0.02, volatility=0.2, activity=0.95,
                         loyalty=0.5, refund_rate=0.0)


def _world(api: Api, **product: Any) -> dict[str, Any]:
    op = api.operator_key
    bank = api.ok("POST", "/v1/institutions", op, {"name": "Bank A"})
    merchant = api.merchant()
    run_now(api.rt.engine, lambda c: synthetic.generate(
        c, merchant["id"], GOOD, api.clock.now(), 200, random.Random(2)))
    prod = api.ok("POST", "/v1/credit/products", op, {
        "name": "310", "funders": [{"funder_id": "plt_platform", "share_bps": 2000},
                                   {"funder_id": bank["id"], "share_bps": 8000}],
        "term_count": 3, **product})
    return {"bank": bank, "merchant": merchant, "product": prod}


def _fund(api: Api, merchant_id: str, bank_id: str, amount: int) -> None:
    """The merchant's takings settled to its available balance (through the bank)."""
    def unit(conn: Any) -> None:
        src = ledger.find_account(conn, bank_id, Purpose.INSTITUTION_SETTLEMENT, "CNY")
        dst = ledger.find_account(conn, merchant_id, Purpose.MERCHANT_AVAILABLE, "CNY")
        assert src is not None and dst is not None
        ledger.transfer(conn, api.clock.now(), f"fund:{merchant_id}", src.id, dst.id, amount)
    run_now(api.rt.engine, unit)


def test_flow_over_http(api: Api) -> None:
    w = _world(api)
    mkey, bkey = w["merchant"]["api_key"], w["bank"]["api_key"]
    app = api.ok("POST", "/v1/credit/applications", mkey,
                 {"product_id": w["product"]["id"], "amount": 200_000})
    assert app["status"] == "approved" and app["limit_amount"] == 200_000, app
    api.ok("POST", f"/v1/credit/applications/{app['id']}/accept", mkey)
    loan = api.ok("POST", f"/v1/credit/applications/{app['id']}/drawdown", mkey,
                  {"amount": 150_000})
    assert {f["funder_id"]: f["principal"] for f in loan["funders"]} == {
        "plt_platform": 30_000, w["bank"]["id"]: 120_000}
    assert api.account_balance(w["merchant"]["id"], "merchant_available") == 150_000

    listed = api.ok("GET", "/v1/credit/loans", bkey)
    assert [x["id"] for x in listed["data"]] == [loan["id"]]
    pos = api.ok("GET", f"/v1/credit/funders/{w['bank']['id']}/position", bkey)
    assert pos["principal_outstanding"] == 120_000 and pos["active_loans"] == 1
    api.refused(404, "party_not_found", "GET", "/v1/credit/funders/plt_platform/position",
                bkey)

    day = api.clock.now().astimezone(ZoneInfo("Asia/Shanghai")).date()
    api.clock.advance(timedelta(days=1))  # a business day is closed once it is over
    api.ok("POST", "/v1/credit/end_of_day", api.operator_key, {"business_date": day.isoformat()})
    owed = api.ok("GET", f"/v1/credit/loans/{loan['id']}", mkey)["owed"]
    api.refused(400, "repayment_exceeds_owed", "POST", f"/v1/credit/loans/{loan['id']}/repayments",
                mkey, {"amount": owed + 1})
    api.refused(402, "insufficient_funds", "POST", f"/v1/credit/loans/{loan['id']}/repayments",
                mkey, {"amount": owed})
    _fund(api, w["merchant"]["id"], w["bank"]["id"], owed - 150_000)
    done = api.ok("POST", f"/v1/credit/loans/{loan['id']}/repayments", mkey, {"amount": owed})
    assert done["status"] == "paid_off" and done["owed"] == 0
    pos = api.ok("GET", f"/v1/credit/funders/{w['bank']['id']}/position", bkey)
    assert pos["principal_outstanding"] == 0 and pos["balances"]["interest_receivable"] == 0
    api.verify()


def test_bad_input_changes_nothing(api: Api) -> None:
    w = _world(api, amount_max=1_000_000)
    mkey, pid = w["merchant"]["api_key"], w["product"]["id"]
    for amount in (-1, 0):
        api.refused(400, "invalid_amount", "POST", "/v1/credit/applications", mkey,
                    {"product_id": pid, "amount": amount})
    api.refused(400, "invalid_amount", "POST", "/v1/credit/applications", mkey,
                {"product_id": pid, "amount": 1.5})
    api.refused(400, "amount_above_limit", "POST", "/v1/credit/applications", mkey,
                {"product_id": pid, "amount": 2_000_000})
    api.refused(404, "product_not_found", "POST", "/v1/credit/applications", mkey,
                {"product_id": "prd_nope", "amount": 100_000})
    newbie = api.merchant()
    api.refused(400, "insufficient_history", "POST", "/v1/credit/applications",
                newbie["api_key"], {"product_id": pid, "amount": 100_000})

    # A funder limit below the loan refuses the drawdown (policy "refuse").
    api.ok("POST", f"/v1/credit/funders/{w['bank']['id']}/limit", api.operator_key,
           {"exposure_max": 50_000})
    app = api.ok("POST", "/v1/credit/applications", mkey, {"product_id": pid, "amount": 100_000})
    api.refused(409, "funder_limit_exceeded", "POST",
                f"/v1/credit/applications/{app['id']}/drawdown", mkey, {"amount": 100_000})
    api.refused(400, "amount_above_limit", "POST",
                f"/v1/credit/applications/{app['id']}/drawdown", mkey, {"amount": 100_001})
    # Another merchant cannot see or draw it.
    api.refused(404, "application_not_found", "POST",
                f"/v1/credit/applications/{app['id']}/drawdown", newbie["api_key"],
                {"amount": 10_000})
    # The offer expires: drawing it is refused.
    api.clock.advance(timedelta(days=8))
    api.refused(409, "offer_expired", "POST", f"/v1/credit/applications/{app['id']}/drawdown",
                mkey, {"amount": 10_000})
    with api.rt.engine.connect() as conn:
        check_invariants(conn)


def test_credit_end_of_day_refuses_a_day_not_over(api: Api) -> None:
    today = api.clock.now().astimezone(ZoneInfo("Asia/Shanghai")).date()
    for day in (today, today + timedelta(days=3)):
        api.refused(409, "business_day_not_over", "POST", "/v1/credit/end_of_day",
                    api.operator_key, {"business_date": day.isoformat()})
    api.ok("POST", "/v1/credit/end_of_day", api.operator_key,
           {"business_date": (today - timedelta(days=1)).isoformat()})


def test_the_risk_engine_declines_a_blocklisted_merchant(api: Api) -> None:
    w = _world(api)
    mkey, pid = w["merchant"]["api_key"], w["product"]["id"]
    api.ok("POST", "/v1/risk/lists", api.operator_key,
           {"list": "block", "value": w["merchant"]["id"]})
    app = api.ok("POST", "/v1/credit/applications", mkey, {"product_id": pid, "amount": 100_000})
    assert app["status"] == "declined" and "risk_declined" in app["reasons"], app
    logged = api.ok("GET", f"/v1/risk/decisions?subject_id={app['id']}", api.operator_key)
    assert [(d["kind"], d["outcome"]) for d in logged["data"]] == [("loan_application", "block")]
    api.refused(409, "offer_not_approved", "POST", f"/v1/credit/applications/{app['id']}/accept",
                mkey)
    api.ok("POST", f"/v1/risk/lists/block/{w['merchant']['id']}/remove", api.operator_key)
    again = api.ok("POST", "/v1/credit/applications", mkey, {"product_id": pid, "amount": 100_000})
    assert again["status"] == "approved", again
    api.verify()


def test_two_applications_at_once(api: Api) -> None:
    w = _world(api)
    mkey, pid = w["merchant"]["api_key"], w["product"]["id"]
    results: list[httpx.Response] = []
    barrier = threading.Barrier(2)

    def go() -> None:
        with httpx.Client(base_url=api.base_url, timeout=30) as client:
            barrier.wait()
            results.append(client.post("/v1/credit/applications", json={
                "product_id": pid, "amount": 100_000}, headers={
                "Authorization": f"Bearer {mkey}", "Idempotency-Key": str(random.random())}))

    threads = [threading.Thread(target=go) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    codes = sorted(r.status_code for r in results)
    assert codes == [201, 409], [r.text for r in results]
    loser = next(r for r in results if r.status_code == 409)
    assert loser.json()["error"]["code"] == "application_already_open"
    assert api.count("credit_applications") == 1


def credit_post_routes(api: Api, shop: dict[str, Any]
                       ) -> dict[str, tuple[str, str, dict[str, Any]]]:
    """One valid request for every credit POST route (for the every-POST-route suites)."""
    op = api.operator_key
    w = _world(api)
    pid, bank = w["product"]["id"], w["bank"]["id"]
    borrowers = [w["merchant"], api.merchant(), api.merchant()]
    for m in [shop, *borrowers[1:]]:
        run_now(api.rt.engine, lambda c, m=m: synthetic.generate(
            c, m["id"], GOOD, api.clock.now(), 200, random.Random(3)))
    apps = [api.ok("POST", "/v1/credit/applications", m["api_key"],
                   {"product_id": pid, "amount": 100_000}) for m in borrowers]
    loan = api.ok("POST", f"/v1/credit/applications/{apps[2]['id']}/drawdown",
                  borrowers[2]["api_key"], {"amount": 100_000})
    return {
        "/v1/credit/products": ("/v1/credit/products", op, {"name": "310", "funders": [
            {"funder_id": "plt_platform", "share_bps": 10_000}]}),
        "/v1/credit/funders/{funder_id}/limit": (f"/v1/credit/funders/{bank}/limit", op,
                                                 {"exposure_max": 10**9}),
        "/v1/credit/applications": ("/v1/credit/applications", shop["api_key"],
                                    {"product_id": pid, "amount": 100_000}),
        "/v1/credit/applications/{app_id}/accept": (
            f"/v1/credit/applications/{apps[0]['id']}/accept", borrowers[0]["api_key"], {}),
        "/v1/credit/applications/{app_id}/drawdown": (
            f"/v1/credit/applications/{apps[1]['id']}/drawdown", borrowers[1]["api_key"],
            {"amount": 100_00}),
        "/v1/credit/loans/{loan_id}/repayments": (
            f"/v1/credit/loans/{loan['id']}/repayments", borrowers[2]["api_key"],
            {"amount": 100}),
        "/v1/credit/end_of_day": ("/v1/credit/end_of_day", op,
                                  {"business_date": (api.clock.now() - timedelta(days=2))
                                   .date().isoformat()}),
    }
