"""Storage: the one SQL database, reached through SQLAlchemy Core.

The embedded default is a SQLite file in WAL mode with ``synchronous=FULL``, so a commit is on
disk before it returns. Production gives a PostgreSQL URL in ``LIANJIE_DATABASE_URL``; the same
code and the same tests run on both.

Every table of every context hangs off the one ``metadata`` here; Alembic migrations (in
``lianjie/migrations``) create and evolve them. Timestamps are stored as integer microseconds
since the epoch in UTC (``Timestamp``): identical on both databases, cheap to compare and index,
and never naive.

SQLite writers must take the write lock when their transaction starts (``BEGIN IMMEDIATE``),
otherwise two readers that both decide to write deadlock; ``writer()`` does that. Readers use
``reader()`` and see a consistent snapshot.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import BigInteger, Connection, Engine, MetaData, create_engine, event
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.types import TypeDecorator

from lianjie.clock import from_us, to_us
from lianjie.errors import ConfigError

DATABASE_URL_ENV = "LIANJIE_DATABASE_URL"
SQLITE_BUSY_TIMEOUT_MS = 30_000
SQLITE_PAGE_SIZE = 4096
POOL_SIZE = 8

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


class Timestamp(TypeDecorator[datetime]):
    """An aware UTC datetime stored as BIGINT microseconds since the epoch."""

    impl = BigInteger
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> int | None:
        return None if value is None else to_us(value)

    def process_result_value(self, value: int | None, dialect: Dialect) -> datetime | None:
        return None if value is None else from_us(value)


class DriverSql:
    """One statement run on the driver's own connection, below SQLAlchemy.

    For the few statements every payment runs (benchmarks/RESULTS.md, "Payments over HTTP"):
    a select by key costs about 5 us through Python's ``sqlite3`` and about 24 us as a cached
    SQLAlchemy statement, most of it building the execution context and the result. Written
    once with ``?`` marks; PostgreSQL (psycopg) gets the same text with ``%s``, so the SQL must
    hold no other ``?`` or ``%``. It runs on the connection's DBAPI connection, so in the same
    transaction and savepoint as the SQLAlchemy statements around it. Driver errors are raised
    as SQLAlchemy's exceptions (``IntegrityError``, ``OperationalError``...), as any other
    statement's are, so callers that retry a deadlock or a lost race still see them. Rows are
    plain tuples in the order of the select list; timestamps come back as microseconds
    (``from_us``).
    """

    __slots__ = ("postgresql", "sqlite")

    def __init__(self, sql: str) -> None:
        assert "%" not in sql
        self.sqlite = sql
        self.postgresql = sql.replace("?", "%s")

    def text(self, conn: Connection) -> str:
        return self.postgresql if conn.dialect.name == "postgresql" else self.sqlite

    def run(self, conn: Connection, params: tuple[Any, ...] | list[Any]) -> Any:
        """Execute; returns the driver's cursor (``fetchone``, ``fetchall``, ``rowcount``)."""
        return _driver_execute(conn, self.text(conn), params)

    def many(self, conn: Connection, rows: list[tuple[Any, ...]]) -> int:
        """``executemany``: SQLite loops in C; psycopg pipelines the rows. Returns the rows
        the statement changed, all rows together."""
        sql = self.text(conn)
        if not conn.in_transaction():
            conn.begin()
        driver = conn.connection.driver_connection
        try:
            if conn.dialect.name == "postgresql":
                with driver.cursor() as cur:  # type: ignore[union-attr]
                    cur.executemany(sql, rows)
                    return int(cur.rowcount)
            return int(driver.executemany(sql, rows).rowcount)  # type: ignore[union-attr]
        except conn.dialect.loaded_dbapi.Error as exc:
            raise DBAPIError.instance(sql, rows, exc, conn.dialect.loaded_dbapi.Error) \
                from exc


