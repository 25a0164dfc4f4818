"""A small in-process world for the clearing tests: parties, top-ups, payments and refunds
written through the payments context, on a manual clock."""

from __future__ import annotations

import csv
import io
import itertools
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine

from lianjie import ledger
from lianjie.clearing import ClearingConfig, EodReport, Signer, load_signer, run_end_of_day
from lianjie.clock import ManualClock
from lianjie.committer import run_now
from lianjie.ledger import Purpose
from lianjie.payments import PaymentsConfig
from lianjie.payments import orders as po
from lianjie.payments import parties as pp
from lianjie.payments import refunds as pr
from lianjie.payments import wallets as pw

DAY1 = date(2026, 3, 2)
_seq = itertools.count()


@dataclass
class World:
    engine: Engine
    clock: ManualClock
    signer: Signer
    cfg: ClearingConfig = field(default_factory=ClearingConfig)
    pcfg: PaymentsConfig = field(default_factory=PaymentsConfig)
    bank: str = ""
    bank2: str = ""
    merchants: list[str] = field(default_factory=list)
    consumers: list[str] = field(default_factory=list)

    def run(self, fn: Any) -> Any:
        return run_now(self.engine, fn)

    def at(self, day: date, hour: int, minute: int = 0) -> None:
        """Move the clock to a local (Asia/Shanghai) time of a business day."""
        local = datetime(day.year, day.month, day.day, hour, minute, tzinfo=UTC) - \
            timedelta(hours=8)
        if local > self.clock.now():
            self.clock.set(local)

    def pay(self, consumer: str, merchant: str, amount: int) -> str:
        now = self.clock.now()

        def unit(c: Connection) -> str:
            order = po.do_create_order(c, now, self.pcfg, merchant,
                                       out_trade_no=f"t{next(_seq)}", amount=amount,
                                       currency_code="CNY", description="noodles")
            po.do_pay_order(c, now, order.id, consumer)
            return order.id
        return str(self.run(unit))

    def refund(self, order_id: str, amount: int) -> None:
        now = self.clock.now()
        self.run(lambda c: pr.do_refund(c, now, order_id, out_refund_no=f"r{next(_seq)}",
                                        amount=amount))

    def top_up(self, consumer: str, amount: int, bank: str | None = None) -> None:
        now = self.clock.now()
        self.run(lambda c: pw.do_top_up(c, now, consumer, bank or self.bank, amount, "CNY"))

    def withdraw(self, consumer: str, amount: int, bank: str | None = None) -> None:
        now = self.clock.now()
        self.run(lambda c: pw.do_withdraw(c, now, consumer, bank or self.bank, amount, "CNY"))

    def balance(self, owner: str, purpose: Purpose) -> int:
        with self.engine.connect() as c:
            acc = ledger.find_account(c, owner, purpose, "CNY")
            return 0 if acc is None else acc.balance

    def eod(self, day: date) -> EodReport:
        return run_end_of_day(self.engine, day, clock=self.clock, cfg=self.cfg,
                              signer=self.signer)

    def invariants(self) -> None:
        with self.engine.connect() as c:
            assert ledger.verify(c) == []


def make_world(engine: Engine, tmp_path: Path, merchants: int = 2, consumers: int = 3
               ) -> World:
    clock = ManualClock(datetime(2026, 3, 1, 1, 0, tzinfo=UTC))
    w = World(engine, clock, load_signer(tmp_path / "keys"))
    now = clock.now()

    def unit(c: Connection) -> None:
        pp.ensure_platform(c, now, w.pcfg)
        w.bank = pp.do_create_institution(c, now, w.pcfg, "Bank A").id
        w.bank2 = pp.do_create_institution(c, now, w.pcfg, "Bank B").id
        sp = pp.do_create_service_provider(c, now, w.pcfg, "SP").id
        for i in range(merchants):
            m = pp.do_onboard_merchant(c, now, w.pcfg, f"Shop {i}", sp_id=sp,
                                       business_type="street_food", fee_rate_bps=50)
            pp.do_decide_kyc(c, now, m.id, True)
            w.merchants.append(m.id)
        for i in range(consumers):
            w.consumers.append(pp.do_create_consumer(c, now, w.pcfg, f"C{i}").id)
    w.run(unit)
    w.cfg = ClearingConfig(payout_institution_id=w.bank)  # both banks joined at one instant
    return w


# -- for the console's clearing pages (over real HTTP) ------------------------------------------

API_DAY = "2026-01-05"  # the api fixture's clock starts at 08:00 Shanghai time on this day


def paid_day(api: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """A consumer topped up at the bank pays a merchant ¥12.00 on ``API_DAY``; (merchant,
    order)."""
    consumer = api.consumer(funds=500_00)
    merchant = api.merchant()
    order = api.order(merchant, 12_00)
    assert api.pay(consumer, order).status_code == 200
    return merchant, order


def plant_break(statement_csv: str, cents: int = 1) -> tuple[str, str]:
    """The statement with its first entry line off by ``cents`` (the partner's books disagree):
    the file and the reference of the planted break."""
    rows = list(csv.reader(io.StringIO(statement_csv)))
    head = rows[0]
    ref, credit, debit = head.index("reference"), head.index("credit"), head.index("debit")
    for row in rows[1:]:
        if row[ref].startswith("txf_"):
            col = credit if row[credit] else debit
            row[col] = f"{Decimal(row[col]) + Decimal(cents) / 100:f}"
            out = io.StringIO()
            csv.writer(out, lineterminator="\n").writerows(rows)
            return out.getvalue(), row[ref]
    raise AssertionError("no entry line in the statement")
