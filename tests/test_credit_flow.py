"""The 310 life cycle in process on both databases: decide, draw down with funder shares,
accrue, repay by waterfall and from receipts, fall overdue, write off, recover."""

from __future__ import annotations

import random
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, select, text

from lianjie import credit, ledger
from lianjie import payments as pay
from lianjie.clock import ManualClock
from lianjie.committer import run_now
from lianjie.credit import schedule, synthetic
from lianjie.credit.schema import funder_limits
from lianjie.errors import DomainError, ErrorCode
from lianjie.ledger import Purpose
from lianjie.payments import PaymentsConfig

CFG = PaymentsConfig()
GOOD = synthetic.Profile(level=200_000, trend=0.02, volatility=0.2, activity=0.95,
                         loyalty=0.5, refund_rate=0.0)


def setup_world(engine: Engine, clock: ManualClock, *, policy: str = "refuse",
                history_days: int = 200, **product: Any) -> dict[str, Any]:
    def unit(conn: Any) -> dict[str, Any]:
        now = clock.now()
        pay.ensure_platform(conn, now, CFG)
        bank_a = pay.do_create_institution(conn, now, CFG, "Bank A")
        bank_b = pay.do_create_institution(conn, now, CFG, "Bank B")
        m = pay.do_onboard_merchant(conn, now - timedelta(days=400), CFG, "Noodles",
                                    sp_id=None, business_type="street_food")
        pay.do_decide_kyc(conn, now, m.id, True)
        synthetic.generate(conn, m.id, GOOD, now, history_days, random.Random(1))
        prod = credit.do_create_product(
            conn, now, name="310", limit_policy=policy,
            funders=[(pay.PLATFORM_ID, 2000), (bank_a.id, 5000), (bank_b.id, 3000)], **product)
        return {"merchant": m.id, "a": bank_a.id, "b": bank_b.id, "product": prod.id}

    return run_now(engine, unit)


def funder_balance(engine: Engine, owner: str, purpose: Purpose) -> int:
    with engine.connect() as conn:
        acct = ledger.find_account(conn, owner, purpose, "CNY")
        return 0 if acct is None else acct.balance


def test_life_cycle_shares_add_up(engine: Engine, clock: ManualClock) -> None:
    w = setup_world(engine, clock, method="equal_principal", term_count=3, writeoff_dpd=40,
                    late_fee=500)
    app = run_now(engine, lambda c: credit.do_apply(c, clock.now(), w["merchant"],
                                                    w["product"], 300_000))
    assert app.status == "approved", app
    assert app.limit_amount == 300_000 and 300 <= app.score <= 900
    loan = run_now(engine, lambda c: credit.do_drawdown(c, clock.now(), app.id, 300_000))
    parts = {f["funder_id"]: f["principal"] for f in loan["funders"]}
    assert parts == {pay.PLATFORM_ID: 60_000, w["a"]: 150_000, w["b"]: 90_000}
    assert funder_balance(engine, w["a"], Purpose.LOAN_PRINCIPAL) == -150_000
    assert funder_balance(engine, w["merchant"], Purpose.MERCHANT_AVAILABLE) == 300_000
    assert sum(i["principal"] for i in loan["schedule"]) == 300_000

    today = clock.now().date()
    credit.run_end_of_day(engine, today)
    again = credit.run_end_of_day(engine, today)  # idempotent: nothing done twice
    assert set(again.values()) == {-1}
    loan = run_now(engine, lambda c: credit.require_loan(c, loan["id"]))
    assert loan["interest_unpaid"] == schedule.daily_interest(300_000, 1800)
    income = sum(funder_balance(engine, f, Purpose.INTEREST_INCOME)
                 for f in (pay.PLATFORM_ID, w["a"], w["b"]))
    assert income == loan["interest_unpaid"]

    # A partial repayment goes interest first, then principal, split between funders.
    paid = run_now(engine, lambda c: credit.do_repay(c, clock.now(), loan["id"], 50_000, "r1"))
    assert paid["interest_unpaid"] == 0
    assert paid["principal_outstanding"] == 300_000 - (50_000 - loan["interest_unpaid"])
    outstanding = {f["funder_id"]: f["principal_outstanding"] for f in paid["funders"]}
    assert sum(outstanding.values()) == paid["principal_outstanding"]

    # Miss the rest: overdue, penalty, late fee, DPD buckets, then write-off after 40 days.
    end = today + timedelta(days=31 + 45)
    credit.run_end_of_day(engine, end)
    gone = run_now(engine, lambda c: credit.require_loan(c, loan["id"]))
    assert gone["status"] == "written_off"
    assert gone["written_off_amount"] > 0
    loss = sum(funder_balance(engine, f, Purpose.CREDIT_LOSS)
               for f in (pay.PLATFORM_ID, w["a"], w["b"]))
    assert loss == -gone["written_off_amount"]
    for f in (pay.PLATFORM_ID, w["a"], w["b"]):
        assert funder_balance(engine, f, Purpose.LOAN_PRINCIPAL) == 0
    with engine.connect() as conn:
        used = dict(conn.execute(select(funder_limits.c.funder_id,
                                        funder_limits.c.exposure_used)).all())
    assert set(used.values()) == {0}

    # A recovery after write-off is each funder's recovery income.
    run_now(engine, lambda c: credit.do_repay(c, clock.now(), loan["id"], 10_000, "rec"))
    rec = sum(funder_balance(engine, f, Purpose.RECOVERY_INCOME)
              for f in (pay.PLATFORM_ID, w["a"], w["b"]))
    assert rec == 10_000
    again_app = run_now(engine, lambda c: credit.do_apply(c, clock.now(), w["merchant"],
                                                          w["product"], 100_000))
    assert again_app.status == "declined" and "prior_write_off" in again_app.reasons
    with engine.connect() as conn:
        ledger.check_invariants(conn)


