"""The store's tables, as SQLAlchemy maps them, and the migrations that create and upgrade them."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

from sqlalchemy import Boolean, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint, text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class JobRow(Base):
    __tablename__ = "jobs"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), index=True)
    queue: Mapped[str] = mapped_column(String(63), index=True)
    team: Mapped[str] = mapped_column(String(63))
    spec: Mapped[str] = mapped_column(Text)
    gpus: Mapped[int] = mapped_column(Integer)  # total GPUs (all replicas)
    priority: Mapped[int] = mapped_column(Integer, default=0)
    state: Mapped[str] = mapped_column(String(16), index=True)
    cluster: Mapped[str | None] = mapped_column(String(63), nullable=True)
    pool: Mapped[str | None] = mapped_column(String(63), nullable=True)
    gpu_type: Mapped[str | None] = mapped_column(String(32), nullable=True)
    reason: Mapped[str] = mapped_column(Text, default="")
    attempts: Mapped[int] = mapped_column(Integer, default=0)  # dispatches so far (a requeue makes another)
    submitted_at: Mapped[float] = mapped_column(Float)
    dispatched_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    started_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    finished_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    updated_at: Mapped[float] = mapped_column(Float)
    # what the loop must remember across a restart: times the job's node was taken away under it, and
    # clusters it must not go back to until a time ({cluster: until}, JSON)
    interruptions: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    avoid: Mapped[str] = mapped_column(Text, default="{}", server_default="{}")
    # fraction of its work a checkpointable job has done before it was preempted or interrupted
    progress: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    # a waiting job's estimated start (epoch seconds), where, and the tier of its reason (quota, budget, ...)
    est_start_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    est_place: Mapped[str | None] = mapped_column(String(128), nullable=True)
    pending: Mapped[str] = mapped_column(String(16), default="", server_default="")


class EventRow(Base):
    __tablename__ = "events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[float] = mapped_column(Float)
    job_id: Mapped[str | None] = mapped_column(String(64), ForeignKey("jobs.id"), nullable=True, index=True)
    cluster: Mapped[str | None] = mapped_column(String(63), nullable=True)
    kind: Mapped[str] = mapped_column(String(32))
    from_state: Mapped[str | None] = mapped_column(String(16), nullable=True)
    to_state: Mapped[str | None] = mapped_column(String(16), nullable=True)
    message: Mapped[str] = mapped_column(Text, default="")
    # a restarted loop reads its recent preemptions and budget announcements back by kind and time
    __table_args__ = (Index("ix_events_kind_at", "kind", "at"),)


class ActionRow(Base):
    """An action the loop intends to perform, written before it is performed."""

    __tablename__ = "actions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String(200), unique=True)  # idempotency key, passed as request id
    kind: Mapped[str] = mapped_column(String(16))  # dispatch | cancel | scale
    job_id: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    cluster: Mapped[str] = mapped_column(String(63))
    pool: Mapped[str | None] = mapped_column(String(63), nullable=True)
    payload: Mapped[str] = mapped_column(Text, default="{}")
    status: Mapped[str] = mapped_column(String(16), index=True)  # intended | done | failed
    created_at: Mapped[float] = mapped_column(Float)
    done_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    error: Mapped[str] = mapped_column(Text, default="")


class LedgerRow(Base):
    """Node-hours and dollars, per hour bucket, node and job ('' = the node's idle share)."""

    __tablename__ = "ledger"
    # the loop writes a row per node and hour: every index is paid for on each write, so only the unique key and
    # the hour (reports over a period) are indexed
    __table_args__ = (UniqueConstraint("bucket", "node", "job_id"), Index("ix_ledger_bucket", "bucket"))
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    bucket: Mapped[float] = mapped_column(Float)  # start of the hour, epoch seconds
    cluster: Mapped[str] = mapped_column(String(63))
    cloud: Mapped[str] = mapped_column(String(16))  # aws | gcp | azure | onprem
    region: Mapped[str] = mapped_column(String(32), default="")
    pool: Mapped[str] = mapped_column(String(128), default="")  # "<cluster>/<pool>"
    instance_type: Mapped[str] = mapped_column(String(63), default="")
    spot: Mapped[bool] = mapped_column(Boolean, default=False)
    node: Mapped[str] = mapped_column(String(128))
    job_id: Mapped[str] = mapped_column(String(64), default="")
    queue: Mapped[str] = mapped_column(String(63), default="")
    team: Mapped[str] = mapped_column(String(63), default="")
    gpu_hours: Mapped[float] = mapped_column(Float, default=0.0)
    node_hours: Mapped[float] = mapped_column(Float, default=0.0)
    usd: Mapped[float] = mapped_column(Float, default=0.0)


class LedgerMarkRow(Base):
    """How far each node's time is in the ledger: the loop charges from here on."""

    __tablename__ = "ledger_marks"
    cluster: Mapped[str] = mapped_column(String(63), primary_key=True)
    node: Mapped[str] = mapped_column(String(128), primary_key=True)
    until: Mapped[float] = mapped_column(Float)


class ClusterStatusRow(Base):
    __tablename__ = "cluster_status"
    cluster: Mapped[str] = mapped_column(String(63), primary_key=True)
    available: Mapped[bool] = mapped_column(Boolean, default=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)  # consecutive failed observations
    unavailable_since: Mapped[float | None] = mapped_column(Float, nullable=True)
    signals: Mapped[str] = mapped_column(Text, default="{}", server_default="{}")  # the last observation's signals, JSON
    last_observed_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    accrued_until: Mapped[float | None] = mapped_column(Float, nullable=True)
    message: Mapped[str] = mapped_column(Text, default="")


class PoolStatusRow(Base):
    __tablename__ = "pool_status"
    pool_id: Mapped[str] = mapped_column(String(128), primary_key=True)  # "<cluster>/<pool>"
    idle_since: Mapped[float | None] = mapped_column(Float, nullable=True)
    cooloff_until: Mapped[float | None] = mapped_column(Float, nullable=True)
    message: Mapped[str] = mapped_column(Text, default="")
    growing_since: Mapped[float | None] = mapped_column(Float, nullable=True)  # short of its desired size since
    lost_nodes: Mapped[str] = mapped_column(Text, default="{}", server_default="{}")  # {node: when}, JSON


class ApiTokenRow(Base):
    """A bearer token of the API: only its SHA-256 is kept, never the token itself."""

    __tablename__ = "api_tokens"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # public id, shown in listings
    name: Mapped[str] = mapped_column(String(63))  # what it is for, e.g. "ci-bot"
    team: Mapped[str] = mapped_column(String(63))
    role: Mapped[str] = mapped_column(String(16))  # submitter | ops | finance | admin
    digest: Mapped[str] = mapped_column(String(64), unique=True)  # sha256 hex of the token
    created_at: Mapped[float] = mapped_column(Float)
    revoked_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class LeadershipRow(Base):
    """Which loop may act: the fencing epoch grows by one each time a loop becomes the leader."""

    __tablename__ = "leadership"
    name: Mapped[str] = mapped_column(String(63), primary_key=True)  # "loop"
    epoch: Mapped[int] = mapped_column(Integer, default=0)
    holder: Mapped[str] = mapped_column(String(200), default="")  # host:pid of the leader, for people
    acquired_at: Mapped[float | None] = mapped_column(Float, nullable=True)


MIGRATIONS = Path(str(resources.files("spillover.scheduler.migrations")))


def alembic_config(connection: Any) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    return cfg


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest revision (a new store is created by the same migrations)."""
    from alembic import command

    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            # one migrator at a time when a loop and a CLI open a new store together
            conn.execute(text("SELECT pg_advisory_xact_lock(7263011)"))
        elif engine.dialect.name == "sqlite":
            conn.exec_driver_sql("BEGIN IMMEDIATE")  # takes the write lock before reading the revision
        command.upgrade(alembic_config(conn), "head")
