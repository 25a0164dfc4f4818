"""api keys: a revocation epoch, so every server process learns of a revoked key within a second

``api_key_epoch`` holds one row whose ``epoch`` goes up by one in the transaction that revokes a
key. A server process caches the keys it has verified, each with the epoch it was read at; a
thread in every process reads the epoch each second and empties the cache when it has moved,
so a key revoked through one process stops working in the others within about a second
instead of the cache's time to live.

Revision ID: 0013_api_keys
Revises: 0012_ledger
Create Date: 2026-11-24 03:45:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0013_api_keys'
down_revision: str | None = '0012_ledger'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    table = op.create_table(
        'api_key_epoch',
        sa.Column('id', sa.Integer(), autoincrement=False, nullable=False),
        sa.Column('epoch', sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_api_key_epoch')),
    )
    op.bulk_insert(table, [{'id': 1, 'epoch': 0}])


def downgrade() -> None:
    op.drop_table('api_key_epoch')
