"""The marketing scenario and the marketing CLI, on both databases."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import Engine

from lianjie import marketing as mkt
from lianjie.cli import main
from lianjie.clock import ManualClock
from lianjie.ledger import Purpose
from lianjie.sim.marketing import MarketingSimConfig, run_marketing_simulation
from marketing_world import make_world


def test_scenario_shows_uplift_against_the_holdout_and_verifies(engine: Engine) -> None:
    # Holdout membership hashes the campaign's (random) id, so the split differs run to run.
    # A coupon makes its holder certain to shop (0.3 + 0.7) and is spent on that purchase, so
    # over a one-day campaign every treated consumer pays exactly once; the holdout's mean
    # reaches 1 only if each of its ~25 members shops at 0.3 (about 1e-13).
    cfg = MarketingSimConfig(seed=3, consumers=200, merchants=2, history_days=3,
                             campaign_days=1, groups=4, coupon_lift=0.7)
    result = run_marketing_simulation(engine, cfg)
    assert result.ok, result.summary()
    report = result.campaign
    assert report["coupons_issued"] > 0 and report["holdout"]["consumers"] > 0
    assert report["coupons_redeemed"] == result.coupon_payments
    assert report["treated"]["payments_per_consumer"] == 1
    assert report["holdout"]["payments_per_consumer"] < 1
    assert result.red_packets > 0 and result.grabs > 0
    assert result.refusals.get("already_grabbed", 0) > 0


def test_cli_expires_red_packets_and_prints_a_report(engine: Engine, clock: ManualClock,
                                                     capsys: pytest.CaptureFixture[str]
                                                     ) -> None:
    world = make_world(engine, clock)
    alice = world.consumer(1000)
    now = clock.now()
    group = world.run(lambda c: mkt.do_create_group(c, now, alice, "me"))
    packet = world.run(lambda c: mkt.do_send(c, now, alice, group.id, amount=500,
                                             currency_code="CNY", shares=2,
                                             split_kind="equal"))
    url = engine.url.render_as_string(hide_password=False)
    assert main(["--database", url, "marketing", "expire-red-packets"]) == 0
    assert "expired 1 red packet(s)" in capsys.readouterr().out
    assert world.balance(alice) == 1000
    assert world.balance(packet.id, Purpose.RED_PACKET) == 0
    assert main(["--database", url, "marketing", "refresh-segments", "--all"]) == 0
    assert main(["--database", url, "marketing", "report", "cmp_missing"]) == 2
    world.clock.advance(timedelta(seconds=1))
    world.check()
