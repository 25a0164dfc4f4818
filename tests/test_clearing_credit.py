"""End of day closes credit's day before settling: a loan takes its share of the merchant's
receipts from the pending account, and settlement pays out only what is left. Real HTTP, both
databases."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import text

from conftest import Api
from lianjie.clearing import ClearingConfig
from test_credit_api import _world


def test_loan_repayment_from_receipts_comes_before_the_payout(api: Api) -> None:
    op = api.operator_key
    w = _world(api, receipt_share_bps=5000)
    shop, mkey = w["merchant"], w["merchant"]["api_key"]
    app = api.ok("POST", "/v1/credit/applications", mkey,
                 {"product_id": w["product"]["id"], "amount": 200_000})
    api.ok("POST", f"/v1/credit/applications/{app['id']}/accept", mkey)
    loan = api.ok("POST", f"/v1/credit/applications/{app['id']}/drawdown", mkey,
                  {"amount": 150_000})

    cfg = ClearingConfig()
    api.clock.advance(timedelta(days=2))  # past the synthetic history's last day
    day = cfg.business_date(api.clock.now())
    # Credit's earlier days are closed before today's takings (their synthetic orders carry no
    # ledger money, so they must not be netted against today's).
    api.ok("POST", "/v1/credit/end_of_day", op,
           {"business_date": (day - timedelta(days=1)).isoformat()})
    alice = api.consumer(funds=100_000)
    net = 0
    for amount in (10_000, 20_000, 7_000):
        order = api.order(shop, amount=amount)
        paid = api.ok("POST", f"/v1/orders/{order['id']}/pay", alice["api_key"], {})
        net += amount - paid["fee_amount"]
    assert api.account_balance(shop["id"], "merchant_pending") == net

    api.clock.set(cfg.day_end(day) + timedelta(minutes=5))
    report = api.ok("POST", "/v1/clearing/end_of_day", op, {"business_date": day.isoformat()})
    assert report["steps"]["credit"]["receipts"] == 1, report
    with api.rt.engine.connect() as conn:
        taken = conn.execute(text(
            "SELECT -SUM(p.amount) FROM ledger_postings p JOIN ledger_entries e "
            "ON e.id = p.entry_id JOIN ledger_accounts a ON a.id = p.account_id "
            "WHERE e.key LIKE 'credit:receipts:%' AND a.owner_id = :m "
            "AND a.purpose = 'merchant_pending' AND p.side = 0"), {"m": shop["id"]}).scalar()
    assert taken == net * 5000 // 10_000
    # Settlement netted the repayment: the pending account is empty and the payout is the rest.
    assert api.account_balance(shop["id"], "merchant_pending") == 0
    settled = api.ok("GET", f"/v1/clearing/settlements?merchant_id={shop['id']}", op)["data"]
    assert [(s["business_date"], s["amount"]) for s in settled] == [
        (day.isoformat(), net - taken)], settled
    assert api.ok("GET", f"/v1/credit/loans/{loan['id']}", mkey)["owed"] < loan["owed"]
    api.verify()
