"""The global queue store: jobs, their events, intended actions with idempotency keys, and the cost ledger.

SQLAlchemy 2 over SQLite (the embedded default, a file in WAL mode) or PostgreSQL; portable SQL only.
Every state change is a compare-and-set (`UPDATE ... WHERE state IN (...)`) written together with its
event, so the CLI and the loop can never move one job into two states, and a crash leaves either the old
state or the new one with its event — never half of it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import and_, bindparam, create_engine, event, func, literal_column, or_, select, text, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

from spillover.scheduler.bulk import Compiled
from spillover.scheduler.errors import StoreUnavailableError, UnknownJobError
from spillover.scheduler.model import JobSpec, JobState
from spillover.scheduler.records import (
    Action,
    Batch,
    ClusterHealth,
    Event,
    Job,
    JobWrite,
    LedgerEntry,
    new_jobs,
    NewEvent,
    PoolHealth,
    WorkingSet,
)
from spillover.scheduler.tables import (
    ActionRow,
    ClusterStatusRow,
    EventRow,
    JobRow,
    LeadershipRow,
    LedgerMarkRow,
    LedgerRow,
    PoolStatusRow,
    migrate,
)


# PostgreSQL advisory lock taken by every write transaction (see Store.tx)
EVENT_ORDER_LOCK = 7263012
NON_TERMINAL = tuple(st.value for st in JobState if not st.terminal)
LEADERSHIP = "loop"  # the leadership row whose epoch fences the loop's writes


def _filtered(q: Any, states: Iterable[JobState] | None, queue: str | None, team: str | None = None) -> Any:
    """A jobs query narrowed to these states, queue and team (None: any)."""
    t = JobRow.__table__
    if states is not None:
        q = q.where(t.c.state.in_([st.value for st in states]))
    if queue is not None:
        q = q.where(t.c.queue == queue)
    if team is not None:
        q = q.where(t.c.team == team)
    return q


class Fenced(Exception):
    """A loop's write was refused: a newer leader holds the fencing epoch, so this one must stop acting."""


