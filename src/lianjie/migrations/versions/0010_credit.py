"""credit: per merchant and day aggregates of paid orders, and per payer, for batch features

Revision ID: 0010_credit
Revises: 0009_credit
Create Date: 2026-11-23 15:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0010_credit'
down_revision: str | None = '0009_credit'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        'credit_merchant_days',
        sa.Column('merchant_id', sa.String(length=32), nullable=False),
        sa.Column('day', sa.Integer(), nullable=False),
        sa.Column('payments', sa.BigInteger(), nullable=False),
        sa.Column('takings', sa.BigInteger(), nullable=False),
        sa.Column('refunded', sa.BigInteger(), nullable=False),
        sa.Column('first_paid', sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint('merchant_id', 'day'), sqlite_with_rowid=False)
    op.create_index('ix_credit_merchant_days_day', 'credit_merchant_days', ['day'])
    op.create_table(
        'credit_payer_days',
        sa.Column('merchant_id', sa.String(length=32), nullable=False),
        sa.Column('payer_id', sa.String(length=32), nullable=False),
        sa.Column('day', sa.Integer(), nullable=False),
        sa.Column('payments', sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint('merchant_id', 'payer_id', 'day'),
        sqlite_with_rowid=False)
    op.create_index('ix_credit_payer_days_day', 'credit_payer_days', ['day'])
    # Existing history: the end of day refreshes only recent days, so build the rest now.
    op.execute(
        "INSERT INTO credit_merchant_days (merchant_id, day, payments, takings, refunded, "
        "first_paid) SELECT merchant_id, paid_at / 86400000000, COUNT(*), SUM(amount), "
        "SUM(refunded_amount), MIN(paid_at) FROM payment_orders WHERE status = 'paid' "
        "GROUP BY merchant_id, paid_at / 86400000000")
    op.execute(
        "INSERT INTO credit_payer_days (merchant_id, day, payer_id, payments) "
        "SELECT merchant_id, paid_at / 86400000000, COALESCE(payer_id, ''), COUNT(*) "
        "FROM payment_orders WHERE status = 'paid' "
        "GROUP BY merchant_id, paid_at / 86400000000, COALESCE(payer_id, '')")


def downgrade() -> None:
    op.drop_index('ix_credit_payer_days_day', table_name='credit_payer_days')
    op.drop_table('credit_payer_days')
    op.drop_index('ix_credit_merchant_days_day', table_name='credit_merchant_days')
    op.drop_table('credit_merchant_days')
