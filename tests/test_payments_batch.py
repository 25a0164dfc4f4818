"""``payments.do_pay_many`` pays as ``do_pay_order`` does one request at a time.

Two databases get the same world, made by the same actions in the same order: service
providers and merchants (one not approved, one without a service provider), consumers with
more or less money (one frozen, one on the block list), orders (some expired, one closed), and
a rule that sends big payments to review. The same random stream of pay requests then runs on
each: one by one through ``do_pay_order`` (each in a savepoint of its own, as the committer
runs units), and in batches through ``do_pay_many``. Everything they leave must be equal: every
outcome (order, or error code, message and param), the orders, every ledger balance, the risk
log and its review cases, and the outbox, in order. Ids the two databases draw at random are
compared through labels (the first consumer is ``cus#0`` in both).
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, select

from lianjie import events, ledger
from lianjie import payments as pay
from lianjie.clock import ManualClock
from lianjie.committer import run_isolated, run_now
from lianjie.errors import DomainError, ErrorCode
from lianjie.ledger import schema as ledger_schema
from lianjie.payments.schema import orders
from lianjie.risk import schema as risk_schema
from lianjie.risk.rules import DEFAULT_RULES, Rule, do_publish
from lianjie.risk.store import do_add_to_list

CFG = pay.PaymentsConfig()
REQUESTS = 60
ORDERS = 16
BIG = 30_000  # a payment this big or bigger goes to review (the world's rule)
_ID = re.compile(r"\b[a-z]+_[0-9A-Za-z]{20}\b")  # what ``ids.new_id`` draws


@dataclass
class World:
    engine: Engine
    clock: ManualClock
    labels: dict[str, str] = field(default_factory=dict)  # id -> label
    ids: dict[str, str] = field(default_factory=dict)  # label -> id

    def name(self, label: str, party_or_order_id: str) -> str:
        self.labels[party_or_order_id] = label
        self.ids[label] = party_or_order_id
        return party_or_order_id

    def norm(self, value: Any) -> str:
        """``value`` as text, every random id replaced by its label (or ``<id>``)."""
        return _ID.sub(lambda m: self.labels.get(m.group(0), "<id>"), repr(value))


def _build(engine: Engine) -> World:
    """The world, made by the same actions in the same order whatever the database."""
    clock = ManualClock()
    w = World(engine, clock)

    def unit(conn: Connection) -> None:
        now = clock.now()
        pay.ensure_platform(conn, now, CFG)
        bank = pay.do_create_institution(conn, now, CFG, "Bank").id
        sp = w.name("sp#0", pay.do_create_service_provider(conn, now, CFG, "SP",
                                                           commission_share_bps=2000).id)
        for i, (sp_id, kyc) in enumerate([(sp, True), (sp, True), (None, True), (sp, False)]):
            m = pay.do_onboard_merchant(conn, now, CFG, f"Shop {i}", sp_id=sp_id,
                                        business_type="street_food")
            pay.do_decide_kyc(conn, now, m.id, kyc)
            w.name(f"mch#{i}", m.id)
        for i, funds in enumerate([100_000, 5_000, 2_000, 60_000, 900, 50_000, 8_000]):
            c = w.name(f"cus#{i}", pay.do_create_consumer(conn, now, CFG, f"C{i}").id)
            pay.do_top_up(conn, now, c, bank, funds, "CNY")
        pay.do_set_frozen(conn, now, w.ids["cus#5"], True)
        do_add_to_list(conn, now, "block", w.ids["cus#6"])
        do_publish(conn, now, [*DEFAULT_RULES, Rule("big", f"amount >= {BIG}", "review")])
        rng = random.Random(7)
        for i in range(ORDERS):  # mch#3 is not approved: it cannot open orders
            order = pay.do_create_order(
                conn, now, CFG, w.ids[f"mch#{i % 3}"], out_trade_no=f"t{i}",
                amount=rng.choice([100, 1_999, 4_000, BIG, 45_000]), currency_code="CNY",
                description="d", expires_in_s=60 if i in (3, 9) else 3600)
            w.name(f"ord#{i}", order.id)
        pay.do_close_order(conn, now, w.ids["ord#5"])
        # an order in another currency than the rest (a platform that changed its currency
        # with orders still open): a run must not pay it from the others' accounts
        pay.do_top_up(conn, now, w.ids["cus#1"], bank, 20_000, "USD")
        w.name("ord#usd", pay.do_create_order(
            conn, now, replace(CFG, currency="USD"), w.ids["mch#0"], out_trade_no="u",
            amount=1_500, currency_code="USD", description="d").id)
        frozen = pay.do_onboard_merchant(conn, now, CFG, "Frozen", sp_id=sp,
                                         business_type="street_food")
        pay.do_decide_kyc(conn, now, frozen.id, True)
        w.name("mch#4", frozen.id)
        w.name(f"ord#{ORDERS}", pay.do_create_order(
            conn, now, CFG, frozen.id, out_trade_no="f", amount=500, currency_code="CNY",
            description="d").id)
        pay.do_set_frozen(conn, now, frozen.id, True)  # it stops collecting
        w.name("ord#missing", "ord_doesnotexist")

    run_now(engine, unit)
    clock.advance(timedelta(seconds=120))  # ord#3 and ord#9 have expired
    return w


def _requests(seed: int, w: World) -> list[pay.PayRequest]:
    """Labels only: the same stream for both worlds."""
    rng = random.Random(seed)
    out = []
    for _ in range(REQUESTS):
        order = rng.choice([f"ord#{i}" for i in range(ORDERS + 1)] + ["ord#missing"])
        payer = rng.choice([f"cus#{i}" for i in range(7)] + ["mch#0"])
        coupon = "cpn_none" if rng.random() < 0.05 else None
        out.append(pay.PayRequest(order, payer, device_id=rng.choice([None, "dev-1"]),
                                  client_ip="10.0.0.1", coupon_id=coupon))
    for at, payer in ((3, "cus#0"), (4, "cus#1"), (41, "cus#1")):  # among CNY orders
        out.insert(at, pay.PayRequest("ord#usd", payer, client_ip="10.0.0.1"))
    return out


def _resolved(w: World, req: pay.PayRequest) -> pay.PayRequest:
    return pay.PayRequest(w.ids[req.order_id], w.ids[req.payer_id], req.device_id,
                          req.client_ip, req.coupon_id)


def _outcome(w: World, outcome: Any) -> tuple[Any, ...]:
    if isinstance(outcome, DomainError):
        return ("refused", outcome.code, w.norm(outcome.message), outcome.param)
    assert isinstance(outcome, pay.Order)
    return ("paid", outcome.status, w.norm(outcome.payer_id), outcome.fee_amount,
            outcome.commission_amount, outcome.entry_id is not None, outcome.paid_at)


def _pay_alone(now: datetime, r: pay.PayRequest) -> Callable[[Connection], pay.Order]:
    return lambda c: pay.do_pay_order(c, now, r.order_id, r.payer_id, device_id=r.device_id,
                                      client_ip=r.client_ip, coupon_id=r.coupon_id)


def _one_by_one(w: World, requests: list[pay.PayRequest], size: int) -> list[tuple[Any, ...]]:
    """Each request in a savepoint of its own (as the committer runs units), ``size`` of them
    a transaction."""
    seen = []
    for start in range(0, len(requests), size):
        chunk = [_resolved(w, r) for r in requests[start:start + size]]

        def unit(conn: Connection, chunk: list[pay.PayRequest] = chunk) -> list[Any]:
            out = []
            for r in chunk:
                ok, value = run_isolated(conn, _pay_alone(w.clock.now(), r))
                assert ok or isinstance(value, DomainError), value
                out.append(value)
            return out
        seen += [_outcome(w, o) for o in run_now(w.engine, unit)]
        w.clock.advance(timedelta(seconds=1))
    return seen


def _many(w: World, requests: list[pay.PayRequest], size: int) -> list[tuple[Any, ...]]:
    seen = []
    for start in range(0, len(requests), size):
        chunk = [_resolved(w, r) for r in requests[start:start + size]]
        now = w.clock.now()
        seen += [_outcome(w, o) for o in run_now(
            w.engine, lambda c, chunk=chunk, now=now: pay.do_pay_many(c, now, chunk))]
        w.clock.advance(timedelta(seconds=1))
    return seen


def _state(w: World) -> dict[str, Any]:
    """Everything paying leaves, with random ids replaced by labels."""
    a, d, c = ledger_schema.accounts, risk_schema.decisions, risk_schema.cases
    with w.engine.connect() as conn:
        assert ledger.verify(conn) == []
        order_rows = conn.execute(select(orders.c.id, orders.c.status, orders.c.payer_id,
                                         orders.c.fee_amount, orders.c.commission_amount,
                                         orders.c.paid_at, orders.c.device_id,
                                         orders.c.client_ip)).all()
        balances = conn.execute(select(a).order_by(a.c.owner_id, a.c.purpose)).all()
        log = conn.execute(select(*[col for col in d.columns if col.name not in ("seq", "id")])
                           .order_by(d.c.seq)).all()
        cases = conn.execute(select(c.c.kind, c.c.subject_id, c.c.status)).all()
        outbox = events.read_after(conn, 0, limit=events.READ_BATCH_MAX)
    return {
        "orders": sorted(w.norm(r) for r in order_rows),
        "balances": sorted(w.norm(tuple(r)[1:]) for r in balances),  # all but the id
        "log": [w.norm(r) for r in log],
        "cases": sorted(w.norm(r) for r in cases),
        # Entry ids are the ledger's to draw (PostgreSQL's sequence skips ids), not compared.
        "outbox": [(e.type, w.norm(e.partition_key), w.norm(
            {k: v for k, v in e.payload.items() if k not in ("entry_id", "hold_entry_id")}))
                   for e in outbox],
    }


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_do_pay_many_equals_do_pay_order_one_by_one(fresh: Callable[[], Engine],
                                                     seed: int) -> None:
    size = [REQUESTS, 17, 5][seed % 3]  # one batch, a few, many small ones
    one = _build(fresh())
    requests = _requests(seed, one)
    seen_one = _one_by_one(one, requests, size)
    state_one = _state(one)
    many = _build(fresh())
    seen_many = _many(many, requests, size)
    state_many = _state(many)
    for i, (a, b) in enumerate(zip(seen_one, seen_many, strict=True)):
        assert a == b, (i, requests[i])
    assert state_many == state_one
    # The stream reaches every path it is meant to test.
    codes = {s[1] for s in seen_one}
    assert {"paid", "reviewing", ErrorCode.ORDER_ALREADY_PAID, ErrorCode.ORDER_EXPIRED,
            ErrorCode.ORDER_CLOSED, ErrorCode.RISK_DECLINED, ErrorCode.RISK_REVIEW_PENDING,
            ErrorCode.INSUFFICIENT_FUNDS, ErrorCode.ACCOUNT_FROZEN, ErrorCode.PARTY_NOT_FOUND,
            ErrorCode.ORDER_NOT_FOUND, ErrorCode.MERCHANT_FROZEN} <= codes, codes


def test_a_batch_that_fails_unexpectedly_leaves_no_savepoint_open(
        fresh: Callable[[], Engine], monkeypatch: pytest.MonkeyPatch) -> None:
    """A bug inside a batch (here writing the paid orders) propagates for the batcher to run
    the requests one by one, with the batch's savepoint rolled back: none is left open on the
    connection for later units of the group, and nothing of the batch is kept."""
    from lianjie.payments import orders as orders_module

    w = _build(fresh())

    def bad_row(*_args: object) -> None:
        raise AssertionError("a bad row")

    monkeypatch.setattr(orders_module, "_record_paid", bad_row)
    requests = [_resolved(w, pay.PayRequest(o, "cus#0")) for o in ("ord#0", "ord#1")]

    def unit(c: Connection) -> None:
        with pytest.raises(AssertionError, match="a bad row"):
            pay.do_pay_many(c, w.clock.now(), requests)
        assert not c.in_nested_transaction()

    run_now(w.engine, unit)
    with w.engine.connect() as c:
        statuses = c.execute(select(orders.c.status).where(
            orders.c.id.in_([r.order_id for r in requests]))).scalars().all()
    assert statuses == ["open", "open"]