class Store:
    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.url = url
        kwargs: dict[str, Any] = {"echo": echo, "future": True}
        if url.startswith("sqlite"):
            kwargs["connect_args"] = {"timeout": 30}
        if url.startswith("postgresql"):
            # A client cut off mid-transaction would keep its row locks (and the event-order lock) until the
            # server notices: keepalives at both ends and a bound on idle transactions end such a session.
            kwargs["connect_args"] = {
                "keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 2, "keepalives_count": 3,
                "options": "-c tcp_keepalives_idle=5 -c tcp_keepalives_interval=2 -c tcp_keepalives_count=3 "
                           "-c idle_in_transaction_session_timeout=60000"}
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
        self._pg = self.engine.dialect.name == "postgresql"
        self._conn: Any = None  # see _write
        self._epoch: int | None = None  # see fence

    def fence(self, epoch: int | None) -> None:
        """Make every write transaction of this store check, first, that the leadership epoch is still `epoch`,
        and fail with Fenced, writing nothing, once a newer leader has taken over (None: no check; the stores of
        the CLI and the API, whose writes are users', never set one)."""
        self._epoch = epoch

    def _check_fence(self, conn: Any) -> None:
        # An UPDATE rather than a SELECT: it locks the row (PostgreSQL) or the database (SQLite) until commit, so
        # a new leader's epoch increment waits for this transaction and every later one of ours sees it.
        if self._epoch is not None and _FENCE.one(conn, {"n": LEADERSHIP, "e": self._epoch}) != 1:
            current = conn.execute(select(LeadershipRow.epoch).where(LeadershipRow.name == LEADERSHIP)).scalar()
            raise Fenced(f"the loop's epoch {self._epoch} is over: a newer leader holds epoch {current}")

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        self.engine.dispose()

    @contextmanager
    def tx(self) -> Iterator[Session]:
        """A write transaction. On PostgreSQL writers take turns, so that event ids are handed out in commit
        order and the loop, reading events after the last id it saw, never misses one committed late."""
        with self._sessions.begin() as s:
            if self._pg:
                s.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": EVENT_ORDER_LOCK})
            self._check_fence(s.connection())
            yield s

    @contextmanager
    def _read(self) -> Iterator[Session]:
        with self._sessions() as s:
            yield s

    # ---- jobs ------------------------------------------------------------------------------------

    def submit(self, specs: Iterable[JobSpec], *, now: float, teams: dict[str, str] | None = None,
               ids: Iterable[str] | None = None) -> list[Job]:
        """Add jobs to the queue in one transaction: all are stored or none is."""
        made = new_jobs(specs, now=now, teams=teams, ids=ids)
        if made:
            with self._write(fenced=False) as conn:  # a user's write: never fenced
                _insert_jobs(conn, made)
        return [j for j, _ in made]

    def job(self, ref: str, *, team: str | None = None) -> Job:
        """A job by id, or by name (the newest with that name); with `team`, only that team's jobs are found."""
        with self._read() as s:
            row = s.get(JobRow, ref)
            if row is not None and team is not None and row.team != team:
                row = None
            if row is None:
                q = select(JobRow).where(JobRow.name == ref)
                if team is not None:
                    q = q.where(JobRow.team == team)
                row = s.scalars(q.order_by(JobRow.submitted_at.desc(), JobRow.id.desc()).limit(1)).first()
            if row is None:
                raise UnknownJobError(f"unknown job {ref!r}; `spillover jobs` lists job ids and names")
            return Job.of(row)

    def jobs(self, states: Iterable[JobState] | None = None, queue: str | None = None,
             limit: int | None = None) -> list[Job]:
        t = JobRow.__table__
        # plain rows, not ORM objects: the loop reads the active jobs several times a cycle
        q = _filtered(select(*t.c), states, queue).order_by(t.c.submitted_at, t.c.id)
        if limit is not None:
            q = q.limit(limit)
        with self.engine.connect() as conn:
            return [Job.of(r) for r in conn.execute(q)]

    def jobs_page(self, *, states: Iterable[JobState] | None = None, queue: str | None = None,
                  team: str | None = None, limit: int = 50, before: tuple[float, str] | None = None) -> list[Job]:
        """Newest first, at most `limit`, only those older than `before` (the (submitted_at, id) of the last one
        seen): a cursor, so jobs submitted meanwhile never shift a page."""
        t = JobRow.__table__
        q = _filtered(select(*t.c), states, queue, team)
        if before is not None:
            q = q.where(or_(t.c.submitted_at < before[0], and_(t.c.submitted_at == before[0], t.c.id < before[1])))
        q = q.order_by(t.c.submitted_at.desc(), t.c.id.desc()).limit(limit)
        with self.engine.connect() as conn:
            return [Job.of(r) for r in conn.execute(q)]

    def ping(self) -> None:
        """One trivial query on a jobs table; StoreUnavailableError when the store does not answer."""
        try:
            with self.engine.connect() as conn:
                conn.execute(select(JobRow.__table__.c.id).limit(1)).all()
        except Exception:
            raise StoreUnavailableError("the store does not answer") from None

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
        with self._read() as s:
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
        return self._events(q)

    def events_of(self, kinds: Iterable[str], since: float) -> list[Event]:
        """Events of these kinds at or after `since`, oldest first."""
        return self._events(select(EventRow).where(EventRow.kind.in_(list(kinds)), EventRow.at >= since)
                            .order_by(EventRow.id))

    def _events(self, q) -> list[Event]:
        with self._read() as s:
            return [Event(r.at, r.job_id, r.cluster, r.kind, r.from_state, r.to_state, r.message)
                    for r in s.scalars(q)]

    def record_event(self, kind: str, message: str, *, now: float, job_id: str | None = None,
                     cluster: str | None = None) -> None:
        with self.tx() as s:
            s.add(EventRow(at=now, job_id=job_id, cluster=cluster, kind=kind, message=message))

    # ---- the loop's working set and journal ---------------------------------------------------------

    def working_set(self) -> WorkingSet:
        """Everything the loop needs at start, read once: it works in memory from there on."""
        t = JobRow.__table__
        with self.engine.connect() as conn:
            mark = conn.execute(select(func.max(EventRow.id))).scalar() or 0
            jobs = [Job.of(r) for r in conn.execute(select(*t.c).where(t.c.state.in_(NON_TERMINAL))
                                                     .order_by(t.c.submitted_at, t.c.id))]
        with self._read() as s:
            actions = [Action.of(r) for r in s.scalars(select(ActionRow).where(ActionRow.status == "intended")
                                                       .order_by(ActionRow.id))]
            clusters = {r.cluster: ClusterHealth.of(r) for r in s.scalars(select(ClusterStatusRow))}
            pools = {r.pool_id: PoolHealth.of(r) for r in s.scalars(select(PoolStatusRow))}
            marks: dict[str, dict[str, float]] = {}
            for r in s.scalars(select(LedgerMarkRow)):
                marks.setdefault(r.cluster, {})[r.node] = r.until
        return WorkingSet(jobs, actions, clusters, pools, int(mark), marks)

    def job_changes(self, after: int) -> tuple[dict[str, str], int]:
        """{job id: the state its newest event moved it to} for events after id `after`, and the newest id."""
        out: dict[str, str] = {}
        mark = after
        with self._write(fenced=False) as conn:  # a read
            for eid, job_id, to_state in _EVENTS_AFTER.rows(conn, {"after": after}):
                mark = eid
                if job_id is not None and to_state is not None:
                    out[job_id] = to_state
        return out, mark

    def apply(self, batch: Batch) -> set[str]:
        """Write a batch in one transaction. Each job's row is written only if the store still holds the state the
        batch expects (compare-and-set); the ids of jobs another writer changed meanwhile are returned, and
        nothing of theirs (row, events, intents, finished actions) is written."""
        if not batch:
            return set()
        failed: set[str] = set()
        events, intents, done = list(batch.events), list(batch.intents), list(batch.done)
        with self._write() as conn:
            _insert_jobs(conn, batch.new_jobs)
            for w in batch.jobs.values():
                if _JOB_CAS.one(conn, _job_params(w)) != 1:
                    failed.add(w.job.id)
                    continue
                events += w.events
                intents += w.intents
                done += w.done
            _EVENT_INSERT.many(conn, [vars(e) for e in events])
            _ACTION_INSERT.many(conn, [dict(key=a.key, kind=a.kind, job_id=a.job_id, cluster=a.cluster, pool=a.pool,
                                            payload=json.dumps(a.payload), status="intended",
                                            created_at=a.created_at, error="") for a in intents])
            _ACTION_DONE.many(conn, [{"k": d.key, "st": "done" if d.ok else "failed", "at": d.at, "err": d.error}
                                     for d in done])
            _CLUSTER_UPSERT.many(conn, [c.row() for c in batch.clusters.values()])
            _POOL_UPSERT.many(conn, [p.row() for p in batch.pools.values()])
            _LEDGER_UPSERT.many_tuples(conn, LedgerEntry._fields, _ledger_rows(batch.ledger))
            _MARK_UPSERT.many(conn, [dict(cluster=c, node=n, until=u) for (c, n), u in batch.marks.items()
                                     if u is not None])
            _MARK_DELETE.many(conn, [dict(c=c, n=n) for (c, n), u in batch.marks.items() if u is None])
            _REASON.many(conn, [dict(r=r, at=at, id=jid, pending=JobState.PENDING.value, es=est.start_at,
                                     ep=est.place, pk=est.pending)
                                for jid, (r, at, est) in batch.reasons.items()
                                if jid not in batch.jobs and jid not in failed])
        return failed

    @contextmanager
    def _write(self, *, fenced: bool = True) -> Iterator[Any]:
        """A Core transaction on a connection kept open for the loop's many small writes and reads, with the same
        turn-taking on PostgreSQL as `tx` and, when `fenced`, the same epoch check. A connection that failed is
        dropped and opened again next time."""
        if self._conn is None or self._conn.closed:
            self._conn = self.engine.connect()
        conn = self._conn
        try:
            with conn.begin():
                if self._pg:
                    conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": EVENT_ORDER_LOCK})
                if fenced:
                    self._check_fence(conn)
                yield conn
        except BaseException:
            self._conn = None
            conn.close()
            raise

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
        with self._read() as s:
            return [Action.of(r) for r in s.scalars(q.order_by(ActionRow.id))]

    def actions(self, job_id: str | None = None) -> list[Action]:
        q = select(ActionRow)
        if job_id is not None:
            q = q.where(ActionRow.job_id == job_id)
        with self._read() as s:
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
        with self._read() as s:
            return {r.cluster: r for r in s.scalars(select(ClusterStatusRow))}

    def pool_statuses(self) -> dict[str, PoolStatusRow]:
        with self._read() as s:
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
        batch = Batch()
        for cluster, (until, entries) in accruals.items():
            with self._read() as s:
                row = s.get(ClusterStatusRow, cluster)
            health = ClusterHealth.of(row) if row is not None else ClusterHealth(cluster)
            health.accrued_until = health.last_observed_at = until
            batch.clusters[cluster] = health
            batch.ledger += entries
        self.apply(batch)

    def ledger_totals(self, by: str, *, since: float | None = None, until: float | None = None,
                      team: str | None = None) -> list[tuple[str, float, float, float]]:
        """(key, node-hours, GPU-hours, dollars) grouped by cloud, cluster, pool, queue, team or job, dearest first;
        with `team`, only that team's rows (idle node time belongs to no team)."""
        totals: dict[str, list[float]] = {}
        for _b, key, _c, _cl, _idle, nh, gh, usd in self.ledger_sums(by, since=since, until=until, team=team):
            t = totals.setdefault(key, [0.0, 0.0, 0.0])
            t[0] += nh
            t[1] += gh
            t[2] += usd
        return sorted(((k, *v) for k, v in totals.items()), key=lambda r: -r[3])  # type: ignore[misc]

    def ledger_sums(self, by: str, *, since: float | None = None, until: float | None = None,
                    team: str | None = None, per_bucket: bool = False
                    ) -> list[tuple[float | None, str, str, str, bool, float, float, float]]:
        """(hour bucket or None, key, cloud, cluster, idle, node-hours, GPU-hours, dollars) grouped by `by` (cloud,
        cluster, pool, queue, team or job) and by where the time was spent, so that an empty key can be told apart:
        `idle` is a cloud node's share no job used (job ''). Buckets in [since, until); with `team`, that team's rows;
        with `per_bucket`, one row per hour bucket as well."""
        column = _LEDGER_KEYS[by]
        idle = LedgerRow.job_id == literal_column("''")  # inline, so that GROUP BY repeats the very same expression
        groups = [column, LedgerRow.cloud, LedgerRow.cluster, idle] + ([LedgerRow.bucket] if per_bucket else [])
        q = select(*groups, func.sum(LedgerRow.node_hours), func.sum(LedgerRow.gpu_hours), func.sum(LedgerRow.usd))
        if since is not None:
            q = q.where(LedgerRow.bucket >= since)
        if until is not None:
            q = q.where(LedgerRow.bucket < until)
        if team is not None:
            q = q.where(LedgerRow.team == team)
        q = q.group_by(*groups)
        with self._read() as s:
            return [(float(row[4]) if per_bucket else None, row[0] or "", row[1] or "", row[2] or "", bool(row[3]),
                     float(row[-3] or 0), float(row[-2] or 0), float(row[-1] or 0)) for row in s.execute(q)]

    def ledger_groups(self, since: float, until: float) -> list[tuple[str, str, str, float]]:
        """(team, queue, cloud, dollars) of the ledger's hour buckets in [since, until): what budgets count."""
        cols = (LedgerRow.team, LedgerRow.queue, LedgerRow.cloud)
        q = (select(*cols, func.sum(LedgerRow.usd)).where(LedgerRow.bucket >= since, LedgerRow.bucket < until)
             .group_by(*cols))
        with self._read() as s:
            return [(t or "", qu or "", c or "", float(usd or 0)) for t, qu, c, usd in s.execute(q)]

    def ledger_usage(self, since: float, until: float, cloud: str) -> list[tuple[str, float, float]]:
        """(team, bucket, GPU-hours) on one cloud ("onprem" for on-prem) in [since, until): fair-share usage."""
        q = (select(LedgerRow.team, LedgerRow.bucket, func.sum(LedgerRow.gpu_hours))
             .where(LedgerRow.bucket >= since, LedgerRow.bucket < until, LedgerRow.cloud == cloud)
             .group_by(LedgerRow.team, LedgerRow.bucket))
        with self._read() as s:
            return [(t or "", float(b), float(gh or 0)) for t, b, gh in s.execute(q)]


