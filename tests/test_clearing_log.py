"""The signed Merkle log: heads chained and signed, inclusion and consistency proofs checked by
the stand-alone verifier, and ``verify_chain`` naming every entry edited, deleted or inserted
behind the ledger's back."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Connection, Engine, text
from tests.clearing_helpers import DAY1, World, make_world

from lianjie.clearing import ClearingConfig, log, merkle, statements, verify
from lianjie.clearing.verify import VerifyError
from lianjie.committer import run_now


def _two_days(w: World) -> None:
    w.at(DAY1, 9)
    for c in w.consumers:
        w.top_up(c, 100_00)
    w.at(DAY1, 12)
    w.pay(w.consumers[0], w.merchants[0], 12_34)
    w.at(DAY1 + timedelta(days=1), 1)
    w.eod(DAY1)
    w.at(DAY1 + timedelta(days=1), 10)
    w.pay(w.consumers[1], w.merchants[1], 5_00)
    w.withdraw(w.consumers[2], 20_00)
    w.at(DAY1 + timedelta(days=2), 1)
    w.eod(DAY1 + timedelta(days=1))


def _key(w: World) -> verify.Ed25519PublicKey:
    return verify.load_public_key(w.signer.public_pem)


def test_heads_chain_and_every_entry_proves(engine: Engine, tmp_path: Path) -> None:
    w = make_world(engine, tmp_path)
    _two_days(w)
    key = _key(w)
    with engine.connect() as c:
        first, second = log.heads(c)
        assert first.prev_root_hash == log.ZERO_HASH
        assert second.prev_root_hash == first.root_hash
        assert second.day_start_index == first.tree_size
        entry_ids = [r[0] for r in c.execute(text("SELECT id FROM ledger_entries"))]
        assert log.tree_size(c) == len(entry_ids) - 2  # the last run's settlement waits
        for eid in entry_ids[:8]:
            proof = log.inclusion_proof(c, eid)
            if proof is None:
                continue
            body = verify.check_head(proof["head"], key)
            assert verify.check_inclusion(proof, body)["id"] == eid
        doc = log.consistency_proof(c, first, second)
    assert verify.verify_document(doc, key)["ok"]
    # tampering with the proof or the signature is refused with a code
    bad = json.loads(json.dumps(doc))
    bad["path"][0] = "00" * 32
    with pytest.raises(VerifyError) as err:
        verify.verify_document(bad, key)
    assert err.value.code == "invalid_proof"
    bad = json.loads(json.dumps(doc))
    bad["new_head"]["body"] = bad["new_head"]["body"].replace('"tree_size":', '"tree_size":1')
    with pytest.raises(VerifyError) as err:
        verify.verify_document(bad, key)
    assert err.value.code == "invalid_signature"


def _without_triggers(c: Connection, edit: Callable[[], object]) -> None:
    """As an attacker with DDL rights: the immutability triggers out of the way."""
    if c.dialect.name == "postgresql":
        for table in ("ledger_entries", "ledger_postings"):
            c.execute(text(f"ALTER TABLE {table} DISABLE TRIGGER {table}_immutable"))
        edit()
        for table in ("ledger_entries", "ledger_postings"):
            c.execute(text(f"ALTER TABLE {table} ENABLE TRIGGER {table}_immutable"))
        return
    rows = c.execute(text("SELECT name, sql FROM sqlite_master WHERE type = 'trigger' "
                          "AND name LIKE 'ledger_%'")).all()
    for name, _ in rows:
        c.execute(text(f"DROP TRIGGER {name}"))
    edit()
    for _, sql in rows:
        c.execute(text(sql))


def test_verify_chain_names_edited_deleted_and_inserted_entries(engine: Engine,
                                                                tmp_path: Path) -> None:
    w = make_world(engine, tmp_path)
    _two_days(w)
    key = _key(w)
    with engine.connect() as c:
        assert log.verify_chain(c, key) == []
        ids = [r[0] for r in c.execute(text(
            "SELECT entry_id FROM clearing_log_leaves ORDER BY leaf_index"))]
    edited, deleted = ids[2], ids[4]

    def tamper(c: Connection) -> None:
        c.execute(text("UPDATE ledger_postings SET amount = amount + 100 "
                       "WHERE entry_id = :e AND side = 1 AND leg_no = 0"), {"e": edited})
        c.execute(text("DELETE FROM ledger_postings WHERE entry_id = :e"), {"e": deleted})
        c.execute(text("DELETE FROM ledger_entries WHERE id = :e"), {"e": deleted})
        c.execute(text(
            "INSERT INTO ledger_entries (id, key, kind, code, fingerprint, created_at) "
            "VALUES (:id, 'forged', 0, 'payment', :fp, :at)"),
            {"id": 10**9, "fp": b"\x00" * 16, "at": 1_772_409_600_000_000})  # 2026-03-02

    with engine.begin() as c:
        _without_triggers(c, lambda: tamper(c))
    with engine.connect() as c:
        found = {(f.code, f.subject) for f in log.verify_chain(c, key)}
    assert ("entry_edited", f"txf_{edited}") in found
    assert ("entry_deleted", f"txf_{deleted}") in found
    assert ("entry_inserted", f"txf_{10**9}") in found
    assert {"root_mismatch"} <= {code for code, _ in found}
    assert {code for code, _ in found} <= {"entry_edited", "entry_deleted", "entry_inserted",
                                          "root_mismatch"}


def test_a_forged_head_signature_is_named(engine: Engine, tmp_path: Path) -> None:
    w = make_world(engine, tmp_path)
    _two_days(w)
    with engine.begin() as c:
        c.execute(text("UPDATE clearing_log_heads SET signature = :s WHERE business_date = "
                       "(SELECT MIN(business_date) FROM clearing_log_heads)"),
                  {"s": b"\x01" * 64})
    with engine.connect() as c:
        found = [f.code for f in log.verify_chain(c, _key(w))]
    assert found == ["bad_signature"]


def test_statement_proofs_verify_offline_with_the_cli(engine: Engine, tmp_path: Path) -> None:
    w = make_world(engine, tmp_path)
    _two_days(w)
    cfg = ClearingConfig()
    with engine.connect() as c:
        head, sts = statements.statements_for(c, cfg, w.bank, DAY1)
        csv_text = statements.to_csv(sts, cfg)
        bundle = statements.proofs_for(c, head, sts)
    pub = tmp_path / "platform.pem"
    pub.write_bytes(w.signer.public_pem)
    (tmp_path / "proofs.json").write_text(json.dumps(bundle))
    (tmp_path / "st.csv").write_text(csv_text)
    # the verifier alone, copied out of the package: no database, no lianjie
    alone = tmp_path / "alone"
    alone.mkdir()
    src = Path(merkle.__file__).parent
    for name in ("merkle.py", "verify.py"):
        (alone / name).write_text((src / name).read_text())
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    run = subprocess.run([sys.executable, "-I", str(alone / "verify.py"), "--public-key",
                          str(pub), "--statement", str(tmp_path / "st.csv"),
                          str(tmp_path / "proofs.json")], capture_output=True, text=True,
                         env=env, cwd=alone, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr
    assert '"lines": 3' in run.stdout  # three top-ups
    # a line changed by one fen fails
    (tmp_path / "st.csv").write_text(csv_text.replace(",100.00,", ",100.01,", 1))
    run = subprocess.run([sys.executable, "-I", str(alone / "verify.py"), "--public-key",
                          str(pub), "--statement", str(tmp_path / "st.csv"),
                          str(tmp_path / "proofs.json")], capture_output=True, text=True,
                         env=env, cwd=alone, timeout=60)
    assert run.returncode == 1 and "line_mismatch" in run.stdout
    # a dropped line is named too
    lines = csv_text.splitlines()
    dropped = "\n".join(ln for ln in lines if "txf_" not in ln or ln != lines[2]) + "\n"
    with pytest.raises(VerifyError) as err:
        verify.verify_statement(bundle, _key(w), dropped)
    assert err.value.code == "line_missing"


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 70), st.data())
def test_proofs_round_trip_for_any_tree(n: int, data: st.DataObject) -> None:
    leaves = [merkle.leaf_hash(i.to_bytes(4, "big")) for i in range(n)]
    sub = merkle.memory_subtree(leaves)
    index = data.draw(st.integers(0, n - 1))
    path = merkle.inclusion_path(sub, index, n)
    root = merkle.root(leaves)
    assert merkle.verify_inclusion(leaves[index], index, n, path, root)
    assert not merkle.verify_inclusion(merkle.leaf_hash(b"x"), index, n, path, root)
    old = data.draw(st.integers(1, n))
    proof = merkle.consistency_path(sub, old, n)
    assert merkle.verify_consistency(old, n, merkle.root(leaves[:old]), root, proof)
    if old < n:
        assert not merkle.verify_consistency(old, n, merkle.root(leaves[:old]),
                                             merkle.leaf_hash(b"y"), proof)


def test_the_log_hashes_the_documented_canonical_bytes(engine: Engine, tmp_path: Path) -> None:
    w = make_world(engine, tmp_path)
    _two_days(w)
    with engine.connect() as c:
        for eid, data, _ in log.iter_canonical(c, 0, 10**6):
            body = json.loads(data)
            postings = body.pop("postings")
            assert data == log.entry_bytes(body, postings)
            assert [p[:2] for p in postings] == sorted(p[:2] for p in postings)
            assert body["id"] == eid


# -- the database builds the canonical bytes: byte for byte what entry_bytes builds -------------

_AWKWARD = ("noodles 牛肉面 ¥12.34", 'a "quoted" \\ back\\slash / slash', "tab\tnew\nline\rcr",
            "".join(chr(c) for c in range(1, 32)) + "\x7f", "\u2028\u2029 \U0001f600 é",
            "%d %s %% {extra} :after", "")
_entry_seq = iter(range(10**9))


def _python_canonical(c: Connection, entry_id: int) -> bytes:
    """The reference: the entry and its postings read row by row, encoded by ``entry_bytes``."""
    e = c.execute(text("SELECT id, key, kind, code, pending_id, reverses_id, memo, created_at "
                       "FROM ledger_entries WHERE id = :id"), {"id": entry_id}).one()
    postings = [list(r) for r in c.execute(text(
        "SELECT leg_no, side, account_id, account_seq, amount, balance_after "
        "FROM ledger_postings WHERE entry_id = :id"), {"id": entry_id})]
    return log.entry_bytes({"id": e[0], "key": e[1], "kind": e[2], "code": e[3],
                            "pending_id": e[4], "reverses_id": e[5], "memo": e[6],
                            "created_at_us": e[7]}, postings)


def _book_awkward(w: World, texts: tuple[str, ...]) -> None:
    """Entries with many legs, several currencies, holds posted and voided, a reversal, and
    keys and memos full of characters JSON must escape."""
    from lianjie import ledger
    from lianjie.ledger import Entry, EntryKind, Leg

    now = w.clock.now()

    def unit(c: Connection) -> None:
        accs = {cur: [ledger.open_account(c, now, f"tst_{cur}_{i}", "test", cur).id
                      for i in range(13)] for cur in ("CNY", "USD", "JPY")}
        n = next(_entry_seq)
        many = tuple(Leg(accs["CNY"][i], accs["CNY"][i + 1], 10**12 + i) for i in range(12))
        results = ledger.create_entries(c, now, [
            Entry(key=f"many:{n}", legs=many, code="transfer", memo=texts[0]),
            Entry(key=f"fx:{n}", legs=(Leg(accs["USD"][0], accs["USD"][1], 1),
                                       Leg(accs["JPY"][2], accs["JPY"][1], 150)), code="fx"),
            Entry(key=f"hold:{n}", legs=(Leg(accs["CNY"][3], accs["CNY"][4], 5_00),),
                  kind=EntryKind.PENDING),
            Entry(key=f"void:{n}", legs=(Leg(accs["USD"][3], accs["USD"][4], 7),),
                  kind=EntryKind.PENDING)])
        assert all(r.ok for r in results), results
        many_id, _, hold_id, void_id = (r.entry_id for r in results)
        assert many_id is not None
        more = ledger.create_entries(c, now, [
            Entry(key=f"post:{n}", kind=EntryKind.POST_PENDING, pending_id=hold_id,
                  amounts=(3_00,)),
            Entry(key=f"voided:{n}", kind=EntryKind.VOID_PENDING, pending_id=void_id)])
        assert all(r.ok for r in more), more
        ledger.reverse(c, now, many_id, f"undo:{n}", memo=texts[-1])
        for i, t in enumerate(texts):
            ledger.transfer(c, now, f"{t[:150]}:{n}:{i}", accs["CNY"][5], accs["CNY"][6], 1,
                            code=f"c{i}", memo=t or None)
    w.run(unit)


def _assert_sql_canonical_is_python(engine: Engine) -> int:
    with engine.connect() as c:
        top = int(c.execute(text("SELECT MAX(id) FROM ledger_entries")).scalar_one())
        seen = 0
        for eid, data, created in log.iter_canonical(c, 0, top):
            assert data == _python_canonical(c, eid), eid
            assert json.loads(data)["created_at_us"] == created
            assert log.canonical_entry(c, eid) == data
            seen += 1
        return seen


def test_the_database_builds_the_python_canonical_bytes(engine: Engine, tmp_path: Path
                                                        ) -> None:
    w = make_world(engine, tmp_path)
    _two_days(w)
    w.at(DAY1 + timedelta(days=2), 9)
    texts = _AWKWARD if engine.dialect.name == "sqlite" else tuple(
        t.replace("\x00", "") for t in _AWKWARD)  # PostgreSQL text holds no NUL
    _book_awkward(w, texts)
    with engine.connect() as c:
        rows = c.execute(text("SELECT COUNT(*), MAX(kind), COUNT(pending_id), "
                              "COUNT(reverses_id) FROM ledger_entries")).one()
        assert rows[1] == 3 and rows[2] == 2 and rows[3] == 1  # holds posted, voided, reversed
    assert _assert_sql_canonical_is_python(engine) == rows[0]
    # sealed through the same SQL, each stored leaf is the hash of the Python bytes, and the
    # stand-alone verifier accepts the proofs of the awkward entries
    w.at(DAY1 + timedelta(days=3), 1)
    w.eod(DAY1 + timedelta(days=2))
    key = _key(w)
    with engine.connect() as c:
        for eid, _, leaf in c.execute(text(
                "SELECT entry_id, leaf_index, leaf_hash FROM clearing_log_leaves")).all():
            assert bytes(leaf) == merkle.leaf_hash(_python_canonical(c, eid))
            proof = log.inclusion_proof(c, eid)
            if proof is not None:
                assert verify.check_inclusion(proof, verify.check_head(proof["head"], key))
        assert log.verify_chain(c, key) == []


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.text(max_size=60), min_size=1, max_size=4))
def test_any_text_quotes_the_same_in_sql_and_python(engine: Engine, tmp_path: Path,
                                                    texts: list[str]) -> None:
    if engine.dialect.name == "postgresql":
        texts = [t.replace("\x00", "") for t in texts]
    from lianjie import ledger

    now = datetime(2026, 3, 1, tzinfo=UTC)

    def unit(c: Connection) -> None:
        a = ledger.open_account(c, now, "tst_a", "test").id
        b = ledger.open_account(c, now, "tst_b", "test").id
        for i, t in enumerate(texts):
            ledger.transfer(c, now, f"{t}:{next(_entry_seq)}:{i}", a, b, 1, code=t[:40],
                            memo=t)
    run_now(engine, unit)
    _assert_sql_canonical_is_python(engine)


@settings(max_examples=15, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.integers(1, 40), min_size=1, max_size=6))
def test_stored_subtrees_match_the_tree_across_appends(engine: Engine,
                                                       appends: list[int]) -> None:
    """Appends of any sizes store complete subtrees (small ones folded from leaves on demand)
    that give the same roots and proofs as the tree built in memory."""
    leaves = [merkle.leaf_hash(i.to_bytes(4, "big")) for i in range(sum(appends))]
    with engine.begin() as c:
        c.execute(text("DELETE FROM clearing_log_nodes"))
        c.execute(text("DELETE FROM clearing_log_leaves"))
        old = 0
        for n in appends:
            fresh = leaves[old:old + n]
            c.execute(text("INSERT INTO clearing_log_leaves (leaf_index, entry_id, leaf_hash) "
                           "VALUES (:i, :e, :h)"),
                      [{"i": old + k, "e": old + k + 1, "h": h} for k, h in enumerate(fresh)])
            log._store_nodes(c, old, fresh)
            old += n
            assert log.log_root(c, old) == merkle.root(leaves[:old])
        stored = c.execute(text("SELECT MIN(level) FROM clearing_log_nodes")).scalar()
        assert stored is None or stored >= log.NODE_LEVEL_STORED_MIN
        sub = merkle.memory_subtree(leaves)
        batched = log.proofs_subtree(c, range(0, old, 3), old)  # a statement's proofs
        for index in range(0, old, 3):
            assert merkle.inclusion_path(log.stored_subtree(c), index, old) == \
                merkle.inclusion_path(sub, index, old) == \
                merkle.inclusion_path(batched, index, old)


def _logged_ids(c: Connection) -> list[int]:
    return [int(r[0]) for r in c.execute(text(
        "SELECT entry_id FROM clearing_log_leaves ORDER BY leaf_index"))]


def test_a_long_day_is_hashed_by_two_processes(engine: Engine, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch,
                                               caplog: pytest.LogCaptureFixture) -> None:
    """Every seal here shares its range with a second process: the log is the one a single
    process writes (every leaf recomputes from the ledger, every root matches), and the second
    process's part was used, not read again (that would be logged)."""
    monkeypatch.setattr(log, "PARALLEL_ENTRIES_MIN", 2)
    monkeypatch.setattr(log, "READ_BATCH_ENTRIES", 3)  # both read and send pages of 3 entries
    monkeypatch.setattr(log, "TREE_STEP_LEAVES", 1)  # the tree grows page by page
    w = make_world(engine, tmp_path)
    _two_days(w)
    with engine.connect() as c:
        assert log.verify_chain(c, _key(w)) == []
        ids = _logged_ids(c)
        dated = [int(r[0]) for r in c.execute(text(
            "SELECT id FROM ledger_entries WHERE created_at < :cut ORDER BY id"),
            {"cut": log.to_us_head(log.heads(c)[-1])})]
    assert ids == dated and len(ids) >= 8
    assert [r for r in caplog.records if r.name == log.__name__] == []


