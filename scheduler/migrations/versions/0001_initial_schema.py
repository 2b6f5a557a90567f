"""Initial schema: jobs, events, intended actions, the cost ledger, cluster and pool status.

Revision ID: 0001
Revises: 
Create Date: 2026-11-23
"""

from alembic import op
import sqlalchemy as sa


revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('actions',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('key', sa.String(length=200), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('job_id', sa.String(length=64), nullable=True),
    sa.Column('cluster', sa.String(length=63), nullable=False),
    sa.Column('pool', sa.String(length=63), nullable=True),
    sa.Column('payload', sa.Text(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('created_at', sa.Float(), nullable=False),
    sa.Column('done_at', sa.Float(), nullable=True),
    sa.Column('error', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('key')
    )
    with op.batch_alter_table('actions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_actions_job_id'), ['job_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_actions_status'), ['status'], unique=False)

    op.create_table('cluster_status',
    sa.Column('cluster', sa.String(length=63), nullable=False),
    sa.Column('available', sa.Boolean(), nullable=False),
    sa.Column('failures', sa.Integer(), nullable=False),
    sa.Column('last_observed_at', sa.Float(), nullable=True),
    sa.Column('accrued_until', sa.Float(), nullable=True),
    sa.Column('message', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('cluster')
    )
    op.create_table('jobs',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('queue', sa.String(length=63), nullable=False),
    sa.Column('team', sa.String(length=63), nullable=False),
    sa.Column('spec', sa.Text(), nullable=False),
    sa.Column('gpus', sa.Integer(), nullable=False),
    sa.Column('priority', sa.Integer(), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('cluster', sa.String(length=63), nullable=True),
    sa.Column('pool', sa.String(length=63), nullable=True),
    sa.Column('gpu_type', sa.String(length=32), nullable=True),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('submitted_at', sa.Float(), nullable=False),
    sa.Column('dispatched_at', sa.Float(), nullable=True),
    sa.Column('started_at', sa.Float(), nullable=True),
    sa.Column('finished_at', sa.Float(), nullable=True),
    sa.Column('updated_at', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_jobs_name'), ['name'], unique=False)
        batch_op.create_index(batch_op.f('ix_jobs_queue'), ['queue'], unique=False)
        batch_op.create_index(batch_op.f('ix_jobs_state'), ['state'], unique=False)

    op.create_table('ledger',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('bucket', sa.Float(), nullable=False),
    sa.Column('cluster', sa.String(length=63), nullable=False),
    sa.Column('cloud', sa.String(length=16), nullable=False),
    sa.Column('region', sa.String(length=32), nullable=False),
    sa.Column('pool', sa.String(length=128), nullable=False),
    sa.Column('instance_type', sa.String(length=63), nullable=False),
    sa.Column('spot', sa.Boolean(), nullable=False),
    sa.Column('node', sa.String(length=128), nullable=False),
    sa.Column('job_id', sa.String(length=64), nullable=False),
    sa.Column('queue', sa.String(length=63), nullable=False),
    sa.Column('team', sa.String(length=63), nullable=False),
    sa.Column('gpu_hours', sa.Float(), nullable=False),
    sa.Column('node_hours', sa.Float(), nullable=False),
    sa.Column('usd', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('bucket', 'node', 'job_id')
    )
    with op.batch_alter_table('ledger', schema=None) as batch_op:
        batch_op.create_index('ix_ledger_cloud', ['cloud'], unique=False)
        batch_op.create_index('ix_ledger_cluster_bucket', ['cluster', 'bucket'], unique=False)

    op.create_table('pool_status',
    sa.Column('pool_id', sa.String(length=128), nullable=False),
    sa.Column('idle_since', sa.Float(), nullable=True),
    sa.Column('cooloff_until', sa.Float(), nullable=True),
    sa.Column('message', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('pool_id')
    )
    op.create_table('events',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('at', sa.Float(), nullable=False),
    sa.Column('job_id', sa.String(length=64), nullable=True),
    sa.Column('cluster', sa.String(length=63), nullable=True),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('from_state', sa.String(length=16), nullable=True),
    sa.Column('to_state', sa.String(length=16), nullable=True),
    sa.Column('message', sa.Text(), nullable=False),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_events_job_id'), ['job_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_events_job_id'))

    op.drop_table('events')
    op.drop_table('pool_status')
    with op.batch_alter_table('ledger', schema=None) as batch_op:
        batch_op.drop_index('ix_ledger_cluster_bucket')
        batch_op.drop_index('ix_ledger_cloud')

    op.drop_table('ledger')
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_jobs_state'))
        batch_op.drop_index(batch_op.f('ix_jobs_queue'))
        batch_op.drop_index(batch_op.f('ix_jobs_name'))

    op.drop_table('jobs')
    op.drop_table('cluster_status')
    with op.batch_alter_table('actions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_actions_status'))
        batch_op.drop_index(batch_op.f('ix_actions_job_id'))

    op.drop_table('actions')
