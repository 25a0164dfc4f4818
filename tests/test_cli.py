"""The `lianjie` command: init prints a working operator key, verify passes on a good ledger and
fails (exit 1, naming the account) after a row is tampered with."""

from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from lianjie import ledger as L
from lianjie.cli import main
from lianjie.clock import ManualClock
from lianjie.db import writer


def _url(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=False)


def test_init_then_verify_then_tamper(engine: Engine, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("LIANJIE_HOME", str(tmp_path))
    assert main(["--database", _url(engine), "init"]) == 0
    key = (tmp_path / "operator_key").read_text().strip()
    assert key.startswith("lj_op_") and key in capsys.readouterr().out
    clock = ManualClock()
    with writer(engine) as c:
        bank = L.open_account(c, clock.now(), "ins_x", L.Purpose.INSTITUTION_SETTLEMENT)
        wallet = L.open_account(c, clock.now(), "cus_x", L.Purpose.WALLET,
                                flags=L.AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS)
        L.transfer(c, clock.now(), "t1", bank.id, wallet.id, 500)
    assert main(["--database", _url(engine), "verify"]) == 0
    assert "every invariant holds" in capsys.readouterr().out
    with engine.begin() as c:
        c.execute(text("UPDATE ledger_accounts SET credits_posted = credits_posted + 1 "
                       "WHERE id = :id"), {"id": wallet.id})
    assert main(["--database", _url(engine), "verify"]) == 1
    out = capsys.readouterr().out
    assert f"acc_{wallet.id}" in out and "totals_mismatch" in out
    assert "currency_not_zero" in out


def test_init_is_idempotent(engine: Engine, tmp_path: Path,
                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIANJIE_HOME", str(tmp_path))
    assert main(["--database", _url(engine), "init"]) == 0
    first = (tmp_path / "operator_key").read_text()
    assert main(["--database", _url(engine), "init"]) == 0
    assert (tmp_path / "operator_key").read_text() == first
