"""The store's schema comes from Alembic migrations, and the models never drift from them."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from spillover.scheduler.store import Store
from spillover.scheduler.tables import Base


def test_a_new_store_is_built_by_the_migrations_and_matches_the_models(store_url):
    store = Store(store_url)
    with store.engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        assert ctx.get_current_revision() is not None
        diff = compare_metadata(ctx, Base.metadata)
    assert diff == [], f"models and migrations differ; add a revision under scheduler/migrations: {diff}"


def test_opening_an_existing_store_again_keeps_its_data(tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    Store(url).record_event("note", "hello", now=1.0)
    again = Store(url)
    assert [e.message for e in again.events()] == ["hello"]
    tables = set(inspect(create_engine(url)).get_table_names())
    assert {"jobs", "events", "actions", "ledger", "alembic_version"} <= tables


def test_a_store_made_by_an_older_version_is_upgraded_in_place(tmp_path):
    from alembic import command
    from sqlalchemy import text

    from spillover.scheduler.tables import alembic_config

    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = create_engine(url)
    with engine.begin() as conn:
        command.upgrade(alembic_config(conn), "0001")
        conn.execute(text("INSERT INTO cluster_status (cluster, available, failures, message) "
                          "VALUES ('onprem', 1, 0, '')"))
    store = Store(url)
    row = store.cluster_status("onprem")
    assert row.unavailable_since is None and row.signals == "{}"
