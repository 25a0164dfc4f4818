"""Reconciliation: a partner's file with planted breaks finds every break and no false ones, in
each format; bad files are refused whole; breaks are resolved with a reason and corrections go
through the ledger."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Connection, Engine, func, select
from tests.clearing_helpers import DAY1, World, make_world

from lianjie.clearing import ClearingConfig, recon, statements
from lianjie.clearing import schema as s
from lianjie.errors import DomainError, ErrorCode
from lianjie.ledger import Purpose
from lianjie.payments import account_id

CFG = ClearingConfig()


def _day(w: World) -> None:
    w.at(DAY1, 8)
    for _ in range(2):
        for c in w.consumers:
            w.top_up(c, 100_00)
    w.withdraw(w.consumers[0], 30_00)
    w.at(DAY1 + timedelta(days=1), 1)
    w.eod(DAY1)


def _import(w: World, fmt: str, data: bytes, cur: str = "CNY") -> dict[str, object]:
    now = w.clock.now()
    return dict(w.run(lambda c: recon.do_import(c, now, CFG, w.bank, DAY1, fmt, data, cur)))


def _render(w: World, fmt: str) -> str:
    with w.engine.connect() as c:
        return statements.render(c, CFG, w.bank, DAY1, fmt, datetime(2026, 3, 4, tzinfo=UTC)
                                 ).decode()


def _plant_csv(text: str) -> tuple[str, dict[str, set[str]]]:
    lines = text.splitlines()
    body = [i for i, ln in enumerate(lines) if ",txf_" in ln]
    refs = [lines[i].split(",")[4] for i in body]
    lines[body[0]] = lines[body[0]].replace(",100.00,", ",100.10,")  # amount
    dup = lines[body[1]]
    lines[body[2]] = lines[body[2]].replace("2026-03-02", "2026-03-01")  # date
    dropped = lines.pop(body[3])  # missing on their side
    lines.insert(2, dup)  # duplicate
    lines.insert(3, lines[2].replace(refs[1], "txf_999999"))  # not ours
    expected = {"amount_mismatch": {refs[0]}, "duplicate": {refs[1]},
                "date_mismatch": {refs[2]}, "missing_in_partner": {dropped.split(",")[4]},
                "missing_in_ledger": {"txf_999999"}}
    return "\n".join(lines) + "\n", expected


def _breaks(result: dict[str, object]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for item in result["items"]:  # type: ignore[attr-defined]
        if item["outcome"] != "matched":
            out.setdefault(item["outcome"], set()).add(item["reference"])
    return out


def test_planted_breaks_in_csv_are_all_found(engine: Engine, tmp_path: Path) -> None:
    w = make_world(engine, tmp_path)
    _day(w)
    planted, expected = _plant_csv(_render(w, "csv"))
    result = _import(w, "csv", planted.encode())
    assert _breaks(result) == expected
    matched = [i for i in result["items"] if i["outcome"] == "matched"]  # type: ignore
    assert len(matched) == 7 - 3  # amount, date, dropped broken; the duplicated one matches


@pytest.mark.parametrize("fmt", ["camt053", "mt940"])
def test_clean_bank_files_match_completely(engine: Engine, tmp_path: Path, fmt: str) -> None:
    w = make_world(engine, tmp_path)
    _day(w)
    text = _render(w, fmt)
    result = _import(w, fmt, text.encode())
    assert _breaks(result) == {} and result["line_count"] == 7
    # an amount changed in the bank's own file is found
    changed = text.replace("100.00", "100.50", 1) if fmt == "camt053" else \
        text.replace("100,00NTRF", "100,50NTRF", 1)
    again = _import(w, fmt, changed.encode())
    assert set(_breaks(again)) == {"amount_mismatch"}


def _count(conn: Connection) -> int:
    return int(conn.execute(select(func.count()).select_from(s.recon_imports)).scalar_one())


def test_bad_files_are_refused_and_nothing_is_imported(engine: Engine, tmp_path: Path) -> None:
    w = make_world(engine, tmp_path)
    _day(w)
    csv_text, camt, mt = _render(w, "csv"), _render(w, "camt053"), _render(w, "mt940")
    cases = [
        ("camt053", camt[: len(camt) // 2], ErrorCode.INVALID_FILE),  # truncated XML
        ("mt940", mt[: mt.rindex(":62F:")], ErrorCode.INVALID_FILE),  # no closing balance
        ("csv", csv_text.rsplit("\n", 3)[0][:-5] + "\n", ErrorCode.INVALID_FILE),
        ("csv", "reference,amount,currency,date\ntxf_1,abc,CNY,2026-03-02\n",
         ErrorCode.INVALID_FILE),
        ("csv", csv_text.replace("CNY", "USD"), ErrorCode.CURRENCY_MISMATCH),
        ("mt940", "hello", ErrorCode.INVALID_FILE),
        ("camt053", "<a/>", ErrorCode.INVALID_FILE),
    ]
    for fmt, data, code in cases:
        with pytest.raises(DomainError) as err:
            _import(w, fmt, data.encode())
        assert err.value.code == code, (fmt, data[:80])
    with engine.connect() as c:
        assert _count(c) == 0
    _import(w, "csv", csv_text.encode())
    with pytest.raises(DomainError) as err:
        _import(w, "csv", csv_text.encode())
    assert err.value.code == ErrorCode.DUPLICATE_FILE
    with engine.connect() as c:
        assert _count(c) == 1


def test_breaks_resolve_once_with_a_reason_and_a_ledger_correction(engine: Engine,
                                                                    tmp_path: Path) -> None:
    w = make_world(engine, tmp_path)
    _day(w)
    planted, _ = _plant_csv(_render(w, "csv"))
    result = _import(w, "csv", planted.encode())
    item = next(i for i in result["items"]  # type: ignore[attr-defined]
                if i["outcome"] == "amount_mismatch")
    now = w.clock.now()
    with pytest.raises(DomainError) as err:
        w.run(lambda c: recon.do_resolve(c, now, item["id"], "  "))
    assert err.value.code == ErrorCode.INVALID_REQUEST

    def correct(c: Connection) -> dict[str, object]:
        bank = account_id(c, w.bank, Purpose.INSTITUTION_SETTLEMENT, "CNY")
        suspense = account_id(c, "plt_platform", Purpose.FEE_REVENUE, "CNY")
        return recon.do_resolve(c, now, item["id"], "bank booked 0.10 fee", correction=(
            bank, suspense, 10))

    resolved = w.run(correct)
    assert resolved["status"] == "resolved" and resolved["correction_entry_id"]
    with pytest.raises(DomainError) as err:
        w.run(correct)
    assert err.value.code == ErrorCode.INVALID_STATE_TRANSITION
    assert w.balance(w.bank, Purpose.INSTITUTION_SETTLEMENT) == -600_00 + 30_00 - 10
    w.invariants()
