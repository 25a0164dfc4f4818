"""The database's own ceiling for the ledger's writes, with no ledger code in the loop.

``benchmarks/ledger.py`` times the whole ledger. This script times only the SQL a batch of
two-leg transfers costs, on the driver directly (sqlite3, psycopg): read the keys and the
accounts, insert the entries and postings, update the accounts' totals, commit durably. The rows
are computed beforehand and not timed. So the gap between the two figures is the ledger's Python
work, and the variants show what each index or write method costs:

- sqlite ``full``: the schema as migrated, ``synchronous=FULL`` in WAL (what the ledger runs);
  ``no-key-index`` / ``no-account-index`` / ``no-reverses-index``: without that index;
  ``no-secondary-indexes``: without all three; ``foreign-keys-off``; ``page-4k`` /
  ``page-16k``: 4 KiB / 16 KiB pages, whichever new databases do not get (they get 4 KiB);
  ``checkpoint-4k`` / ``checkpoint-16k``: a
  WAL checkpoint every 4,000 / 16,000 pages instead of 1,000; ``postings-by-account``: each
  batch's postings sorted into the account index's order before the insert (the sort timed
  with it); ``before-0012``: the
  schema before migration 0012 (entries not keyed by their rowid, every entry in the
  ``reverses_id`` index); ``accounts-rowid``: ``ledger_accounts.id`` as the rowid too;
  ``history-clustered``: the postings keyed by ``(account_id, account_seq)`` (the history
  itself), the entry side a unique index; ``sync-off`` (NOT durable; a reference for what the
  fsyncs cost, never a setting).
- postgresql ``executemany`` (a statement per row, pipelined by psycopg), ``unnest`` (one
  ``INSERT ... SELECT FROM unnest(arrays)`` per table), ``copy`` (``COPY ... FROM STDIN``);
  accounts are read ``FOR UPDATE`` and updated as the ledger does.

    .venv/bin/python benchmarks/ledger_ceiling.py --database sqlite
    .venv/bin/python benchmarks/ledger_ceiling.py --database postgresql

Prints one line per variant and, last, one JSON object with every variant's transfers/s.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from lianjie.db import SQLITE_PAGE_SIZE, make_engine, migrate

SQLITE_VARIANTS = ("full", "no-key-index", "no-account-index", "no-reverses-index",
                   "no-secondary-indexes", "foreign-keys-off", "page-4k", "page-16k",
                   "checkpoint-4k", "checkpoint-16k", "postings-by-account", "before-0012",
                   "accounts-rowid", "history-clustered", "sync-off")
PG_VARIANTS = ("executemany", "unnest", "copy")
_PAGE_VARIANTS = {"page-4k": 4096, "page-16k": 16_384}
POSTGRES_URL_ENV = "LIANJIE_BENCH_POSTGRES_URL"
POSTGRES_URL_DEFAULT = "postgresql://lianjie@127.0.0.1:54329/lianjie"
POSTGRES_DB = "lianjie_bench_ceiling"
BATCH = 8190
MERCHANT_SHARE = 0.1
IN_CHUNK_MAX = 4000  # as the ledger: SQLite binds at most 32766 variables per statement
DROP_ATTEMPTS_MAX = 10

Rows = tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], list[tuple[Any, ...]]]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    p.add_argument("--transfers", type=int, default=300_000)
    p.add_argument("--accounts", type=int, default=10_000)
    p.add_argument("--variants", default="", help="comma-separated subset")
    args = p.parse_args(argv)
    names = SQLITE_VARIANTS if args.database == "sqlite" else PG_VARIANTS
    if args.variants:
        names = tuple(v for v in args.variants.split(",") if v)
        assert set(names) <= set(SQLITE_VARIANTS + PG_VARIANTS), names
    out: dict[str, int] = {}
    for name in names:
        run = _sqlite_variant if args.database == "sqlite" else _pg_variant
        rate, shares = run(name, args.transfers, args.accounts)
        out[name] = rate
        # Without the key index the idempotency read is a table scan: show the writes alone too.
        writes = round(rate / (1 - shares["reads"]))
        print(f"{args.database:10} {name:22} {rate:>9,} transfers/s ({writes:>9,} without "
              "the reads)   " + " ".join(f"{k} {v:.0%}" for k, v in shares.items()), flush=True)
    print(json.dumps({"benchmark": "ledger_ceiling", "database": args.database,
                      "transfers": args.transfers, "batch": BATCH,
                      "transfers_per_s": out}))
    return 0


def _batches(transfers: int, accounts: int) -> Iterator[tuple[Rows, list[str], list[int]]]:
    """The rows the ledger would write for each batch of random wallet -> merchant transfers."""
    rng = random.Random(1)
    merchants = max(1, int(accounts * MERCHANT_SHARE))
    seq = [0] * (accounts + 1)
    bal = [0] * (accounts + 1)
    entry_id = 0
    for first in range(0, transfers, BATCH):
        entries: list[tuple[Any, ...]] = []
        postings: list[tuple[Any, ...]] = []
        dirty: set[int] = set()
        for i in range(first, min(first + BATCH, transfers)):
            entry_id += 1
            w = rng.randint(1, accounts - merchants)
            m = rng.randint(accounts - merchants + 1, accounts)
            amount = rng.randint(1, 10_000)
            key = f"bench-1-{i}"
            fp = hashlib.blake2b(key.encode(), digest_size=16).digest()
            entries.append((entry_id, key, 0, "transfer", None, None, fp, None, 1))
            for side, acct, signed in ((0, w, -amount), (1, m, amount)):
                seq[acct] += 1
                bal[acct] += signed
                postings.append((entry_id, 0, side, acct, seq[acct], signed, bal[acct], 1))
                dirty.add(acct)
        updates: list[tuple[Any, ...]] = [
            (max(-bal[a], 0), max(bal[a], 0), 0, 0, seq[a], a) for a in sorted(dirty)]
        yield (entries, postings, updates), [e[1] for e in entries], sorted(dirty)


def _accounts(n: int) -> list[tuple[Any, ...]]:
    return [(i, f"own_{i}", "wallet", "CNY", 0, "open", 0, 0, 0, 0, 0, 1)
            for i in range(1, n + 1)]


def _timed(transfers: int, accounts: int, phases: dict[str, Callable[..., None]]
           ) -> tuple[int, dict[str, float]]:
    spent = dict.fromkeys(phases, 0.0)
    for rows, keys, ids in _batches(transfers, accounts):
        for name, phase in phases.items():
            t0 = time.perf_counter()
            phase(rows, keys, ids)
            spent[name] += time.perf_counter() - t0
    total = sum(spent.values())
    return round(transfers / total), {k: v / total for k, v in spent.items()}


def _chunks(values: list[Any]) -> Iterator[list[Any]]:
    for i in range(0, len(values), IN_CHUNK_MAX):
        yield values[i:i + IN_CHUNK_MAX]


# -- SQLite --------------------------------------------------------------------------------------

def _sqlite_variant(name: str, transfers: int, accounts: int) -> tuple[int, dict[str, float]]:
    with tempfile.TemporaryDirectory(prefix="lianjie-ceiling-") as tmp:
        path = os.path.join(tmp, "ledger.sqlite3")
        page_size = _PAGE_VARIANTS.get(name, SQLITE_PAGE_SIZE)
        if name in _PAGE_VARIANTS:  # the page size is fixed when the file is first written
            first = sqlite3.connect(path)
            first.execute(f"PRAGMA page_size={page_size}")
            first.execute("PRAGMA journal_mode=WAL")
            first.close()
        engine = make_engine(f"sqlite:///{path}")
        migrate(engine, "0011_clearing" if name == "before-0012" else "head")
        engine.dispose()
        db = sqlite3.connect(path, isolation_level=None)
        for pragma in ("journal_mode=WAL", "busy_timeout=30000", "cache_size=-262144",
                       "temp_store=MEMORY", "synchronous=" + ("OFF" if name == "sync-off"
                                                              else "FULL"),
                       "foreign_keys=" + ("OFF" if name == "foreign-keys-off" else "ON")):
            db.execute(f"PRAGMA {pragma}")
        if name.startswith("checkpoint-"):
            db.execute(f"PRAGMA wal_autocheckpoint={int(name[11:-1]) * 1000}")
        assert db.execute("PRAGMA page_size").fetchone()[0] == page_size
        _sqlite_drop_indexes(db, name)
        db.executemany(f"INSERT INTO ledger_accounts VALUES ({', '.join('?' * 12)})",
                       _accounts(accounts))

        def reads(rows: Rows, keys: list[str], ids: list[int]) -> None:
            db.execute("BEGIN IMMEDIATE")
            for chunk in _chunks(keys):
                db.execute("SELECT key, id, fingerprint FROM ledger_entries WHERE key IN "
                           f"({', '.join('?' * len(chunk))})", chunk).fetchall()
            for chunk in _chunks(ids):
                db.execute("SELECT id, currency, flags, status, debits_posted, credits_posted, "
                           "debits_pending, credits_pending, posting_count FROM ledger_accounts"
                           f" WHERE id IN ({', '.join('?' * len(chunk))}) ORDER BY id",
                           chunk).fetchall()

        def entries(rows: Rows, keys: list[str], ids: list[int]) -> None:
            db.executemany(f"INSERT INTO ledger_entries VALUES ({', '.join('?' * 9)})", rows[0])

        def postings(rows: Rows, keys: list[str], ids: list[int]) -> None:
            ordered = rows[1]
            if name == "postings-by-account":  # the account index's order, not the entries'
                ordered = sorted(ordered, key=lambda r: (r[3], r[4]))
            db.executemany(f"INSERT INTO ledger_postings VALUES ({', '.join('?' * 8)})",
                           ordered)

        def update(rows: Rows, keys: list[str], ids: list[int]) -> None:
            db.executemany("UPDATE ledger_accounts SET debits_posted = ?, credits_posted = ?,"
                           " debits_pending = ?, credits_pending = ?, posting_count = ?"
                           " WHERE id = ?", rows[2])

        def commit(rows: Rows, keys: list[str], ids: list[int]) -> None:
            db.execute("COMMIT")

        try:
            return _timed(transfers, accounts, {"reads": reads, "entries": entries,
                                                "postings": postings, "accounts": update,
                                                "commit": commit})
        finally:
            db.close()


def _sqlite_drop_indexes(db: sqlite3.Connection, name: str) -> None:
    if name == "history-clustered":  # postings keyed by account history, entry side indexed
        db.execute("DROP TABLE ledger_postings")
        db.execute("CREATE TABLE ledger_postings (entry_id BIGINT NOT NULL, leg_no SMALLINT NOT"
                   " NULL, side SMALLINT NOT NULL, account_id BIGINT NOT NULL, account_seq"
                   " BIGINT NOT NULL, amount BIGINT NOT NULL, balance_after BIGINT NOT NULL,"
                   " created_at BIGINT NOT NULL, PRIMARY KEY (account_id, account_seq))"
                   " WITHOUT ROWID")
        db.execute("CREATE UNIQUE INDEX ix_ledger_postings_entry ON ledger_postings"
                   " (entry_id, leg_no, side)")
    if name == "accounts-rowid":  # ledger_accounts keyed by its rowid, as 0012 made entries
        (ddl,) = db.execute("SELECT sql FROM sqlite_master WHERE name = 'ledger_accounts'"
                            ).fetchone()
        assert "id BIGINT NOT NULL" in ddl, ddl
        db.execute("DROP TABLE ledger_accounts")
        db.execute(ddl.replace("id BIGINT NOT NULL", "id INTEGER NOT NULL", 1))
    everything = name == "no-secondary-indexes"
    if everything or name == "no-account-index":
        db.execute("DROP INDEX ix_ledger_postings_account")
    if everything or name == "no-reverses-index":
        db.execute("DROP INDEX uq_ledger_entries_reverses_id")
    if not (everything or name == "no-key-index"):
        return
    # SQLite cannot drop a table constraint: rebuild the (empty) table without it.
    key = ", CONSTRAINT uq_ledger_entries_key UNIQUE (\"key\")"
    (ddl,) = db.execute("SELECT sql FROM sqlite_master WHERE name = 'ledger_entries'").fetchone()
    assert key in ddl, ddl
    db.execute("DROP TABLE ledger_entries")
    db.execute(ddl.replace(key, ""))


# -- PostgreSQL ----------------------------------------------------------------------------------

@contextmanager
def _pg_database() -> Iterator[Any]:
    import psycopg

    url = os.environ.get(POSTGRES_URL_ENV, POSTGRES_URL_DEFAULT)
    bench_url = f"{url.rsplit('/', 1)[0]}/{POSTGRES_DB}"
    with psycopg.connect(url, autocommit=True) as admin:
        _pg_drop(admin)
        admin.execute(f'CREATE DATABASE "{POSTGRES_DB}"')
        try:
            engine = make_engine(bench_url)
            migrate(engine)
            engine.dispose()
            with psycopg.connect(bench_url) as conn:
                yield conn
        finally:
            _pg_drop(admin)


def _pg_drop(admin: Any) -> None:
    import psycopg

    for attempt in range(DROP_ATTEMPTS_MAX):
        try:
            admin.execute(f'DROP DATABASE IF EXISTS "{POSTGRES_DB}"')
            return
        except psycopg.errors.ObjectInUse:  # an autovacuum worker: DROP ends it, then retry
            if attempt + 1 == DROP_ATTEMPTS_MAX:
                raise
            time.sleep(1.0)


ENTRY_COLUMNS = ("id, key, kind, code, pending_id, reverses_id, fingerprint, memo, created_at",
                 "bigint, text, smallint, text, bigint, bigint, bytea, text, bigint")
POSTING_COLUMNS = ("entry_id, leg_no, side, account_id, account_seq, amount, balance_after,"
                   " created_at",
                   "bigint, smallint, smallint, bigint, bigint, bigint, bigint, bigint")


def _pg_variant(name: str, transfers: int, accounts: int) -> tuple[int, dict[str, float]]:
    with _pg_database() as conn:
        cur = conn.cursor()
        cur.executemany(f"INSERT INTO ledger_accounts VALUES ({', '.join(['%s'] * 12)})",
                        _accounts(accounts))
        conn.commit()
        write = {"executemany": _pg_executemany, "unnest": _pg_unnest, "copy": _pg_copy}[name]

        def reads(rows: Rows, keys: list[str], ids: list[int]) -> None:
            cur.execute("SELECT key, id, fingerprint FROM ledger_entries "
                        "WHERE key = ANY(%s::text[])", (keys,)).fetchall()
            cur.execute("SELECT id, currency, flags, status, debits_posted, credits_posted, "
                        "debits_pending, credits_pending, posting_count FROM ledger_accounts "
                        "WHERE id = ANY(%s::bigint[]) ORDER BY id FOR UPDATE", (ids,)).fetchall()

        def writes(rows: Rows, keys: list[str], ids: list[int]) -> None:
            write(cur, "ledger_entries", ENTRY_COLUMNS, rows[0])
            write(cur, "ledger_postings", POSTING_COLUMNS, rows[1])

        def update(rows: Rows, keys: list[str], ids: list[int]) -> None:
            cur.execute("UPDATE ledger_accounts AS a SET debits_posted = u.dp, credits_posted ="
                        " u.cp, debits_pending = u.dpend, credits_pending = u.cpend,"
                        " posting_count = u.seq FROM unnest(%s::bigint[], %s::bigint[],"
                        " %s::bigint[], %s::bigint[], %s::bigint[], %s::bigint[])"
                        " AS u (dp, cp, dpend, cpend, seq, id) WHERE a.id = u.id",
                        [list(c) for c in zip(*rows[2], strict=True)])

        def commit(rows: Rows, keys: list[str], ids: list[int]) -> None:
            conn.commit()

        return _timed(transfers, accounts, {"reads": reads, "inserts": writes,
                                            "accounts": update, "commit": commit})


def _pg_executemany(cur: Any, table: str, columns: tuple[str, str],
                    rows: list[tuple[Any, ...]]) -> None:
    marks = ", ".join(["%s"] * (columns[0].count(",") + 1))
    cur.executemany(f"INSERT INTO {table} ({columns[0]}) VALUES ({marks})", rows)


def _pg_unnest(cur: Any, table: str, columns: tuple[str, str],
               rows: list[tuple[Any, ...]]) -> None:
    arrays = ", ".join(f"%s::{t.strip()}[]" for t in columns[1].split(","))
    cur.execute(f"INSERT INTO {table} ({columns[0]}) SELECT * FROM unnest({arrays})",
                [list(c) for c in zip(*rows, strict=True)])


def _pg_copy(cur: Any, table: str, columns: tuple[str, str],
             rows: list[tuple[Any, ...]]) -> None:
    with cur.copy(f"COPY {table} ({columns[0]}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)


if __name__ == "__main__":
    sys.exit(main())
