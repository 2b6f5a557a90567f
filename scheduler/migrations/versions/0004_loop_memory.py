"""What the loop must remember across a restart: each job's interruptions and the clusters it must avoid for a
while, each pool's provisioning clock and the nodes it lost under running jobs, and how far each node's time is in
the ledger. The ledger keeps only the indexes its writes can afford: its unique key and the hour.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03
"""

from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('ledger_marks',
    sa.Column('cluster', sa.String(length=63), nullable=False),
    sa.Column('node', sa.String(length=128), nullable=False),
    sa.Column('until', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('cluster', 'node')
    )
    with op.batch_alter_table('ledger', schema=None) as batch_op:
        batch_op.drop_index('ix_ledger_cloud')
        batch_op.drop_index('ix_ledger_cluster_bucket')
        batch_op.create_index('ix_ledger_bucket', ['bucket'], unique=False)
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('interruptions', sa.Integer(), nullable=False, server_default='0'))
        batch_op.add_column(sa.Column('avoid', sa.Text(), nullable=False, server_default='{}'))
    with op.batch_alter_table('pool_status', schema=None) as batch_op:
        batch_op.add_column(sa.Column('growing_since', sa.Float(), nullable=True))
        batch_op.add_column(sa.Column('lost_nodes', sa.Text(), nullable=False, server_default='{}'))


def downgrade() -> None:
    op.drop_table('ledger_marks')
    with op.batch_alter_table('ledger', schema=None) as batch_op:
        batch_op.drop_index('ix_ledger_bucket')
        batch_op.create_index('ix_ledger_cluster_bucket', ['cluster', 'bucket'], unique=False)
        batch_op.create_index('ix_ledger_cloud', ['cloud'], unique=False)
    with op.batch_alter_table('pool_status', schema=None) as batch_op:
        batch_op.drop_column('lost_nodes')
        batch_op.drop_column('growing_since')
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_column('avoid')
        batch_op.drop_column('interruptions')
