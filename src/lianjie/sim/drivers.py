"""Drivers: how the simulator's operations reach the system, and the in-process driver.

A ``Driver`` takes ``Task``s and later, at a ``drain``, hands back every step's ``Outcome`` in
submission order. Drains happen at points the engine chooses from simulated time and counts
alone, never from wall-clock timing, so a seed gives the same run however fast the machine is.

``InProcessDriver`` calls the payments ``do_*`` actions directly, each step one unit of work
through a ``Committer``, stamped with the simulated time of its op. Units are pipelined: a whole
window of them is queued before the engine waits, so they share group commits, and the writer
thread runs them strictly in submission order, which makes the result identical to running
them one by one. Orders are named by the simulator's ``ref``; the first unit that creates an
order records its id for the units after it (all on the writer thread, in order).

``Database`` is the housekeeping the simulator does on a database it drives directly (expiring
orders and holds, enqueuing webhook deliveries, verifying the ledger, reading wallet balances),
shared by the in-process driver and by the HTTP driver when it started the server itself.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, TypeVar

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from lianjie import events, ledger
from lianjie import payments as pay
from lianjie.committer import Committer
from lianjie.errors import DomainError, ErrorCode, LianjieError
from lianjie.ledger import Purpose
from lianjie.payments import PaymentsConfig
from lianjie.sim import ops as o
from lianjie.sim.config import MAINTENANCE_ROUNDS_MAX

T = TypeVar("T")


class Run(Protocol):
    """Runs one unit of work in a durable transaction (``Committer.run``)."""

    def __call__(self, unit: Callable[[Connection], T]) -> T: ...


EXPIRE_BATCH_MAX = 1000


class Driver(Protocol):
    """What the engine needs from a way of reaching the system."""

    lag_s_max: int | None  # drain before the clock runs this far past in-flight work

    @property
    def pending(self) -> int: ...
    def submit(self, task: o.Task) -> None: ...
    def drain(self) -> list[tuple[o.Step, o.Outcome]]: ...
    def housekeeping(self, now: datetime) -> tuple[int, int]: ...
    def finish(self, now: datetime) -> int: ...
    def verify(self) -> list[str]: ...
    def wallet_balances(self, consumer_ids: list[str]) -> dict[str, int] | None: ...
    def close(self) -> None: ...


@dataclass
class Database:
    """Housekeeping on a database the simulator drives directly; ``run`` runs a unit."""

    engine: Engine
    run: Run
    currency: str

    def housekeeping(self, now: datetime) -> tuple[int, int]:
        """Expire orders and ledger holds that are past their time; returns both counts."""

        def unit(conn: Connection) -> tuple[int, int]:
            return (pay.do_expire_orders(conn, now, EXPIRE_BATCH_MAX),
                    ledger.expire_holds(conn, now))

        orders = holds = 0
        for _ in range(MAINTENANCE_ROUNDS_MAX):
            more_orders, more_holds = self.run(unit)
            orders, holds = orders + more_orders, holds + more_holds
            if more_orders < EXPIRE_BATCH_MAX and more_holds < ledger.BATCH_ENTRIES_MAX:
                return orders, holds
        raise LianjieError(f"housekeeping backlog beyond {MAINTENANCE_ROUNDS_MAX} batches")

    def finish(self, now: datetime) -> int:
        """Turn every outbox event into webhook deliveries; returns how many were created."""

        def unit(conn: Connection) -> tuple[int, bool]:
            created = pay.do_enqueue_deliveries(conn, now)
            after = events.cursor(conn, pay.webhooks.CONSUMER)
            return created, bool(events.read_after(conn, after, 1))

        total = 0
        for _ in range(MAINTENANCE_ROUNDS_MAX):
            created, more = self.run(unit)
            total += created
            if not more:
                return total
        raise LianjieError(f"outbox backlog beyond {MAINTENANCE_ROUNDS_MAX} batches")

    def verify(self) -> list[str]:
        with self.engine.connect() as conn:
            return [f"{v.code} {v.subject}: {v.detail}" for v in ledger.verify(conn)]

    def wallet_balances(self, consumer_ids: list[str]) -> dict[str, int]:
        out: dict[str, int] = {}
        with self.engine.connect() as conn:
            for consumer_id in consumer_ids:
                account = ledger.find_account(conn, consumer_id, Purpose.WALLET, self.currency)
                out[consumer_id] = 0 if account is None else int(account.balance)
        return out


@dataclass
class _TaskState:
    failed: bool = False


Handler = Callable[["InProcessDriver", Connection, Any], o.Result]


class InProcessDriver:
    """Runs ops as ``payments`` actions through a committer of its own."""

    lag_s_max: int | None = None

    def __init__(self, engine: Engine, cfg: PaymentsConfig, now: datetime) -> None:
        self.cfg = cfg
        self.committer = Committer(engine, name="lianjie-sim-committer")
        self.committer.start()
        self.committer.run(lambda c: pay.ensure_platform(c, now, cfg))  # bootstrap's, if run
        self.db = Database(engine, self.committer.run, cfg.currency)
        self.refs: dict[str, str] = {}  # order ref -> order id; touched on the writer thread
        self._pending: list[tuple[o.Step, Future[o.Result | None]]] = []

    @property
    def pending(self) -> int:
        return len(self._pending)

    def submit(self, task: o.Task) -> None:
        state = _TaskState()
        for step in task.steps:
            self._pending.append((step, self.committer.submit(self._unit(step.op, state))))

    def _unit(self, op: o.Op, state: _TaskState) -> Callable[[Connection], o.Result | None]:
        handler = _HANDLERS[type(op)]

        def unit(conn: Connection) -> o.Result | None:
            if state.failed:
                return None
            try:
                return handler(self, conn, op)
            except DomainError:
                state.failed = True
                raise

        return unit

    def drain(self) -> list[tuple[o.Step, o.Outcome]]:
        done = [(step, _outcome(future)) for step, future in self._pending]
        self._pending.clear()
        return done

    def housekeeping(self, now: datetime) -> tuple[int, int]:
        return self.db.housekeeping(now)

    def finish(self, now: datetime) -> int:
        return self.db.finish(now)

    def verify(self) -> list[str]:
        return self.db.verify()

    def wallet_balances(self, consumer_ids: list[str]) -> dict[str, int] | None:
        return self.db.wallet_balances(consumer_ids)

    def close(self) -> None:
        self.committer.stop()

    def order_id(self, ref: str) -> str:
        found = self.refs.get(ref)
        if found is None:
            raise DomainError(ErrorCode.ORDER_NOT_FOUND, f"order {ref!r} was never created", "id")
        return found


def _outcome(future: Future[o.Result | None]) -> o.Outcome:
    """A unit's future as an outcome. Domain outcomes carry their code; storage failures and
    our own bugs (assertions, SQL errors the committer passed back) are unexpected codes."""
    try:
        result = future.result()
    except DomainError as exc:
        return o.Outcome(o.Status.FAILED, code=exc.code.value, message=exc.message)
    except LianjieError as exc:
        return o.Outcome(o.Status.FAILED, code="storage_error", message=str(exc))
    except (AssertionError, SQLAlchemyError) as exc:
        return o.Outcome(o.Status.FAILED, code="internal_error",
                         message=f"{type(exc).__name__}: {exc}")
    return o.SKIPPED if result is None else o.Outcome(o.Status.OK, result)


# -- one handler per op ---------------------------------------------------------------------


def _institution(d: InProcessDriver, conn: Connection, op: o.CreateInstitution) -> o.Result:
    return o.Result(pay.do_create_institution(conn, op.at, d.cfg, op.name).id)


def _service_provider(d: InProcessDriver, conn: Connection,
                      op: o.CreateServiceProvider) -> o.Result:
    return o.Result(pay.do_create_service_provider(conn, op.at, d.cfg, op.name,
                                                   op.commission_share_bps).id)


def _consumer(d: InProcessDriver, conn: Connection, op: o.CreateConsumer) -> o.Result:
    return o.Result(pay.do_create_consumer(conn, op.at, d.cfg, op.name).id)


def _merchant(d: InProcessDriver, conn: Connection, op: o.OnboardMerchant) -> o.Result:
    return o.Result(pay.do_onboard_merchant(conn, op.at, d.cfg, op.name, sp_id=op.sp_id,
                                            business_type=op.business_type,
                                            fee_rate_bps=op.fee_rate_bps).id)


def _kyc(d: InProcessDriver, conn: Connection, op: o.DecideKyc) -> o.Result:
    return o.Result(pay.do_decide_kyc(conn, op.at, op.merchant_id, op.approve).id)


def _store(d: InProcessDriver, conn: Connection, op: o.CreateStore) -> o.Result:
    return o.Result(pay.do_create_store(conn, op.at, op.merchant_id, op.name).id)


def _qr_code(d: InProcessDriver, conn: Connection, op: o.CreateQrCode) -> o.Result:
    return o.Result(pay.do_create_qr_code(conn, op.at, d.cfg, op.merchant_id, op.description,
                                          op.store_id).id)


def _top_up(d: InProcessDriver, conn: Connection, op: o.TopUp) -> o.Result:
    w = pay.do_top_up(conn, op.at, op.consumer_id, op.institution_id, op.amount, d.cfg.currency)
    return o.Result(w.id, w.amount)


def _withdraw(d: InProcessDriver, conn: Connection, op: o.Withdraw) -> o.Result:
    w = pay.do_withdraw(conn, op.at, op.consumer_id, op.institution_id, op.amount,
                        d.cfg.currency)
    return o.Result(w.id, w.amount)


def _transfer(d: InProcessDriver, conn: Connection, op: o.Transfer) -> o.Result:
    w = pay.do_p2p(conn, op.at, op.consumer_id, op.recipient_id, op.amount, d.cfg.currency,
                   op.note)
    return o.Result(w.id, w.amount)


def _create_order(d: InProcessDriver, conn: Connection, op: o.CreateOrder) -> o.Result:
    order = pay.do_create_order(conn, op.at, d.cfg, op.merchant_id,
                                out_trade_no=op.out_trade_no, amount=op.amount,
                                currency_code=d.cfg.currency, description=op.description,
                                expires_in_s=op.expires_in_s, store_id=op.store_id)
    d.refs[op.ref] = order.id
    return o.Result(order.id, order.amount)


def _paid(order: pay.Order) -> o.Result:
    return o.Result(order.id, order.amount, order.fee_amount, order.commission_amount)


def _pay_order(d: InProcessDriver, conn: Connection, op: o.PayOrder) -> o.Result:
    return _paid(pay.do_pay_order(conn, op.at, d.order_id(op.ref), op.consumer_id,
                                  device_id=op.device_id))


def _pay_static(d: InProcessDriver, conn: Connection, op: o.PayStatic) -> o.Result:
    order = pay.do_pay_static_code(conn, op.at, d.cfg, op.qr_code_id, op.consumer_id,
                                   op.amount, device_id=op.device_id)
    d.refs[op.ref] = order.id
    return _paid(order)


def _close(d: InProcessDriver, conn: Connection, op: o.CloseOrder) -> o.Result:
    order = pay.do_close_order(conn, op.at, d.order_id(op.ref))
    return o.Result(order.id, order.amount)


def _refund(d: InProcessDriver, conn: Connection, op: o.RefundOrder) -> o.Result:
    r = pay.do_refund(conn, op.at, d.order_id(op.ref), out_refund_no=op.out_refund_no,
                      amount=op.amount, reason=op.reason)
    return o.Result(r.id, r.amount, r.fee_refunded, r.commission_refunded)


_HANDLERS: dict[type[o.Op], Handler] = {
    o.CreateInstitution: _institution,
    o.CreateServiceProvider: _service_provider,
    o.CreateConsumer: _consumer,
    o.OnboardMerchant: _merchant,
    o.DecideKyc: _kyc,
    o.CreateStore: _store,
    o.CreateQrCode: _qr_code,
    o.TopUp: _top_up,
    o.Withdraw: _withdraw,
    o.Transfer: _transfer,
    o.CreateOrder: _create_order,
    o.PayOrder: _pay_order,
    o.PayStatic: _pay_static,
    o.CloseOrder: _close,
    o.RefundOrder: _refund,
}
