"""ledger: entries keyed by their rowid on SQLite; the reversal index only where there is one

An entry row was four B-trees on SQLite: the rowid table, the primary key index on ``id`` (a
BIGINT primary key is not the rowid), the unique ``key`` index and the unique ``reverses_id``
index, in which every entry had a row although almost none reverses anything. With ``id
INTEGER PRIMARY KEY`` the table is keyed by the id and the second B-tree goes; the
``reverses_id`` index becomes partial (``WHERE reverses_id IS NOT NULL``) on both databases,
still unique and under the same name, which the ledger matches when a concurrent reversal wins
the race on PostgreSQL. Together 7 to 9% more transfers/s in the SQL alone
(benchmarks/ledger_ceiling.py, ``entries-rowid``). Rows are copied in id order; the
immutability triggers of 0003 go with the old table and are made again.

Revision ID: 0012_ledger
Revises: 0011_clearing
Create Date: 2026-11-23 22:05:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = '0012_ledger'
down_revision: str | None = '0011_clearing'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = "id, key, kind, code, pending_id, reverses_id, fingerprint, memo, created_at"
REVERSES_INDEX = "uq_ledger_entries_reverses_id"


def _rebuild_sqlite(id_type: str, reverses_unique: str) -> None:
    op.execute(
        "CREATE TABLE ledger_entries_new ("
        f"id {id_type} NOT NULL, \"key\" VARCHAR(200) NOT NULL, kind SMALLINT NOT NULL, "
        "code VARCHAR(40) NOT NULL, pending_id BIGINT, reverses_id BIGINT, "
        "fingerprint BLOB NOT NULL, memo VARCHAR(200), created_at BIGINT NOT NULL, "
        "CONSTRAINT pk_ledger_entries PRIMARY KEY (id), "
        f"CONSTRAINT uq_ledger_entries_key UNIQUE (\"key\"){reverses_unique})")
    op.execute(f"INSERT INTO ledger_entries_new ({COLUMNS}) "
               f"SELECT {COLUMNS} FROM ledger_entries ORDER BY id")
    op.execute("DROP TABLE ledger_entries")  # and its triggers; DROP fires none of them
    op.execute("ALTER TABLE ledger_entries_new RENAME TO ledger_entries")
    for action in ("UPDATE", "DELETE"):  # as 0003 made them
        op.execute(f"CREATE TRIGGER ledger_entries_no_{action.lower()} BEFORE {action} ON "
                   "ledger_entries BEGIN SELECT RAISE(ABORT, 'ledger records are immutable: "
                   f"{action} on ledger_entries refused'); END")


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _rebuild_sqlite("INTEGER", "")
    else:
        op.execute(f"ALTER TABLE ledger_entries DROP CONSTRAINT {REVERSES_INDEX}")
    op.execute(f"CREATE UNIQUE INDEX {REVERSES_INDEX} ON ledger_entries (reverses_id) "
               "WHERE reverses_id IS NOT NULL")


def downgrade() -> None:
    op.execute(f"DROP INDEX {REVERSES_INDEX}")
    if op.get_bind().dialect.name == "sqlite":
        _rebuild_sqlite("BIGINT", f", CONSTRAINT {REVERSES_INDEX} UNIQUE (reverses_id)")
    else:
        op.execute(f"ALTER TABLE ledger_entries ADD CONSTRAINT {REVERSES_INDEX} "
                   "UNIQUE (reverses_id)")
