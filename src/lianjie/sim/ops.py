"""The simulator's vocabulary: the operations agents ask for, and what came of them.

An ``Op`` is one request a real participant would make (an SP onboards a merchant, a consumer
pays an order), stamped with the simulated time it happens at. Ops name parties by their ids and
orders by the simulator's own reference (``ref``): a driver maps a ref to the order id the
system assigned when the order was created, so the same ops run in-process or over HTTP.

A ``Task`` is what one agent does in one go, as ordered ``Step``s in one *lane* (the acting
consumer, usually): a consumer low on funds tops up, then pays. Steps of a task run in order and
the task stops at the first step that fails, as a person would. Tasks in different lanes are
independent, which is what lets the HTTP driver run lanes concurrently.

A step says which error codes are an *expected* outcome (paying a merchant whose KYC was rejected
fails with ``merchant_not_approved``, and that is the system working) and whether the step must
fail; anything else that fails is unexpected and makes the run not ``ok``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import ClassVar


@dataclass(frozen=True, slots=True, kw_only=True)
class Op:
    kind: ClassVar[str] = "op"
    at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class CreateInstitution(Op):
    kind: ClassVar[str] = "create_institution"
    name: str


@dataclass(frozen=True, slots=True, kw_only=True)
class CreateServiceProvider(Op):
    kind: ClassVar[str] = "create_service_provider"
    name: str
    commission_share_bps: int


@dataclass(frozen=True, slots=True, kw_only=True)
class CreateConsumer(Op):
    kind: ClassVar[str] = "create_consumer"
    name: str


@dataclass(frozen=True, slots=True, kw_only=True)
class OnboardMerchant(Op):
    kind: ClassVar[str] = "onboard_merchant"
    name: str
    sp_id: str | None
    business_type: str
    fee_rate_bps: int


@dataclass(frozen=True, slots=True, kw_only=True)
class DecideKyc(Op):
    kind: ClassVar[str] = "decide_kyc"
    merchant_id: str
    approve: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class CreateStore(Op):
    kind: ClassVar[str] = "create_store"
    merchant_id: str
    name: str


@dataclass(frozen=True, slots=True, kw_only=True)
class CreateQrCode(Op):
    kind: ClassVar[str] = "create_qr_code"
    merchant_id: str
    store_id: str | None
    description: str


@dataclass(frozen=True, slots=True, kw_only=True)
class TopUp(Op):
    kind: ClassVar[str] = "top_up"
    consumer_id: str
    institution_id: str
    amount: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Withdraw(Op):
    kind: ClassVar[str] = "withdrawal"
    consumer_id: str
    institution_id: str
    amount: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Transfer(Op):
    kind: ClassVar[str] = "p2p"
    consumer_id: str
    recipient_id: str
    amount: int
    note: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class CreateOrder(Op):
    kind: ClassVar[str] = "create_order"
    merchant_id: str
    ref: str
    out_trade_no: str
    amount: int
    description: str
    store_id: str | None
    expires_in_s: int | None


@dataclass(frozen=True, slots=True, kw_only=True)
class PayOrder(Op):
    kind: ClassVar[str] = "pay_order"
    consumer_id: str
    ref: str
    device_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class PayStatic(Op):
    kind: ClassVar[str] = "pay_static_code"
    consumer_id: str
    ref: str
    qr_code_id: str
    amount: int
    device_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class CloseOrder(Op):
    kind: ClassVar[str] = "close_order"
    merchant_id: str
    ref: str


@dataclass(frozen=True, slots=True, kw_only=True)
class RefundOrder(Op):
    kind: ClassVar[str] = "refund"
    merchant_id: str
    ref: str
    out_refund_no: str
    amount: int
    reason: str


@dataclass(frozen=True, slots=True)
class Result:
    """What a successful op returned: the object's id and, for money, what moved."""

    id: str
    amount: int = 0
    fee: int = 0
    commission: int = 0


class Status(StrEnum):
    OK = "ok"
    FAILED = "failed"
    SKIPPED = "skipped"  # an earlier step of the same task failed, so this one never ran


@dataclass(frozen=True, slots=True)
class Outcome:
    status: Status
    result: Result | None = None
    code: str | None = None
    message: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == Status.OK


SKIPPED = Outcome(Status.SKIPPED)


@dataclass(frozen=True, slots=True)
class Step:
    op: Op
    expect: frozenset[str] = frozenset()  # error codes that are a normal outcome here
    must_fail: bool = False
    then: Callable[[Outcome], None] | None = None  # the agent learns what happened


@dataclass(frozen=True, slots=True)
class Task:
    lane: str
    steps: tuple[Step, ...] = field(default_factory=tuple)

    @property
    def at(self) -> datetime:
        return self.steps[0].op.at
