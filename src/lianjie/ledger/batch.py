"""The batch processor: the single write path for money.

``create_entries(conn, now, entries)`` takes up to ``BATCH_ENTRIES_MAX`` entries and returns one
``EntryResult`` per entry, in order. Each entry succeeds or fails alone; a linked chain succeeds
or fails as a whole. It runs inside the caller's write transaction, so a payment's order update
and its ledger entry commit together.

How a batch runs, and why:

1. Shape checks are pure and need no database.
2. Everything the batch needs is read up front in a few set-based queries through
   ``db.rows_in`` (existing keys, holds, reversal targets, then the accounts, locked ``FOR
   UPDATE`` on PostgreSQL in id order).
3. Entries are applied in order to in-memory working copies of the accounts. For each entry the
   net change per account is computed and checked (status, currency, limits) before anything is
   changed, so a failing entry leaves no trace; a failing chain restores its snapshot.
4. The survivors are written with a handful of bulk statements: entries, postings (with each
   account's running balance), holds, account totals. SQLite gets ``executemany`` of one
   prepared statement (a loop in C); PostgreSQL gets ``COPY`` for the entries and postings and
   one ``UPDATE ... FROM unnest(arrays)`` for the accounts, since a statement per row costs a
   server round of parse, plan and execute each (benchmarks/RESULTS.md has the figures).

Two things keep the Python half short (benchmarks/RESULTS.md, "Ledger"): a one-leg posted entry
takes ``_post_one_leg``, the general path's checks without its per-entry dictionary, and the
cyclic garbage collector is held off while a batch does its own work (``_GcPause``).

Checks here are domain outcomes (error codes); the asserts are for our own bugs.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, text
from sqlalchemy.exc import DBAPIError, IntegrityError

from lianjie.clock import to_us
from lianjie.db import DriverSql, rows_in
from lianjie.errors import ErrorCode
from lianjie.ledger.history import legs_from_postings
from lianjie.ledger.model import (
    BATCH_ENTRIES_MAX,
    COUNTER_MAX,
    HOLD_TIMEOUT_S_MAX,
    KEY_LENGTH_MAX,
    LEGS_PER_ENTRY_MAX,
    SYSTEM_KEY_PREFIX,
    AccountFlags,
    AccountStatus,
    Entry,
    EntryKind,
    EntryResult,
    HoldStatus,
    Leg,
)
from lianjie.money import AMOUNT_MAX

E = ErrorCode
# Values per statement of the batch's reads: SQLite binds one ``?`` per value (at most 32,766);
# PostgreSQL takes one array, so the chunks are only for SQLite's limit.
SQL_IN_CHUNK_MAX = 4000
RACE_RETRY_COUNT_MAX = 3  # PostgreSQL: runs of a batch that lost a race for a key (see _create)
ENTRY_KEY_CONSTRAINT = "uq_ledger_entries_key"
ENTRY_REVERSES_CONSTRAINT = "uq_ledger_entries_reverses_id"
_DMNEC = int(AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS)
_CMNED = int(AccountFlags.CREDITS_MUST_NOT_EXCEED_DEBITS)
_OPEN = AccountStatus.OPEN.value
_FROZEN = AccountStatus.FROZEN.value


class _Acct:
    """A working copy of one account's counters while a batch is applied."""

    __slots__ = ("cp", "cpend", "currency", "dirty", "dp", "dpend", "flags", "id", "seq",
                 "status")
    id: int
    currency: str
    flags: int
    status: str
    dp: int
    cp: int
    dpend: int
    cpend: int
    seq: int
    dirty: bool

    def __init__(self, row: Sequence[Any]) -> None:
        (self.id, self.currency, self.flags, self.status, self.dp, self.cp, self.dpend,
         self.cpend, self.seq) = row
        self.dirty = False

    def snapshot(self) -> tuple[int, int, int, int, int, bool]:
        return (self.dp, self.cp, self.dpend, self.cpend, self.seq, self.dirty)

    def restore(self, snap: tuple[int, int, int, int, int, bool]) -> None:
        self.dp, self.cp, self.dpend, self.cpend, self.seq, self.dirty = snap


class _Hold:
    __slots__ = ("expires_us", "id", "legs", "resolved_by", "status")

    def __init__(self, hold_id: int, status: int, expires_us: int | None,
                 legs: tuple[Leg, ...]) -> None:
        self.id = hold_id
        self.status = status
        self.expires_us = expires_us
        self.legs = legs
        self.resolved_by: int | None = None