_LEDGER_KEYS = {"cloud": LedgerRow.cloud, "cluster": LedgerRow.cluster, "pool": LedgerRow.pool,
                "queue": LedgerRow.queue, "team": LedgerRow.team, "job": LedgerRow.job_id}
_JOB_COLUMNS = ("state", "cluster", "pool", "gpu_type", "reason", "attempts", "dispatched_at", "started_at",
                "finished_at", "interruptions", "avoid", "updated_at", "progress", "est_start_at", "est_place",
                "pending")
_jt = JobRow.__table__
_et = EventRow.__table__
_at = ActionRow.__table__
_JOB_CAS = Compiled(update(_jt).where(_jt.c.id == bindparam("b_id"), _jt.c.state == bindparam("b_expected"))
                    .values({c: bindparam(f"b_{c}") for c in _JOB_COLUMNS}))
_JOB_INSERT = Compiled(_jt.insert(), [c.name for c in _jt.c])
_EVENT_INSERT = Compiled(_et.insert(), ["at", "job_id", "cluster", "kind", "from_state", "to_state", "message"])
_EVENTS_AFTER = Compiled(select(_et.c.id, _et.c.job_id, _et.c.to_state).where(_et.c.id > bindparam("after"))
                         .order_by(_et.c.id))
_ACTION_DONE = Compiled(update(_at).where(_at.c.key == bindparam("k"))
                        .values(status=bindparam("st"), done_at=bindparam("at"), error=bindparam("err")))
