"""End of day: merchant settlement net of fees and refunds, T+0/T+1/T+n, clearing between
institutions with net debit caps, and a run that crashes and resumes settling everything once."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import date, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, select
from tests.clearing_helpers import DAY1, World, make_world

from lianjie.clearing import eod, settlement
from lianjie.clearing import schema as s
from lianjie.clearing.netting import Position, net
from lianjie.db import metadata
from lianjie.errors import DomainError, ErrorCode
from lianjie.ledger import Purpose


def _rows(engine: Engine, table: str) -> list[dict[str, object]]:
    with engine.connect() as c:
        return [dict(r._mapping) for r in c.execute(select(metadata.tables[table]))]


def _day(w: World) -> tuple[str, str]:
    """Day 1: consumers top up, pay two merchants, one refund; one payment after cut-off."""
    m0, m1 = w.merchants
    w.at(DAY1, 9)
    for c in w.consumers:
        w.top_up(c, 100_00)
    w.at(DAY1, 12)
    o1 = w.pay(w.consumers[0], m0, 20_00)  # fee 0.50% = 10
    w.pay(w.consumers[1], m0, 30_00)  # fee 15
    w.pay(w.consumers[2], m1, 10_00)  # fee 5
    w.refund(o1, 5_00)  # fee back 2 or 3 (allocated)
    w.at(DAY1, 23, 30)
    w.withdraw(w.consumers[2], 50_00)
    w.at(DAY1 + timedelta(days=1), 0, 30)  # after the cut-off: day 2
    late = w.pay(w.consumers[1], m0, 7_00)
    return o1, late


def test_t1_settles_net_of_fees_and_refunds_and_clears(engine: Engine, tmp_path: Path) -> None:
    w = make_world(engine, tmp_path)
    m0, m1 = w.merchants
    _, late = _day(w)
    pending_before = w.balance(m0, Purpose.MERCHANT_PENDING)
    fee = {r["id"]: r["fee_amount"] for r in _rows(engine, "payment_orders")}[late]
    late_net = 7_00 - fee  # the 00:30 payment, net of its fee, waits for day 2
    report = w.eod(DAY1)
    settled = {r["merchant_id"]: r for r in _rows(engine, "clearing_settlements")}
    assert settled[m0]["amount"] == pending_before - late_net
    assert settled[m1]["amount"] == 10_00 - 5  # 0.50% of 10.00
    assert w.balance(m0, Purpose.MERCHANT_PENDING) == late_net
    assert w.balance(m0, Purpose.MERCHANT_AVAILABLE) == 0
    assert settled[m0]["value_date"] == DAY1 + timedelta(days=1)  # T+1
    assert report.steps["settle"]["settled"] == 2
    # the bank's day: three top-ups it owes, one withdrawal it is owed; payouts clear tomorrow
    pos = {(r["institution_id"]): r for r in _rows(engine, "clearing_positions")}
    assert pos[w.bank]["debits"] == 300_00 and pos[w.bank]["credits"] == 50_00
    assert pos[w.bank]["net"] == -250_00 and pos[w.bank]["status"] == "within_cap"
    instr = [r for r in _rows(engine, "clearing_instructions") if r["kind"] == "interbank"]
    assert [(r["payer_id"], r["amount"]) for r in instr] == [(w.bank, 250_00)]
    w.invariants()
    # day 2: the late payment settles, payouts appear in the bank's position
    w.at(DAY1 + timedelta(days=2), 1)
    w.eod(DAY1 + timedelta(days=1))
    day2 = [r for r in _rows(engine, "clearing_settlements")
            if r["business_date"] == DAY1 + timedelta(days=1)]
    assert [(r["merchant_id"], r["amount"]) for r in day2] == [(m0, late_net)]
    pos2 = [r for r in _rows(engine, "clearing_positions")
            if r["business_date"] == DAY1 + timedelta(days=1)]
    assert pos2[0]["credits"] == sum(r["amount"] for r in settled.values())
    assert w.balance(m0, Purpose.MERCHANT_PENDING) == 0
    with pytest.raises(DomainError) as err:
        w.eod(DAY1 - timedelta(days=1))  # days close in order
    assert err.value.code == ErrorCode.DAY_ALREADY_SEALED
    w.invariants()


def test_rerun_is_a_no_op_and_refuses_an_unfinished_day(engine: Engine, tmp_path: Path
                                                        ) -> None:
    w = make_world(engine, tmp_path)
    _day(w)
    with pytest.raises(DomainError) as err:
        w.eod(DAY1 + timedelta(days=1))
    assert err.value.code == ErrorCode.BUSINESS_DAY_NOT_OVER
    first = w.eod(DAY1)
    before = {t: _rows(engine, t) for t in ("ledger_entries", "clearing_settlements",
                                            "clearing_instructions", "clearing_log_heads")}
    again = w.eod(DAY1)
    assert again.resumed == list(eod.STEPS)
    assert again.steps == first.steps
    assert before == {t: _rows(engine, t) for t in before}


@pytest.mark.parametrize("crash_in", ["settle_after_entries", "seal", "clear"])
def test_a_crash_anywhere_resumes_and_settles_once(engine: Engine, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   crash_in: str) -> None:
    w = make_world(engine, tmp_path)
    _day(w)

    class Crash(Exception):
        pass

    real_record = settlement._record
    real_seal = eod.log.seal_day
    real_clear = eod.netting.clear_day

    def record_then_crash(*args: object, **kw: object) -> None:
        real_record(*args, **kw)  # type: ignore[arg-type]
        raise Crash  # entries posted, rows written, then the process dies

    def boom(*args: object, **kw: object) -> None:
        raise Crash

    if crash_in == "settle_after_entries":
        monkeypatch.setattr(settlement, "_record", record_then_crash)
    elif crash_in == "seal":
        monkeypatch.setattr(eod.log, "seal_day", boom)
    else:
        monkeypatch.setattr(eod.netting, "clear_day", boom)
    with pytest.raises(Crash):
        w.eod(DAY1)
    monkeypatch.setattr(settlement, "_record", real_record)
    monkeypatch.setattr(eod.log, "seal_day", real_seal)
    monkeypatch.setattr(eod.netting, "clear_day", real_clear)
    report = w.eod(DAY1)
    assert report.steps["settle"]["settled"] == 2
    assert len(_rows(engine, "clearing_settlements")) == 2
    assert len([r for r in _rows(engine, "ledger_entries") if r["code"] == "payout"]) == 2
    assert len(_rows(engine, "clearing_log_heads")) == 1
    w.invariants()


def test_two_runs_racing_for_one_day_settle_once(engine: Engine, tmp_path: Path) -> None:
    w = make_world(engine, tmp_path)
    _day(w)
    with ThreadPoolExecutor(2) as pool:
        reports = list(pool.map(lambda _: w.eod(DAY1), range(2)))
    assert sorted(len(r.resumed) for r in reports)[0] < len(eod.STEPS)
    assert len(_rows(engine, "clearing_settlements")) == 2
    assert len(_rows(engine, "clearing_log_heads")) == 1
    assert len([r for r in _rows(engine, "ledger_entries") if r["code"] == "payout"]) == 2
    w.invariants()


def test_t0_and_t2_merchants(engine: Engine, tmp_path: Path) -> None:
    w = make_world(engine, tmp_path)
    m0, m1 = w.merchants
    now = w.clock.now()
    w.run(lambda c: c.execute(s.terms.insert(), [
        {"merchant_id": m0, "delay_days": 0, "payout_institution_id": w.bank2,
         "updated_at": now},
        {"merchant_id": m1, "delay_days": 2, "payout_institution_id": None,
         "updated_at": now}]))
    w.at(DAY1, 9)
    w.top_up(w.consumers[0], 100_00)
    w.pay(w.consumers[0], m0, 10_00)
    w.pay(w.consumers[0], m1, 10_00)
    w.at(DAY1 + timedelta(days=1), 1)
    w.eod(DAY1)
    rows = _rows(engine, "clearing_settlements")
    assert [(r["merchant_id"], r["value_date"], r["institution_id"]) for r in rows] == [
        (m0, DAY1, w.bank2)]  # T+0 paid by its own bank; T+2 waits
    w.at(DAY1 + timedelta(days=2), 1)
    w.eod(DAY1 + timedelta(days=1))
    rows = _rows(engine, "clearing_settlements")
    assert sorted((r["merchant_id"], r["value_date"]) for r in rows) == sorted(
        [(m0, DAY1), (m1, DAY1 + timedelta(days=2))])
    assert w.balance(m1, Purpose.MERCHANT_PENDING) == 0
    w.invariants()


def test_refunds_over_receipts_wait_and_caps_hold_instructions(engine: Engine,
                                                               tmp_path: Path) -> None:
    w = make_world(engine, tmp_path)
    m0 = w.merchants[0]
    w.at(DAY1, 9)
    w.top_up(w.consumers[0], 100_00)
    order = w.pay(w.consumers[0], m0, 10_00)
    w.run(lambda c: c.execute(s.caps.insert().values(institution_id=w.bank,
                                                     net_debit_cap=50_00,
                                                     updated_at=w.clock.now())))
    w.at(DAY1 + timedelta(days=1), 1)
    w.eod(DAY1)  # m0 paid 995
    w.refund(order, 10_00)  # day 2: refund the whole payment; pending goes negative
    w.at(DAY1 + timedelta(days=2), 1)
    report = w.eod(DAY1 + timedelta(days=1))
    assert report.steps["settle"]["skipped_negative"] == 1
    assert w.balance(m0, Purpose.MERCHANT_PENDING) < 0
    pos = {(r["business_date"], r["institution_id"]): r["status"]
           for r in _rows(engine, "clearing_positions")}
    assert pos[(DAY1, w.bank)] == "cap_exceeded"  # owes 100.00, cap 50.00
    held = [r for r in _rows(engine, "clearing_instructions") if r["status"] == "held"]
    assert held and all(w.bank in (r["payer_id"], r["payee_id"]) for r in held)
    w.invariants()


def test_multilateral_netting_settles_every_position() -> None:
    ps = [Position("a", "CNY", 500, 100, 10**9), Position("b", "CNY", 0, 300, 10**9),
          Position("c", "CNY", 200, 0, 10**9), Position("d", "CNY", 0, 50, 10**9)]
    out = net(ps)
    balance = {p.institution_id: p.net for p in ps}
    balance["plt_platform"] = 0
    for payer, payee, amount in out:
        assert amount > 0
        balance[payer] += amount
        balance[payee] -= amount
    assert all(v == 0 for k, v in balance.items() if k != "plt_platform")
    assert len(out) <= len(ps)


def test_window_rules() -> None:
    from lianjie.clearing.config import ClearingConfig
    cfg = ClearingConfig()
    d = date(2026, 3, 2)
    assert settlement.window(cfg, d, 0) == (d, d)
    assert settlement.window(cfg, d, 1) == (d, d + timedelta(days=1))
    assert settlement.window(cfg, d, 3) == (d - timedelta(days=2), d + timedelta(days=1))
    assert cfg.business_date(cfg.day_end(d)) == d + timedelta(days=1)
    assert cfg.business_date(cfg.day_end(d) - timedelta(microseconds=1)) == d


def test_late_postings_are_found_the_same_from_entries_or_from_postings(
        engine: Engine, tmp_path: Path) -> None:
    """Both ways of finding each merchant's first posting past the cut-off give the same dues,
    before any settlement and after one (watermarks set, a later day's late payment)."""
    w = make_world(engine, tmp_path)
    m0, _ = w.merchants
    _day(w)

    def dues(day: date) -> list[list[object]]:
        with engine.connect() as c:
            found = [[repr(d) for d in settlement.due_settlements(c, w.cfg, day,
                                                                  by_entries=flag)]
                     for flag in (True, False)]
        assert found[0] == found[1]
        return found[0]

    assert len(dues(DAY1)) == 2  # the 00:30 payment is past day 1's cut-off for both ways
    w.eod(DAY1)
    w.at(DAY1 + timedelta(days=2), 0, 10)  # past day 2's cut-off
    w.pay(w.consumers[0], m0, 3_00)
    later = [d for d in dues(DAY1 + timedelta(days=1)) if m0 in d]
    assert len(later) == 1 and "net=696" in later[0]  # day 2's 7.00 less its fee, not the 3.00
