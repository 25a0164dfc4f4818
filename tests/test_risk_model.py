"""The model and the CLI: train from a labelled CSV, register, refuse a corrupt model, decide
with the model's reasons, backtest, publish rules from a file."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from sqlalchemy import Engine

from lianjie import risk
from lianjie.cli import main
from lianjie.clock import ManualClock
from lianjie.committer import run_now
from lianjie.risk import store
from lianjie.sim import fraud


def _url(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=False)


def _csv(path: Path) -> Path:
    stream = fraud.generate(days=3, consumers=150, merchants=30, frauds_per_day=5, seed=3)
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["time", "payer", "payee", "amount", "label", "kind", "device_id",
                    "client_ip", "note"])
        for when, e in stream.events:
            w.writerow([when.isoformat(), e.actor_id, e.counterparty_id, e.amount,
                        int(e.subject_id in stream.labels), e.kind, e.device_id or "",
                        e.client_ip or "", "ignored"])
    return path


def _versions(engine: Engine) -> store.Versions:
    with engine.connect() as conn:
        return store.get_versions(conn)


def test_train_from_csv_register_and_refuse_a_corrupt_model(
        engine: Engine, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = _url(engine)
    model_file = tmp_path / "model.txt"
    assert main(["--database", url, "risk", "train", "--csv", str(_csv(tmp_path / "t.csv")),
                 "--output", str(model_file)]) == 0
    out = capsys.readouterr().out
    assert '"auc"' in out and "registered model version 1 (active)" in out
    assert '"rules_version": 0' in out  # its threshold was chosen beside the built-in rules
    assert _versions(engine).model == 1
    # A corrupt file and a truncated one are refused; version 1 stays active.
    (tmp_path / "bad.txt").write_text("tree\nnot a model\n")
    assert main(["--database", url, "risk", "register", str(tmp_path / "bad.txt")]) == 2
    (tmp_path / "cut.txt").write_text(model_file.read_text()[:500])
    assert main(["--database", url, "risk", "register", str(tmp_path / "cut.txt")]) == 2
    assert "risk_model_invalid" in capsys.readouterr().err
    assert _versions(engine).model == 1
    # The model serves decisions: a drain from a new device is at least reviewed, with reasons.
    clock = ManualClock()
    for i in range(3):
        run_now(engine, lambda c, i=i: risk.decide(c, clock.now(), risk.Event(
            "payment", f"ord_{i}", "cus_v", 1500, "CNY", "mch_a", None, "dev_v", "10.0.0.1")))
        clock.advance(__import__("datetime").timedelta(hours=3))
    decision = run_now(engine, lambda c: _try(c, clock.now(), risk.Event(
        "p2p", "wop_x", "cus_v", 290_000, "CNY", "cus_mule", None, "dev_new", "172.16.0.9")))
    assert decision.model_version == 1
    if decision.outcome != "allow":
        assert decision.reasons, decision


def _try(conn: object, now: object, event: risk.Event) -> risk.Decision:
    try:
        return risk.decide(conn, now, event)  # type: ignore[arg-type]
    except risk.RiskDeclined as exc:
        return exc.decision


def test_rules_from_a_file_and_backtest_beside_the_live_version(
        engine: Engine, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = _url(engine)
    clock = ManualClock()
    for i in range(5):
        run_now(engine, lambda c, i=i: risk.decide(c, clock.now(), risk.Event(
            "payment", f"ord_{i}", f"cus_{i}", 1000 * (i + 1), "CNY", "mch_a")))
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"rules": [{"name": "x", "expression": "amount >>> 1"}]}))
    assert main(["--database", url, "risk", "rules", "publish", str(bad)]) == 2
    assert "risk_rule_invalid" in capsys.readouterr().err
    assert _versions(engine).rules == 0
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"rules": [{"name": "big", "expression": "amount >= 4000",
                                           "action": "block"}], "note": "test"}))
    assert main(["--database", url, "risk", "backtest", "--rules", str(good),
                 "--model-version", "0"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["candidate"]["blocked"] == 2 and report["candidate"]["amount_blocked"] == 9000
    assert report["live"]["blocked"] == 0 and report["live"]["events"] == 5
    assert main(["--database", url, "risk", "rules", "publish", str(good)]) == 0
    assert _versions(engine).rules == 1
    assert main(["--database", url, "risk", "rules", "activate", "0"]) == 0
    assert _versions(engine).rules == 0
    assert main(["--database", url, "risk", "list", "add", "block", "dev_1",
                 "--ttl-s", "60"]) == 0
    with engine.connect() as conn:
        assert [e.value for e in store.list_entries(conn, "block")] == ["dev_1"]
