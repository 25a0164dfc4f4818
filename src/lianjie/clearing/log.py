"""The tamper-evident log: every ledger entry, in id order, as a leaf of one append-only Merkle
log, with a signed tree head per business day chained to the previous day's root.

A leaf is SHA-256(0x00 || canonical bytes of the entry and its postings); canonical bytes are
sorted-key compact JSON (``entry_bytes``), which the stand-alone verifier parses back to compare
a statement line with what was signed. The log stores each leaf hash and every complete subtree
hash of 16 leaves or more (``clearing_log_nodes``; smaller ones are folded from at most 8 leaf
hashes when asked), so an inclusion or consistency proof is O(log n) lookups instead of a pass
over the day.

Sealing is the hot path of end of day (one leaf per ledger entry): the database builds each
entry's canonical bytes, Python only hashes them and builds the tree level by level. A long day
is read by two processes, since building the bytes is CPU work inside the database library
(SQLite) or server (PostgreSQL): a second one builds and hashes the upper part of the id range
(over the same snapshot on PostgreSQL) and streams the hashes back, while this one hashes the
lower part and stores its leaves, then the other's as they arrive.

Appending takes the entries not yet logged whose ``created_at`` is before the day's cut-off; an
entry that commits late (after a day was signed) is logged with the next day rather than lost.
``verify_chain`` recomputes every leaf from the ledger and names entries edited, deleted or
inserted after the fact, then recomputes every day's root, chain link and signature.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import queue
import re
import struct
import subprocess
import sys
import threading
from array import array
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import Connection, select, text

from lianjie.clearing import merkle
from lianjie.clearing import schema as s
from lianjie.clearing.signing import Signer
from lianjie.clock import to_us
from lianjie.errors import DomainError, ErrorCode

ZERO_HASH = b"\x00" * 32
READ_BATCH_ENTRIES = 20_000
NODE_LOOKUPS_MAX = 4096  # stored subtree hashes one proof (or one root) may read
LOOKUP_BATCH_KEYS = 500  # stored hashes read by one query for a statement's proofs
# Complete subtrees of 2, 4 and 8 leaves are not stored: a proof recomputes one from at most 8
# leaf hashes (one range read), and the log writes about n/8 node rows instead of n.
NODE_LEVEL_STORED_MIN = 4
# A seal with at least this many new entries shares its range with a second process (starting
# one costs about a second of CPU; at 1 million entries each part takes several seconds).
PARALLEL_ENTRIES_MIN = 300_000
# The second process's share of the range (the upper part): this one also stores every leaf
# (about 1.6 µs of CPU a row on SQLite, against about 4.5 µs to build and hash one) and builds
# the tree, so it takes the smaller part. At 10 million entries on SQLite, 70% gave 31 s of CPU
# there and about 35 s here, and a 35 s seal on an otherwise idle machine.
SECOND_PROCESS_SHARE_PERCENT = 70
# While the other process's pages arrive, the subtrees their leaves complete are built and stored
# every so many leaves (each step reads at most one stored left sibling per level).
TREE_STEP_LEAVES = 200_000

logger = logging.getLogger(__name__)


def entry_bytes(entry: dict[str, Any], postings: list[list[int]]) -> bytes:
    """Canonical bytes of an entry: compact JSON with sorted keys; postings sorted."""
    body = dict(entry)
    body["postings"] = sorted(postings)
    return orjson.dumps(body, option=orjson.OPT_SORT_KEYS)


# The canonical bytes of each entry, built by the database: Python streams one text column per
# entry and hashes it, instead of fetching every posting and assembling JSON itself (SQLite's
# json_group_array of json_array is ~15% cheaper than printf and group_concat). Both
# statements must produce exactly what ``entry_bytes`` produces (keys in sorted order, no spaces,
# postings sorted by (leg_no, side), strings escaped as orjson escapes them, which SQLite's
# json_quote and PostgreSQL's to_json both do); tests compare them on awkward entries.
_CANONICAL_SQLITE = (
    "SELECT e.id, printf('{\"code\":%s,\"created_at_us\":%d,\"id\":%d,\"key\":%s,"
    "\"kind\":%d,\"memo\":%s,\"pending_id\":%s,\"postings\":%s,\"reverses_id\":%s}', "
    "json_quote(e.code), e.created_at, e.id, json_quote(e.key), e.kind, json_quote(e.memo), "
    "COALESCE(e.pending_id, 'null'), COALESCE(("
    "SELECT json_group_array(json_array(p.leg_no, p.side, p.account_id, p.account_seq, "
    "p.amount, p.balance_after)) FROM ("
    "SELECT * FROM ledger_postings p WHERE p.entry_id = e.id ORDER BY p.leg_no, p.side) p"
    "), '[]'), COALESCE(e.reverses_id, 'null')), e.created_at "
    "FROM ledger_entries e WHERE e.id > :after AND e.id <= :upto {extra} ORDER BY e.id "
    "LIMIT :n")
_CANONICAL_POSTGRESQL = (
    "SELECT e.id, '{\"code\":' || CAST(to_json(e.code) AS text) "
    "|| ',\"created_at_us\":' || e.created_at || ',\"id\":' || e.id "
    "|| ',\"key\":' || CAST(to_json(e.key) AS text) || ',\"kind\":' || e.kind "
    "|| ',\"memo\":' || COALESCE(CAST(to_json(e.memo) AS text), 'null') "
    "|| ',\"pending_id\":' || COALESCE(CAST(e.pending_id AS text), 'null') "
    "|| ',\"postings\":[' || COALESCE(("
    "SELECT string_agg('[' || p.leg_no || ',' || p.side || ',' || p.account_id || ',' "
    "|| p.account_seq || ',' || p.amount || ',' || p.balance_after || ']', ',' "
    "ORDER BY p.leg_no, p.side) FROM ledger_postings p WHERE p.entry_id = e.id), '') "
    "|| '],\"reverses_id\":' || COALESCE(CAST(e.reverses_id AS text), 'null') || '}', "
    "e.created_at "
    "FROM ledger_entries e WHERE e.id > :after AND e.id <= :upto {extra} ORDER BY e.id "
    "LIMIT :n")


def _raw(conn: Connection, sql: str) -> tuple[Any, str]:
    """A DB-API cursor in the connection's transaction, and ``sql`` in its parameter style.

    The log reads and writes every entry of the day: SQLAlchemy's per-row result objects cost
    more than the hashing, so this hot path talks to the driver directly."""
    cur = conn.connection.cursor()
    if conn.dialect.name == "postgresql":
        sql = re.sub(r":(\w+)", r"%(\1)s", sql)
    return cur, sql


def iter_canonical(conn: Connection, after_id: int, upto_id: int, extra: str = "",
                   params: dict[str, Any] | None = None, page: int | None = None
                   ) -> Iterator[tuple[int, bytes, int]]:
    """(entry id, canonical bytes, created_at µs) for entries in (after_id, upto_id], id order,
    read in keyset pages of ``page`` entries (default ``READ_BATCH_ENTRIES``)."""
    sql = _CANONICAL_POSTGRESQL if conn.dialect.name == "postgresql" else _CANONICAL_SQLITE
    cur, sql = _raw(conn, sql.replace("{extra}", extra))
    page = page or READ_BATCH_ENTRIES
    lo = after_id
    while True:
        cur.execute(sql, {"after": lo, "upto": upto_id, "n": page, **(params or {})})
        rows = cur.fetchall()
        for r in rows:
            yield r[0], r[1].encode(), r[2]
        if len(rows) < page:
            return
        lo = rows[-1][0]


def _insert_many(conn: Connection, table: str, cols: tuple[str, ...],
                 rows: Iterable[tuple[Any, ...]]) -> None:
    marks = ", ".join(f":{c}" for c in cols)
    cur, sql = _raw(conn, f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({marks})")
    if conn.dialect.name == "sqlite":
        sql = f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' for _ in cols)})"
        cur.executemany(sql, rows)
        return
    with cur.copy(f"COPY {table} ({', '.join(cols)}) FROM STDIN") as copy:
        for r in rows:
            copy.write_row(r)


def tree_size(conn: Connection) -> int:
    return int(conn.execute(text("SELECT COUNT(*) FROM clearing_log_leaves")).scalar_one())


def _last_logged_entry(conn: Connection) -> int:
    return int(conn.execute(text("SELECT COALESCE(MAX(entry_id), 0) FROM clearing_log_leaves"))
               .scalar_one())


def append_until(conn: Connection, cutoff: datetime) -> tuple[int, int]:
    """Append every unlogged entry created before ``cutoff``; (old size, new size)."""
    old = tree_size(conn)
    last = _last_logged_entry(conn)
    top = int(conn.execute(text("SELECT COALESCE(MAX(id), 0) FROM ledger_entries")).scalar_one())
    cut = to_us(cutoff)
    ids: list[int] = []
    hashes: list[bytes] = []
    # stragglers: entries below the last logged id that committed after it was logged
    stragglers = conn.execute(text(
        "SELECT e.id FROM ledger_entries e LEFT JOIN clearing_log_leaves l ON l.entry_id = e.id "
        "WHERE e.id <= :last AND l.entry_id IS NULL AND e.created_at < :cut ORDER BY e.id"),
        {"last": last, "cut": cut}).scalars().all()
    for entry_id in stragglers:
        _hash_entries(conn, entry_id - 1, entry_id, cut, ids, hashes)
    other: _OtherPart | None = None
    upto = top
    if top - last >= PARALLEL_ENTRIES_MIN and _can_share(conn):
        upto = top - (top - last) * SECOND_PROCESS_SHARE_PERCENT // 100
        other = _OtherPart(conn, upto, top, cut)
    try:
        _hash_entries(conn, last, upto, cut, ids, hashes)
        _insert_leaves(conn, old, ids, hashes)
        _store_nodes(conn, old, hashes)
        new = old + len(hashes)
        if other is not None:  # its leaves follow, stored (and their tree built) as they arrive
            new += other.store(conn, new)
    finally:
        if other is not None:
            other.close()
    return old, new


def _hash_entries(conn: Connection, after_id: int, upto_id: int, cut: int, ids: list[int],
                  hashes: list[bytes], full: Callable[[], None] | None = None,
                  page: int | None = None) -> None:
    """Append the id and leaf hash of each entry in (after_id, upto_id] created before ``cut``,
    read ``page`` entries at a time; ``full`` runs each time ``ids`` holds a multiple of
    ``page`` (the second process sends and clears them)."""
    sha256 = hashlib.sha256  # merkle.leaf_hash inlined: this loop runs once per entry
    page = page or READ_BATCH_ENTRIES
    for eid, data, _ in iter_canonical(conn, after_id, upto_id, "AND e.created_at < :cut",
                                       {"cut": cut}, page):
        ids.append(eid)
        hashes.append(sha256(b"\x00" + data).digest())
        if full is not None and len(ids) % page == 0:
            full()


def _insert_leaves(conn: Connection, first: int, ids: list[int], hashes: list[bytes]) -> None:
    _insert_many(conn, "clearing_log_leaves", ("leaf_index", "entry_id", "leaf_hash"),
                 zip(range(first, first + len(ids)), ids, hashes, strict=True))


def _can_share(conn: Connection) -> bool:
    """Whether a second process can open this database: not an in-memory SQLite one."""
    return conn.dialect.name == "postgresql" or conn.engine.url.database not in (None, "",
                                                                                 ":memory:")


_COUNT_IN_RANGE = "SELECT COUNT(*) FROM ledger_entries WHERE id > :a AND id <= :b"


def _count_entries(conn: Connection, after_id: int, upto_id: int) -> int:
    return int(conn.execute(text(_COUNT_IN_RANGE), {"a": after_id, "b": upto_id}).scalar_one())


class _OtherPart:
    """The entries in (after_id, upto_id], hashed by a second process while this one hashes the
    entries below and stores their leaves.

    It reads what this transaction reads: on PostgreSQL it imports this transaction's snapshot
    (``pg_export_snapshot``); on SQLite the seal holds the write lock, so no entry commits while
    it reads. Entries are immutable and never deleted, so the other process sees a subset of what
    this transaction sees in the range; equal counts make the sets equal (a check that also
    covers entries this transaction wrote and has not committed). If the counts differ, or the
    process fails, the leaves stored from it are deleted and this process reads the range.

    The process is a fresh interpreter started with ``subprocess`` (not ``multiprocessing``,
    whose spawn re-runs the caller's main script, and whose fork would copy open connections and
    other threads' locks). It takes its job as JSON on stdin and answers on a pipe of its own
    (not stdout, where anything the interpreter or a library prints would break the framing) a
    page at a time; a thread here drains the pipe into a queue so it never waits, and ``store``
    writes the pages' leaves as they come (one connection: they are rows of this transaction).
    ``close`` ends the process if the seal stops before reading it all.

    The range's entry count this transaction sees is taken when the process starts: on
    PostgreSQL in the statement that exports the snapshot, so entries other transactions commit
    in the range while the seal runs (they are logged with the next seal, as stragglers) are
    not counted on one side only."""

    def __init__(self, conn: Connection, after_id: int, upto_id: int, cut: int) -> None:
        self.range = (after_id, upto_id, cut)
        self.pages: queue.SimpleQueue[tuple[int, int, bytes] | None] = queue.SimpleQueue()
        snapshot = None
        if conn.dialect.name == "postgresql":  # one statement: one snapshot for both
            row = conn.execute(text(f"SELECT pg_export_snapshot(), ({_COUNT_IN_RANGE})"),
                               {"a": after_id, "b": upto_id}).one()
            snapshot, self.expected = str(row[0]), int(row[1])
        else:  # the seal holds SQLite's write lock: nothing commits while it runs
            self.expected = _count_entries(conn, after_id, upto_id)
        self.proc: subprocess.Popen[bytes] | None = None
        self.out: Any = None
        read_fd, write_fd = os.pipe()
        job = {"url": conn.engine.url.render_as_string(hide_password=False),
               "snapshot": snapshot, "after_id": after_id, "upto_id": upto_id, "cut": cut,
               "page": READ_BATCH_ENTRIES, "fd": write_fd}
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", "from lianjie.clearing.log import _serve_range; "
                 "_serve_range()"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                pass_fds=(write_fd,), env=env)
            assert self.proc.stdin is not None
            self.proc.stdin.write(json.dumps(job).encode())
            self.proc.stdin.close()
        except OSError:
            logger.exception("could not start a second seal process; reading its range here")
            os.close(read_fd)
            return
        finally:
            os.close(write_fd)  # the child's copy is the only writer: EOF when it exits
        self.out = os.fdopen(read_fd, "rb")
        self.reader = threading.Thread(target=self._read, name="seal-pages", daemon=True)
        self.reader.start()

    def close(self) -> None:
        """End the process if it still runs (the seal failed or stopped early) and wait for
        it and the reading thread."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.reader.join()
        self.out.close()

    def _read(self) -> None:
        """(in the thread) Queue each page as it arrives: (-1, n, ids and hashes), and last
        (count, 0, b""); None if the stream ends early."""
        out = self.out
        while True:
            head = out.read(16)
            if len(head) < 16:
                self.pages.put(None)
                return
            count, n = struct.unpack("<qq", head)
            body = out.read(40 * n)
            if len(body) < 40 * n:
                self.pages.put(None)
                return
            self.pages.put((count, n, body))
            if count >= 0:
                return

    def store(self, conn: Connection, first_leaf: int) -> int:
        """Store the range's leaves from ``first_leaf`` on, and the subtrees they complete, as
        the pages arrive (the tree in steps of ``TREE_STEP_LEAVES``); how many leaves."""
        after_id, upto_id, cut = self.range
        expected = self.expected
        stored = 0
        pending: list[bytes] = []  # leaves stored, not yet in the tree
        count = -1
        while self.proc is not None:
            page = self.pages.get()
            if page is None:
                break
            count, n, body = page
            if count >= 0:
                break
            hashes = [body[i:i + 32] for i in range(8 * n, 40 * n, 32)]
            _insert_leaves(conn, first_leaf + stored, list(array("q", body[:8 * n])), hashes)
            stored += n
            pending.extend(hashes)
            if len(pending) >= TREE_STEP_LEAVES:
                _store_nodes(conn, first_leaf + stored - len(pending), pending)
                pending = []
        if self.proc is not None:
            self.proc.wait()
            self.reader.join()
            if count < 0:
                logger.error("the second seal process failed (exit %s); reading its range "
                             "here", self.proc.returncode)
        if count == expected:
            _store_nodes(conn, first_leaf + stored - len(pending), pending)
            return stored
        if count >= 0:
            logger.warning("the second seal process saw %d entries in (%d, %d], not the "
                           "seal's %d; reading the range here", count, after_id, upto_id,
                           expected)
        _truncate(conn, first_leaf)
        ids: list[int] = []
        pending = []
        _hash_entries(conn, after_id, upto_id, cut, ids, pending)
        _insert_leaves(conn, first_leaf, ids, pending)
        _store_nodes(conn, first_leaf, pending)
        return len(ids)


def _truncate(conn: Connection, size: int) -> None:
    """Drop the leaves from ``size`` on and every stored subtree that covers one of them (only
    within the transaction that stored them: a signed log is never cut)."""
    conn.execute(text("DELETE FROM clearing_log_leaves WHERE leaf_index >= :size"),
                 {"size": size})
    for level in range(NODE_LEVEL_STORED_MIN, 64):
        conn.execute(text("DELETE FROM clearing_log_nodes WHERE level = :level "
                          "AND node_index >= :first"), {"level": level, "first": size >> level})


def _serve_range() -> None:
    """The second process: read a job from stdin; write to the job's pipe a page at a time
    (-1, leaves, ids as int64, leaf hashes), then (entries in the range, 0)."""
    from lianjie.db import make_engine

    job = json.loads(sys.stdin.buffer.read())
    engine = make_engine(job["url"])
    out = os.fdopen(job["fd"], "wb")
    ids: list[int] = []
    hashes: list[bytes] = []

    def send() -> None:
        out.write(struct.pack("<qq", -1, len(ids)))
        out.write(array("q", ids).tobytes())
        out.write(b"".join(hashes))
        out.flush()
        ids.clear()
        hashes.clear()

    try:
        with engine.connect() as conn:
            if job["snapshot"] is not None:
                conn = conn.execution_options(isolation_level="REPEATABLE READ")
                conn.execute(text(f"SET TRANSACTION SNAPSHOT '{job['snapshot']}'"))
            _hash_entries(conn, job["after_id"], job["upto_id"], job["cut"], ids, hashes, send,
                          job["page"])
            send()
            count = _count_entries(conn, job["after_id"], job["upto_id"])
            conn.rollback()
    finally:
        engine.dispose()
    out.write(struct.pack("<qq", count, 0))
    out.flush()


def _store_nodes(conn: Connection, old: int, new_leaves: list[bytes]) -> None:
    """Store each complete subtree that the new leaves finish, level by level."""
    new = old + len(new_leaves)
    below, below_start = new_leaves, old  # the level below: its new nodes and where they start
    level = 1
    while True:
        first, last = old >> level, new >> level  # this level's newly complete nodes
        if first >= last:
            return
        if 2 * first < below_start:  # the first new node's left child was stored before
            below, below_start = [_stored(conn, level - 1, 2 * first), *below], 2 * first
        nodes = merkle.parents(below[2 * first - below_start:2 * last - below_start])
        if level >= NODE_LEVEL_STORED_MIN:
            _insert_many(conn, "clearing_log_nodes", ("level", "node_index", "hash"),
                         [(level, first + i, h) for i, h in enumerate(nodes)])
        below, below_start = nodes, first
        level += 1


def _stored(conn: Connection, level: int, index: int) -> bytes:
    """The hash of complete subtree ``index`` of ``level`` (level 0: a leaf)."""
    if level == 0:
        found = conn.execute(select(s.log_leaves.c.leaf_hash)
                             .where(s.log_leaves.c.leaf_index == index)).scalar_one()
    elif level < NODE_LEVEL_STORED_MIN:
        leaves = s.log_leaves.c.leaf_index
        hashes = [bytes(h) for h in conn.execute(
            select(s.log_leaves.c.leaf_hash).where(leaves >= index << level,
                                                   leaves < (index + 1) << level)
            .order_by(leaves)).scalars()]
        assert len(hashes) == 1 << level, f"subtree {level}/{index} is not complete"
        found = merkle.root(hashes)
    else:
        found = conn.execute(select(s.log_nodes.c.hash).where(
            s.log_nodes.c.level == level, s.log_nodes.c.node_index == index)).scalar_one()
    return bytes(found)


def stored_subtree(conn: Connection, lookups_max: int = NODE_LOOKUPS_MAX) -> merkle.Subtree:
    """``subtree(a, b)`` over the stored log, from complete subtree hashes (at most
    ``lookups_max`` distinct ones read and kept)."""
    cache: dict[tuple[int, int], bytes] = {}

    def complete(level: int, index: int) -> bytes:
        if (level, index) not in cache:
            assert len(cache) < lookups_max
            cache[(level, index)] = _stored(conn, level, index)
        return cache[(level, index)]

    return _composed(complete)


def proofs_subtree(conn: Connection, leaf_indexes: Iterable[int], size: int
                   ) -> merkle.Subtree:
    """``subtree(a, b)`` for the inclusion proofs of ``leaf_indexes`` in the tree of ``size``
    leaves (a statement's proofs): the complete subtree hashes they need are found first (they
    depend on the indexes alone) and read in batches of ``LOOKUP_BATCH_KEYS``, instead of a query
    each."""
    wanted: set[tuple[int, int]] = set()

    def record(level: int, index: int) -> bytes:
        wanted.add((level, index))
        return b""

    for index in leaf_indexes:
        merkle.inclusion_path(_composed(record), index, size)
    found = _stored_many(conn, wanted)
    return _composed(lambda level, index: found[(level, index)])


def _composed(complete: Callable[[int, int], bytes]) -> merkle.Subtree:
    """``subtree(a, b)`` from ``complete(level, index)``, the hash of a complete subtree."""
    def subtree(a: int, b: int) -> bytes:
        n = b - a
        assert n >= 1
        if n & (n - 1) == 0 and a % n == 0:
            level = n.bit_length() - 1
            return complete(level, a >> level)
        k = merkle.split(n)
        return merkle.node_hash(subtree(a, a + k), subtree(a + k, b))

    return subtree


def _stored_many(conn: Connection, keys: set[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
    """The hashes of complete subtrees ``keys`` (as ``_stored``), in batched reads."""
    found: dict[tuple[int, int], bytes] = {}
    by_level: dict[int, list[int]] = {}
    for level, index in keys:
        by_level.setdefault(level, []).append(index)
    leaves = sorted({i for level, index in keys if level < NODE_LEVEL_STORED_MIN
                     for i in range(index << level, (index + 1) << level)})
    leaf_hash: dict[int, bytes] = {}
    for batch in _batches(leaves):
        leaf_hash.update((int(r[0]), bytes(r[1])) for r in conn.execute(
            select(s.log_leaves.c.leaf_index, s.log_leaves.c.leaf_hash)
            .where(s.log_leaves.c.leaf_index.in_(batch))))
    for level, indexes in by_level.items():
        if level >= NODE_LEVEL_STORED_MIN:
            for batch in _batches(indexes):
                found.update(((level, int(r[0])), bytes(r[1])) for r in conn.execute(
                    select(s.log_nodes.c.node_index, s.log_nodes.c.hash).where(
                        s.log_nodes.c.level == level, s.log_nodes.c.node_index.in_(batch))))
            continue
        for index in indexes:
            found[(level, index)] = merkle.root(
                [leaf_hash[i] for i in range(index << level, (index + 1) << level)])
    assert keys <= found.keys(), "a subtree a proof needs is not stored"
    return found


def _batches(values: list[int]) -> Iterator[list[int]]:
    for i in range(0, len(values), LOOKUP_BATCH_KEYS):
        yield values[i:i + LOOKUP_BATCH_KEYS]


def log_root(conn: Connection, size: int) -> bytes:
    return merkle.EMPTY_ROOT if size == 0 else stored_subtree(conn)(0, size)


# -- signed heads -------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Head:
    business_date: date
    tree_size: int
    day_start_index: int
    root_hash: bytes
    prev_root_hash: bytes
    signed_body: str
    signature: bytes
    key_id: str

    def as_json(self) -> dict[str, Any]:
        return {"object": "signed_tree_head", "body": self.signed_body,
                "signature": self.signature.hex(), "key_id": self.key_id}


def head_body(business_date: date, size: int, start: int, root_hash: bytes, prev: bytes,
              key_id: str, now: datetime, cutoff: datetime) -> str:
    return json.dumps({"business_date": business_date.isoformat(), "day_start_index": start,
                       "cutoff_us": to_us(cutoff),
                       "key_id": key_id, "prev_root_hash": prev.hex(),
                       "root_hash": root_hash.hex(), "timestamp_us": to_us(now),
                       "tree_size": size}, sort_keys=True, separators=(",", ":"))


def get_head(conn: Connection, business_date: date) -> Head | None:
    r = conn.execute(select(s.log_heads).where(s.log_heads.c.business_date == business_date)
                     ).first()
    return None if r is None else _head(r)


def _head(r: Any) -> Head:
    return Head(r.business_date, r.tree_size, r.day_start_index, bytes(r.root_hash),
                bytes(r.prev_root_hash), r.signed_body, bytes(r.signature), r.key_id)


def heads(conn: Connection) -> list[Head]:
    return [_head(r) for r in conn.execute(select(s.log_heads)
                                           .order_by(s.log_heads.c.business_date))]


def latest_head(conn: Connection) -> Head | None:
    r = conn.execute(select(s.log_heads).order_by(s.log_heads.c.business_date.desc()).limit(1)
                     ).first()
    return None if r is None else _head(r)


def seal_day(conn: Connection, now: datetime, business_date: date, cutoff: datetime,
             signer: Signer) -> Head:
    """Append the day's entries and sign its head; a day already sealed is returned as is."""
    found = get_head(conn, business_date)
    if found is not None:
        return found
    prev = latest_head(conn)
    if prev is not None and prev.business_date > business_date:
        raise DomainError(ErrorCode.DAY_ALREADY_SEALED,
                          f"a later day ({prev.business_date}) is already sealed", "business_date")
    start, size = append_until(conn, cutoff)
    root_hash = log_root(conn, size)
    prev_root = ZERO_HASH if prev is None else prev.root_hash
    body = head_body(business_date, size, start, root_hash, prev_root, signer.key_id, now,
                     cutoff)
    signature = signer.sign(body.encode())
    conn.execute(s.log_heads.insert().values(
        business_date=business_date, tree_size=size, day_start_index=start, root_hash=root_hash,
        prev_root_hash=prev_root, signed_body=body, signature=signature, key_id=signer.key_id,
        created_at=now))
    found = get_head(conn, business_date)
    assert found is not None
    return found


# -- proofs -------------------------------------------------------------------------------------

def leaf_of_entry(conn: Connection, entry_id: int) -> tuple[int, bytes] | None:
    r = conn.execute(select(s.log_leaves.c.leaf_index, s.log_leaves.c.leaf_hash)
                     .where(s.log_leaves.c.entry_id == entry_id)).first()
    return None if r is None else (int(r[0]), bytes(r[1]))


def canonical_entry(conn: Connection, entry_id: int) -> bytes | None:
    for _, data, _ in iter_canonical(conn, entry_id - 1, entry_id):
        return data
    return None


def head_covering(conn: Connection, leaf_index: int) -> Head | None:
    r = conn.execute(select(s.log_heads).where(s.log_heads.c.tree_size > leaf_index)
                     .order_by(s.log_heads.c.tree_size).limit(1)).first()
    return None if r is None else _head(r)


def inclusion_proof(conn: Connection, entry_id: int, head: Head | None = None
                    ) -> dict[str, Any] | None:
    """The entry's canonical bytes, leaf index and audit path to ``head`` (default: the first
    signed head that covers it); None when the entry is not logged under a signed head yet."""
    leaf = leaf_of_entry(conn, entry_id)
    if leaf is None:
        return None
    index, _ = leaf
    head = head or head_covering(conn, index)
    if head is None or head.tree_size <= index:
        return None
    data = canonical_entry(conn, entry_id)
    assert data is not None
    path = merkle.inclusion_path(stored_subtree(conn), index, head.tree_size)
    return {"object": "inclusion_proof", "entry": data.decode(), "leaf_index": index,
            "tree_size": head.tree_size, "audit_path": [p.hex() for p in path],
            "head": head.as_json()}


def consistency_proof(conn: Connection, old: Head, new: Head) -> dict[str, Any]:
    path = merkle.consistency_path(stored_subtree(conn), old.tree_size, new.tree_size) \
        if old.tree_size else []
    return {"object": "consistency_proof", "old_head": old.as_json(), "new_head": new.as_json(),
            "path": [p.hex() for p in path]}


# -- verify-chain -------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Finding:
    code: str  # entry_edited, entry_deleted, entry_inserted, root_mismatch, ...
    subject: str
    detail: str


def verify_chain(conn: Connection, public_key: Ed25519PublicKey) -> list[Finding]:
    """Recompute the log from the ledger; every difference is a finding."""
    findings: list[Finding] = []
    stored = {int(r[0]): (int(r[1]), bytes(r[2])) for r in conn.execute(text(
        "SELECT entry_id, leaf_index, leaf_hash FROM clearing_log_leaves"))}
    size = len(stored)
    recomputed: list[bytes] = [b""] * size
    top = int(conn.execute(text("SELECT COALESCE(MAX(id), 0) FROM ledger_entries")).scalar_one())
    all_heads = heads(conn)
    sealed_until = to_us_head(all_heads[-1]) if all_heads else None
    seen: set[int] = set()
    for eid, data, created in iter_canonical(conn, 0, top):
        leaf = merkle.leaf_hash(data)
        if eid in stored:
            seen.add(eid)
            index, old = stored[eid]
            recomputed[index] = leaf
            if leaf != old:
                findings.append(Finding("entry_edited", f"txf_{eid}",
                                        f"leaf {index} no longer matches the entry"))
        elif sealed_until is not None and created < sealed_until:
            findings.append(Finding("entry_inserted", f"txf_{eid}",
                                    "entry dated inside a sealed day but absent from the log"))
    for eid, (index, old) in stored.items():
        if eid not in seen:
            findings.append(Finding("entry_deleted", f"txf_{eid}", f"leaf {index} has no entry"))
            recomputed[index] = old
    findings.extend(_check_heads(all_heads, recomputed, public_key))
    return findings


def to_us_head(head: Head) -> int:
    """The cut-off the head was sealed at (entries before it are in the log)."""
    return int(json.loads(head.signed_body)["cutoff_us"])


def _check_heads(all_heads: list[Head], leaves: list[bytes], public_key: Ed25519PublicKey
                 ) -> list[Finding]:
    findings: list[Finding] = []
    prev = ZERO_HASH
    for h in all_heads:
        subject = f"head {h.business_date.isoformat()}"
        try:
            public_key.verify(h.signature, h.signed_body.encode())
        except InvalidSignature:
            findings.append(Finding("bad_signature", subject, "signature does not verify"))
        body = json.loads(h.signed_body)
        if body["root_hash"] != h.root_hash.hex() or body["tree_size"] != h.tree_size:
            findings.append(Finding("head_edited", subject, "stored head differs from signed"))
        if bytes.fromhex(body["prev_root_hash"]) != prev:
            findings.append(Finding("chain_broken", subject, "previous root does not match"))
        if h.tree_size > len(leaves) or _root(leaves, h.tree_size) != h.root_hash:
            findings.append(Finding("root_mismatch", subject,
                                    "the ledger no longer hashes to the signed root"))
        prev = bytes.fromhex(body["root_hash"])
    return findings


def _root(leaves: list[bytes], size: int) -> bytes:
    return merkle.root(leaves[:size])
