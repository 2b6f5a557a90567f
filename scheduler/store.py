"""The global queue store: jobs, their events, intended actions with idempotency keys, and the cost ledger.

SQLAlchemy 2 over SQLite (the embedded default, a file in WAL mode) or PostgreSQL; portable SQL only.
Every state change is a compare-and-set (`UPDATE ... WHERE state IN (...)`) written together with its
event, so the CLI and the loop can never move one job into two states, and a crash leaves either the old
state or the new one with its event — never half of it.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    bindparam,
    create_engine,
    event,
    func,
    select,
    text,
    update,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker
from sqlalchemy.pool import StaticPool

from scheduler.errors import StoreUnavailableError, UnknownJobError
from scheduler.model import JobSpec, JobState


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
    __table_args__ = (UniqueConstraint("bucket", "node", "job_id"), Index("ix_ledger_cloud", "cloud"),
                      Index("ix_ledger_cluster_bucket", "cluster", "bucket"))
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


@dataclass(frozen=True)
class Job:
    """A job as read from the store."""

    id: str
    name: str
    queue: str
    team: str
    spec_json: str
    gpus: int
    priority: int
    state: JobState
    cluster: str | None
    pool: str | None
    gpu_type: str | None
    reason: str
    attempts: int
    submitted_at: float
    dispatched_at: float | None
    started_at: float | None
    finished_at: float | None

    @cached_property
    def spec(self) -> JobSpec:
        return _parse_spec(self.spec_json)

    @property
    def dispatch_key(self) -> str:
        return f"dispatch:{self.id}:{self.attempts}"

    @staticmethod
    def of(row: Any) -> Job:
        return Job(row.id, row.name, row.queue, row.team, row.spec, row.gpus, row.priority, JobState(row.state),
                   row.cluster, row.pool, row.gpu_type, row.reason, row.attempts, row.submitted_at,
                   row.dispatched_at, row.started_at, row.finished_at)


# A job's spec never changes once stored, and every cycle reads the active jobs again: parse each spec once.
_parse_spec = lru_cache(maxsize=65536)(JobSpec.model_validate_json)


@dataclass(frozen=True)
class Event:
    at: float
    job_id: str | None
    cluster: str | None
    kind: str
    from_state: str | None
    to_state: str | None
    message: str


@dataclass(frozen=True)
class Action:
    key: str
    kind: str
    job_id: str | None
    cluster: str
    pool: str | None
    payload: dict[str, Any]
    status: str
    created_at: float

    @staticmethod
    def of(row: ActionRow) -> Action:
        return Action(row.key, row.kind, row.job_id, row.cluster, row.pool, json.loads(row.payload), row.status,
                      row.created_at)


@dataclass(frozen=True)
class LedgerEntry:
    bucket: float
    cluster: str
    cloud: str
    node: str
    node_hours: float
    gpu_hours: float
    usd: float
    job_id: str = ""
    queue: str = ""
    team: str = ""
    region: str = ""
    pool: str = ""
    instance_type: str = ""
    spot: bool = False


def new_job_id(name: str) -> str:
    # a short random suffix keeps resubmissions of one name apart and the id a valid Kubernetes name
    return f"{name}-{secrets.token_hex(3)}"


class Store:
    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.url = url
        kwargs: dict[str, Any] = {"echo": echo, "future": True}
        if url.startswith("sqlite"):
            kwargs["connect_args"] = {"timeout": 30}
        if url in ("sqlite://", "sqlite:///:memory:"):
            # one process's private store (the simulator's): every session must see the same in-memory database
            kwargs["poolclass"] = StaticPool
            kwargs["connect_args"]["check_same_thread"] = False
        self.engine: Engine = create_engine(url, **kwargs)
        if url.startswith("sqlite"):
            event.listen(self.engine, "connect", _sqlite_pragmas)
        try:
            migrate(self.engine)
        except OperationalError as e:
            safe = self.engine.url.render_as_string(hide_password=True)
            raise StoreUnavailableError(f"store.url: cannot open {safe}: {e.orig}") from None
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def tx(self) -> Iterator[Session]:
        with self._sessions.begin() as s:
            yield s

    # ---- jobs ------------------------------------------------------------------------------------

    def submit(self, specs: Iterable[JobSpec], *, now: float, teams: dict[str, str] | None = None,
               ids: Iterable[str] | None = None) -> list[Job]:
        """Add jobs to the queue in one transaction: all are stored or none is."""
        specs = list(specs)
        id_list = list(ids) if ids is not None else [new_job_id(s.name) for s in specs]
        teams = teams or {}
        rows = []
        with self.tx() as s:
            for spec, jid in zip(specs, id_list, strict=True):
                row = JobRow(id=jid, name=spec.name, queue=spec.queue, team=teams.get(spec.queue, spec.queue),
                             spec=spec.model_dump_json(), gpus=spec.total_gpus, priority=spec.priority,
                             state=JobState.PENDING.value, reason="queued", attempts=0, submitted_at=now,
                             updated_at=now)
                s.add(row)
                rows.append(row)
            s.flush()  # jobs before the events that point at them
            for row, spec in zip(rows, specs):
                s.add(EventRow(at=now, job_id=row.id, kind="submitted", to_state=JobState.PENDING.value,
                               message=f"submitted to queue {spec.queue}: {spec.total_gpus} GPU(s), "
                                       f"estimated {spec.estimated_runtime_s / 3600:.2f} h"))
        return [Job.of(r) for r in rows]

    def job(self, ref: str) -> Job:
        """A job by id, or by name (the newest with that name)."""
        with self.tx() as s:
            row = s.get(JobRow, ref)
            if row is None:
                row = s.scalars(select(JobRow).where(JobRow.name == ref)
                                .order_by(JobRow.submitted_at.desc(), JobRow.id.desc()).limit(1)).first()
            if row is None:
                raise UnknownJobError(f"unknown job {ref!r}; `spillover jobs` lists job ids and names")
            return Job.of(row)

    def jobs(self, states: Iterable[JobState] | None = None, queue: str | None = None,
             limit: int | None = None) -> list[Job]:
        t = JobRow.__table__
        # plain rows, not ORM objects: the loop reads the active jobs several times a cycle
        q = select(*t.c)
        if states is not None:
            q = q.where(t.c.state.in_([st.value for st in states]))
        if queue is not None:
            q = q.where(t.c.queue == queue)
        q = q.order_by(t.c.submitted_at, t.c.id)
        if limit is not None:
            q = q.limit(limit)
        with self.engine.connect() as conn:
            return [Job.of(r) for r in conn.execute(q)]

    def jobs_by_ids(self, ids: Iterable[str]) -> dict[str, Job]:
        ids = list(ids)
        out: dict[str, Job] = {}
        t = JobRow.__table__
        with self.engine.connect() as conn:
            for i in range(0, len(ids), 500):  # keeps IN lists within every backend's limits
                for r in conn.execute(select(*t.c).where(t.c.id.in_(ids[i:i + 500]))):
                    out[r.id] = Job.of(r)
        return out

    def count_by_state(self) -> dict[JobState, int]:
        with self.tx() as s:
            rows = s.execute(select(JobRow.state, func.count()).group_by(JobRow.state)).all()
        return {JobState(st): n for st, n in rows}

    def transition(self, job_id: str, from_states: Iterable[JobState], to: JobState, *, now: float,
                   message: str, kind: str = "state", s: Session | None = None, **fields: Any) -> bool:
        """Move a job to `to` if it is in one of `from_states`, setting `fields` (columns), and record the
        event. False if the job was not in one of those states."""
        if s is None:
            with self.tx() as s2:
                return self.transition(job_id, from_states, to, now=now, message=message, kind=kind, s=s2, **fields)
        froms = [f.value for f in from_states]
        found = s.execute(select(JobRow.state, JobRow.cluster).where(JobRow.id == job_id)).first()
        if found is None or found[0] not in froms:
            return False
        current = found[0]
        cluster = fields.get("cluster", found[1])
        res = s.execute(update(JobRow).where(JobRow.id == job_id, JobRow.state == current)
                        .values(state=to.value, updated_at=now, **fields))
        if res.rowcount != 1:
            return False
        s.add(EventRow(at=now, job_id=job_id, cluster=cluster, kind=kind, from_state=current, to_state=to.value,
                       message=message))
        return True

    def set_reason(self, job_id: str, reason: str, *, now: float, event_kind: str | None = None) -> None:
        """Update the job's current placement reason; record an event when `event_kind` is given."""
        with self.tx() as s:
            s.execute(update(JobRow).where(JobRow.id == job_id).values(reason=reason, updated_at=now))
            if event_kind:
                s.add(EventRow(at=now, job_id=job_id, kind=event_kind, message=reason))

    def set_reasons(self, reasons: dict[str, tuple[str, bool]], *, now: float, event_kind: str) -> None:
        """Many reason updates in one transaction; the flag says whether an event is recorded too."""
        if not reasons:
            return
        with self.tx() as s:
            for job_id, (reason, with_event) in reasons.items():
                s.execute(update(JobRow).where(JobRow.id == job_id).values(reason=reason, updated_at=now))
                if with_event:
                    s.add(EventRow(at=now, job_id=job_id, kind=event_kind, message=reason))

    def events(self, job_id: str | None = None, limit: int | None = None) -> list[Event]:
        q = select(EventRow)
        if job_id is not None:
            q = q.where(EventRow.job_id == job_id)
        q = q.order_by(EventRow.id)
        if limit is not None:
            q = q.limit(limit)
        with self.tx() as s:
            return [Event(r.at, r.job_id, r.cluster, r.kind, r.from_state, r.to_state, r.message)
                    for r in s.scalars(q)]

    def record_event(self, kind: str, message: str, *, now: float, job_id: str | None = None,
                     cluster: str | None = None) -> None:
        with self.tx() as s:
            s.add(EventRow(at=now, job_id=job_id, cluster=cluster, kind=kind, message=message))

    # ---- intended actions ------------------------------------------------------------------------

    def intend(self, kind: str, key: str, *, cluster: str, now: float, job_id: str | None = None,
               pool: str | None = None, payload: dict[str, Any] | None = None, s: Session | None = None) -> bool:
        """Write an intended action. False if an action with this key exists already."""
        if s is None:
            try:
                with self.tx() as s2:
                    return self.intend(kind, key, cluster=cluster, now=now, job_id=job_id, pool=pool,
                                       payload=payload, s=s2)
            except IntegrityError:
                return False
        if s.scalar(select(ActionRow.id).where(ActionRow.key == key)) is not None:
            return False
        s.add(ActionRow(key=key, kind=kind, job_id=job_id, cluster=cluster, pool=pool,
                        payload=json.dumps(payload or {}), status="intended", created_at=now))
        s.flush()
        return True

    def finish_action(self, key: str, *, now: float, ok: bool = True, error: str = "",
                      s: Session | None = None) -> None:
        stmt = (update(ActionRow).where(ActionRow.key == key)
                .values(status="done" if ok else "failed", done_at=now, error=error))
        if s is None:
            with self.tx() as s2:
                s2.execute(stmt)
        else:
            s.execute(stmt)

    def open_actions(self, kind: str | None = None) -> list[Action]:
        q = select(ActionRow).where(ActionRow.status == "intended")
        if kind is not None:
            q = q.where(ActionRow.kind == kind)
        with self.tx() as s:
            return [Action.of(r) for r in s.scalars(q.order_by(ActionRow.id))]

    def actions(self, job_id: str | None = None) -> list[Action]:
        q = select(ActionRow)
        if job_id is not None:
            q = q.where(ActionRow.job_id == job_id)
        with self.tx() as s:
            return [Action.of(r) for r in s.scalars(q.order_by(ActionRow.id))]

    # ---- clusters and pools ------------------------------------------------------------------------

    def cluster_status(self, cluster: str) -> ClusterStatusRow:
        with self.tx() as s:
            row = s.get(ClusterStatusRow, cluster)
            if row is None:
                row = ClusterStatusRow(cluster=cluster, available=True, failures=0, message="")
                s.add(row)
            return row

    def cluster_statuses(self) -> dict[str, ClusterStatusRow]:
        with self.tx() as s:
            return {r.cluster: r for r in s.scalars(select(ClusterStatusRow))}

    def pool_statuses(self) -> dict[str, PoolStatusRow]:
        with self.tx() as s:
            return {r.pool_id: r for r in s.scalars(select(PoolStatusRow))}

    def save_cluster_status(self, row: ClusterStatusRow) -> None:
        with self.tx() as s:
            s.merge(row)

    def pool_status(self, pool_id: str) -> PoolStatusRow:
        with self.tx() as s:
            row = s.get(PoolStatusRow, pool_id)
            if row is None:
                row = PoolStatusRow(pool_id=pool_id, message="")
                s.add(row)
            return row

    def save_pool_status(self, row: PoolStatusRow) -> None:
        with self.tx() as s:
            s.merge(row)

    # ---- cost ledger -----------------------------------------------------------------------------

    def accrue(self, cluster: str, until: float, entries: Iterable[LedgerEntry]) -> None:
        """Add ledger entries and move the cluster's accrual mark, atomically (a crash accrues nothing twice)."""
        self.accrue_many({cluster: (until, list(entries))})

    def accrue_many(self, accruals: dict[str, tuple[float, list[LedgerEntry]]]) -> None:
        """`accrue` for several clusters in one transaction."""
        t = LedgerRow.__table__
        with self.tx() as s, s.no_autoflush:
            inserts: list[dict[str, Any]] = []
            updates: list[dict[str, Any]] = []
            for cluster, (until, entries) in accruals.items():
                status = s.get(ClusterStatusRow, cluster)
                if status is None:
                    status = ClusterStatusRow(cluster=cluster, available=True, failures=0, message="")
                    s.add(status)
                status.accrued_until = until
                status.last_observed_at = until
                if not entries:
                    continue
                # an accrual touches one or two hour buckets: read their rows once, then add in memory
                buckets = sorted({e.bucket for e in entries})
                existing = {(r.bucket, r.node, r.job_id): [r.id, r.gpu_hours, r.node_hours, r.usd]
                            for r in s.execute(select(t.c.id, t.c.bucket, t.c.node, t.c.job_id, t.c.gpu_hours,
                                                      t.c.node_hours, t.c.usd)
                                               .where(t.c.cluster == cluster, t.c.bucket.in_(buckets)))}
                fresh: dict[tuple[float, str, str], dict[str, Any]] = {}
                touched: dict[int, list] = {}
                for e in entries:
                    key = (e.bucket, e.node, e.job_id)
                    row = existing.get(key)
                    if row is not None:
                        row[1] += e.gpu_hours
                        row[2] += e.node_hours
                        row[3] += e.usd
                        touched[row[0]] = row
                        continue
                    new_row = fresh.get(key)
                    if new_row is None:
                        new_row = fresh[key] = dict(
                            bucket=e.bucket, cluster=e.cluster, cloud=e.cloud, region=e.region, pool=e.pool,
                            instance_type=e.instance_type, spot=e.spot, node=e.node, job_id=e.job_id,
                            queue=e.queue, team=e.team, gpu_hours=0.0, node_hours=0.0, usd=0.0)
                    new_row["gpu_hours"] += e.gpu_hours
                    new_row["node_hours"] += e.node_hours
                    new_row["usd"] += e.usd
                inserts += fresh.values()
                updates += [{"rid": r[0], "g": r[1], "n": r[2], "u": r[3]} for r in touched.values()]
            if inserts:
                s.execute(t.insert(), inserts)
            if updates:
                s.execute(t.update().where(t.c.id == bindparam("rid"))
                          .values(gpu_hours=bindparam("g"), node_hours=bindparam("n"), usd=bindparam("u")), updates)

    def ledger_totals(self, by: str, *, since: float | None = None, until: float | None = None
                      ) -> list[tuple[str, float, float, float]]:
        """(key, node-hours, GPU-hours, dollars) grouped by cloud, cluster, pool, queue, team or job."""
        column = {"cloud": LedgerRow.cloud, "cluster": LedgerRow.cluster, "pool": LedgerRow.pool,
                  "queue": LedgerRow.queue, "team": LedgerRow.team, "job": LedgerRow.job_id}[by]
        q = select(column, func.sum(LedgerRow.node_hours), func.sum(LedgerRow.gpu_hours), func.sum(LedgerRow.usd))
        if since is not None:
            q = q.where(LedgerRow.bucket >= since)
        if until is not None:
            q = q.where(LedgerRow.bucket < until)
        q = q.group_by(column).order_by(func.sum(LedgerRow.usd).desc())
        with self.tx() as s:
            return [(k or "", float(nh or 0), float(gh or 0), float(usd or 0)) for k, nh, gh, usd in s.execute(q)]


MIGRATIONS = Path(__file__).resolve().parent / "migrations"


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


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cur = dbapi_connection.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()
