"""Who takes part, and how they join: the onboarding day before the first simulated day.

The population is drawn first, all at once, from the ``population`` random stream: partner
institutions, service providers with their commission shares, merchants of several business
types (most onboarded by a service provider at a fee rate it chooses within the platform's
bounds, some direct), and consumers with their own daily rhythm, bank and usual top-up.

Then it joins the system in phases, in time order across the onboarding day, each phase waiting
for the ids the previous one produced: institutions and service providers in the morning,
merchants until noon, KYC decisions in the afternoon (a few rejected, a few left pending: those
merchants cannot collect, and customers who try are an expected failure), stores and static
collection codes, then consumers in the evening, who fund their wallets before midnight.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, time, timedelta
from typing import Protocol

from lianjie.payments import PaymentsConfig
from lianjie.sim import ops as o
from lianjie.sim.config import SHANGHAI, SimConfig
from lianjie.sim.profiles import CORE_TYPES, PROFILES
from lianjie.sim.world import (
    ConsumerAgent,
    InstitutionAgent,
    MerchantAgent,
    ServiceProviderAgent,
    World,
)

DISTRICTS = ("Chaoyang", "Haidian", "Xuhui", "Jing'an", "Tianhe", "Futian", "Wuhou", "Xihu")
MERCHANTS_PER_DISTRICT = 12
DIRECT_MERCHANT_SHARE = 0.25
REJECTED_SHARE = 0.04
PENDING_SHARE = 0.03
MORE_STORES_SHARE = 0.3  # of the types that may have several stores
FRIENDS_MIN, FRIENDS_MAX = 2, 6
SP_FEE_RATES_BPS = (20, 25, 30, 38, 38, 38, 45, 60)
DIRECT_FEE_RATES_BPS = (38, 38, 60)
COMMISSION_SHARES_BPS = (2000, 2500, 3000, 3000, 3500, 4000)
TOPUP_YUAN = (100, 200, 200, 300, 500, 1000)
OPENING_TOPUP_YUAN = (100, 200, 300, 500, 800, 1000)
FEN_PER_YUAN = 100

INSTITUTION_NAMES = ("Jiangnan Rural Commercial Bank", "Huaxia City Bank", "Xinhe Bank",
                     "Pearl River Savings Bank", "Northern Trust Cooperative Bank")
SP_NAMES = ("Yunshang Tech 云商科技", "Saoma Pay Services 扫码付服务", "Jiedian ISV 街店科技",
            "Lianmeng Merchant Services 联盟商服", "Xiaodian Cloud 小店云")
OWNERS = (("老王", "Lao Wang"), ("小李", "Xiao Li"), ("阿芳", "Ah Fang"), ("张姐", "Zhang Jie"),
          ("老陈", "Lao Chen"), ("刘记", "Liu Ji"), ("赵家", "Zhao Jia"), ("阿明", "Ah Ming"),
          ("黄师傅", "Master Huang"), ("周氏", "Zhou Shi"))
SURNAMES = (("王", "Wang"), ("李", "Li"), ("张", "Zhang"), ("刘", "Liu"), ("陈", "Chen"),
            ("杨", "Yang"), ("黄", "Huang"), ("赵", "Zhao"), ("吴", "Wu"), ("周", "Zhou"))
GIVEN = (("伟", "Wei"), ("芳", "Fang"), ("娜", "Na"), ("敏", "Min"), ("静", "Jing"),
         ("磊", "Lei"), ("强", "Qiang"), ("洋", "Yang"), ("艳", "Yan"), ("杰", "Jie"),
         ("军", "Jun"), ("涛", "Tao"), ("丽", "Li"), ("超", "Chao"))


class Performer(Protocol):
    """The engine's side of onboarding: run tasks in time order, and wait for outcomes."""

    def perform(self, task: o.Task) -> None: ...
    def settle(self) -> None: ...


# -- drawing the population ---------------------------------------------------------------


