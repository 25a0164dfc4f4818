"""A simulated week settles and clears with every invariant holding, and the CLI's
``verify-chain`` finds a row tampered with afterwards."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, select, text
from tests.test_clearing_log import _without_triggers

from lianjie import ledger
from lianjie.clearing import ClearingConfig, log, run_end_of_day, verify
from lianjie.clearing import schema as s
from lianjie.clearing.signing import load_signer
from lianjie.cli import bootstrap, main
from lianjie.clock import ManualClock, to_us
from lianjie.sim import SimConfig, run_simulation

START = date(2026, 1, 5)
DAYS = 7


def test_a_simulated_week_settles_and_clears(engine: Engine, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIANJIE_HOME", str(tmp_path / "home"))
    bootstrap(engine)
    report = run_simulation(engine, SimConfig(service_providers=1, merchants=5, consumers=30,
                                              days=DAYS, purchases_per_day=2.0))
    assert report.ok, report.summary()
    cfg = ClearingConfig()
    clock = ManualClock(datetime(2026, 1, 13, 1, 0, tzinfo=UTC))
    for n in range(DAYS):
        run_end_of_day(engine, START + timedelta(days=n), clock=clock, cfg=cfg)
    key = verify.load_public_key(load_signer().public_pem)
    with engine.connect() as c:
        assert ledger.verify(c) == []
        assert log.verify_chain(c, key) == []
        heads = log.heads(c)
        assert [h.business_date for h in heads] == [START + timedelta(days=n)
                                                     for n in range(DAYS)]
        # every payment and refund up to the last cut-off settled exactly once
        cut = to_us(cfg.day_end(START + timedelta(days=DAYS - 1)))
        receipts = dict(c.execute(text(
            "SELECT a.owner_id, SUM(p.amount) FROM ledger_postings p "
            "JOIN ledger_accounts a ON a.id = p.account_id "
            "JOIN ledger_entries e ON e.id = p.entry_id "
            "WHERE a.purpose = 'merchant_pending' AND e.code <> 'settlement' "
            "AND p.created_at < :cut GROUP BY a.owner_id"), {"cut": cut}).all())
        paid: dict[str, int] = defaultdict(int)
        for m, amount in c.execute(select(s.settlements.c.merchant_id,
                                          s.settlements.c.amount)):
            paid[m] += amount
        for merchant, total in receipts.items():
            pending = ledger.find_account(c, merchant, "merchant_pending")
            assert pending is not None
            assert paid[merchant] + pending.balance == total, merchant
            assert pending.balance <= 0  # only refunds over receipts wait
        assert sum(paid.values()) > 0
        # every day's netting instructions settle every position exactly
        for h in heads:
            pos = {r.institution_id: r.net for r in c.execute(
                select(s.positions).where(s.positions.c.business_date == h.business_date))}
            for r in c.execute(select(s.instructions).where(
                    s.instructions.c.business_date == h.business_date,
                    s.instructions.c.kind == "interbank")):
                pos[r.payer_id] = pos.get(r.payer_id, 0) + r.amount
                pos[r.payee_id] = pos.get(r.payee_id, 0) - r.amount
            assert all(v == 0 for k, v in pos.items() if k.startswith("ins_")), pos
        # positions over the week equal the institutions' ledger movements in the log
        moved = dict(c.execute(text(
            "SELECT a.owner_id, SUM(p.amount) FROM clearing_log_leaves l "
            "JOIN ledger_postings p ON p.entry_id = l.entry_id "
            "JOIN ledger_accounts a ON a.id = p.account_id "
            "WHERE a.owner_id LIKE 'ins_%' GROUP BY a.owner_id")).all())
        cleared: dict[str, int] = defaultdict(int)
        for r in c.execute(select(s.positions)):
            cleared[r.institution_id] += r.net
        assert dict(cleared) == {k: v for k, v in moved.items() if v or k in cleared}
    # the command line finds a tampered row afterwards
    url = str(engine.url.render_as_string(hide_password=False))
    url = url.replace("postgresql+psycopg://", "postgresql://")
    assert main(["--database", url, "verify-chain"]) == 0
    assert main(["--database", url, "eod", "--date", START.isoformat()]) == 0  # done: a no-op
    with engine.connect() as c:
        bank = c.execute(text("SELECT id FROM parties WHERE kind = 'institution' ORDER BY id")
                         ).scalars().first()
    out = tmp_path / "statement.xml"
    assert main(["--database", url, "statement", str(bank), START.isoformat(), "--format",
                 "camt053", "--out", str(out)]) == 0
    args = ["--database", url, "reconcile", str(bank), START.isoformat(), str(out),
            "--format", "camt053"]
    assert main(args) == 0
    assert main(args) == 2  # the same file again: duplicate_file, nothing imported
    with engine.connect() as c:
        assert c.execute(select(s.recon_imports.c.summary)).scalars().all() != []
    with engine.begin() as c:
        eid = c.execute(text("SELECT entry_id FROM clearing_log_leaves WHERE leaf_index = 7")
                        ).scalar_one()
        _without_triggers(c, lambda: c.execute(text(
            "UPDATE ledger_entries SET memo = 'edited' WHERE id = :e"), {"e": eid}))
    assert main(["--database", url, "verify-chain"]) == 1