_REASON = Compiled(update(_jt).where(_jt.c.id == bindparam("id"), _jt.c.state == bindparam("pending"))
                   .values(reason=bindparam("r"), updated_at=bindparam("at"), est_start_at=bindparam("es"),
                           est_place=bindparam("ep"), pending=bindparam("pk")))
_ACTION_COLUMNS = ["key", "kind", "job_id", "cluster", "pool", "payload", "status", "created_at", "error"]
_lt = LeadershipRow.__table__
_FENCE = Compiled(update(_lt).where(_lt.c.name == bindparam("n"), _lt.c.epoch == bindparam("e"))
                  .values(epoch=_lt.c.epoch))


def _insert(dialect: str, table: Any) -> Any:
    """INSERT that can say ON CONFLICT, which SQLite and PostgreSQL both speak, each through its own dialect."""
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert(table)


def _upsert(table: Any, keys: tuple[str, ...], accumulate: tuple[str, ...] = ()) -> Compiled:
    """Insert rows, or update the row with the same keys: replacing its columns, adding to `accumulate` ones."""
    columns = [c.name for c in table.c if not (c.primary_key and c.autoincrement is True and c.name not in keys)]

    def build(dialect: str) -> Any:
        stmt = _insert(dialect, table)
        return stmt.on_conflict_do_update(index_elements=list(keys), set_={
            c: (table.c[c] + stmt.excluded[c]) if c in accumulate else stmt.excluded[c]
            for c in columns if c not in keys})

    return Compiled(build, columns)


