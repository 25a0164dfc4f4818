"""A marketing scenario: red packets among friends, and a coupon campaign with a holdout.

Separate from the default simulated day (which it leaves unchanged), it runs in process on its
own consumers through the marketing context's actions:

1. history: consumers shop at a few merchants for ``history_days`` days at their own base rate;
2. a segment of recent buyers is evaluated, and a platform-funded campaign issues them a coupon,
   holding ``holdout_bps`` of them out as the control group;
3. campaign days: everyone keeps shopping at its base rate, and a consumer holding an unused
   coupon is ``coupon_lift`` more likely to shop that day, and pays with the coupon. Friends
   send lucky red packets to their groups and most members grab; a merchant's "scan to get"
   red packet rewards visitors; what nobody grabbed goes back at expiry;
4. the campaign report (which should show the treated group paying more often than the
   holdout), and the ledger verified.

Ground truth is the ``coupon_lift`` the scenario planted; the report estimates it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import Connection, Engine

from lianjie import ledger
from lianjie import marketing as mkt
from lianjie import payments as pay
from lianjie.clock import ManualClock
from lianjie.committer import run_now
from lianjie.errors import DomainError

CFG = pay.PaymentsConfig()
FUNDS_FEN = 500_000
DAY = timedelta(days=1)


@dataclass(frozen=True)
class MarketingSimConfig:
    seed: int = 7
    consumers: int = 200
    merchants: int = 5
    history_days: int = 7
    campaign_days: int = 7
    base_rate: float = 0.3  # purchases per consumer per day
    coupon_lift: float = 0.4  # the extra chance to shop while holding a coupon
    holdout_bps: int = 2000
    groups: int = 20
    group_size: int = 6
    grab_share: float = 0.85


@dataclass
class MarketingSimReport:
    payments: int = 0
    coupon_payments: int = 0
    red_packets: int = 0
    grabs: int = 0
    refusals: dict[str, int] = field(default_factory=dict)
    campaign: dict[str, Any] = field(default_factory=dict)
    verify_problems: int = 0

    @property
    def ok(self) -> bool:
        return self.verify_problems == 0

    def summary(self) -> str:
        t, h = self.campaign.get("treated", {}), self.campaign.get("holdout", {})
        return (f"marketing: {self.payments} payments ({self.coupon_payments} with a coupon), "
                f"{self.red_packets} red packets, {self.grabs} grabs; treated "
                f"{t.get('payments_per_consumer')} vs holdout {h.get('payments_per_consumer')} "
                f"payments per consumer; incremental {self.campaign.get('incremental_payments')}"
                f", cost per incremental payment "
                f"{self.campaign.get('cost_per_incremental_payment')}; ledger "
                f"{'verified' if self.ok else f'{self.verify_problems} violation(s)'}")


class _Sim:
    def __init__(self, engine: Engine, cfg: MarketingSimConfig) -> None:
        self.engine, self.cfg = engine, cfg
        self.rng = random.Random(cfg.seed)
        self.clock = ManualClock()
        self.report = MarketingSimReport()

    def run(self, fn: Any) -> Any:
        return run_now(self.engine, fn)

    def attempt(self, fn: Any) -> Any:
        try:
            return self.run(fn)
        except DomainError as exc:
            self.report.refusals[exc.code.value] = self.report.refusals.get(exc.code.value,
                                                                            0) + 1
            return None

    def setup(self) -> tuple[list[str], list[str]]:
        now = self.clock.now()

        def unit(conn: Connection) -> tuple[list[str], list[str]]:
            pay.ensure_platform(conn, now, CFG)
            bank = pay.do_create_institution(conn, now, CFG, "Sim bank").id
            shops = []
            for i in range(self.cfg.merchants):
                m = pay.do_onboard_merchant(conn, now, CFG, f"Shop {i}", sp_id=None,
                                            business_type="restaurant")
                pay.do_decide_kyc(conn, now, m.id, True)
                shops.append(m.id)
            people = []
            for _ in range(self.cfg.consumers):
                c = pay.do_create_consumer(conn, now, CFG, "Sim consumer")
                pay.do_top_up(conn, now, c.id, bank, FUNDS_FEN, "CNY")
                people.append(c.id)
            return shops, people

        shops, people = self.run(unit)
        return shops, people

    def shop(self, consumer: str, merchant: str, coupon: str | None) -> None:
        amount = self.rng.randrange(1200, 6000)
        now = self.clock.now() + timedelta(seconds=self.rng.randrange(12 * 3600))

        def unit(conn: Connection) -> bool:
            order = pay.do_create_order(conn, now, CFG, merchant, out_trade_no=f"sim{now}"
                                        f"{consumer}", amount=amount, currency_code="CNY",
                                        description="dinner")
            pay.do_pay_order(conn, now, order.id, consumer, coupon_id=coupon)
            return True

        if self.attempt(unit) is None:
            return
        self.report.payments += 1
        self.report.coupon_payments += coupon is not None

    def red_packets(self, people: list[str]) -> None:
        now = self.clock.now()
        for _ in range(self.cfg.groups):
            members = self.rng.sample(people, self.cfg.group_size)
            sender = members[0]
            group = self.run(lambda c, s=sender: mkt.do_create_group(c, now, s, "friends"))
            self.run(lambda c, g=group.id, s=sender, m=members[1:]:
                     mkt.do_add_members(c, now, g, s, m))
            packet = self.attempt(lambda c, g=group.id, s=sender: mkt.do_send(
                c, now, s, g, amount=self.rng.choice((666, 888, 2000)), currency_code="CNY",
                shares=self.cfg.group_size - 1, split_kind="lucky"))
            if packet is None:
                continue
            self.report.red_packets += 1
            takers = [m for m in members if self.rng.random() < self.cfg.grab_share]
            takers += takers[:1]  # someone tries twice: refused
            for who in takers:
                if self.attempt(lambda c, w=who, p=packet.id: mkt.do_grab(c, now, p, w)):
                    self.report.grabs += 1

    def day(self, shops: list[str], people: list[str], coupons: dict[str, str]) -> None:
        for consumer in people:
            coupon = coupons.get(consumer)
            rate = self.cfg.base_rate + (self.cfg.coupon_lift if coupon else 0.0)
            if self.rng.random() < rate:
                self.shop(consumer, self.rng.choice(shops), coupon)
                coupons.pop(consumer, None)
        self.red_packets(people)
        self.clock.advance(DAY)
        self.run(lambda c: mkt.do_expire_packets(c, self.clock.now()))

    def campaign(self, shops: list[str], people: list[str]) -> tuple[str, dict[str, str]]:
        now = self.clock.now()

        def unit(conn: Connection) -> tuple[str, str, str]:
            seg = mkt.do_create_segment(conn, now, pay.PLATFORM_ID, "recent buyers",
                                        {"kind": "frequent", "min_count": 1, "days": 30})
            camp = mkt.do_create_campaign(
                conn, now, name="Come back", funder_id=pay.PLATFORM_ID,
                budget=self.cfg.consumers * 1000, currency_code="CNY", starts_at=now,
                ends_at=now + self.cfg.campaign_days * DAY, holdout_bps=self.cfg.holdout_bps,
                segment_id=seg.id)
            tpl = mkt.do_create_template(conn, now, camp.id, name="5 off 12", kind="fixed",
                                         amount_off=500, min_spend=1200, claimable=False,
                                         total_max=self.cfg.consumers,
                                         valid_s=self.cfg.campaign_days * 86_400)
            mkt.do_issue_to_segment(conn, now, tpl.id, seg.id)
            packet = mkt.do_create_campaign_packet(conn, now, camp.id, amount=10_000,
                                                   shares=100, split_kind="lucky",
                                                   merchant_id=shops[0])
            return camp.id, tpl.id, packet.id

        campaign_id, _template_id, packet_id = self.run(unit)
        with self.engine.connect() as conn:
            held = {c.consumer_id: c.id for p in people
                    for c in mkt.coupons_of(conn, p, status="active")}
        for visitor in self.rng.sample(people, min(50, len(people))):
            if self.attempt(lambda c, v=visitor: mkt.do_grab(c, now, packet_id, v)):
                self.report.grabs += 1
        return campaign_id, held


def run_marketing_simulation(engine: Engine, cfg: MarketingSimConfig | None = None
                             ) -> MarketingSimReport:
    """Run the scenario on ``engine``'s (migrated) database; see the module docstring."""
    cfg = cfg or MarketingSimConfig()
    sim = _Sim(engine, cfg)
    shops, people = sim.setup()
    for _ in range(cfg.history_days):
        sim.day(shops, people, {})
    campaign_id, coupons = sim.campaign(shops, people)
    for _ in range(cfg.campaign_days):
        sim.day(shops, people, coupons)
    with engine.connect() as conn:
        sim.report.campaign = mkt.campaign_report(conn, campaign_id)
        sim.report.verify_problems = len(ledger.verify(conn))
    return sim.report
