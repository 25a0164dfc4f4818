"""Ledger entries and postings are immutable in the database too.

The ledger never updates or deletes an entry or a posting (a correction is a new reversing
entry). These triggers make the database refuse it as well, so a stray UPDATE from a script or
another program fails loudly instead of silently breaking the books. Someone who can drop the
triggers can still edit rows: ``lianjie verify`` and the signed daily Merkle roots catch that.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("ledger_entries", "ledger_postings")


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("""
            CREATE FUNCTION ledger_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                RAISE EXCEPTION 'ledger records are immutable: % on % refused',
                    TG_OP, TG_TABLE_NAME USING ERRCODE = 'restrict_violation';
            END $$""")
        for table in TABLES:
            op.execute(f"CREATE TRIGGER {table}_immutable BEFORE UPDATE OR DELETE ON {table} "
                       "FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change()")
        return
    for table in TABLES:
        for action in ("UPDATE", "DELETE"):
            op.execute(f"CREATE TRIGGER {table}_no_{action.lower()} BEFORE {action} ON {table} "
                       f"BEGIN SELECT RAISE(ABORT, 'ledger records are immutable: {action} on "
                       f"{table} refused'); END")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table in TABLES:
            op.execute(f"DROP TRIGGER {table}_immutable ON {table}")
        op.execute("DROP FUNCTION ledger_refuse_change()")
        return
    for table in TABLES:
        for action in ("update", "delete"):
            op.execute(f"DROP TRIGGER {table}_no_{action}")