class _Batch:
    """Everything one call to ``create_entries`` reads, computes and writes."""

    def __init__(self, now_us: int, accts: dict[int, _Acct], holds: dict[int, _Hold],
                 reversed_ids: set[int], reversal_legs: dict[int, tuple[Leg, ...]],
                 ids: Sequence[int]) -> None:
        self.now_us = now_us
        self.accts = accts
        self.holds = holds
        self.reversed_ids = reversed_ids
        self.reversal_legs = reversal_legs
        # Ids for the entries this batch may create, drawn before they are applied: the k-th
        # entry created takes ids[k], so every output row is built once, in its final form.
        self.ids = ids
        self.entry_rows: list[tuple[object, ...]] = []  # as inserted into ledger_entries
        self.postings: list[tuple[int, int, int, int, int, int, int, int]] = []  # and postings
        self.new_holds: list[tuple[int, int | None, tuple[Leg, ...]]] = []


def create_entries(conn: Connection, now: datetime, entries: Sequence[Entry]) -> list[EntryResult]:
    """Apply a batch of entries; one result per entry, in order. See the module docstring.

    A key starting with ``SYSTEM_KEY_PREFIX`` is refused (``key_reserved``): those are the
    ledger's own."""
    return _create(conn, now, entries, system=False)


def create_system_entries(conn: Connection, now: datetime, entries: Sequence[Entry]
                          ) -> list[EntryResult]:
    """``create_entries`` for the ledger's own entries, whose keys carry ``SYSTEM_KEY_PREFIX``."""
    assert all(e.key.startswith(SYSTEM_KEY_PREFIX) for e in entries)
    return _create(conn, now, entries, system=True)


def _create(conn: Connection, now: datetime, entries: Sequence[Entry], *, system: bool
            ) -> list[EntryResult]:
    assert len(entries) <= BATCH_ENTRIES_MAX, "split batches before they reach the ledger"
    if not entries:
        return []
    return _create_retrying(conn, now, entries, system)