def draw(cfg: SimConfig, pcfg: PaymentsConfig, start: date) -> World:
    """The population of a run whose first simulated day is ``start``."""
    districts = DISTRICTS[:max(1, min(len(DISTRICTS), cfg.merchants // MERCHANTS_PER_DISTRICT))]
    world = World(cfg, start, districts)
    rng = world.rng("population")
    world.institutions = [InstitutionAgent(i, INSTITUTION_NAMES[i % len(INSTITUTION_NAMES)]
                                           + _suffix(i, len(INSTITUTION_NAMES)))
                          for i in range(cfg.institutions)]
    world.service_providers = [
        ServiceProviderAgent(i, SP_NAMES[i % len(SP_NAMES)] + _suffix(i, len(SP_NAMES)),
                             rng.choice(COMMISSION_SHARES_BPS))
        for i in range(cfg.service_providers)]
    world.merchants = _merchants(cfg, pcfg, rng, len(districts))
    world.consumers = _consumers(cfg, rng, len(districts))
    return world


def _suffix(i: int, n: int) -> str:
    return "" if i < n else f" {i // n + 1}"


def _merchant_types(n: int, rng: random.Random) -> list[str]:
    types = list(CORE_TYPES[:n])
    names = sorted(PROFILES)
    weights = [PROFILES[t].merchant_weight for t in names]
    types += rng.choices(names, weights, k=n - len(types))
    return types


def _kyc_outcomes(n: int, rng: random.Random) -> list[str]:
    """Approved for most; a few rejected or left pending, never among the core types."""
    outcomes = ["approved"] * n
    rest = list(range(len(CORE_TYPES), n))
    rejected = max(1, round(n * REJECTED_SHARE)) if rest else 0
    pending = max(1, round(n * PENDING_SHARE)) if len(rest) > rejected else 0
    for k, i in enumerate(rng.sample(rest, rejected + pending)):
        outcomes[i] = "rejected" if k < rejected else "pending"
    return outcomes


def _merchants(cfg: SimConfig, pcfg: PaymentsConfig, rng: random.Random, districts: int
               ) -> list[MerchantAgent]:
    types = _merchant_types(cfg.merchants, rng)
    kyc = _kyc_outcomes(cfg.merchants, rng)
    sp_weights = [1.0 / (i + 1) for i in range(cfg.service_providers)]  # a few large SPs
    out = []
    for i, business_type in enumerate(types):
        profile = PROFILES[business_type]
        assert business_type in pcfg.business_types, business_type
        direct = not sp_weights or rng.random() < DIRECT_MERCHANT_SHARE
        sp = None if direct else rng.choices(range(len(sp_weights)), sp_weights)[0]
        rate = rng.choice(DIRECT_FEE_RATES_BPS if direct else SP_FEE_RATES_BPS)
        rate = min(max(rate, pcfg.fee_rate_bps_min), pcfg.fee_rate_bps_max)
        owner_zh, owner_en = rng.choice(OWNERS)
        noun_zh, noun_en = rng.choice(profile.names)
        popularity = rng.lognormvariate(0.0, 0.6) * (1.0 if kyc[i] == "approved" else 0.1)
        extra = profile.stores_max - 1
        stores = 1 + (rng.randint(1, extra) if extra and rng.random() < MORE_STORES_SHARE else 0)
        out.append(MerchantAgent(i, f"{owner_zh}{noun_zh} {owner_en} {noun_en}", profile, sp,
                                 rate, kyc[i], rng.randrange(districts), popularity, stores))
    return out


def _consumers(cfg: SimConfig, rng: random.Random, districts: int) -> list[ConsumerAgent]:
    out = []
    for i in range(cfg.consumers):
        activity = rng.lognormvariate(-0.125, 0.5)  # mean 1: exp(mu + sigma^2 / 2)
        weekend = rng.lognormvariate(-0.045, 0.3) * 0.9
        (s_zh, s_en), (g_zh, g_en) = rng.choice(SURNAMES), rng.choice(GIVEN)
        out.append(ConsumerAgent(
            i, f"{s_en} {g_en} {s_zh}{g_zh}", cfg.purchases_per_day * activity,
            cfg.purchases_per_day * activity * weekend, rng.randrange(districts),
            rng.randrange(cfg.institutions), rng.choice(TOPUP_YUAN) * FEN_PER_YUAN, ""))
    by_district: dict[int, list[int]] = {}
    for c in out:
        by_district.setdefault(c.district, []).append(c.index)
    for c in out:
        c.friends = _friends(c, by_district[c.district], len(out), rng)
    return out


def _friends(c: ConsumerAgent, neighbours: Sequence[int], everyone: int, rng: random.Random
             ) -> list[int]:
    """A few friends, from the consumer's own district when it has enough people."""
    n = min(rng.randint(FRIENDS_MIN, FRIENDS_MAX), everyone - 1)
    pool: Sequence[int] = neighbours if len(neighbours) > n else range(everyone)
    return [i for i in rng.sample(pool, n + 1) if i != c.index][:n]


# -- joining the system -------------------------------------------------------------------


def _times(rng: random.Random, day: date, start_h: float, end_h: float, n: int
           ) -> list[datetime]:
    """``n`` sorted moments between two local hours of ``day``, in UTC."""
    base = datetime.combine(day, time(0), SHANGHAI)
    seconds = sorted(rng.uniform(start_h * 3600, end_h * 3600) for _ in range(n))
    return [(base + timedelta(seconds=math.floor(s))).astimezone(UTC) for s in seconds]


def _setter(agent: InstitutionAgent | ServiceProviderAgent | MerchantAgent
            ) -> Callable[[o.Outcome], None]:
    """Learn the id the system gave the agent."""
    def then(outcome: o.Outcome) -> None:
        if outcome.result is not None:
            agent.id = outcome.result.id
    return then


def _appender(ids: list[str]) -> Callable[[o.Outcome], None]:
    def then(outcome: o.Outcome) -> None:
        if outcome.result is not None:
            ids.append(outcome.result.id)
    return then


def onboarding_steps(world: World) -> int:
    """How many tasks ``onboard`` performs if every step succeeds (for a progress bar)."""
    decided = sum(1 for m in world.merchants if m.kyc != "pending")
    stores = sum(m.stores_wanted for m in world.merchants)
    return len(world.institutions) + len(world.service_providers) + len(world.merchants) + \
        decided + 2 * stores + 2 * len(world.consumers)


def onboard(world: World, day: date, run: Performer) -> None:
    """Bring the drawn population into the system during ``day``, phase by phase."""
    rng = world.rng("onboarding")
    _institutions_and_sps(world, day, run, rng)
    _onboard_merchants(world, day, run, rng)
    _decide_kyc(world, day, run, rng)
    _stores(world, day, run, rng)
    _codes(world, day, run, rng)
    _join_consumers(world, day, run, rng)
    _opening_top_ups(world, day, run, rng)


def _one(run: Performer, lane: str, op: o.Op, then: Callable[[o.Outcome], None] | None = None
         ) -> None:
    run.perform(o.Task(lane, (o.Step(op, then=then),)))


def _institutions_and_sps(world: World, day: date, run: Performer, rng: random.Random
                          ) -> None:
    agents: list[InstitutionAgent | ServiceProviderAgent] = [*world.institutions,
                                                            *world.service_providers]
    for at, agent in zip(_times(rng, day, 8.0, 8.5, len(agents)), agents, strict=True):
        if isinstance(agent, InstitutionAgent):
            _one(run, "operator", o.CreateInstitution(at=at, name=agent.name), _setter(agent))
        else:
            _one(run, "operator", o.CreateServiceProvider(
                at=at, name=agent.name, commission_share_bps=agent.commission_share_bps),
                _setter(agent))
    run.settle()


def _onboard_merchants(world: World, day: date, run: Performer, rng: random.Random) -> None:
    for at, m in zip(_times(rng, day, 9.0, 12.0, len(world.merchants)), world.merchants,
                     strict=True):
        sp_id = None if m.sp is None else world.service_providers[m.sp].id or None
        if m.sp is not None and sp_id is None:
            continue  # its service provider failed to join; counted already
        _one(run, f"sp:{m.sp}", o.OnboardMerchant(
            at=at, name=m.name, sp_id=sp_id, business_type=m.business_type,
            fee_rate_bps=m.fee_rate_bps), _setter(m))
    run.settle()


def _decide_kyc(world: World, day: date, run: Performer, rng: random.Random) -> None:
    decided = [m for m in world.merchants if m.id and m.kyc != "pending"]
    for at, m in zip(_times(rng, day, 13.0, 15.0, len(decided)), decided, strict=True):
        _one(run, "operator", o.DecideKyc(at=at, merchant_id=m.id, approve=m.collects))
    run.settle()


def _stores(world: World, day: date, run: Performer, rng: random.Random) -> None:
    wanted = [(m, k) for m in world.merchants if m.id for k in range(m.stores_wanted)]
    for at, (m, k) in zip(_times(rng, day, 15.0, 16.5, len(wanted)), wanted, strict=True):
        district = world.districts[(m.district + k) % len(world.districts)]
        _one(run, m.id, o.CreateStore(at=at, merchant_id=m.id, name=f"{district} #{k + 1}"),
             _appender(m.stores))
    run.settle()


def _codes(world: World, day: date, run: Performer, rng: random.Random) -> None:
    wanted = [(m, s) for m in world.merchants for s in m.stores]
    for at, (m, store_id) in zip(_times(rng, day, 16.5, 18.0, len(wanted)), wanted,
                                 strict=True):
        _one(run, m.id, o.CreateQrCode(at=at, merchant_id=m.id, store_id=store_id,
                                       description=f"{m.name} 收款码"),
             _appender(m.codes))
    run.settle()


def _join_consumers(world: World, day: date, run: Performer, rng: random.Random) -> None:
    def joined(c: ConsumerAgent) -> Callable[[o.Outcome], None]:
        def then(out: o.Outcome) -> None:
            if out.result is not None:
                c.id = out.result.id
                c.device_id = "dev_" + c.id.split("_", 1)[1]
        return then

    for at, c in zip(_times(rng, day, 18.0, 21.0, len(world.consumers)), world.consumers,
                     strict=True):
        _one(run, "operator", o.CreateConsumer(at=at, name=c.name), joined(c))
    run.settle()


def _opening_top_ups(world: World, day: date, run: Performer, rng: random.Random) -> None:
    joined = [c for c in world.consumers if c.id]
    for at, c in zip(_times(rng, day, 21.0, 23.5, len(joined)), joined, strict=True):
        amount = rng.choice(OPENING_TOPUP_YUAN) * FEN_PER_YUAN
        run.perform(o.Task(c.id, (o.Step(o.TopUp(
            at=at, consumer_id=c.id, institution_id=world.institutions[c.institution].id,
            amount=amount), then=c.expect_change(amount)),)))
    run.settle()