def ledger_principal_of(conn: Any, loan_id: str) -> int:
    """What the borrower owes the funders for this loan, read from the ledger alone: the signed
    postings on the funders' ``loan_principal`` accounts in the loan's own entries (a debit
    posting is negative, so while borrowers owe a funder its balance is negative)."""
    return -int(conn.execute(text(
        "SELECT COALESCE(SUM(p.amount), 0) "
        "FROM ledger_postings p JOIN ledger_entries e ON e.id = p.entry_id "
        "JOIN ledger_accounts a ON a.id = p.account_id "
        "WHERE e.memo = :loan AND a.purpose = 'loan_principal'"), {"loan": loan_id}).scalar())


def receivables(engine: Engine, funders: list[str]) -> dict[str, int]:
    return {part: sum(-funder_balance(engine, f, purpose) for f in funders) for part, purpose in
            (("interest", Purpose.INTEREST_RECEIVABLE), ("penalty", Purpose.PENALTY_RECEIVABLE),
             ("fee", Purpose.FEE_RECEIVABLE))}


def test_a_written_off_loan_agrees_with_its_funders_and_the_ledger(
        engine: Engine, clock: ManualClock) -> None:
    w = setup_world(engine, clock, term_count=2, writeoff_dpd=35, late_fee=700)
    funders = [pay.PLATFORM_ID, w["a"], w["b"]]
    app = run_now(engine, lambda c: credit.do_apply(c, clock.now(), w["merchant"],
                                                    w["product"], 100_001))
    loan_id = run_now(engine, lambda c: credit.do_drawdown(c, clock.now(), app.id,
                                                            100_001))["id"]
    today = clock.now().date()
    credit.run_end_of_day(engine, today + timedelta(days=45))  # 14 days past due
    with engine.connect() as conn:
        late = credit.require_loan(conn, loan_id)
        assert late["status"] == "active" and late["dpd"] > 0
        assert ledger_principal_of(conn, loan_id) == late["principal_outstanding"] == 100_001
    owed_late = receivables(engine, funders)  # the only loan: its funders' receivables
    assert owed_late == {"interest": late["interest_unpaid"],
                         "penalty": late["penalty_unpaid"], "fee": late["fee_unpaid"]}

    credit.run_end_of_day(engine, today + timedelta(days=70))
    with engine.connect() as conn:
        gone = credit.require_loan(conn, loan_id)
        on_ledger = ledger_principal_of(conn, loan_id)
    rows = gone["funders"]
    assert gone["status"] == "written_off"
    assert gone["principal_outstanding"] == sum(f["principal_outstanding"] for f in rows) \
        == on_ledger == 0
    assert (gone["interest_unpaid"], gone["penalty_unpaid"], gone["fee_unpaid"]) == (0, 0, 0)
    assert receivables(engine, funders) == {"interest": 0, "penalty": 0, "fee": 0}
    assert gone["owed"] == 0
    # What was owed is kept as the written-off amounts, per part and per funder.
    assert gone["principal_written_off"] == 100_001 == sum(
        f["principal_written_off"] for f in rows)
    assert gone["fee_written_off"] == 700 and gone["interest_written_off"] > 0
    assert gone["penalty_written_off"] > 0
    assert gone["written_off_amount"] == sum(gone[f"{p}_written_off"] for p in
                                             ("principal", "interest", "penalty", "fee"))
    for f in rows:
        assert f["written_off_amount"] == -funder_balance(engine, f["funder_id"],
                                                          Purpose.CREDIT_LOSS)
    assert sum(f["written_off_amount"] for f in rows) == gone["written_off_amount"]
    with engine.connect() as conn:
        ledger.check_invariants(conn)