class _GcPause:
    """Python's cyclic garbage collector held off while batches run, on any thread.

    A batch allocates about ten container objects a transfer (rows, results, working copies)
    and frees them all by reference counting when it returns; none forms a cycle. With the
    collector on, those that outlive a few hundred allocations are promoted, and a batch of
    8,190 promotes enough to set off a full collection of everything the process holds, about
    once a batch: a quarter of the ledger's CPU (benchmarks/RESULTS.md). Paused, they die young
    and are never traversed. A pause covers a batch's own work (bounded by
    ``BATCH_ENTRIES_MAX``) and its writes, not its reads: on PostgreSQL the reads are where it
    waits for other transactions' row locks, but an insert may still wait in the pause for
    another session that inserted the same key and has not committed (the race
    ``_create_retrying`` handles), and batches on several threads may overlap so that the
    collector stays off until the last ends. It delays, never skips, the collection of cycles
    other threads make meanwhile. Nested and concurrent
    batches share one pause; the last to finish turns the collector back on, and only if it
    was on when the first began."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._depth = 0
        self._reenable = False

    def __enter__(self) -> None:
        with self._lock:
            if self._depth == 0:
                self._reenable = gc.isenabled()
                gc.disable()
            self._depth += 1

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self._depth -= 1
            if self._depth == 0 and self._reenable:
                gc.enable()


_GC_PAUSE = _GcPause()  # one for the process: the collector is process-wide


def _create_retrying(conn: Connection, now: datetime, entries: Sequence[Entry], system: bool
                     ) -> list[EntryResult]:
    if conn.dialect.name != "postgresql":
        # SQLite has one writer at a time (BEGIN IMMEDIATE): no other transaction can insert
        # one of our keys between our read of the keys and our insert. The lock is held
        # already, so nothing in the batch waits: the collector's pause covers the reads too
        # (fewer survivors promoted: 9 full collections in a 200,000 run instead of 14).
        with _GC_PAUSE:
            return _create_once(conn, now, entries, system)
    # PostgreSQL: another transaction (another process's committer) may insert the same key,
    # or reverse the same entry, after we read the keys and before our insert, which then
    # waits for it and fails on the unique index once it commits. Undo our attempt to a
    # savepoint and run the batch again: the read now sees that entry, and the entry with the
    # key replays it (or the second reversal is refused) as if the two had come in order.
    for attempt in range(RACE_RETRY_COUNT_MAX):
        savepoint = conn.begin_nested()
        try:
            results = _create_once(conn, now, entries, system)
        except IntegrityError as exc:
            savepoint.rollback()
            if attempt + 1 == RACE_RETRY_COUNT_MAX or not _lost_key_race(exc):
                raise
            continue
        savepoint.commit()
        return results
    raise AssertionError("unreachable")


def _lost_key_race(exc: IntegrityError) -> bool:
    name = getattr(getattr(exc.orig, "diag", None), "constraint_name", None)
    return name in (ENTRY_KEY_CONSTRAINT, ENTRY_REVERSES_CONSTRAINT)


def _create_once(conn: Connection, now: datetime, entries: Sequence[Entry], system: bool
                 ) -> list[EntryResult]:
    shape = [_check_shape(e, system) for e in entries]
    existing = _load_existing(conn, {e.key for e in entries})
    holds = _load_holds(conn, {e.pending_id for e in entries if e.pending_id is not None})
    rev_targets = {e.reverses_id for e in entries if e.reverses_id is not None}
    reversed_ids, reversal_legs = _load_reversal_targets(conn, rev_targets)
    account_ids = {x for e in entries for leg in e.legs
                   for x in (leg.debit_account_id, leg.credit_account_id)}
    account_ids.update(x for h in holds.values() for leg in h.legs
                       for x in (leg.debit_account_id, leg.credit_account_id))
    accounts = _load_accounts(conn, account_ids)
    ids = _allocate_entry_ids(conn, sum(1 for error in shape if error is None))
    # The collector is held off from here, after the reads that may wait for row locks on
    # PostgreSQL (an insert can still wait on another session's uncommitted same key: see
    # _GcPause); the batch's working state is freed inside it (only the results outlive
    # _apply_and_write).
    with _GC_PAUSE:
        return _apply_and_write(conn, _Batch(to_us(now), accounts, holds, reversed_ids,
                                             reversal_legs, ids), entries, shape, existing)


def _apply_and_write(conn: Connection, batch: _Batch, entries: Sequence[Entry],
                     shape: list[ErrorCode | None], existing: dict[str, tuple[int, bytes]]
                     ) -> list[EntryResult]:
    results = _apply_all(batch, entries, shape, existing)
    _write(conn, batch)
    return results


# -- 1. shape ------------------------------------------------------------------------------------

def _check_shape(e: Entry, system: bool) -> ErrorCode | None:
    if not isinstance(e.key, str) or not 0 < len(e.key) <= KEY_LENGTH_MAX:
        return E.INVALID_REQUEST
    if not system and e.key.startswith(SYSTEM_KEY_PREFIX):
        return E.KEY_RESERVED
    if e.kind in (EntryKind.POSTED, EntryKind.PENDING):
        if not e.legs:
            return E.ENTRY_EMPTY
        if len(e.legs) > LEGS_PER_ENTRY_MAX:
            return E.ENTRY_TOO_LARGE
        if e.pending_id is not None or e.amounts is not None:
            return E.INVALID_REQUEST
        for leg in e.legs:
            a = leg.amount
            if isinstance(a, bool) or not isinstance(a, int) or a <= 0:
                return E.INVALID_AMOUNT
            if a > AMOUNT_MAX:
                return E.AMOUNT_TOO_LARGE
            if leg.debit_account_id == leg.credit_account_id:
                return E.ACCOUNTS_MUST_BE_DIFFERENT
    else:
        if e.pending_id is None or e.legs or e.reverses_id is not None:
            return E.INVALID_REQUEST
        if e.amounts is not None and any(
                isinstance(a, bool) or not isinstance(a, int) or a < 0 for a in e.amounts):
            return E.INVALID_AMOUNT
    if e.kind == EntryKind.PENDING:
        if not isinstance(e.timeout_s, int) or not 0 <= e.timeout_s <= HOLD_TIMEOUT_S_MAX:
            return E.INVALID_REQUEST
        if e.reverses_id is not None:
            return E.INVALID_REQUEST
    elif e.timeout_s:
        return E.INVALID_REQUEST
    return None


# -- 2. reads ------------------------------------------------------------------------------------

_LOAD_EXISTING = "SELECT key, id, fingerprint FROM ledger_entries WHERE key {in}"
_LOAD_ACCOUNTS = ("SELECT id, currency, flags, status, debits_posted, credits_posted,"
                  " debits_pending, credits_pending, posting_count FROM ledger_accounts"
                  " WHERE id {in} ORDER BY id")
_LOAD_HOLDS = ("SELECT entry_id, status, expires_at FROM ledger_holds WHERE entry_id {in}"
               " ORDER BY entry_id")
_LOAD_HOLD_LEGS = ("SELECT entry_id, debit_account_id, credit_account_id, amount"
                   " FROM ledger_hold_legs WHERE entry_id {in} ORDER BY entry_id, leg_no")
_LOAD_REVERSED = "SELECT reverses_id FROM ledger_entries WHERE reverses_id {in}"
_LOAD_REVERSAL_POSTINGS = ("SELECT entry_id, leg_no, side, account_id, amount"
                           " FROM ledger_postings WHERE entry_id {in}")


def _ids(values: Iterable[object]) -> list[int]:
    """The values that can be ids, ascending (anything else matches no row)."""
    return sorted(v for v in values if isinstance(v, int) and not isinstance(v, bool))


def _rows_in(conn: Connection, sql: str, values: Sequence[object], array_type: str,
             *, lock: bool = False) -> list[Any]:
    """``db.rows_in`` in chunks of ``SQL_IN_CHUNK_MAX``; ``lock``: ``FOR UPDATE`` on
    PostgreSQL, taken chunk after chunk in the order of ``values`` (ids ascending)."""
    if lock and conn.dialect.name == "postgresql":
        sql += " FOR UPDATE"
    return rows_in(conn, sql, (), values, array_type, chunk_max=SQL_IN_CHUNK_MAX)


def _load_existing(conn: Connection, keys: set[str]) -> dict[str, tuple[int, bytes]]:
    rows = _rows_in(conn, _LOAD_EXISTING, [k for k in keys if isinstance(k, str)], "text")
    return {key: (entry_id, bytes(fp)) for key, entry_id, fp in rows}


def _load_accounts(conn: Connection, ids: set[int]) -> dict[int, _Acct]:
    return {row[0]: _Acct(row)
            for row in _rows_in(conn, _LOAD_ACCOUNTS, _ids(ids), "bigint", lock=True)}


def _load_holds(conn: Connection, ids: set[int]) -> dict[int, _Hold]:
    heads = _rows_in(conn, _LOAD_HOLDS, _ids(ids), "bigint", lock=True)
    if not heads:
        return {}
    legs: dict[int, list[Leg]] = {row[0]: [] for row in heads}
    for entry_id, debit, credit, amount in _rows_in(conn, _LOAD_HOLD_LEGS, list(legs), "bigint"):
        legs[entry_id].append(Leg(debit, credit, amount))
    # Driver SQL: expires_at comes back as stored, microseconds since the epoch.
    return {hold_id: _Hold(hold_id, status, expires_us, tuple(legs[hold_id]))
            for hold_id, status, expires_us in heads}


def _load_reversal_targets(conn: Connection, ids: set[int]
                           ) -> tuple[set[int], dict[int, tuple[Leg, ...]]]:
    """Which targets are already reversed, and each target's legs as posted."""
    targets = _ids(ids)
    if not targets:
        return set(), {}
    reversed_ids = {row[0] for row in _rows_in(conn, _LOAD_REVERSED, targets, "bigint")}
    postings: dict[int, list[tuple[int, int, int, int]]] = {}
    for entry_id, leg_no, side, account_id, amount in _rows_in(
            conn, _LOAD_REVERSAL_POSTINGS, targets, "bigint"):
        postings.setdefault(entry_id, []).append((leg_no, side, account_id, amount))
    return reversed_ids, {entry_id: legs_from_postings(found)
                          for entry_id, found in postings.items()}


