"""A credit portfolio simulation with ground truth, and the portfolio report.

``simulate`` builds merchants from latent cash-flow profiles (``synthetic``), writes a year of
payment history for each in bulk, then lives ``days`` business days on a ``ManualClock``:

- every trading merchant takes its day's receipts as one real payment (a consumer wallet pays
  an order through ``payments``, so the money lands in ``merchant_pending`` net of fee);
- a trading merchant stops trading with a daily hazard that follows its cash-flow health
  (``synthetic.default_probability``): a merchant that stops has no receipts, so its loan goes
  unpaid, overdue and, after ``writeoff_dpd``, written off. Defaults follow the cash flow, so
  the features that describe it carry signal;
- merchants without an open loan apply (the 310 decision) and draw the whole offer;
- the credit end of day runs (repayment from receipts first).

It returns each loan's outcome (ever 30+ days past due) with the features its decision saw: a
labelled table for ``lianjie credit train``. ``report`` summarises a portfolio: default rate by
score band, vintage curves, and each funder's income and losses.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import Engine, select, text

from lianjie import credit
from lianjie import payments as pay
from lianjie.clock import ManualClock
from lianjie.committer import run_now
from lianjie.credit import schedule, synthetic
from lianjie.credit.schema import applications, loans
from lianjie.errors import DomainError
from lianjie.ledger import check_invariants
from lianjie.payments import PaymentsConfig

BAD_DPD = 30
APPLY_SHARE_PER_DAY = 0.05  # chance a merchant without a loan applies on a given day
CFG = PaymentsConfig()


@dataclass
class SimResult:
    product_id: str
    funders: list[str]
    loans: list[dict[str, Any]] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)  # features + outcome per loan


def setup(engine: Engine, clock: ManualClock, merchants: int, rng: random.Random,
           history_days: int) -> tuple[str, list[str], dict[str, synthetic.Profile], str, str]:
    def unit(conn: Any) -> tuple[str, list[str], dict[str, synthetic.Profile], str, str]:
        now = clock.now()
        pay.ensure_platform(conn, now, CFG)
        banks = [pay.do_create_institution(conn, now, CFG, f"Bank {c}").id for c in "AB"]
        consumer = pay.do_create_consumer(conn, now, CFG, "Shoppers").id
        product = credit.do_create_product(
            conn, now, name="310 receipts loan", method="annuity", period="monthly",
            term_count=6, receipt_share_bps=5000, writeoff_dpd=60, late_fee=10_00,
            history_days_min=60, funders=[(pay.PLATFORM_ID, 2000), (banks[0], 5000),
                                          (banks[1], 3000)]).id
        profiles = {}
        for i in range(merchants):
            tenure = rng.randint(history_days, history_days + 700)
            m = pay.do_onboard_merchant(conn, now - timedelta(days=tenure), CFG, f"Shop {i}",
                                        sp_id=None, business_type="street_food")
            pay.do_decide_kyc(conn, now, m.id, True)
            profile = synthetic.random_profile(rng)
            synthetic.generate(conn, m.id, profile, now, history_days, rng)
            profiles[m.id] = profile
        return product, [pay.PLATFORM_ID, *banks], profiles, consumer, banks[0]

    return run_now(engine, unit)


def simulate(engine: Engine, *, merchants: int = 200, days: int = 240, seed: int = 1,
             history_days: int = 365, start: datetime | None = None) -> SimResult:
    rng = random.Random(seed)
    clock = ManualClock(start)
    product, funders, profiles, consumer, bank = setup(engine, clock, merchants, rng,
                                                        history_days)
    result = SimResult(product, funders)
    trading = set(profiles)
    first_bad: dict[str, int] = {}
    for _ in range(days):
        clock.advance(timedelta(hours=10))
        run_now(engine, lambda c: trade(c, clock.now(), profiles, trading, consumer, bank, rng))
        for m in [m for m in profiles if m in trading]:
            if rng.random() < synthetic.default_probability(profiles[m]) / 120:
                trading.discard(m)
        run_now(engine, lambda c: _apply(c, clock.now(), product, list(profiles), rng))
        clock.advance(timedelta(hours=13, minutes=59))
        credit.run_end_of_day(engine, clock.now().date(), now=clock.now())
        with engine.connect() as conn:
            for loan_id in conn.execute(select(loans.c.id).where(
                    loans.c.dpd >= BAD_DPD)).scalars():
                first_bad.setdefault(loan_id, schedule.day_of(clock.now()))
        clock.advance(timedelta(minutes=1))
    with engine.connect() as conn:
        check_invariants(conn)
        result.loans, result.rows = outcomes(conn, first_bad)
    return result


def trade(conn: Any, now: datetime, profiles: dict[str, synthetic.Profile],
           trading: set[str], consumer: str, bank: str, rng: random.Random) -> None:
    amounts = {}
    for m in [m for m in profiles if m in trading]:
        p = profiles[m]
        if rng.random() < p.activity:
            amounts[m] = max(100, int(rng.gauss(p.level, p.level * p.volatility)))
    total = sum(amounts.values())
    if not total:
        return
    pay.do_top_up(conn, now, consumer, bank, total, "CNY")
    for m, amount in amounts.items():
        order = pay.do_create_order(conn, now, CFG, m, out_trade_no=f"day-{now:%Y%m%d}",
                                    amount=amount, currency_code="CNY", description="takings")
        pay.do_pay_order(conn, now, order.id, consumer)


def _apply(conn: Any, now: datetime, product: str, merchants: list[str],
           rng: random.Random) -> None:
    for m in merchants:
        if rng.random() >= APPLY_SHARE_PER_DAY:
            continue
        try:
            app = credit.do_apply(conn, now, m, product, 5_000_000)
        except DomainError:
            continue  # an open loan, too little history: the merchant waits
        if app.status == "approved":
            credit.do_drawdown(conn, now, app.id, app.limit_amount)


def outcomes(conn: Any, first_bad: dict[str, int]
              ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    rows = conn.execute(select(loans, applications.c.features).join(
        applications, applications.c.id == loans.c.application_id).order_by(loans.c.id)).all()
    out_loans, out_rows = [], []
    for r in rows:
        m = {str(k): v for k, v in r._mapping.items()}
        bad_day = first_bad.get(m["id"])
        m["first_bad_day"] = bad_day
        out_loans.append(m)
        out_rows.append({**orjson.loads(m["features"]), "score": m["score"],
                         "default": int(bad_day is not None)})
    return out_loans, out_rows


SCORE_BANDS = ((0, 560), (560, 600), (600, 640), (640, 680), (680, 1000))


def report(conn: Any, loans_out: list[dict[str, Any]], funders: list[str]) -> dict[str, Any]:
    """Default rate by score band, vintage curves, and each funder's income and losses."""
    bands = []
    for low, high in SCORE_BANDS:
        inside = [x for x in loans_out if low <= x["score"] < high]
        bad = sum(1 for x in inside if x["first_bad_day"] is not None)
        bands.append({"band": f"{low}-{high}", "loans": len(inside),
                      "default_rate": round(bad / len(inside), 4) if inside else None})
    # the console's curves (share of principal, months on book from each loan's disbursal)
    curves = {v["vintage"]: v["curve"] for v in credit.vintage_curves(conn)}
    positions = {f: _income(credit.position(conn, f, "CNY")) for f in funders}
    statuses = conn.execute(text("SELECT status, COUNT(*) FROM credit_loans GROUP BY status")
                            ).all()
    return {"loans": len(loans_out), "status": {s: int(n) for s, n in statuses},
            "default_rate_by_score_band": bands, "vintage_curves": curves,
            "funders": positions}


def _income(pos: dict[str, Any]) -> dict[str, int]:
    b = pos["balances"]
    return {"principal_outstanding": pos["principal_outstanding"],
            "interest_income": b["interest_income"], "penalty_income": b["penalty_income"],
            "fee_income": b["fee_income"], "recovery_income": b["recovery_income"],
            "credit_loss": -b["credit_loss"]}