def _driver_execute(conn: Connection, sql: str, params: tuple[Any, ...] | list[Any]) -> Any:
    """``sql`` on the connection's DBAPI connection, in its transaction (begun as SQLAlchemy's
    autobegin would), with driver errors raised as SQLAlchemy's; the driver's cursor."""
    if not conn.in_transaction():
        conn.begin()
    try:
        return conn.connection.driver_connection.execute(sql, params)  # type: ignore[union-attr]
    except conn.dialect.loaded_dbapi.Error as exc:
        raise DBAPIError.instance(sql, params, exc, conn.dialect.loaded_dbapi.Error) from exc


SQL_IN_CHUNK_MAX = 1000
SQLITE_VARIABLES_MAX = 32_766  # SQLite's limit on bound parameters in one statement (3.32+)


def rows_in(conn: Connection, sql: str, params: tuple[object, ...], values: Sequence[Any],
            array_type: str = "text", chunk_max: int = SQL_IN_CHUNK_MAX) -> list[Any]:
    """Rows of driver ``sql`` (``?`` marks) whose last condition is ``{in}``: one statement per
    chunk of ``values``, with no SQLAlchemy statement built per call (``in_()`` renders one
    bind parameter per value on every call, which cost as much as the query). PostgreSQL gets
    one array parameter of ``array_type``, SQLite one ``?`` per value (at most 32,766 in a
    statement, so ``chunk_max`` stays below that). Chunks run in the order of ``values``, so a
    statement that locks ``FOR UPDATE`` in the order of sorted values keeps that order.

    As ``DriverSql``, it runs on the driver's own connection, in the same transaction, with
    driver errors raised as SQLAlchemy's; rows are plain tuples (the ledger reads about 8,000
    accounts a batch this way, and SQLAlchemy's result rows cost 0.6 us a row more)."""
    assert 0 < chunk_max <= SQLITE_VARIABLES_MAX - len(params)
    pg = conn.dialect.name == "postgresql"
    sql = sql.replace("?", "%s") if pg else sql
    rows: list[Any] = []
    for i in range(0, len(values), chunk_max):
        chunk = list(values[i:i + chunk_max])
        if pg:
            statement = sql.format(**{"in": f"= ANY(%s::{array_type}[])"})
            args: tuple[object, ...] = (*params, chunk)
        else:
            statement = sql.format(**{"in": f"IN ({', '.join('?' * len(chunk))})"})
            args = (*params, *chunk)
        rows += _driver_execute(conn, statement, args).fetchall()
    return rows


PAIRS_PER_STATEMENT_MAX = 1024


def rows_matching_pairs(conn: Connection, columns: str, table: str, keys: tuple[str, str],
                        pairs: Sequence[tuple[str, str]]) -> list[Any]:
    """Rows (``columns`` of ``table`` aliased ``t``) whose two text columns ``keys`` equal one
    of ``pairs``, one statement per ``PAIRS_PER_STATEMENT_MAX`` pairs, each pair one probe of
    an index on ``keys``. SQLite cross-joins a ``VALUES`` list to the table (a row-value
    ``IN`` scans the table instead, and ``CROSS JOIN`` keeps the list the outer loop whatever
    the planner's statistics), padded to a power of two by repeating the last pair, so that
    the driver's statement cache keeps a handful of texts rather than one per batch size; a
    pair given twice may give its row twice. PostgreSQL joins two arrays. Driver SQL, as
    ``rows_in``: plain tuples."""
    a, b = keys
    pg = conn.dialect.name == "postgresql"
    rows: list[Any] = []
    for i in range(0, len(pairs), PAIRS_PER_STATEMENT_MAX):
        chunk = list(pairs[i:i + PAIRS_PER_STATEMENT_MAX])
        if pg:
            sql = (f"SELECT {columns} FROM unnest(%s::text[], %s::text[]) AS v(a, b)"
                   f" JOIN {table} AS t ON t.{a} = v.a AND t.{b} = v.b")
            args: Any = ([x for x, _ in chunk], [y for _, y in chunk])
        else:
            size = 1 << (len(chunk) - 1).bit_length()
            chunk += [chunk[-1]] * (size - len(chunk))
            sql = (f"SELECT {columns} FROM (VALUES {', '.join(['(?, ?)'] * size)}) AS v"
                   f" CROSS JOIN {table} AS t WHERE t.{a} = v.column1 AND t.{b} = v.column2")
            args = [x for pair in chunk for x in pair]
        rows += _driver_execute(conn, sql, args).fetchall()
    return rows


