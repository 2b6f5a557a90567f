"""Alembic environment for the store: runs on the connection the store hands over (see scheduler/tables.py)."""

from alembic import context

from spillover.scheduler.tables import Base

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True,
                  compare_type=True)
with context.begin_transaction():
    context.run_migrations()