def test_bad_input_moves_nothing(engine: Engine, clock: ManualClock) -> None:
    w = setup_world(engine, clock, history_days=30)

    def refused(code: ErrorCode, fn: Any) -> None:
        with pytest.raises(DomainError) as err:
            run_now(engine, fn)
        assert err.value.code == code

    now = clock.now()
    refused(ErrorCode.INSUFFICIENT_HISTORY,
            lambda c: credit.do_apply(c, now, w["merchant"], w["product"], 100_000))
    refused(ErrorCode.AMOUNT_ABOVE_LIMIT,
            lambda c: credit.do_apply(c, now, w["merchant"], w["product"], 10**10))
    refused(ErrorCode.INVALID_AMOUNT,
            lambda c: credit.do_apply(c, now, w["merchant"], w["product"], -5))
    refused(ErrorCode.INVALID_AMOUNT,
            lambda c: credit.do_apply(c, now, w["merchant"], w["product"], 1.5))
    with engine.connect() as conn:
        assert conn.execute(select(credit.schema.applications)).first() is None


def test_declined_offer_cannot_be_drawn(engine: Engine, clock: ManualClock) -> None:
    w = setup_world(engine, clock)
    run_now(engine, lambda c: pay.do_set_frozen(c, clock.now(), w["merchant"], True))
    app = run_now(engine, lambda c: credit.do_apply(c, clock.now(), w["merchant"],
                                                    w["product"], 100_000))
    assert app.status == "declined" and "merchant_frozen" in app.reasons
    assert app.limit_amount == 0
    with pytest.raises(DomainError) as err:
        run_now(engine, lambda c: credit.do_drawdown(c, clock.now(), app.id, 10_000))
    assert err.value.code == ErrorCode.OFFER_NOT_APPROVED
    with engine.connect() as conn:
        assert conn.execute(select(credit.schema.loans)).first() is None


def test_reroute_policy_moves_a_full_funder_share(engine: Engine, clock: ManualClock) -> None:
    w = setup_world(engine, clock, policy="reroute")
    run_now(engine, lambda c: credit.do_set_funder_limit(c, clock.now(), w["b"], "CNY", 1_000))
    app = run_now(engine, lambda c: credit.do_apply(c, clock.now(), w["merchant"],
                                                    w["product"], 100_000))
    loan = run_now(engine, lambda c: credit.do_drawdown(c, clock.now(), app.id, 100_000))
    parts = {f["funder_id"]: (f["principal"], f["share_bps"]) for f in loan["funders"]}
    # bank B has no room: its 30% goes to the others in proportion (20:50 -> 2/7 and 5/7).
    assert parts == {pay.PLATFORM_ID: (28_571, 2857), w["a"]: (71_429, 7143)}
    assert funder_balance(engine, w["b"], Purpose.LOAN_PRINCIPAL) == 0
    with engine.connect() as conn:
        ledger.check_invariants(conn)


def _features_agree(engine: Engine, as_of: Any) -> Any:
    """The batch features (from the daily aggregates) equal each merchant's decision features
    (from its orders); returns the batch."""
    with engine.connect() as conn:
        batch = credit.compute_features(conn, as_of)
        for row in batch.iter_rows(named=True):
            single = credit.merchant_features(conn, as_of, row["merchant_id"])
            assert single == {k: round(float(row[k]), 6) for k in credit.FEATURES}, row
    return batch


def test_batch_and_single_merchant_features_agree(engine: Engine, clock: ManualClock) -> None:
    w = setup_world(engine, clock)
    tea: list[str] = []

    def unit(conn: Any) -> None:
        other = pay.do_onboard_merchant(conn, clock.now(), CFG, "Tea", sp_id=None,
                                        business_type="cafe")
        tea.append(other.id)
        synthetic.generate(conn, other.id, synthetic.random_profile(random.Random(5)),
                           clock.now(), 120, random.Random(6))

    run_now(engine, unit)
    today = schedule.day_of(clock.now().date())
    # Orders written straight to the table: the aggregates are built for the range.
    assert run_now(engine, lambda c: credit.refresh_daily(c, today - 400, today)) > 0
    batch = _features_agree(engine, clock.now())
    assert batch.height == 2
    assert w["merchant"] in set(batch["merchant_id"])
    assert min(batch["payments"]) > 0 and min(batch["distinct_payers"]) > 0

    # A day later with a day's more takings: the credit end of day keeps the aggregates.
    clock.advance(timedelta(days=1))
    run_now(engine, lambda c: synthetic.generate(
        c, tea[0], synthetic.random_profile(random.Random(7)), clock.now(), 2,
        random.Random(8)))
    credit.run_end_of_day(engine, clock.now().date() - timedelta(days=1), now=clock.now(),
                          tz="UTC")
    again = _features_agree(engine, clock.now())
    assert again.filter(again["merchant_id"] == tea[0])["payments"].item() > \
        batch.filter(batch["merchant_id"] == tea[0])["payments"].item()