def _allocate_entry_ids(conn: Connection, n: int) -> Sequence[int]:
    """Ids for up to ``n`` new entries, ascending. On PostgreSQL the ones a batch does not use
    (replays, refused entries) are left as gaps in the sequence."""
    if n == 0:
        return []
    if conn.dialect.name == "postgresql":
        # One row holding an array: fetching n rows cost more than drawing the n values.
        ids = conn.execute(text("SELECT array_agg(nextval('ledger_entry_id_seq')) "
                                "FROM generate_series(1, :n)"), {"n": n}).scalar_one()
        assert len(ids) == n
        return sorted(ids)
    # SQLite: the caller holds the write lock, so max(id) cannot move under us.
    top = _MAX_ENTRY_ID.run(conn, ()).fetchone()[0]
    return range(top + 1, top + 1 + n)


# Run once per batch, so once per payment on the HTTP path: driver SQL (``db.DriverSql``).
_MAX_ENTRY_ID = DriverSql("SELECT COALESCE(MAX(id), 0) FROM ledger_entries")


# -- 3. apply ------------------------------------------------------------------------------------

def _apply_all(batch: _Batch, entries: Sequence[Entry], shape: list[ErrorCode | None],
               existing: dict[str, tuple[int, bytes]]) -> list[EntryResult]:
    results = [EntryResult(None, E.INVALID_REQUEST)] * len(entries)
    # key -> (position in the batch, fingerprint, id) of the entries created so far
    seen: dict[str, tuple[int, bytes, int]] = {}
    i = 0
    n = len(entries)
    while i < n:
        if not entries[i].linked:  # a chain of one, most entries: no snapshot to keep
            results[i] = _apply_one(batch, entries[i], i, shape[i], existing, seen)
            i += 1
            continue
        j = i
        while entries[j].linked and j + 1 < n:
            j += 1
        if entries[j].linked:  # the batch ended inside a chain
            for k in range(i, j + 1):
                results[k] = EntryResult(None, E.LINKED_CHAIN_OPEN)
            break
        _apply_chain(batch, entries, range(i, j + 1), shape, existing, seen, results)
        i = j + 1
    return results


