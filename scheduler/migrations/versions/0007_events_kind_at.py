"""Events indexed by kind and time: a restarted loop reads back the preemptions of the last hour (the rate limit)
and the budget announcements of the open periods (made once each).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04
"""

from alembic import op


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_events_kind_at', 'events', ['kind', 'at'])


def downgrade() -> None:
    op.drop_index('ix_events_kind_at', table_name='events')
