"""Statements in CSV, camt.053 and MT940, read back by independent parsers (pycamt, mt-940)
with totals equal to the ledger's."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import mt940
import pytest
from pycamt.parser import Camt053Parser
from sqlalchemy import Engine
from tests.clearing_helpers import DAY1, World, make_world

from lianjie.clearing import ClearingConfig, statements
from lianjie.errors import DomainError, ErrorCode

CFG = ClearingConfig()


def _busy_day(w: World) -> None:
    w.at(DAY1, 8)
    for c in w.consumers:
        w.top_up(c, 200_00)
    w.at(DAY1, 11)
    orders = [w.pay(w.consumers[i % 3], w.merchants[i % 2], 3_33 + i) for i in range(7)]
    w.refund(orders[0], 1_00)
    w.withdraw(w.consumers[1], 150_00, w.bank2)
    w.at(DAY1 + timedelta(days=1), 1)
    w.eod(DAY1)
    w.at(DAY1 + timedelta(days=1), 9)
    w.pay(w.consumers[0], w.merchants[0], 50_00)
    w.at(DAY1 + timedelta(days=2), 1)
    w.eod(DAY1 + timedelta(days=1))


def _minor(value: str | Decimal) -> int:
    return int(Decimal(value).scaleb(2))


def test_statements_parse_in_independent_parsers(engine: Engine, tmp_path: Path) -> None:
    w = make_world(engine, tmp_path)
    _busy_day(w)
    for owner in (w.merchants[0], w.bank):
        for day in (DAY1, DAY1 + timedelta(days=1)):
            with engine.connect() as c:
                _, sts = statements.statements_for(c, CFG, owner, day)
                camt = statements.render(c, CFG, owner, day, "camt053",
                                         datetime(2026, 3, 4, tzinfo=UTC))
                mt = statements.render(c, CFG, owner, day, "mt940", datetime.now(UTC))
                text = statements.render(c, CFG, owner, day, "csv", datetime.now(UTC))
            with_lines = [s for s in sts if s.lines]
            assert with_lines, (owner, day)
            _check_camt(camt, sts)
            _check_mt940(mt.decode(), sts)
            _check_csv(text.decode(), sts)


def _check_camt(camt: bytes, sts: list[statements.AccountStatement]) -> None:
    parser = Camt053Parser(camt)
    txs = parser.get_transactions()
    assert len(txs) == sum(len(s.lines) for s in sts)
    signed = sum(_minor(t["Amount"]) * (1 if t["CreditDebitIndicator"] == "CRDT" else -1)
                 for t in txs)
    assert signed == sum(s.credits - s.debits for s in sts)
    assert {t["TransactionID"] for t in txs} == {f"txf_{ln.entry_id}" for s in sts
                                                 for ln in s.lines}
    infos = parser.get_statement_info()
    assert len(infos) == len(sts)
    for info, st in zip(infos, sts, strict=True):
        assert _minor(Decimal(info["OpeningBalance"])) == st.opening
        assert _minor(Decimal(info["ClosingBalance"])) == st.closing


def _check_mt940(text: str, sts: list[statements.AccountStatement]) -> None:
    blocks = [b for b in text.split("\n-\n") if b.strip()]
    assert len(blocks) == len(sts)
    for block, st in zip(blocks, sts, strict=True):
        parsed = mt940.parse(block)
        amounts = [_minor(t.data["amount"].amount) for t in parsed]
        assert amounts == [ln.amount for ln in st.lines]
        assert _minor(parsed.data["final_opening_balance"].amount.amount) == st.opening
        assert _minor(parsed.data["final_closing_balance"].amount.amount) == st.closing
        assert [t.data["customer_reference"] for t in parsed] == [
            f"txf_{ln.entry_id}" for ln in st.lines]


def _check_csv(text: str, sts: list[statements.AccountStatement]) -> None:
    rows = list(csv.DictReader(io.StringIO(text)))
    assert tuple(rows[0]) == statements.CSV_COLUMNS
    for st in sts:
        mine = [r for r in rows if r["account_id"] == f"acc_{st.account_id}"]
        assert mine[0]["type"] == "opening_balance" and mine[-1]["type"] == "closing_balance"
        assert _minor(mine[0]["balance"]) == st.opening
        assert _minor(mine[-1]["balance"]) == st.closing
        body = mine[1:-1]
        total = sum(_minor(r["credit"] or "0") - _minor(r["debit"] or "0") for r in body)
        assert total == st.closing - st.opening
        running = st.opening
        for r in body:
            running += _minor(r["credit"] or "0") - _minor(r["debit"] or "0")
            assert _minor(r["balance"]) == running


def test_an_unsealed_day_has_no_statement(engine: Engine, tmp_path: Path) -> None:
    w = make_world(engine, tmp_path)
    with engine.connect() as c, pytest.raises(DomainError) as err:
        statements.statements_for(c, CFG, w.bank, DAY1)
    assert err.value.code == ErrorCode.NOT_LOGGED_YET