def test_the_seal_reads_the_range_itself_when_the_second_process_sees_less(
        engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """An entry the sealing transaction wrote itself (not committed, so invisible to another
    process) in the second process's part (here the whole range): the counts differ and the seal
    reads that part itself, so the entry is logged."""
    from lianjie import ledger

    monkeypatch.setattr(log, "PARALLEL_ENTRIES_MIN", 2)
    monkeypatch.setattr(log, "SECOND_PROCESS_SHARE_PERCENT", 100)
    monkeypatch.setattr(log, "READ_BATCH_ENTRIES", 4)
    monkeypatch.setattr(log, "TREE_STEP_LEAVES", 1)  # subtrees stored, then dropped with them
    w = make_world(engine, tmp_path)
    w.at(DAY1, 9)
    for consumer in w.consumers * 8:  # enough leaves for stored subtrees (16 and up)
        w.top_up(consumer, 100_00)
    booked_at = w.clock.now()
    w.at(DAY1 + timedelta(days=1), 1)

    def unit(c: Connection) -> int:
        a = ledger.open_account(c, booked_at, "tst_late_a", "test", "CNY").id
        b = ledger.open_account(c, booked_at, "tst_late_b", "test", "CNY").id
        booked = ledger.transfer(c, booked_at, "late:uncommitted", a, b, 1, code="late")
        assert booked.ok and booked.entry_id is not None
        log.seal_day(c, w.clock.now(), DAY1, w.cfg.day_end(DAY1), w.signer)
        return booked.entry_id

    with caplog.at_level("WARNING", logger=log.__name__):
        entry_id = w.run(unit)
    assert any("reading the range here" in r.getMessage() for r in caplog.records)
    with engine.connect() as c:
        assert entry_id in _logged_ids(c)
        assert log.verify_chain(c, _key(w)) == []


def _seal_first_day(w: World) -> None:
    w.run(lambda c: log.seal_day(c, w.clock.now(), DAY1, w.cfg.day_end(DAY1), w.signer))


def _fallbacks(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == log.__name__]


def test_what_the_second_process_prints_does_not_break_its_answer(
        engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """The second process answers on a pipe of its own: a library printing on its stdout (here
    a ``sitecustomize`` every interpreter on the path runs at start) changes nothing, and its
    part is used rather than read again."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text("print('a library says hello' * 50)\n")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setattr(log, "PARALLEL_ENTRIES_MIN", 2)
    monkeypatch.setattr(log, "SECOND_PROCESS_SHARE_PERCENT", 100)
    w = make_world(engine, tmp_path)
    w.at(DAY1, 9)
    for consumer in w.consumers * 3:
        w.top_up(consumer, 100_00)
    w.at(DAY1 + timedelta(days=1), 1)
    with caplog.at_level("WARNING", logger=log.__name__):
        _seal_first_day(w)
    assert _fallbacks(caplog) == []
    with engine.connect() as c:
        assert len(_logged_ids(c)) >= 9
        assert log.verify_chain(c, _key(w)) == []


def test_a_failed_seal_ends_the_second_process(engine: Engine, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The seal fails in this process after the second one started: the second process is
    ended and waited for, not left to run on, and nothing of the seal is kept."""
    started: list[log._OtherPart] = []

    class Kept(log._OtherPart):
        def __init__(self, *args: object) -> None:
            super().__init__(*args)  # type: ignore[arg-type]
            started.append(self)

    def fail(*_args: object, **_kw: object) -> None:
        raise RuntimeError("the disk is gone")

    monkeypatch.setattr(log, "PARALLEL_ENTRIES_MIN", 2)
    monkeypatch.setattr(log, "_OtherPart", Kept)
    w = make_world(engine, tmp_path)
    w.at(DAY1, 9)
    for consumer in w.consumers * 3:
        w.top_up(consumer, 100_00)
    w.at(DAY1 + timedelta(days=1), 1)
    monkeypatch.setattr(log, "_hash_entries", fail)  # this process only: the other imports
    with pytest.raises(RuntimeError, match="the disk is gone"):
        _seal_first_day(w)
    assert len(started) == 1 and started[0].proc is not None
    assert started[0].proc.returncode is not None  # ended and reaped
    with engine.connect() as c:
        assert _logged_ids(c) == [] and log.heads(c) == []


def test_an_entry_committed_in_the_second_process_range_during_the_seal_waits_for_the_next(
        engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """PostgreSQL, live traffic: an entry with an id inside the second process's range commits
    after the seal took its snapshot. Both sides count the range in that snapshot, so the
    second process's part is used (no reading it again), and the entry is logged by the next
    seal as a straggler."""
    from lianjie import ledger

    if engine.dialect.name != "postgresql":
        pytest.skip("on SQLite the seal holds the write lock: nothing commits while it runs")
    monkeypatch.setattr(log, "PARALLEL_ENTRIES_MIN", 2)
    monkeypatch.setattr(log, "SECOND_PROCESS_SHARE_PERCENT", 100)
    w = make_world(engine, tmp_path)
    w.at(DAY1, 9)
    late = engine.connect()
    in_flight = late.begin()
    a = ledger.open_account(late, w.clock.now(), "tst_late_a", "test", "CNY").id
    b = ledger.open_account(late, w.clock.now(), "tst_late_b", "test", "CNY").id
    booked = ledger.transfer(late, w.clock.now(), "late:in-flight", a, b, 1, code="late")
    assert booked.ok and booked.entry_id is not None
    for consumer in w.consumers * 3:  # committed entries above the one in flight
        w.top_up(consumer, 100_00)
    w.at(DAY1 + timedelta(days=1), 1)
    hash_entries = log._hash_entries

    def commit_the_late_one_first(*args: object, **kw: object) -> None:
        if in_flight.is_active:  # after the snapshot was exported, before the seal counts
            in_flight.commit()
        hash_entries(*args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(log, "_hash_entries", commit_the_late_one_first)
    try:
        with caplog.at_level("WARNING", logger=log.__name__):
            _seal_first_day(w)
    finally:
        late.close()
    assert not in_flight.is_active and _fallbacks(caplog) == []
    with engine.connect() as c:
        assert booked.entry_id not in _logged_ids(c)
    w.at(DAY1 + timedelta(days=2), 1)
    w.run(lambda c: log.seal_day(c, w.clock.now(), DAY1 + timedelta(days=1),
                                 w.cfg.day_end(DAY1 + timedelta(days=1)), w.signer))
    with engine.connect() as c:
        assert booked.entry_id in _logged_ids(c)
        assert log.verify_chain(c, _key(w)) == []


def test_the_leaves_survive_migration_0011_down_and_up(engine: Engine) -> None:
    """0011 makes the leaf index SQLite's rowid (a no-op on PostgreSQL): the rows are kept
    both ways, and afterwards the table is keyed by the leaf index."""
    from alembic import command
    from alembic.config import Config

    from lianjie.db import migrate

    rows = [{"i": i, "e": 100 + i, "h": bytes([i]) * 32} for i in range(5)]
    with engine.begin() as c:
        c.execute(text("INSERT INTO clearing_log_leaves (leaf_index, entry_id, leaf_hash) "
                       "VALUES (:i, :e, :h)"), rows)
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(log.__file__).parents[1] / "migrations"))

    def leaves() -> list[tuple[int, int, bytes]]:
        with engine.connect() as c:
            return [(int(r[0]), int(r[1]), bytes(r[2])) for r in c.execute(text(
                "SELECT leaf_index, entry_id, leaf_hash FROM clearing_log_leaves "
                "ORDER BY leaf_index"))]

    def declared() -> str:
        with engine.connect() as c:
            return str(c.execute(text("SELECT sql FROM sqlite_master "
                                      "WHERE name = 'clearing_log_leaves'")).scalar_one())

    expected = [(r["i"], r["e"], r["h"]) for r in rows]
    with engine.connect() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0010_credit")
        conn.commit()
    assert leaves() == expected
    if engine.dialect.name == "sqlite":
        assert "leaf_index BIGINT" in declared()
    migrate(engine)
    assert leaves() == expected
    if engine.dialect.name == "sqlite":
        assert "leaf_index INTEGER" in declared()
        with engine.connect() as c:
            assert [int(r[0]) for r in c.execute(text(
                "SELECT rowid FROM clearing_log_leaves ORDER BY rowid"))] == list(range(5))
