"""The credit portfolio simulator: the whole 310 life cycle over HTTP against a server the
simulator starts, and a simulated year in process, with ledger invariants and funder shares
that add up to each loan, on both databases."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, func, select

from lianjie import credit
from lianjie.credit import portfolio
from lianjie.credit.schema import loan_funders, loans
from lianjie.ledger import check_invariants
from lianjie.sim.credit import simulate_http


def _shares_add_up(engine: Engine, funders: list[str]) -> dict[str, dict[str, Any]]:
    """Every loan's funder rows sum to the loan; funder positions sum to the portfolio."""
    with engine.connect() as conn:
        check_invariants(conn)
        whole = {r.id: r for r in conn.execute(select(loans)).all()}
        parts = conn.execute(select(
            loan_funders.c.loan_id, func.sum(loan_funders.c.principal),
            func.sum(loan_funders.c.principal_outstanding),
            func.sum(loan_funders.c.principal_written_off)).group_by(loan_funders.c.loan_id)
        ).all()
        assert len(parts) == len(whole)
        for loan_id, principal, outstanding, written_off in parts:
            assert principal == whole[loan_id].principal
            assert outstanding == whole[loan_id].principal_outstanding
            assert written_off == whole[loan_id].principal_written_off
            if whole[loan_id].status == "written_off":
                assert outstanding == 0
        positions = {f: credit.position(conn, f, "CNY") for f in funders}
    assert sum(p["principal_outstanding"] for p in positions.values()) == sum(
        r.principal_outstanding for r in whole.values())
    written_off = sum(r.written_off_amount for r in whole.values())
    assert -sum(p["balances"]["credit_loss"] for p in positions.values()) == written_off
    return positions


def test_life_cycle_over_http(engine: Engine) -> None:
    result = simulate_http(engine, merchants=10, days=60, seed=3, history_days=120)
    assert result.violations == []
    done = result.requests
    assert done["drawdown"] >= 3 and done["eod"] == 60 and done.get("repay", 0) >= 1
    statuses = {x["status"] for x in result.loans}
    assert "active" in statuses or "paid_off" in statuses, statuses
    positions = _shares_add_up(engine, result.funders)
    for f, seen in result.positions.items():  # what each funder read over HTTP
        assert seen["principal_outstanding"] == positions[f]["principal_outstanding"]
        assert seen["balances"] == positions[f]["balances"]
    assert all(p["balances"]["interest_income"] > 0 for p in positions.values())


def test_a_simulated_year_keeps_the_ledger_whole(engine: Engine) -> None:
    result = portfolio.simulate(engine, merchants=8, days=365, seed=3, history_days=120)
    positions = _shares_add_up(engine, result.funders)
    assert len(result.loans) >= 8
    assert any(x["status"] == "written_off" for x in result.loans)
    assert any(x["first_bad_day"] is None for x in result.loans)
    with engine.connect() as conn:
        summary = portfolio.report(conn, result.loans, result.funders)
    income = {f: v["interest_income"] for f, v in summary["funders"].items()}
    assert income == {f: p["balances"]["interest_income"] for f, p in positions.items()}
    # the report's vintage curves are the console's, and the write-offs show in them
    with engine.connect() as conn:
        shown = credit.vintage_curves(conn)
    assert summary["vintage_curves"] == {v["vintage"]: v["curve"] for v in shown}
    assert len(shown) >= 2 and any(v["curve"][-1] > 0 for v in shown)
