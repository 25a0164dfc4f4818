"""The simulated world: agents, what each agent believes about its money and orders, and the
ground truth the system under test must never see.

Agents keep a *belief* of their wallet balance so they top up before paying rather than being
declined. The belief is conservative: money leaving is subtracted when the request is sent,
money arriving from someone else (a P2P transfer, a refund) is added only once the system
confirmed it, and a consumer's own top-up counts at once because it runs ahead of the consumer's
next request in the same lane. So a correctly working system never declines an agent for
insufficient funds, and at the end each belief must equal the wallet's ledger balance.

``GroundTruth`` collects labels (which party or order a behaviour made fraudulent, which loan
was meant to default). The engine never reads it and nothing of it reaches the database: it is
what a risk or credit model built on the system's data is later scored against.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from lianjie.sim.config import SimConfig
from lianjie.sim.ops import Outcome
from lianjie.sim.profiles import Profile


@dataclass
class InstitutionAgent:
    index: int
    name: str
    id: str = ""


@dataclass
class ServiceProviderAgent:
    index: int
    name: str
    commission_share_bps: int
    id: str = ""


@dataclass
class MerchantAgent:
    index: int
    name: str
    profile: Profile
    sp: int | None  # index of its service provider; None for a direct merchant
    fee_rate_bps: int
    kyc: str  # what the operator decides: "approved", "rejected" or left "pending"
    district: int
    popularity: float
    stores_wanted: int
    id: str = ""
    stores: list[str] = field(default_factory=list)
    codes: list[str] = field(default_factory=list)
    orders_made: int = 0

    @property
    def collects(self) -> bool:
        return self.kyc == "approved"

    @property
    def business_type(self) -> str:
        return self.profile.business_type


@dataclass
class ConsumerAgent:
    index: int
    name: str
    rate_weekday: float  # expected purchases on a weekday
    rate_weekend: float
    district: int
    institution: int
    topup_fen: int  # what this consumer usually tops up
    device_id: str
    id: str = ""
    balance: int = 0  # belief, see the module docstring
    favourites: dict[str, list[int]] = field(default_factory=dict)  # type -> merchant indices
    friends: list[int] = field(default_factory=list)

    def expect_change(self, delta: int) -> Callable[[Outcome], None]:
        """Believe ``delta`` now (a top-up or a withdrawal of our own); the returned callback
        takes it back if the step turns out not to have happened."""
        self.balance += delta

        def then(outcome: Outcome) -> None:
            if not outcome.ok:
                self.balance -= delta

        return then


@dataclass
class OrderBelief:
    """An order as the simulator knows it: who, how much, and what last happened to it."""

    ref: str
    merchant: int
    consumer: int
    amount: int
    lane: str
    status: str = "sent"  # sent, open, paid, closed, failed
    refunded: int = 0


@dataclass(frozen=True, slots=True)
class Label:
    behaviour: str
    subject: str  # an agent or order reference
    kind: str
    at: datetime
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class GroundTruth:
    labels: list[Label] = field(default_factory=list)

    def add(self, label: Label) -> None:
        self.labels.append(label)


@dataclass
class World:
    cfg: SimConfig
    start: date  # the first simulated business day
    districts: tuple[str, ...]
    institutions: list[InstitutionAgent] = field(default_factory=list)
    service_providers: list[ServiceProviderAgent] = field(default_factory=list)
    merchants: list[MerchantAgent] = field(default_factory=list)
    consumers: list[ConsumerAgent] = field(default_factory=list)
    orders: dict[str, OrderBelief] = field(default_factory=dict)
    truth: GroundTruth = field(default_factory=GroundTruth)
    # Whether the system records simulated time. An external server keeps its own clock, so
    # behaviours that depend on time having passed in the system (paying an order after it
    # expired) stay away from it.
    clock_shared: bool = True

    def rng(self, stream: str) -> random.Random:
        """The run's random stream for one concern (a behaviour uses its own name)."""
        return self.cfg.rng(stream, self.start)
