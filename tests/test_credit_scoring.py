"""Scoring and schedules: training on any labelled CSV, the registry, the HTML report, the
portfolio simulator's signal; schedule shapes; the end of day resuming after a crash."""

from __future__ import annotations

import random
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import Engine

from lianjie import credit
from lianjie.cli import main
from lianjie.clock import ManualClock
from lianjie.committer import run_now
from lianjie.credit import eod, portfolio, schedule, scoring
from lianjie.db import make_engine


def _labelled(rows: int = 500, seed: int = 4) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    takings = rng.lognormal(10, 1, rows)
    volatility = rng.uniform(0, 1.5, rows)
    noise = rng.normal(size=rows)
    logit = -1.0 - 0.8 * (np.log(takings) - 10) + 1.6 * (volatility - 0.75)
    bad = (rng.uniform(size=rows) < 1 / (1 + np.exp(-logit))).astype(int)
    return pd.DataFrame({"takings": takings, "volatility": volatility, "noise": noise,
                         "bad": bad})


def test_train_register_report_on_any_csv(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                          ) -> None:
    csv, db = tmp_path / "lender.csv", f"sqlite:///{tmp_path}/m.sqlite3"
    _labelled().to_csv(csv, index=False)
    assert main(["--database", db, "credit", "train", "--csv", str(csv), "--target", "bad",
                 "--folds", "3", "--register"]) == 0
    out = capsys.readouterr().out
    auc = float(out.split("scorecard  AUC ")[1].split()[0])
    assert auc > 0.7, out
    assert "KS" in out and "registered scorecard version 1" in out
    html_path = tmp_path / "report.html"
    assert main(["--database", db, "credit", "report", "--out", str(html_path)]) == 0
    page = html_path.read_text()
    assert page.count("data:image/png;base64,") == 3 and "PSI" in page
    assert "http://" not in page and "https://" not in page  # self-contained

    engine = make_engine(db)
    scoring.clear_cache()
    with engine.connect() as conn:
        model = scoring.active_model(conn, 0.0)
    assert model.version == "merchant310-v1" and set(model.bins) >= {"takings", "volatility"}
    low, _ = scoring.apply(model, {"takings": 1e3, "volatility": 1.4})
    high, _ = scoring.apply(model, {"takings": 1e6, "volatility": 0.1})
    assert high > low and model.pd(high) < model.pd(low)
    scoring.clear_cache()


def test_train_refuses_a_table_without_both_outcomes(tmp_path: Path) -> None:
    frame = _labelled()
    frame["bad"] = 0
    frame.to_csv(tmp_path / "x.csv", index=False)
    assert main(["credit", "train", "--csv", str(tmp_path / "x.csv"), "--target", "bad"]) == 2


@pytest.mark.parametrize("method", schedule.METHODS)
@pytest.mark.parametrize("period", schedule.PERIODS)
def test_schedules_repay_the_principal(method: str, period: str) -> None:
    start = schedule.day_of(date(2026, 1, 31))
    plan = schedule.build(1_000_001, 1800, method, period, 6, start)
    assert sum(i.principal for i in plan) == 1_000_001
    assert all(i.interest >= 0 and i.principal >= 0 for i in plan)
    assert [i.due_day for i in plan] == sorted({i.due_day for i in plan})
    if method == "bullet":
        assert [i.principal for i in plan[:-1]] == [0] * 5
    if method == "annuity":
        totals = [i.principal + i.interest for i in plan[:-1]]
        assert max(totals) - min(totals) <= 2_000  # equal instalments, months of unequal days
    if period == "monthly":
        assert schedule.date_of(plan[0].due_day) == date(2026, 2, 28)


def test_portfolio_simulation_has_signal_and_balanced_books(engine: Engine) -> None:
    scoring.clear_cache()
    result = portfolio.simulate(engine, merchants=8, days=40, seed=3, history_days=200)
    assert result.loans, "the simulated merchants borrowed"
    with engine.connect() as conn:
        summary = portfolio.report(conn, result.loans, result.funders)
    assert summary["loans"] == len(result.loans)
    assert sum(b["loans"] for b in summary["default_rate_by_score_band"]) == len(result.loans)
    income = sum(f["interest_income"] for f in summary["funders"].values())
    assert income > 0


def test_end_of_day_resumes_after_a_crash(engine: Engine, clock: ManualClock,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from test_credit_flow import setup_world

    w = setup_world(engine, clock)
    app = run_now(engine, lambda c: credit.do_apply(c, clock.now(), w["merchant"],
                                                    w["product"], 200_000))
    run_now(engine, lambda c: credit.do_drawdown(c, clock.now(), app.id, 200_000))
    today = clock.now().date()

    def crash(*_args: object) -> int:
        raise OSError("power cut")

    monkeypatch.setitem(eod._STEP_FNS, "delinquency", crash)
    with pytest.raises(OSError):
        credit.run_end_of_day(engine, today)
    monkeypatch.undo()
    done = credit.run_end_of_day(engine, today)
    assert done["receipts"] == -1 and done["accrue"] == -1 and done["delinquency"] >= 0
    loan = run_now(engine, lambda c: credit.list_loans(c)[0])
    assert loan["interest_unpaid"] == schedule.daily_interest(200_000, 1800)
    random.seed(0)
