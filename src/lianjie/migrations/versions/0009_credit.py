"""credit: written-off amounts per part and per funder; the day a loan first went 30+ days past
due (vintage curves); a settlement held back whole for a loan
has no payout entry

Revision ID: 0009_credit
Revises: 0008_credit
Create Date: 2026-11-23 14:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0009_credit'
down_revision: str | None = '0008_credit'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_LOAN_PARTS = ('principal', 'interest', 'penalty', 'fee')


def upgrade() -> None:
    with op.batch_alter_table('credit_loans', schema=None) as batch_op:
        for part in _LOAN_PARTS:
            batch_op.add_column(sa.Column(f'{part}_written_off', sa.BigInteger(),
                                          server_default='0', nullable=False))
        batch_op.add_column(sa.Column('dpd30_day', sa.Integer(), nullable=True))
    with op.batch_alter_table('credit_loan_funders', schema=None) as batch_op:
        batch_op.add_column(sa.Column('principal_written_off', sa.BigInteger(),
                                      server_default='0', nullable=False))
        batch_op.add_column(sa.Column('written_off_amount', sa.BigInteger(),
                                      server_default='0', nullable=False))
    with op.batch_alter_table('clearing_settlements', schema=None) as batch_op:
        batch_op.alter_column('payout_entry_id', existing_type=sa.BigInteger(), nullable=True)
    # Loans written off before this revision kept their outstanding amounts: move them.
    op.execute(
        "UPDATE credit_loans SET principal_written_off = principal_outstanding, "
        "interest_written_off = interest_unpaid, penalty_written_off = penalty_unpaid, "
        "fee_written_off = fee_unpaid, principal_outstanding = 0, interest_unpaid = 0, "
        "penalty_unpaid = 0, fee_unpaid = 0 WHERE status = 'written_off'")
    # Loans 30+ days past due now: the day they got there (earlier history was not kept).
    op.execute("UPDATE credit_loans SET dpd30_day = unpaid_since_day + 30 WHERE dpd >= 30")


def downgrade() -> None:
    with op.batch_alter_table('clearing_settlements', schema=None) as batch_op:
        batch_op.alter_column('payout_entry_id', existing_type=sa.BigInteger(), nullable=False)
    with op.batch_alter_table('credit_loan_funders', schema=None) as batch_op:
        batch_op.drop_column('written_off_amount')
        batch_op.drop_column('principal_written_off')
    with op.batch_alter_table('credit_loans', schema=None) as batch_op:
        batch_op.drop_column('dpd30_day')
        for part in reversed(_LOAN_PARTS):
            batch_op.drop_column(f'{part}_written_off')
