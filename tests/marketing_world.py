"""A small world for the marketing tests: the platform, a bank, consumers with money, a
merchant, all made through the payments context's own actions on a real database."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from sqlalchemy import Connection, Engine

from lianjie import ledger
from lianjie import payments as pay
from lianjie.clock import ManualClock
from lianjie.committer import run_now
from lianjie.ledger import Purpose

T = TypeVar("T")
CFG = pay.PaymentsConfig()


@dataclass
class World:
    engine: Engine
    clock: ManualClock
    bank: str

    def run(self, fn: Callable[[Connection], T]) -> T:
        return run_now(self.engine, fn)

    def consumer(self, funds: int = 0) -> str:
        def unit(conn: Connection) -> str:
            c = pay.do_create_consumer(conn, self.clock.now(), CFG, "Consumer")
            if funds:
                pay.do_top_up(conn, self.clock.now(), c.id, self.bank, funds, "CNY")
            return c.id
        return self.run(unit)

    def merchant(self, business_type: str = "street_food") -> str:
        def unit(conn: Connection) -> str:
            m = pay.do_onboard_merchant(conn, self.clock.now(), CFG, "Shop", sp_id=None,
                                        business_type=business_type)
            pay.do_decide_kyc(conn, self.clock.now(), m.id, True)
            return m.id
        return self.run(unit)

    def balance(self, owner_id: str, purpose: Purpose = Purpose.WALLET) -> int:
        with self.engine.connect() as conn:
            account = ledger.find_account(conn, owner_id, purpose, "CNY")
            return 0 if account is None else account.balance

    def check(self) -> None:
        with self.engine.connect() as conn:
            ledger.check_invariants(conn)


def make_world(engine: Engine, clock: ManualClock) -> World:
    def unit(conn: Connection) -> str:
        pay.ensure_platform(conn, clock.now(), CFG)
        return pay.do_create_institution(conn, clock.now(), CFG, "Bank").id
    return World(engine, clock, run_now(engine, unit))
