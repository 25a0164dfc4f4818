"""End of day settles the business day first, then credit takes its loans' share of what was
settled from the merchant's available balance, and settlement pays out only the rest. The
business day is the one the clearing cut-off defines, also when credit runs on its own. Real
HTTP, both databases."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select, text

from conftest import Api
from lianjie import clearing, credit
from lianjie.clearing import ClearingConfig
from lianjie.credit.schema import applications
from test_credit_api import _world

SHARE_BPS = 5000
LOCAL = ZoneInfo("Asia/Shanghai")


def _borrower(api: Api) -> tuple[dict[str, Any], dict[str, Any]]:
    """A merchant with an active loan that takes half of its receipts; returns (shop, loan)."""
    w = _world(api, receipt_share_bps=SHARE_BPS)
    shop, mkey = w["merchant"], w["merchant"]["api_key"]
    app = api.ok("POST", "/v1/credit/applications", mkey,
                 {"product_id": w["product"]["id"], "amount": 200_000})
    api.ok("POST", f"/v1/credit/applications/{app['id']}/accept", mkey)
    loan = api.ok("POST", f"/v1/credit/applications/{app['id']}/drawdown", mkey,
                  {"amount": 150_000})
    return shop, loan


def _pay(api: Api, shop: dict[str, Any], payer: dict[str, Any], amount: int) -> int:
    """Pay an order of ``amount`` now; returns what the merchant nets of it."""
    order = api.order(shop, amount=amount)
    paid = api.ok("POST", f"/v1/orders/{order['id']}/pay", payer["api_key"], {})
    return amount - int(paid["fee_amount"])


def _taken(api: Api, merchant_id: str, purpose: str) -> int:
    """What repayments from receipts took from the merchant's ``purpose`` account."""
    with api.rt.engine.connect() as conn:
        got = conn.execute(text(
            "SELECT -SUM(p.amount) FROM ledger_postings p JOIN ledger_entries e "
            "ON e.id = p.entry_id JOIN ledger_accounts a ON a.id = p.account_id "
            "WHERE e.key LIKE 'credit:receipts:%' AND a.owner_id = :m "
            "AND a.purpose = :p AND p.side = 0"), {"m": merchant_id, "p": purpose}).scalar()
    return int(got or 0)


def _payouts(api: Api, merchant_id: str) -> list[int]:
    with api.rt.engine.connect() as conn:
        return [int(a) for a in conn.execute(text(
            "SELECT amount FROM clearing_instructions WHERE payee_id = :m "
            "AND kind = 'merchant_payout' ORDER BY created_at"), {"m": merchant_id}).scalars()]


def _local(day: date, hour: int, minute: int = 0) -> datetime:
    return datetime.combine(day, time(hour, minute), tzinfo=LOCAL)


def test_repayment_takes_from_what_the_day_settled_not_later_payments(api: Api) -> None:
    op = api.operator_key
    shop, loan = _borrower(api)
    cfg = ClearingConfig()
    api.clock.advance(timedelta(days=2))  # past the synthetic history's last day
    day = cfg.business_date(api.clock.now())
    api.ok("POST", "/v1/credit/end_of_day", op,
           {"business_date": (day - timedelta(days=1)).isoformat()})
    available = api.account_balance(shop["id"], "merchant_available")
    alice = api.consumer(funds=100_000)
    net = sum(_pay(api, shop, alice, a) for a in (10_000, 20_000, 7_000))
    # After the cut-off, before end of day runs: the next business day's takings.
    api.clock.set(cfg.day_end(day) + timedelta(minutes=1))
    late = _pay(api, shop, alice, 9_000)
    assert api.account_balance(shop["id"], "merchant_pending") == net + late

    api.clock.set(cfg.day_end(day) + timedelta(minutes=5))
    report = api.ok("POST", "/v1/clearing/end_of_day", op, {"business_date": day.isoformat()})
    assert list(report["steps"]) == ["settle", "credit", "seal", "clear"], report
    assert report["steps"]["credit"]["receipts"] == 1, report
    taken = net * SHARE_BPS // 10_000
    assert _taken(api, shop["id"], "merchant_available") == taken
    assert _taken(api, shop["id"], "merchant_pending") == 0
    # The late payment waits in pending; the day's net left it whole, the loan kept its share
    # and the rest was paid out: available is back where it was.
    assert api.account_balance(shop["id"], "merchant_pending") == late
    assert api.account_balance(shop["id"], "merchant_available") == available
    settled = api.ok("GET", f"/v1/clearing/settlements?merchant_id={shop['id']}", op)["data"]
    assert [(s["business_date"], s["amount"]) for s in settled] == [(day.isoformat(), net)]
    assert _payouts(api, shop["id"]) == [net - taken]
    got = api.ok("GET", f"/v1/credit/loans/{loan['id']}", shop["api_key"])
    assert got["owed"] < loan["owed"]  # less the repayment, plus a day of interest
    api.verify()