def _apply_chain(batch: _Batch, entries: Sequence[Entry], chain: range,
                 shape: list[ErrorCode | None], existing: dict[str, tuple[int, bytes]],
                 seen: dict[str, tuple[int, bytes, int]], results: list[EntryResult]) -> None:
    linked = len(chain) > 1
    if linked:
        saved = _save(batch, [entries[k] for k in chain])
    for k in chain:
        e = entries[k]
        outcome = _apply_one(batch, e, k, shape[k], existing, seen)
        results[k] = outcome
        if outcome.error is not None:
            if linked:
                _restore(batch, saved)
                for other in chain:
                    results[other] = EntryResult(None, E.LINKED_EVENT_FAILED)
                    if entries[other].key in seen and seen[entries[other].key][0] == other:
                        del seen[entries[other].key]
                results[k] = outcome
            return


def _apply_one(batch: _Batch, e: Entry, index: int, shape_error: ErrorCode | None,
               existing: dict[str, tuple[int, bytes]], seen: dict[str, tuple[int, bytes, int]]
               ) -> EntryResult:
    if shape_error is not None:
        return EntryResult(None, shape_error)
    fp = e.fingerprint()
    prior = existing.get(e.key)
    if prior is not None:
        if prior[1] != fp:
            return EntryResult(prior[0], E.EXISTS_WITH_DIFFERENT_FIELDS)
        return EntryResult(prior[0], None, replayed=True)
    earlier = seen.get(e.key)
    if earlier is not None:
        if earlier[1] != fp:
            return EntryResult(None, E.EXISTS_WITH_DIFFERENT_FIELDS)
        return EntryResult(earlier[2], None, replayed=True)  # created earlier in this batch
    entry_id = batch.ids[len(batch.entry_rows)]
    error = _apply_effects(batch, e, entry_id)
    if error is not None:
        return EntryResult(None, error)
    seen[e.key] = (index, fp, entry_id)
    batch.entry_rows.append((entry_id, e.key, int(e.kind), e.code, e.pending_id, e.reverses_id,
                             fp, e.memo, batch.now_us))
    return EntryResult(entry_id)


def _apply_effects(batch: _Batch, e: Entry, entry_id: int) -> ErrorCode | None:
    if e.kind == EntryKind.POSTED:
        if e.reverses_id is not None:
            error = _check_reversal(batch, e)
            if error is not None:
                return error
        legs = e.legs
        if len(legs) == 1:
            error = _post_one_leg(batch, legs[0], entry_id)
        else:
            error = _apply_legs(batch, legs, entry_id, pending=False)
        if error is None and e.reverses_id is not None:
            # Only a reversal that applied uses up its target; a refused one leaves it free.
            batch.reversed_ids.add(e.reverses_id)
        return error
    if e.kind == EntryKind.PENDING:
        error = _apply_legs(batch, e.legs, entry_id, pending=True)
        if error is None:
            expires = batch.now_us + e.timeout_s * 1_000_000 if e.timeout_s else None
            batch.new_holds.append((entry_id, expires, e.legs))
        return error
    return _resolve_hold(batch, e, entry_id)


def _check_reversal(batch: _Batch, e: Entry) -> ErrorCode | None:
    assert e.reverses_id is not None
    original = batch.reversal_legs.get(e.reverses_id)
    if original is None:
        return E.ENTRY_NOT_FOUND
    if e.reverses_id in batch.reversed_ids:
        return E.ALREADY_REVERSED
    swapped = tuple(Leg(leg.credit_account_id, leg.debit_account_id, leg.amount)
                    for leg in original)
    if e.legs != swapped:
        return E.INVALID_REQUEST
    return None


