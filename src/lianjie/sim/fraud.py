"""Fraud with ground truth, for the risk engine's training, backtests and quality benchmark.

``generate`` makes a time-ordered stream of money-moving events (what the risk engine sees:
``risk.Event``) from a population of ordinary consumers and merchants, with five kinds of
fraud mixed in:

- account takeover: a victim's wallet drained in minutes from a new device by P2P transfers
  to young mule accounts, which then withdraw;
- card-testing style probes: one device and IP trying many stolen wallets with tiny payments at
  a fake merchant, then spending the ones that work;
- cash-out rings: young accounts on a few shared devices paying large amounts to a young fake
  merchant;
- collusion loops: a few accounts passing the same money round (A -> B -> C -> A);
- device farms: dozens of new accounts on two or three devices paying one merchant.

The labels are returned apart from the events (``subject_id -> kind of fraud``): the engine
never sees them, as in life, where labels arrive later from cases and chargebacks.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from lianjie.risk import Event

CATEGORIES = ("street_food", "convenience_store", "market_stall", "restaurant", "cafe",
              "bakery", "fruit_shop", "pharmacy", "hair_salon", "clothing", "online_shop")
TYPICAL = {"street_food": 1500, "convenience_store": 2500, "market_stall": 3000,
           "restaurant": 8000, "cafe": 3500, "bakery": 2000, "fruit_shop": 3000,
           "pharmacy": 6000, "hair_salon": 9000, "clothing": 25000, "online_shop": 15000}
START = datetime(2026, 3, 2, tzinfo=UTC)


@dataclass
class Stream:
    events: list[tuple[datetime, Event]] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)  # subject_id -> fraud kind

    def add(self, when: datetime, event: Event, fraud: str | None = None) -> None:
        self.events.append((when, event))
        if fraud:
            self.labels[event.subject_id] = fraud


@dataclass
class _Consumer:
    id: str
    since: datetime
    device: str
    ip: str
    favourites: list[int]
    friends: list[str]


class _World:
    def __init__(self, rng: random.Random, consumers: int, merchants: int) -> None:
        self.rng = rng
        self.n = 0
        self.merchants = [(f"mch_{i}", rng.choice(CATEGORIES), f"sp_{i % 10}",
                           START - timedelta(days=rng.uniform(30, 900)))
                          for i in range(merchants)]
        self.consumers = [
            _Consumer(f"cus_{i}", START - timedelta(days=rng.uniform(20, 1500)), f"dev_{i}",
                      f"10.{i // 250}.{i % 250}.{rng.randint(1, 9)}",
                      rng.sample(range(merchants), 4), [])
            for i in range(consumers)]
        for c in self.consumers:
            c.friends = [rng.choice(self.consumers).id for _ in range(3)]
        self.by_id = {c.id: c for c in self.consumers}

    def sid(self, prefix: str) -> str:
        self.n += 1
        return f"{prefix}_{self.n}"

    def pay(self, c: _Consumer, m: int, amount: int, device: str | None = None,
            ip: str | None = None) -> Event:
        mid, cat, sp, since = self.merchants[m]
        return Event("payment", self.sid("ord"), c.id, max(1, amount), "CNY", mid, sp,
                     device or c.device, ip or c.ip, cat, c.since, since)


def _legit_day(w: _World, s: Stream, day0: datetime, rate: float) -> None:
    rng = w.rng
    for c in w.consumers:
        for _ in range(_poisson(rng, rate)):
            when = day0 + timedelta(seconds=_daytime_s(rng))
            m = rng.choice(c.favourites) if rng.random() < 0.8 else \
                rng.randrange(len(w.merchants))
            typical = TYPICAL[w.merchants[m][1]]
            amount = int(rng.lognormvariate(0, 0.6) * typical)
            device = c.device
            if rng.random() < 0.004:  # a new phone, now and then
                c.device = device = w.sid("dev")
            s.add(when, w.pay(c, m, amount, device))
        if rng.random() < 0.12:
            when = day0 + timedelta(seconds=_daytime_s(rng))
            friend = w.by_id[rng.choice(c.friends)]
            s.add(when, Event("p2p", w.sid("wop"), c.id, int(rng.lognormvariate(8, 1.0)), "CNY",
                              friend.id, None, c.device, c.ip, None, c.since, friend.since))
        if rng.random() < 0.03:
            when = day0 + timedelta(seconds=_daytime_s(rng))
            s.add(when, Event("withdrawal", w.sid("wop"), c.id, int(rng.lognormvariate(9, 1.0)),
                              "CNY", "ins_bank", None, c.device, c.ip, None, c.since))


def _ato(w: _World, s: Stream, at: datetime) -> None:
    rng = w.rng
    victim = rng.choice(w.consumers)
    device, ip = w.sid("dev"), f"172.16.{rng.randint(0, 255)}.{rng.randint(1, 254)}"
    mules = [(w.sid("cus"), at - timedelta(days=rng.uniform(0.5, 4))) for _ in range(2)]
    t = at
    for _ in range(rng.randint(3, 7)):
        t += timedelta(seconds=rng.uniform(15, 120))
        mule, since = rng.choice(mules)
        s.add(t, Event("p2p", w.sid("wop"), victim.id, rng.randint(30_000, 300_000), "CNY",
                       mule, None, device, ip, None, victim.since, since), "ato")
    for mule, since in mules:
        t += timedelta(seconds=rng.uniform(60, 600))
        s.add(t, Event("withdrawal", w.sid("wop"), mule, rng.randint(100_000, 600_000), "CNY",
                       "ins_bank", None, device, ip, None, since), "ato")


def _probes(w: _World, s: Stream, at: datetime) -> None:
    rng = w.rng
    fake = (w.sid("mch"), "online_shop", "sp_9", at - timedelta(days=rng.uniform(1, 10)))
    w.merchants.append(fake)
    m = len(w.merchants) - 1
    device, ip = w.sid("dev"), f"172.17.{rng.randint(0, 255)}.{rng.randint(1, 254)}"
    victims = rng.sample(w.consumers, rng.randint(15, 40))
    t = at
    for v in victims:
        t += timedelta(seconds=rng.uniform(5, 40))
        s.add(t, w.pay(v, m, rng.randint(1, 99), device, ip), "card_testing")
    for v in victims[: len(victims) // 3]:
        t += timedelta(seconds=rng.uniform(20, 200))
        s.add(t, w.pay(v, m, rng.randint(50_000, 400_000), device, ip), "card_testing")


def _ring(w: _World, s: Stream, at: datetime) -> None:
    rng = w.rng
    fake = (w.sid("mch"), rng.choice(CATEGORIES), "sp_8", at - timedelta(days=rng.uniform(0, 2)))
    w.merchants.append(fake)
    m = len(w.merchants) - 1
    devices = [w.sid("dev") for _ in range(rng.randint(2, 3))]
    members = [_Consumer(w.sid("cus"), at - timedelta(days=rng.uniform(0.2, 6)),
                         rng.choice(devices), f"172.18.{rng.randint(0, 255)}.7", [m], [])
               for _ in range(rng.randint(10, 25))]
    t = at
    for c in members:
        for _ in range(rng.randint(1, 3)):
            t += timedelta(seconds=rng.uniform(30, 900))
            s.add(t, w.pay(c, m, rng.randint(80_000, 500_000)), "cash_out_ring")


def _loop(w: _World, s: Stream, at: datetime) -> None:
    rng = w.rng
    ring = rng.sample(w.consumers, rng.randint(3, 4))
    amount = rng.randint(200_000, 2_000_000)
    t = at
    for _ in range(rng.randint(2, 4)):
        for i, c in enumerate(ring):
            t += timedelta(seconds=rng.uniform(60, 1800))
            nxt = ring[(i + 1) % len(ring)]
            s.add(t, Event("p2p", w.sid("wop"), c.id, amount, "CNY", nxt.id, None, c.device,
                           c.ip, None, c.since, nxt.since), "collusion_loop")


def _farm(w: _World, s: Stream, at: datetime) -> None:
    rng = w.rng
    devices = [w.sid("dev") for _ in range(rng.randint(2, 3))]
    m = rng.randrange(len(w.merchants))
    t = at
    for _ in range(rng.randint(20, 50)):
        c = _Consumer(w.sid("cus"), t - timedelta(hours=rng.uniform(1, 30)), rng.choice(devices),
                      f"172.19.{rng.randint(0, 3)}.9", [m], [])
        t += timedelta(seconds=rng.uniform(10, 300))
        s.add(t, w.pay(c, m, rng.randint(5_000, 60_000)), "device_farm")


FRAUDS = (_ato, _probes, _ring, _loop, _farm)


def generate(*, days: int = 14, consumers: int = 3000, merchants: int = 300,
             payments_per_day: float = 1.5, frauds_per_day: int = 6,
             seed: int = 42) -> Stream:
    """A labelled stream of ``days`` days, in time order."""
    assert 0 < days <= 365 and 0 < consumers <= 1_000_000 and 0 < merchants <= 100_000
    rng = random.Random(seed)
    w = _World(rng, consumers, merchants)
    s = Stream()
    for d in range(days):
        day0 = START + timedelta(days=d)
        _legit_day(w, s, day0, payments_per_day)
        for _ in range(frauds_per_day):
            rng.choice(FRAUDS)(w, s, day0 + timedelta(seconds=rng.uniform(0, 80_000)))
    s.events.sort(key=lambda x: x[0])
    return s


def _poisson(rng: random.Random, lam: float) -> int:
    n, limit, p = 0, pow(2.718281828459045, -lam), rng.random()
    while p > limit:
        n += 1
        p *= rng.random()
    return n


def _daytime_s(rng: random.Random) -> float:
    return min(86_399.0, max(0.0, rng.gauss(14 * 3600, 4 * 3600)))