def default_database_url() -> str:
    url = os.environ.get(DATABASE_URL_ENV)
    if url:
        return url
    home = Path(os.environ.get("LIANJIE_HOME", "var"))
    return f"sqlite:///{home / 'lianjie.sqlite3'}"


def normalise_url(url: str) -> str:
    """Accept the usual ``postgresql://`` URL and use the psycopg 3 driver for it."""
    if url.startswith(("postgres://", "postgresql://")):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    if url.startswith(("sqlite:", "postgresql+psycopg:")):
        return url
    raise ConfigError(f"unsupported database URL {url!r}: use sqlite:/// or postgresql://")


def make_engine(url: str | None = None, *, echo: bool = False) -> Engine:
    url = normalise_url(url or default_database_url())
    if url.startswith("sqlite"):
        return _sqlite_engine(url, echo)
    engine = create_engine(url, echo=echo, pool_size=POOL_SIZE, max_overflow=POOL_SIZE,
                           pool_pre_ping=True)
    _driver_savepoints(engine)
    return engine


def _driver_savepoints(engine: Engine) -> None:
    """SAVEPOINT, RELEASE and ROLLBACK TO sent as driver SQL. SQLAlchemy compiles its savepoint
    clauses on every call (a savepoint and its release: about 65 us, against 2 us on the
    driver), and the committer opens one per unit of work, a grab batch two. SQLAlchemy still
    keeps the transaction's state; only how the statement is sent changes."""
    dialect = engine.dialect
    error = dialect.loaded_dbapi.Error

    def send(connection: Connection, sql: str) -> None:
        try:
            connection.connection.driver_connection.execute(sql)  # type: ignore[union-attr]
        except error as exc:
            raise DBAPIError.instance(sql, (), exc, error) from exc

    for method, verb in (("do_savepoint", "SAVEPOINT"),
                         ("do_release_savepoint", "RELEASE SAVEPOINT"),
                         ("do_rollback_to_savepoint", "ROLLBACK TO SAVEPOINT")):
        setattr(dialect, method, lambda conn, name, verb=verb: send(conn, f"{verb} {name}"))


def _sqlite_engine(url: str, echo: bool) -> Engine:
    path = url.split(":///", 1)[1] if ":///" in url else ""
    if path and path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, echo=echo, pool_size=POOL_SIZE, max_overflow=POOL_SIZE,
                           connect_args={"check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Take transaction control away from the sqlite3 module so BEGIN is ours to emit.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        # 4 KiB pages: a payment dirties a dozen pages at random places (its order, its
        # Idempotency-Keys, three or four accounts and their history index), and each is written
        # whole to the WAL at commit; 16 KiB pages made a payment over HTTP 15% dearer, though
        # 13% cheaper a transfer in large ledger batches (benchmarks/RESULTS.md, "Page size").
        # Only a new, empty file takes it; WAL fixes it after.
        cur.execute(f"PRAGMA page_size={SQLITE_PAGE_SIZE}")
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=FULL")  # durable: the WAL is synced at every commit
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA cache_size=-262144")  # 256 MiB page cache
        cur.execute("PRAGMA temp_store=MEMORY")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
        conn.exec_driver_sql(f"BEGIN {mode}")

    _driver_savepoints(engine)
    return engine


def is_sqlite(conn_or_engine: Connection | Engine) -> bool:
    return conn_or_engine.dialect.name == "sqlite"


@contextmanager
def writer(engine: Engine) -> Iterator[Connection]:
    """A connection in a write transaction (SQLite: the write lock is taken at BEGIN)."""
    with engine.connect() as conn:
        conn.execution_options(sqlite_begin="IMMEDIATE")
        with conn.begin():
            yield conn


@contextmanager
def reader(engine: Engine) -> Iterator[Connection]:
    """A connection in a read transaction: one consistent snapshot."""
    with engine.connect() as conn:
        with conn.begin():
            yield conn


def migrate(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to ``revision`` with Alembic (creating it on a new database)."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    with engine.connect() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
        conn.commit()