_ACTION_INSERT = Compiled(lambda d: _insert(d, _at).on_conflict_do_nothing(index_elements=["key"]), _ACTION_COLUMNS)
_CLUSTER_UPSERT = _upsert(ClusterStatusRow.__table__, ("cluster",))
_POOL_UPSERT = _upsert(PoolStatusRow.__table__, ("pool_id",))
_mt = LedgerMarkRow.__table__
_MARK_UPSERT = _upsert(_mt, ("cluster", "node"))
_MARK_DELETE = Compiled(_mt.delete().where(_mt.c.cluster == bindparam("c"), _mt.c.node == bindparam("n")))
_LEDGER_UPSERT = _upsert(LedgerRow.__table__, ("bucket", "node", "job_id"), accumulate=("gpu_hours", "node_hours", "usd"))


def _insert_jobs(conn: Any, made: list[tuple[Job, NewEvent]]) -> None:
    """Rows and "submitted" events of new jobs (the jobs before the events that point at them)."""
    if not made:
        return
    _JOB_INSERT.many(conn, [
        dict(id=j.id, name=j.name, queue=j.queue, team=j.team, spec=j.spec_json, gpus=j.gpus, priority=j.priority,
             state=j.state.value, cluster=None, pool=None, gpu_type=None, reason=j.reason, attempts=0,
             submitted_at=j.submitted_at, dispatched_at=None, started_at=None, finished_at=None,
             updated_at=j.submitted_at, interruptions=0, avoid="{}", progress=0.0, est_start_at=None,
             est_place=None, pending="") for j, _ in made])
    _EVENT_INSERT.many(conn, [vars(e) for _, e in made])


def _job_params(w: JobWrite) -> dict[str, Any]:
    j = w.job
    return {"b_id": j.id, "b_expected": w.expected.value, "b_state": j.state.value, "b_cluster": j.cluster,
            "b_pool": j.pool, "b_gpu_type": j.gpu_type, "b_reason": j.reason, "b_attempts": j.attempts,
            "b_dispatched_at": j.dispatched_at, "b_started_at": j.started_at, "b_finished_at": j.finished_at,
            "b_interruptions": j.interruptions, "b_avoid": json.dumps(dict(j.avoid), sort_keys=True),
            "b_updated_at": w.at, "b_progress": j.progress, "b_est_start_at": j.est_start_at,
            "b_est_place": j.est_place, "b_pending": j.pending}


def _ledger_rows(entries: Iterable[LedgerEntry]) -> list[tuple]:
    """Entries summed by (bucket, node, job): one row each (LedgerEntry's fields), as the ledger's unique key wants."""
    rows: dict[tuple[float, str, str], list] = {}
    for e in entries:
        key = (e.bucket, e.node, e.job_id)
        row = rows.get(key)
        if row is None:
            rows[key] = list(e)
        else:
            row[4] += e.node_hours
            row[5] += e.gpu_hours
            row[6] += e.usd
    return [tuple(r) for r in rows.values()]


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cur = dbapi_connection.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()