def test_non_midnight_cutoff_bounds_the_business_day(api: Api) -> None:
    shop, _ = _borrower(api)
    cfg = ClearingConfig(cutoff=time(18, 0))
    day = api.clock.now().astimezone(LOCAL).date() + timedelta(days=3)
    credit.run_end_of_day(api.rt.engine, day - timedelta(days=1), now=_local(day - timedelta(
        days=1), 18, 1), tz=cfg.timezone, cutoff=cfg.cutoff)
    available = api.account_balance(shop["id"], "merchant_available")
    alice = api.consumer(funds=100_000)
    api.clock.set(_local(day - timedelta(days=1), 19))  # after the last cut-off: this day
    net = _pay(api, shop, alice, 10_000)
    api.clock.set(_local(day, 17, 30))
    net += _pay(api, shop, alice, 20_000)
    api.clock.set(_local(day, 18, 30))  # after this day's cut-off: the next day
    late = _pay(api, shop, alice, 7_000)

    api.clock.set(_local(day, 18, 45))
    report = clearing.run_end_of_day(api.rt.engine, day, clock=api.clock, cfg=cfg)
    assert report.steps["settle"]["problems"] == [], report
    assert report.steps["credit"]["receipts"] == 1, report
    taken = net * SHARE_BPS // 10_000
    assert _taken(api, shop["id"], "merchant_available") == taken
    assert api.account_balance(shop["id"], "merchant_pending") == late
    assert api.account_balance(shop["id"], "merchant_available") == available
    assert _payouts(api, shop["id"]) == [net - taken]
    api.verify()


def test_credit_alone_takes_the_business_days_share_from_pending(api: Api) -> None:
    shop, loan = _borrower(api)
    tz, cutoff = "Asia/Shanghai", time(18, 0)
    day = api.clock.now().astimezone(LOCAL).date() + timedelta(days=3)
    credit.run_end_of_day(api.rt.engine, day - timedelta(days=1), now=_local(day - timedelta(
        days=1), 18, 1), tz=tz, cutoff=cutoff)
    alice = api.consumer(funds=100_000)
    api.clock.set(_local(day - timedelta(days=1), 17))  # the day before's takings
    early = _pay(api, shop, alice, 5_000)
    api.clock.set(_local(day - timedelta(days=1), 19))
    net = _pay(api, shop, alice, 10_000)
    api.clock.set(_local(day, 17, 30))
    net += _pay(api, shop, alice, 20_000)
    api.clock.set(_local(day, 18, 30))
    late = _pay(api, shop, alice, 7_000)

    done = credit.run_end_of_day(api.rt.engine, day, now=_local(day, 18, 45), tz=tz,
                                 cutoff=cutoff)
    assert done["receipts"] == 1, done
    taken = net * SHARE_BPS // 10_000
    assert _taken(api, shop["id"], "merchant_pending") == taken
    assert api.account_balance(shop["id"], "merchant_pending") == early + net + late - taken
    got = api.ok("GET", f"/v1/credit/loans/{loan['id']}", shop["api_key"])
    assert got["owed"] < loan["owed"]
    api.verify()


def _status(api: Api, app_id: str) -> str:
    with api.rt.engine.connect() as conn:
        return str(conn.execute(select(applications.c.status).where(
            applications.c.id == app_id)).scalar_one())


def test_an_offer_expires_at_its_time_not_at_the_end_of_the_calendar_day(api: Api) -> None:
    w = _world(api, receipt_share_bps=SHARE_BPS)
    mkey = w["merchant"]["api_key"]
    app = api.ok("POST", "/v1/credit/applications", mkey,
                 {"product_id": w["product"]["id"], "amount": 200_000})
    tz, cutoff = "Asia/Shanghai", time(18, 0)
    day = api.clock.now().astimezone(LOCAL).date() + timedelta(days=1)
    with api.rt.engine.begin() as conn:  # the offer runs out at 20:00, after the cut-off
        conn.execute(applications.update().where(applications.c.id == app["id"])
                     .values(expires_at=_local(day, 20)))
    credit.run_end_of_day(api.rt.engine, day, now=_local(day, 18, 30), tz=tz, cutoff=cutoff)
    assert _status(api, app["id"]) == "approved"  # its day closed before it ran out
    credit.run_end_of_day(api.rt.engine, day + timedelta(days=1),
                          now=_local(day + timedelta(days=1), 18, 30), tz=tz, cutoff=cutoff)
    assert _status(api, app["id"]) == "expired"
