"""Jobs keep how much of their work is done (a checkpointable job preempted or interrupted resumes from there) and
their estimated start: when and where the plan expects a waiting job to start, and what holds it back.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04
"""

from alembic import op
import sqlalchemy as sa


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('progress', sa.Float(), nullable=False, server_default='0'))
        batch_op.add_column(sa.Column('est_start_at', sa.Float(), nullable=True))
        batch_op.add_column(sa.Column('est_place', sa.String(length=128), nullable=True))
        batch_op.add_column(sa.Column('pending', sa.String(length=16), nullable=False, server_default=''))


def downgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_column('pending')
        batch_op.drop_column('est_place')
        batch_op.drop_column('est_start_at')
        batch_op.drop_column('progress')
