"""The `lianjie` command: init prints a working operator key, verify passes on a good ledger and
fails (exit 1, naming the account) after a row is tampered with."""

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from lianjie import ledger as L
from lianjie.cli import main
from lianjie.clock import ManualClock
from lianjie.db import writer
from lianjie.sim.config import yesterday


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


def test_a_simulation_on_an_empty_database_ends_yesterday(engine: Engine, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]
                                                         ) -> None:
    """Without --start the simulated day is the platform's yesterday by the system clock, so
    the demo's data ends shortly before what the server records; --start pins it; a database
    with orders continues after its last simulated day."""
    monkeypatch.setenv("LIANJIE_HOME", str(tmp_path))
    small = ["--service-providers", "1", "--merchants", "2", "--consumers", "4", "--quiet"]
    days = [yesterday(datetime.now(UTC))]
    assert main(["--database", _url(engine), "simulate", *small]) == 0
    days.append(yesterday(datetime.now(UTC)))  # in case Shanghai's midnight passed meanwhile
    out = capsys.readouterr().out
    assert any(f"{day:%a %Y-%m-%d} (Asia/Shanghai)" in out for day in days), out
    assert main(["--database", _url(engine), "simulate", *small, "--start", "2020-02-03"]) == 0
    assert "Mon 2020-02-03 (Asia/Shanghai)" in capsys.readouterr().out
    assert main(["--database", _url(engine), "simulate", *small]) == 0
    out = capsys.readouterr().out
    assert any(f"{day + timedelta(days=1):%a %Y-%m-%d} (Asia" in out for day in days), out


def test_yesterday_is_the_platforms_previous_business_day() -> None:
    # 17:00 UTC is already the next day in Shanghai (UTC+8).
    assert yesterday(datetime(2026, 3, 1, 15, 59, tzinfo=UTC)) == date(2026, 2, 28)
    assert yesterday(datetime(2026, 3, 1, 16, 0, tzinfo=UTC)) == date(2026, 3, 1)
