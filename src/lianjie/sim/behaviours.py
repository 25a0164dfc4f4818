"""Behaviours: what agents do each simulated day, and the registry that names them.

A behaviour plans a day by scheduling *events* (a moment and a function that, when the moment
comes, looks at the world and returns the tasks to perform). Events may schedule follow-ups: a
refund hours after a purchase, a merchant closing an order its customer walked away from.

Behaviours register under a name (``@register("shopping")``) and a run enables those named in
``SimConfig.behaviours``. Each draws from its own random stream, so adding a behaviour (fraud
rings, credit defaults, later) leaves the traffic of the others unchanged for the same seed; a
behaviour that plants something a model should find records it in ``world.truth``, which the
system under test never sees.

The built-in behaviours:

- ``shopping``: consumers buy from merchants through the day. How many purchases a consumer
  makes follows its own weekday and weekend rates; when and where follows the business-type
  profiles (breakfast, lunch and dinner for food, evenings for convenience stores, mornings for
  markets). A purchase is a scan of the merchant's static code with the amount typed in, or an
  order the merchant's till creates and the consumer pays. A consumer low on funds tops up from
  its bank first. A few orders are abandoned, then closed by the merchant or left to expire
  (and sometimes paid too late); a few payments are refunded in full or in part.
- ``p2p``: consumers send friends money: red packets and shared bills, more at weekends.
- ``withdrawals``: now and then a consumer moves part of its balance back to its bank.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable
from datetime import UTC, date, datetime, time, timedelta
from functools import partial
from typing import Protocol

from lianjie.errors import ErrorCode
from lianjie.sim import ops as o
from lianjie.sim.config import SHANGHAI
from lianjie.sim.world import ConsumerAgent, MerchantAgent, OrderBelief, World

Fire = Callable[[datetime], Iterable[o.Task]]
FEN_PER_YUAN = 100
POISSON_LAMBDA_MAX = 100.0
POISSON_DRAW_MAX = 1000  # far in the tail of any allowed rate
TOPUP_STEP_FEN = 100 * FEN_PER_YUAN  # top-ups are whole hundreds of yuan
ABANDON_SHARE = 0.02
LEFT_TO_EXPIRE_SHARE = 0.3
LATE_PAY_SHARE = 0.3
ABANDONED_EXPIRY_S = (300, 600, 900)
REFUND_SHARE = 0.015
FULL_REFUND_SHARE = 0.4
EXPLORE_SHARE = 0.1  # a purchase at a merchant that is not one of the consumer's favourites
FAVOURITES_MAX = 3
SAME_DISTRICT_WEIGHT = 3.0
P2P_DAILY_SHARE = (0.08, 0.12)  # weekday, weekend
RED_PACKETS_FEN = (666, 888, 1888, 2000, 5200, 6600, 8800, 20000)
WITHDRAW_DAILY_SHARE = 0.01
WITHDRAW_BALANCE_MIN_FEN = 200 * FEN_PER_YUAN
EVENING = (1, 0, 0, 0, 0, 0, 0, 2, 3, 3, 3, 4, 6, 4, 3, 3, 3, 4, 6, 8, 10, 12, 10, 5)
REFUND_REASONS = ("customer changed their mind", "wrong amount charged", "item out of stock",
                  "quality complaint", "duplicate payment")
P2P_NOTES = ("AA dinner", "红包", "rent share", "taxi", "thanks!", "birthday 生日快乐")


class Scheduler(Protocol):
    def at(self, when: datetime, fire: Fire) -> None: ...


class Behaviour(Protocol):
    name: str

    def plan_day(self, day: date, sched: Scheduler) -> None: ...


BehaviourFactory = Callable[[World], Behaviour]
BEHAVIOURS: dict[str, BehaviourFactory] = {}


def register(name: str) -> Callable[[BehaviourFactory], BehaviourFactory]:
    """Make a behaviour available to ``SimConfig.behaviours`` under ``name``."""
    def add(factory: BehaviourFactory) -> BehaviourFactory:
        assert name not in BEHAVIOURS, f"behaviour {name!r} is registered twice"
        BEHAVIOURS[name] = factory
        return factory
    return add


# -- helpers every behaviour may use ------------------------------------------------------


def midnight(day: date) -> datetime:
    """The start of a local business day, in UTC."""
    return datetime.combine(day, time(0), SHANGHAI).astimezone(UTC)


def moment(rng: random.Random, day: date, curve: tuple[int, ...]) -> datetime:
    """A moment of ``day`` drawn from an hourly curve (24 relative weights, local time)."""
    hour = rng.choices(range(len(curve)), curve)[0]
    return midnight(day) + timedelta(hours=hour, seconds=rng.randrange(3600))


def poisson(rng: random.Random, lam: float) -> int:
    """A Poisson draw (Knuth's method, fine for the small rates of daily habits)."""
    assert 0 <= lam <= POISSON_LAMBDA_MAX
    limit, k, p = math.exp(-lam), 0, rng.random()
    while p > limit and k < POISSON_DRAW_MAX:
        k += 1
        p *= rng.random()
    return k


def fund(world: World, c: ConsumerAgent, at: datetime, need: int) -> list[o.Step]:
    """A top-up step if the consumer believes it has less than ``need``; counts it at once."""
    if c.balance >= need:
        return []
    amount = max(c.topup_fen, -(-(need - c.balance) // TOPUP_STEP_FEN) * TOPUP_STEP_FEN)
    op = o.TopUp(at=at, consumer_id=c.id, institution_id=world.institutions[c.institution].id,
                 amount=amount)
    return [o.Step(op, then=c.expect_change(amount))]


# -- shopping -------------------------------------------------------------------------------


Cell = tuple[str, int]  # (business type, local hour)


@register("shopping")
class Shopping:
    name = "shopping"

    def __init__(self, world: World) -> None:
        self.world = world
        self.rng = world.rng(self.name)
        self._tables: dict[bool, tuple[list[Cell], list[float]]] = {}
        self._by_type: dict[str, list[MerchantAgent]] = {}

    def _index(self) -> None:
        """Merchants by type as they are today (those that joined), and fresh day tables."""
        by_type: dict[str, list[MerchantAgent]] = {}
        for m in self.world.merchants:
            if m.id:
                by_type.setdefault(m.business_type, []).append(m)
        if by_type != self._by_type:
            self._by_type = by_type
            self._tables.clear()

    def _table(self, weekend: bool) -> tuple[list[Cell], list[float]]:
        """Cumulative weights of (business type, hour) for one kind of day."""
        if weekend not in self._tables:
            cells: list[Cell] = []
            cum: list[float] = []
            total = 0.0
            for btype, merchants in sorted(self._by_type.items()):
                p = merchants[0].profile
                volume = p.intensity * sum(m.popularity for m in merchants) * \
                    (p.weekend_factor if weekend else 1.0)
                curve = p.curve(weekend)
                for hour, w in enumerate(curve):
                    total += volume * w / sum(curve)
                    cells.append((btype, hour))
                    cum.append(total)
            self._tables[weekend] = (cells, cum)
        return self._tables[weekend]

    def plan_day(self, day: date, sched: Scheduler) -> None:
        self._index()
        if not self._by_type:
            return
        weekend = day.weekday() >= 5
        cells, cum = self._table(weekend)
        start = midnight(day)
        for c in self.world.consumers:
            if not c.id:
                continue
            for _ in range(poisson(self.rng, c.rate_weekend if weekend else c.rate_weekday)):
                btype, hour = self.rng.choices(cells, cum_weights=cum)[0]
                at = start + timedelta(hours=hour, seconds=self.rng.randrange(3600))
                sched.at(at, partial(self._purchase, c, btype, sched=sched))

    def _merchant(self, c: ConsumerAgent, btype: str) -> MerchantAgent:
        merchants = self._by_type[btype]
        weights = [m.popularity * (SAME_DISTRICT_WEIGHT if m.district == c.district else 1.0)
                   for m in merchants]
        if self.rng.random() < EXPLORE_SHARE:
            return self.rng.choices(merchants, weights)[0]
        if btype not in c.favourites:
            pool, left = list(merchants), list(weights)
            chosen: list[int] = []
            for _ in range(min(len(pool), self.rng.randint(1, FAVOURITES_MAX))):
                i = self.rng.choices(range(len(pool)), left)[0]
                chosen.append(pool.pop(i).index)
                left.pop(i)
            c.favourites[btype] = chosen
        favs = c.favourites[btype]
        return self.world.merchants[self.rng.choices(favs, [1.0 / (i + 1) for i in
                                                            range(len(favs))])[0]]

    def _purchase(self, c: ConsumerAgent, btype: str, at: datetime, sched: Scheduler
                  ) -> list[o.Task]:
        m = self._merchant(c, btype)
        amount = m.profile.ticket_fen(self.rng)
        ref = f"{m.id}/{m.orders_made}"
        m.orders_made += 1
        static = bool(m.codes) and self.rng.random() < m.profile.static_share
        if not m.collects:
            return [self._refused(c, m, at, amount, ref, static)]
        if static:
            return [self._scan(c, m, at, amount, ref, sched)]
        if self.rng.random() < ABANDON_SHARE:
            return [self._abandon(c, m, at, amount, ref, sched)]
        return [self._checkout(c, m, at, amount, ref, sched)]

    def _refused(self, c: ConsumerAgent, m: MerchantAgent, at: datetime, amount: int,
                 ref: str, static: bool) -> o.Task:
        """A customer tries a merchant that may not collect: the system must refuse."""
        expect = frozenset({ErrorCode.MERCHANT_NOT_APPROVED.value})
        op: o.Op = o.PayStatic(at=at, consumer_id=c.id, ref=ref, qr_code_id=m.codes[0],
                               amount=amount, device_id=c.device_id) if static else \
            self._order_op(m, at, amount, ref, None)
        return o.Task(c.id, (o.Step(op, expect=expect, must_fail=True),))

    def _order_op(self, m: MerchantAgent, at: datetime, amount: int, ref: str,
                  expires_in_s: int | None) -> o.CreateOrder:
        local = at.astimezone(SHANGHAI)
        return o.CreateOrder(at=at, merchant_id=m.id, ref=ref,
                             out_trade_no=f"{local:%Y%m%d%H%M}-{ref.rsplit('/', 1)[1]:0>6}",
                             amount=amount, description=self.rng.choice(m.profile.items),
                             store_id=self.rng.choice(m.stores) if m.stores else None,
                             expires_in_s=expires_in_s)

    def _believe(self, c: ConsumerAgent, m: MerchantAgent, ref: str, amount: int
                 ) -> OrderBelief:
        belief = OrderBelief(ref, m.index, c.index, amount, lane=c.id)
        self.world.orders[ref] = belief
        return belief

    def _paid(self, c: ConsumerAgent, belief: OrderBelief) -> Callable[[o.Outcome], None]:
        def then(outcome: o.Outcome) -> None:
            belief.status = "paid" if outcome.ok else "failed"
            if not outcome.ok:
                c.balance += belief.amount
        return then

    def _scan(self, c: ConsumerAgent, m: MerchantAgent, at: datetime, amount: int, ref: str,
              sched: Scheduler) -> o.Task:
        steps = fund(self.world, c, at, amount)
        belief = self._believe(c, m, ref, amount)
        c.balance -= amount
        steps.append(o.Step(o.PayStatic(at=at, consumer_id=c.id, ref=ref,
                                        qr_code_id=self.rng.choice(m.codes), amount=amount,
                                        device_id=c.device_id), then=self._paid(c, belief)))
        self._maybe_refund(belief, m, at, sched)
        return o.Task(c.id, tuple(steps))

    def _checkout(self, c: ConsumerAgent, m: MerchantAgent, at: datetime, amount: int,
                  ref: str, sched: Scheduler) -> o.Task:
        steps = fund(self.world, c, at, amount)
        belief = self._believe(c, m, ref, amount)
        c.balance -= amount
        # If creating the order fails, paying it is skipped and _paid restores the belief.
        steps.append(o.Step(self._order_op(m, at, amount, ref, None)))
        steps.append(o.Step(o.PayOrder(at=at, consumer_id=c.id, ref=ref,
                                       device_id=c.device_id), then=self._paid(c, belief)))
        self._maybe_refund(belief, m, at, sched)
        return o.Task(c.id, tuple(steps))

    def _abandon(self, c: ConsumerAgent, m: MerchantAgent, at: datetime, amount: int,
                 ref: str, sched: Scheduler) -> o.Task:
        """The till shows a code, the customer walks away: close it, or let it expire."""
        belief = self._believe(c, m, ref, amount)
        expire = self.rng.random() < LEFT_TO_EXPIRE_SHARE
        ttl = self.rng.choice(ABANDONED_EXPIRY_S) if expire else None

        def created(outcome: o.Outcome) -> None:
            belief.status = "open" if outcome.ok else "failed"

        if not expire:
            close_at = at + timedelta(seconds=self.rng.randint(60, 300))
            sched.at(close_at, lambda now: self._close(m, belief, now))
        elif ttl is not None and self.rng.random() < LATE_PAY_SHARE and \
                self.world.clock_shared:
            late_at = at + timedelta(seconds=ttl + self.rng.randint(600, 1800))
            sched.at(late_at, lambda now: self._late_pay(c, belief, now))
        return o.Task(c.id, (o.Step(self._order_op(m, at, amount, ref, ttl), then=created),))

    def _close(self, m: MerchantAgent, belief: OrderBelief, at: datetime) -> list[o.Task]:
        if belief.status == "failed":
            return []

        def closed(outcome: o.Outcome) -> None:
            belief.status = "closed" if outcome.ok else belief.status

        op = o.CloseOrder(at=at, merchant_id=m.id, ref=belief.ref)
        return [o.Task(belief.lane, (o.Step(op, then=closed),))]

    def _late_pay(self, c: ConsumerAgent, belief: OrderBelief, at: datetime) -> list[o.Task]:
        """Paying an expired order must fail; over HTTP the consumer no longer sees it."""
        if belief.status == "failed":
            return []
        expect = frozenset({ErrorCode.ORDER_EXPIRED.value, ErrorCode.ORDER_NOT_FOUND.value})
        op = o.PayOrder(at=at, consumer_id=c.id, ref=belief.ref, device_id=c.device_id)
        return [o.Task(belief.lane, (o.Step(op, expect=expect, must_fail=True),))]

    def _maybe_refund(self, belief: OrderBelief, m: MerchantAgent, at: datetime,
                      sched: Scheduler) -> None:
        if self.rng.random() >= REFUND_SHARE:
            return
        when = at + timedelta(seconds=self.rng.randint(15 * 60, 6 * 3600))
        full = self.rng.random() < FULL_REFUND_SHARE
        share = 1.0 if full else self.rng.uniform(0.1, 0.6)
        amount = max(1, min(belief.amount, math.floor(belief.amount * share)))
        reason = self.rng.choice(REFUND_REASONS)
        sched.at(when, lambda now: self._refund(m, belief, amount, reason, now))

    def _refund(self, m: MerchantAgent, belief: OrderBelief, amount: int, reason: str,
                at: datetime) -> list[o.Task]:
        if belief.status != "paid":
            return []
        c = self.world.consumers[belief.consumer]

        def refunded(outcome: o.Outcome) -> None:
            if outcome.ok:
                c.balance += amount
                belief.refunded += amount

        op = o.RefundOrder(at=at, merchant_id=m.id, ref=belief.ref,
                           out_refund_no=f"R{belief.ref.rsplit('/', 1)[1]}-{belief.refunded}",
                           amount=amount, reason=reason)
        return [o.Task(belief.lane, (o.Step(op, then=refunded),))]


# -- P2P and withdrawals --------------------------------------------------------------------


@register("p2p")
class PeerTransfers:
    name = "p2p"

    def __init__(self, world: World) -> None:
        self.world = world
        self.rng = world.rng(self.name)

    def plan_day(self, day: date, sched: Scheduler) -> None:
        share = P2P_DAILY_SHARE[1 if day.weekday() >= 5 else 0]
        for c in self.world.consumers:
            if c.id and c.friends and self.rng.random() < share:
                sched.at(moment(self.rng, day, EVENING), partial(self._send, c))

    def _amount(self) -> int:
        if self.rng.random() < 0.4:
            return self.rng.choice(RED_PACKETS_FEN)
        yuan = min(max(self.rng.lognormvariate(math.log(60), 0.8), 1.0), 2000.0)
        return round(yuan) * FEN_PER_YUAN

    def _send(self, c: ConsumerAgent, at: datetime) -> list[o.Task]:
        friend = self.world.consumers[self.rng.choice(c.friends)]
        if not friend.id:
            return []
        amount = self._amount()
        steps = fund(self.world, c, at, amount)
        c.balance -= amount

        def sent(outcome: o.Outcome) -> None:
            if outcome.ok:
                friend.balance += amount
            else:
                c.balance += amount

        op = o.Transfer(at=at, consumer_id=c.id, recipient_id=friend.id, amount=amount,
                        note=self.rng.choice(P2P_NOTES))
        steps.append(o.Step(op, then=sent))
        return [o.Task(c.id, tuple(steps))]


@register("withdrawals")
class Withdrawals:
    name = "withdrawals"

    def __init__(self, world: World) -> None:
        self.world = world
        self.rng = world.rng(self.name)

    def plan_day(self, day: date, sched: Scheduler) -> None:
        for c in self.world.consumers:
            if c.id and self.rng.random() < WITHDRAW_DAILY_SHARE:
                sched.at(moment(self.rng, day, EVENING), partial(self._withdraw, c))

    def _withdraw(self, c: ConsumerAgent, at: datetime) -> list[o.Task]:
        if c.balance < WITHDRAW_BALANCE_MIN_FEN:
            return []
        share = self.rng.uniform(0.3, 0.8)
        amount = math.floor(c.balance * share / TOPUP_STEP_FEN) * TOPUP_STEP_FEN
        if amount <= 0:
            return []
        op = o.Withdraw(at=at, consumer_id=c.id,
                        institution_id=self.world.institutions[c.institution].id, amount=amount)
        return [o.Task(c.id, (o.Step(op, then=c.expect_change(-amount)),))]