def _account_error(batch: _Batch, legs: Sequence[Leg], *, allow_frozen: bool = False
                   ) -> ErrorCode | None:
    accts = batch.accts
    for leg in legs:
        d = accts.get(leg.debit_account_id)
        c = accts.get(leg.credit_account_id)
        if d is None or c is None:
            return E.ACCOUNT_NOT_FOUND
        if d.currency != c.currency:
            return E.CURRENCY_MISMATCH
        for a in (d, c):
            if a.status != _OPEN and not (allow_frozen and a.status == _FROZEN):
                return E.ACCOUNT_FROZEN if a.status == _FROZEN else E.ACCOUNT_CLOSED
    return None


def _overflow_error(dp: int, cp: int, dpend: int, cpend: int) -> ErrorCode:
    """Which counter passes ``COUNTER_MAX``, in TigerBeetle's order (all are >= 0)."""
    if dpend > COUNTER_MAX:
        return E.OVERFLOWS_DEBITS_PENDING
    if cpend > COUNTER_MAX:
        return E.OVERFLOWS_CREDITS_PENDING
    if dp > COUNTER_MAX:
        return E.OVERFLOWS_DEBITS_POSTED
    if cp > COUNTER_MAX:
        return E.OVERFLOWS_CREDITS_POSTED
    return E.OVERFLOWS_DEBITS if dp + dpend > COUNTER_MAX else E.OVERFLOWS_CREDITS


def _limit_error(a: _Acct, dp: int, cp: int, dpend: int, cpend: int) -> ErrorCode | None:
    if a.flags & _DMNEC and dp + dpend > cp:
        return E.INSUFFICIENT_FUNDS
    if a.flags & _CMNED and cp + cpend > dp:
        return E.CREDIT_LIMIT_EXCEEDED
    return None


def _apply_legs(batch: _Batch, legs: tuple[Leg, ...], entry_id: int, *, pending: bool
                ) -> ErrorCode | None:
    error = _account_error(batch, legs)
    if error is not None:
        return error
    accts = batch.accts
    delta: dict[int, list[int]] = {}
    for leg in legs:
        delta.setdefault(leg.debit_account_id, [0, 0])[0] += leg.amount
        delta.setdefault(leg.credit_account_id, [0, 0])[1] += leg.amount
    for acct_id, (dd, dc) in delta.items():
        a = accts[acct_id]
        if pending:
            dp, cp, dpend, cpend = a.dp, a.cp, a.dpend + dd, a.cpend + dc
        else:
            dp, cp, dpend, cpend = a.dp + dd, a.cp + dc, a.dpend, a.cpend
        if dp + dpend > COUNTER_MAX or cp + cpend > COUNTER_MAX:
            return _overflow_error(dp, cp, dpend, cpend)
        if a.flags:
            error = _limit_error(a, dp, cp, dpend, cpend)
            if error is not None:
                return error
    if pending:
        for leg in legs:
            d, c = accts[leg.debit_account_id], accts[leg.credit_account_id]
            d.dpend += leg.amount
            c.cpend += leg.amount
            d.dirty = c.dirty = True
        return None
    _post_legs(batch, legs, entry_id)
    return None


def _post_one_leg(batch: _Batch, leg: Leg, entry_id: int) -> ErrorCode | None:
    """``_apply_legs(batch, (leg,), entry_id, pending=False)``, the shape of most entries (a
    payment, a transfer), without its per-entry dictionary and loops: the same checks in the
    same order, the same postings. tests/test_ledger_lean.py checks the two agree."""
    accts = batch.accts
    d = accts.get(leg.debit_account_id)
    c = accts.get(leg.credit_account_id)
    if (d is None or c is None or d.currency != c.currency or d.status != _OPEN
            or c.status != _OPEN):
        return _account_error(batch, (leg,))  # names what refuses it
    assert d is not c, "the shape check refuses a leg from an account to itself"
    amount = leg.amount
    dp = d.dp + amount
    if dp + d.dpend > COUNTER_MAX or d.cp + d.cpend > COUNTER_MAX:
        return _overflow_error(dp, d.cp, d.dpend, d.cpend)
    if d.flags:
        error = _limit_error(d, dp, d.cp, d.dpend, d.cpend)
        if error is not None:
            return error
    cp = c.cp + amount
    if c.dp + c.dpend > COUNTER_MAX or cp + c.cpend > COUNTER_MAX:
        return _overflow_error(c.dp, cp, c.dpend, c.cpend)
    if c.flags:
        error = _limit_error(c, c.dp, cp, c.dpend, c.cpend)
        if error is not None:
            return error
    now_us = batch.now_us
    d.dp = dp
    d.seq = d_seq = d.seq + 1
    d.dirty = True
    c.cp = cp
    c.seq = c_seq = c.seq + 1
    c.dirty = True
    batch.postings += ((entry_id, 0, 0, d.id, d_seq, -amount, d.cp - dp, now_us),
                       (entry_id, 0, 1, c.id, c_seq, amount, cp - c.dp, now_us))
    return None


