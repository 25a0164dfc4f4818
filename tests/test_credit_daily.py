"""The per-merchant daily aggregates behind batch credit features: the end of day keeps them equal
to the orders (a refund of an earlier day's order included), and ``lianjie credit features
--rebuild`` builds them for orders that arrived without it (a bulk import)."""

from __future__ import annotations

import csv
import random
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text
from tests.clearing_helpers import DAY1, make_world

from lianjie import credit
from lianjie import payments as pay
from lianjie.cli import main
from lianjie.clock import ManualClock, to_us
from lianjie.committer import run_now
from lianjie.credit import synthetic
from lianjie.credit.daily import DAY_US


def _tables(engine: Engine) -> tuple[dict[Any, tuple[int, ...]], dict[Any, int]]:
    with engine.connect() as c:
        days = {(m, int(d)): (int(n), int(t), int(r), int(f)) for m, d, n, t, r, f in c.execute(
            text("SELECT merchant_id, day, payments, takings, refunded, first_paid "
                 "FROM credit_merchant_days"))}
        payers = {(m, int(d), p): int(n) for m, d, p, n in c.execute(
            text("SELECT merchant_id, day, payer_id, payments FROM credit_payer_days"))}
    return days, payers


def _expected(engine: Engine) -> tuple[dict[Any, tuple[int, ...]], dict[Any, int]]:
    """The aggregates folded in Python from every paid order, for comparison."""
    days: dict[Any, list[int]] = {}
    payers: Counter[Any] = Counter()
    with engine.connect() as c:
        rows = c.execute(text("SELECT merchant_id, paid_at, amount, refunded_amount, payer_id "
                              "FROM payment_orders WHERE status = 'paid'")).all()
    for merchant, paid_at, amount, refunded, payer in rows:
        key = (merchant, paid_at // DAY_US)
        acc = days.setdefault(key, [0, 0, 0, paid_at])
        acc[0] += 1
        acc[1] += amount
        acc[2] += refunded
        acc[3] = min(acc[3], paid_at)
        payers[(merchant, paid_at // DAY_US, payer or "")] += 1
    return {k: tuple(v) for k, v in days.items()}, dict(payers)


def test_end_of_day_rebuilds_an_earlier_day_refunded_today(engine: Engine, tmp_path: Path
                                                            ) -> None:
    w = make_world(engine, tmp_path, merchants=2, consumers=3)
    for consumer in w.consumers:
        w.top_up(consumer, 100_00)
    m0, m1 = w.merchants
    w.at(DAY1, 10)
    first = [w.pay(w.consumers[0], m0, 10_00), w.pay(w.consumers[1], m0, 20_00),
             w.pay(w.consumers[0], m0, 5_00), w.pay(w.consumers[2], m1, 7_00)]
    credit.run_end_of_day(engine, DAY1, now=w.clock.now())
    days, payers = _tables(engine)
    assert (days, payers) == _expected(engine)
    day1 = next(d for (m, d) in days if m == m0)
    assert days[(m0, day1)][:3] == (3, 35_00, 0)
    assert payers[(m0, day1, w.consumers[0])] == 2

    # Every day closed up to four days later: then a new payment, and a refund of a DAY1 order,
    # a day outside the window that day's end of day rebuilds.
    for n in range(1, 4):
        w.at(DAY1 + timedelta(days=n), 23)
        credit.run_end_of_day(engine, DAY1 + timedelta(days=n), now=w.clock.now())
    later = DAY1 + timedelta(days=4)
    w.at(later, 11)
    w.pay(w.consumers[1], m1, 3_00)
    w.refund(first[1], 7_50)
    credit.run_end_of_day(engine, later, now=w.clock.now())
    days, payers = _tables(engine)
    assert (days, payers) == _expected(engine)
    assert days[(m0, day1)][:3] == (3, 35_00, 7_50)
    assert sum(n for (m, _), (n, *_rest) in days.items() if m == m1) == 2

    # Run again: rebuilding is idempotent.
    credit.run_end_of_day(engine, later, now=w.clock.now())
    assert _tables(engine) == (days, payers)


def test_features_rebuild_from_the_command_line(engine: Engine, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """Orders written straight to the table (as a bulk import would) have no aggregates until
    ``--rebuild``; then the CSV has each merchant's figures from its orders."""
    clock = ManualClock(datetime.now(UTC).replace(microsecond=0))
    merchants: list[str] = []
    cfg = pay.PaymentsConfig()

    def unit(conn: Any) -> None:
        now = clock.now()
        pay.ensure_platform(conn, now, cfg)
        for i, kind in enumerate(("cafe", "street_food")):
            m = pay.do_onboard_merchant(conn, now - timedelta(days=200), cfg, f"M{i}",
                                        sp_id=None, business_type=kind)
            pay.do_decide_kyc(conn, now, m.id, True)
            synthetic.generate(conn, m.id, synthetic.random_profile(random.Random(i)), now,
                               60, random.Random(10 + i))
            merchants.append(m.id)

    run_now(engine, unit)
    url = engine.url.render_as_string(hide_password=False)
    out = tmp_path / "features.csv"

    as_of = clock.now().date()  # the features cover whole days before it

    def features(*extra: str) -> dict[str, dict[str, str]]:
        assert main(["--database", url, "credit", "features", "--out", str(out),
                     "--as-of", as_of.isoformat(), *extra]) == 0
        with out.open(newline="") as f:
            return {row["merchant_id"]: row for row in csv.DictReader(f)}

    before = features()
    assert all(int(float(before[m]["payments"])) == 0 for m in merchants if m in before)
    rebuilt = features("--rebuild")
    assert set(merchants) <= set(rebuilt)
    paid: defaultdict[str, int] = defaultdict(int)
    today = to_us(datetime(as_of.year, as_of.month, as_of.day, tzinfo=UTC))
    with engine.connect() as c:
        for merchant, n in c.execute(text(
                "SELECT merchant_id, COUNT(*) FROM payment_orders WHERE status = 'paid' "
                "AND paid_at < :today GROUP BY merchant_id"), {"today": today}):
            paid[merchant] = int(n)
    for m in merchants:
        assert paid[m] > 0 and int(float(rebuilt[m]["payments"])) == paid[m]
    assert f"{len(rebuilt)} merchants" in capsys.readouterr().out
