"""The traffic simulator: small runs against a real database, in-process and over real HTTP.

A run is checked the way an operator would check a day: every invariant of the ledger holds,
every consumer's wallet holds what the consumer believes it should, the only failures are the
ones the scenario provokes on purpose, timestamps follow the simulated day, and the same seed
gives the same day again.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from datetime import date, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, select

from lianjie import ledger
from lianjie.cli import bootstrap
from lianjie.db import make_engine, migrate
from lianjie.errors import ConfigError
from lianjie.payments.config import BUSINESS_TYPES
from lianjie.payments.schema import orders, parties
from lianjie.sim import BEHAVIOURS, SHANGHAI, Label, SimConfig, SimReport, World, run_simulation
from lianjie.sim import ops as o
from lianjie.sim.behaviours import Scheduler, midnight, poisson
from lianjie.sim.profiles import PROFILES

SMALL = SimConfig(service_providers=1, merchants=6, consumers=40)
START = date(2026, 1, 5)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "home"
    monkeypatch.setenv("LIANJIE_HOME", str(path))
    return path


def _run(engine: Engine, cfg: SimConfig) -> SimReport:
    bootstrap(engine)
    return run_simulation(engine, cfg, progress=False)


def _assert_healthy(report: SimReport, cfg: SimConfig) -> None:
    assert report.ok, report.summary()
    assert report.verify_problems == []
    assert report.unexpected_errors == Counter()
    c = report.ok_counts
    assert c["create_consumer"] == cfg.consumers
    assert c["onboard_merchant"] == cfg.merchants
    assert c["create_service_provider"] == cfg.service_providers
    assert c["create_institution"] == cfg.institutions
    assert c["pay_static_code"] > 0 and c["pay_order"] > 0
    assert c["top_up"] >= cfg.consumers  # everyone funds a wallet on joining
    assert report.gmv > 0 and sum(report.fees.values()) > 0


def test_a_small_day_in_process(engine: Engine, home: Path) -> None:
    report = _run(engine, SMALL)
    _assert_healthy(report, SMALL)
    assert report.wallets_checked == SMALL.consumers  # every belief matched its ledger balance
    assert report.start == START
    assert report.kyc == Counter(approved=4, rejected=1, pending=1)
    with engine.connect() as conn:
        assert ledger.verify(conn) == []
        rows = conn.execute(select(orders.c.created_at, orders.c.status)).all()
        merchants = conn.execute(select(parties.c.business_type)
                                 .where(parties.c.kind == "merchant")).scalars().all()
    assert len(rows) == report.orders_created
    assert Counter(r.status for r in rows)["paid"] == report.orders_paid
    assert {"street_food", "convenience_store", "market_stall", "restaurant"} <= set(merchants)
    _assert_daily_rhythm([r.created_at for r in rows])


def _assert_daily_rhythm(created: list[datetime]) -> None:
    """Orders fall on the simulated business day, busier at meal times than before dawn."""
    local = [t.astimezone(SHANGHAI) for t in created]
    assert {t.date() for t in local} == {START}
    by_hour = Counter(t.hour for t in local)
    assert by_hour[12] + by_hour[18] > 4 * (by_hour[2] + by_hour[3] + by_hour[4])


def test_the_same_seed_gives_the_same_day(tmp_path: Path, home: Path) -> None:
    cfg = SimConfig(service_providers=1, merchants=4, consumers=12)
    reports = []
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        eng = make_engine(f"sqlite:///{tmp_path / name}.sqlite3")
        reports.append(_run(eng, replace(cfg, seed=seed)))
        eng.dispose()
    first, second, other = reports
    assert first.counts() == second.counts()
    assert first.gmv > 0 and other.gmv > 0
    assert other.counts() != first.counts()


def test_a_second_run_continues_with_the_next_day(tmp_path: Path, home: Path) -> None:
    eng = make_engine(f"sqlite:///{tmp_path}/twice.sqlite3")
    cfg = SimConfig(service_providers=1, merchants=3, consumers=8)
    report = _run(eng, cfg)
    again = run_simulation(eng, cfg)
    with eng.connect() as conn:
        days = {t.astimezone(SHANGHAI).date()
                for t in conn.execute(select(orders.c.created_at)).scalars()}
    eng.dispose()
    assert report.ok and again.ok, again.summary()
    assert (report.start, again.start) == (START, START + timedelta(days=1))
    assert days == {START, START + timedelta(days=1)}
    assert again.counts() != report.counts()  # a new population, not a replay


def test_a_small_day_over_http(engine: Engine, home: Path) -> None:
    cfg = SimConfig(service_providers=1, merchants=5, consumers=15, mode="http")
    report = _run(engine, cfg)
    _assert_healthy(report, cfg)
    assert report.wallets_checked == cfg.consumers
    with engine.connect() as conn:
        assert ledger.verify(conn) == []
        created = conn.execute(select(orders.c.created_at)).scalars().all()
    assert len(created) == report.orders_created
    # The server ran on the simulator's clock, so its timestamps are on the simulated day.
    assert {t.astimezone(SHANGHAI).date() for t in created} == {START}


def test_http_and_in_process_agree(tmp_path: Path, home: Path) -> None:
    cfg = SimConfig(service_providers=1, merchants=4, consumers=10)
    counts = []
    for mode in ("inprocess", "http"):
        eng = make_engine(f"sqlite:///{tmp_path / mode}.sqlite3")
        counts.append(_run(eng, replace(cfg, mode=mode)).counts())
        eng.dispose()
    assert counts[0] == counts[1]


# -- the parts ---------------------------------------------------------------------------------


def test_every_profile_is_a_business_type_with_sane_tickets() -> None:
    assert set(PROFILES) <= BUSINESS_TYPES
    rng = SMALL.rng("test", START)
    for profile in PROFILES.values():
        tickets = [profile.ticket_fen(rng) for _ in range(500)]
        assert all(isinstance(t, int) and t > 0 for t in tickets)
        assert max(tickets) <= profile.max_yuan * 100 + profile.rounding_fen
        assert all(t % profile.rounding_fen == 0 for t in tickets)
    street = sorted(PROFILES["street_food"].ticket_fen(rng) for _ in range(1001))
    restaurant = sorted(PROFILES["restaurant"].ticket_fen(rng) for _ in range(1001))
    assert 800 <= street[500] <= 2500 and 6000 <= restaurant[500] <= 20000


def test_poisson_draws_have_the_asked_mean() -> None:
    rng = SMALL.rng("poisson", START)
    draws = [poisson(rng, 4.5) for _ in range(20_000)]
    assert 4.4 < sum(draws) / len(draws) < 4.6
    assert poisson(rng, 0.0) == 0


@pytest.mark.parametrize("bad", [
    {"merchants": 0}, {"consumers": 1}, {"days": 0}, {"days": 400}, {"institutions": 0},
    {"mode": "carrier-pigeon"}, {"url": "http://127.0.0.1:1"}, {"purchases_per_day": 0},
])
def test_config_refuses_what_cannot_run(bad: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        SimConfig(**bad)  # type: ignore[arg-type]


def test_an_unknown_behaviour_is_refused(tmp_path: Path, home: Path) -> None:
    eng = make_engine(f"sqlite:///{tmp_path}/unknown.sqlite3")
    with pytest.raises(ConfigError, match="unknown behaviour"):
        _run(eng, SimConfig(merchants=2, consumers=2, behaviours=("shopping", "heists")))
    eng.dispose()


def test_a_failure_the_scenario_did_not_provoke_fails_the_run() -> None:
    report = SimReport("inprocess", 7, START, 1)
    at = midnight(START)
    refused = o.Step(o.CloseOrder(at=at, merchant_id="mch_x", ref="r"),
                     expect=frozenset({"merchant_not_approved"}), must_fail=True)
    report.record(refused, o.Outcome(o.Status.FAILED, code="merchant_not_approved"))
    assert report.ok and report.expected_errors == Counter({"close_order:merchant_not_approved": 1})
    report.record(refused, o.Outcome(o.Status.OK, o.Result("ord_1")))
    assert not report.ok and "close_order:unexpected_success" in report.unexpected_errors
    plain = o.Step(o.CloseOrder(at=at, merchant_id="mch_x", ref="r"))
    report.record(plain, o.Outcome(o.Status.FAILED, code="order_not_found"))
    assert report.unexpected_errors["close_order:order_not_found"] == 1
    assert "FAILED" in report.summary()


def test_a_registered_behaviour_plugs_in_and_keeps_its_truth_apart(
        tmp_path: Path, home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What a later fraud behaviour will do: add traffic, and label it only in the report."""

    class Gifts:
        name = "gifts"

        def __init__(self, world: World) -> None:
            self.world = world

        def plan_day(self, day: date, sched: Scheduler) -> None:
            sched.at(midnight(day) + timedelta(hours=20), self._gift)

        def _gift(self, at: datetime) -> list[o.Task]:
            giver, taker = self.world.consumers[0], self.world.consumers[1]
            self.world.truth.add(Label(self.name, giver.id, "generous", at, {"to": taker.id}))
            giver.balance -= 100

            def then(outcome: o.Outcome) -> None:
                if outcome.ok:
                    taker.balance += 100
                else:
                    giver.balance += 100

            op = o.Transfer(at=at, consumer_id=giver.id, recipient_id=taker.id, amount=100,
                            note="gift")
            return [o.Task(giver.id, (o.Step(op, then=then),))]

    monkeypatch.setitem(BEHAVIOURS, "gifts", Gifts)
    cfg = SimConfig(service_providers=0, merchants=2, consumers=3, behaviours=("gifts",))
    eng = make_engine(f"sqlite:///{tmp_path}/gifts.sqlite3")
    report = _run(eng, cfg)
    eng.dispose()
    assert report.ok, report.summary()
    assert report.ok_counts["p2p"] == 1 and report.amounts["p2p"] == 100
    assert [(x.behaviour, x.kind) for x in report.labels] == [("gifts", "generous")]
    assert report.ok_counts["pay_order"] == report.ok_counts["pay_static_code"] == 0


def test_a_fresh_database_needs_only_migrating(tmp_path: Path) -> None:
    """The in-process driver creates the platform party itself if bootstrap did not run."""
    eng = make_engine(f"sqlite:///{tmp_path}/bare.sqlite3")
    migrate(eng)
    report = run_simulation(eng, SimConfig(service_providers=0, merchants=2, consumers=4))
    eng.dispose()
    assert report.ok, report.summary()
    assert report.ok_counts["create_consumer"] == 4