def _post_legs(batch: _Batch, legs: Sequence[Leg], entry_id: int) -> None:
    accts = batch.accts
    out = batch.postings
    now_us = batch.now_us
    for leg_no, leg in enumerate(legs):
        amount = leg.amount
        if amount == 0:
            continue
        d, c = accts[leg.debit_account_id], accts[leg.credit_account_id]
        d.dp += amount
        d.seq += 1
        d.dirty = True
        out.append((entry_id, leg_no, 0, d.id, d.seq, -amount, d.cp - d.dp, now_us))
        c.cp += amount
        c.seq += 1
        c.dirty = True
        out.append((entry_id, leg_no, 1, c.id, c.seq, amount, c.cp - c.dp, now_us))


def _resolve_hold(batch: _Batch, e: Entry, entry_id: int) -> ErrorCode | None:
    assert e.pending_id is not None
    hold = batch.holds.get(e.pending_id)
    if hold is None:
        return E.HOLD_NOT_FOUND
    if hold.status == HoldStatus.POSTED:
        return E.HOLD_ALREADY_POSTED
    if hold.status in (HoldStatus.VOIDED, HoldStatus.EXPIRED):
        return E.HOLD_ALREADY_VOIDED if hold.status == HoldStatus.VOIDED else E.HOLD_EXPIRED
    posting = e.kind == EntryKind.POST_PENDING
    expired = hold.expires_us is not None and batch.now_us >= hold.expires_us
    if posting and expired:
        return E.HOLD_EXPIRED
    amounts = e.amounts if e.amounts is not None else tuple(leg.amount for leg in hold.legs)
    if not posting:
        amounts = tuple(0 for _ in hold.legs)
    if len(amounts) != len(hold.legs):
        return E.INVALID_REQUEST
    if any(a > leg.amount for a, leg in zip(amounts, hold.legs, strict=True)):
        return E.HOLD_AMOUNT_EXCEEDED
    error = _account_error(batch, hold.legs, allow_frozen=not posting)
    if error is not None:
        return error
    for leg in hold.legs:
        d, c = batch.accts[leg.debit_account_id], batch.accts[leg.credit_account_id]
        d.dpend -= leg.amount
        c.cpend -= leg.amount
        d.dirty = c.dirty = True
        assert d.dpend >= 0 and c.cpend >= 0
    posted = [Leg(leg.debit_account_id, leg.credit_account_id, a)
              for leg, a in zip(hold.legs, amounts, strict=True)]
    _post_legs(batch, posted, entry_id)
    if posting:
        hold.status = HoldStatus.POSTED
    elif e.code == "hold_expired" and expired:
        hold.status = HoldStatus.EXPIRED
    else:
        hold.status = HoldStatus.VOIDED
    hold.resolved_by = entry_id
    return None


def _save(batch: _Batch, chain: list[Entry]) -> tuple[dict[int, tuple[int, int, int, int, int,
                                                                         bool]],
                                                       dict[int, tuple[int, int | None]],
                                                       int, int, int, set[int]]:
    ids: set[int] = set()
    for e in chain:
        legs = e.legs
        if e.pending_id is not None and e.pending_id in batch.holds:
            legs = legs + batch.holds[e.pending_id].legs
        for leg in legs:
            ids.add(leg.debit_account_id)
            ids.add(leg.credit_account_id)
    accts = {i: batch.accts[i].snapshot() for i in ids if i in batch.accts}
    holds = {h.id: (h.status, h.resolved_by) for h in batch.holds.values()}
    return (accts, holds, len(batch.entry_rows), len(batch.postings), len(batch.new_holds),
            set(batch.reversed_ids))


