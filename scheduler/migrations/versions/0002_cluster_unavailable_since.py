"""When a cluster became unavailable, so its jobs are requeued after a grace period.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('cluster_status', schema=None) as batch_op:
        batch_op.add_column(sa.Column('unavailable_since', sa.Float(), nullable=True))



def downgrade() -> None:
    with op.batch_alter_table('cluster_status', schema=None) as batch_op:
        batch_op.drop_column('unavailable_since')