def _restore(batch: _Batch, saved: tuple[dict[int, tuple[int, int, int, int, int, bool]],
                                         dict[int, tuple[int, int | None]],
                                         int, int, int, set[int]]) -> None:
    accts, holds, n_created, n_postings, n_holds, reversed_ids = saved
    for acct_id, snap in accts.items():
        batch.accts[acct_id].restore(snap)
    for hold_id, (status, resolved) in holds.items():
        batch.holds[hold_id].status = status
        batch.holds[hold_id].resolved_by = resolved
    del batch.entry_rows[n_created:]
    del batch.postings[n_postings:]
    del batch.new_holds[n_holds:]
    batch.reversed_ids = reversed_ids


# -- 4. writes -----------------------------------------------------------------------------------

def _placeholders(conn: Connection, n: int) -> str:
    mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    return ", ".join([mark] * n)


def _write(conn: Connection, batch: _Batch) -> None:
    if not batch.entry_rows:
        return
    _insert(conn, "ledger_entries", "id, key, kind, code, pending_id, reverses_id, fingerprint,"
            " memo, created_at", batch.entry_rows)
    if batch.postings:
        _insert(conn, "ledger_postings", "entry_id, leg_no, side, account_id, account_seq,"
                " amount, balance_after, created_at", batch.postings)
    _write_holds(conn, batch)
    dirty = [(a.dp, a.cp, a.dpend, a.cpend, a.seq, a.id) for a in batch.accts.values()
             if a.dirty]
    if dirty:
        _update_accounts(conn, dirty)


def _insert(conn: Connection, table: str, columns: str, rows: Sequence[tuple[object, ...]]
            ) -> None:
    """Insert rows: ``executemany`` on SQLite, ``COPY`` on PostgreSQL (see the docstring)."""
    if conn.dialect.name != "postgresql":
        marks = _placeholders(conn, columns.count(",") + 1)
        conn.exec_driver_sql(f"INSERT INTO {table} ({columns}) VALUES ({marks})", rows)
        return
    sql = f"COPY {table} ({columns}) FROM STDIN"
    dbapi_error = conn.dialect.loaded_dbapi.Error
    driver_conn = conn.connection.driver_connection  # psycopg: same session, same transaction
    assert driver_conn is not None
    try:
        with driver_conn.cursor() as cur, cur.copy(sql) as copy:
            for row in rows:
                copy.write_row(row)
    except dbapi_error as exc:
        # Raise what SQLAlchemy raises for any other statement, so that callers (the
        # committer retrying a deadlock) see the same exception types.
        raise DBAPIError.instance(sql, None, exc, dbapi_error) from exc


def _update_accounts(conn: Connection, dirty: Sequence[tuple[object, ...]]) -> None:
    """Write each account's new totals; a row is (dp, cp, dpend, cpend, seq, id)."""
    if conn.dialect.name == "postgresql":
        result = conn.exec_driver_sql(
            "UPDATE ledger_accounts AS a SET debits_posted = u.dp, credits_posted = u.cp,"
            " debits_pending = u.dpend, credits_pending = u.cpend, posting_count = u.seq"
            " FROM unnest(%s::bigint[], %s::bigint[], %s::bigint[], %s::bigint[],"
            " %s::bigint[], %s::bigint[]) AS u (dp, cp, dpend, cpend, seq, id)"
            " WHERE a.id = u.id", tuple(list(col) for col in zip(*dirty, strict=True)))
    else:
        result = conn.exec_driver_sql(
            "UPDATE ledger_accounts SET debits_posted = ?, credits_posted = ?,"
            " debits_pending = ?, credits_pending = ?, posting_count = ? WHERE id = ?", dirty)
    assert result.rowcount == len(dirty), "an account this batch read and locked has gone"


def _write_holds(conn: Connection, batch: _Batch) -> None:
    if batch.new_holds:
        conn.exec_driver_sql(
            "INSERT INTO ledger_holds (entry_id, status, expires_at, resolved_by_id) "
            f"VALUES ({_placeholders(conn, 4)})",
            [(i, int(HoldStatus.PENDING), exp, None) for i, exp, _ in batch.new_holds])
        conn.exec_driver_sql(
            "INSERT INTO ledger_hold_legs (entry_id, leg_no, debit_account_id, "
            f"credit_account_id, amount) VALUES ({_placeholders(conn, 5)})",
            [(i, n, leg.debit_account_id, leg.credit_account_id, leg.amount)
             for i, _, legs in batch.new_holds for n, leg in enumerate(legs)])
    resolved = [(int(h.status), h.resolved_by, h.id)
                for h in batch.holds.values() if h.resolved_by is not None]
    if resolved:
        mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
        conn.exec_driver_sql(
            f"UPDATE ledger_holds SET status = {mark}, resolved_by_id = {mark} "
            f"WHERE entry_id = {mark}", resolved)

