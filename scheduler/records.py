"""What the store holds and hands out, as plain records: jobs, events, actions, ledger entries, cluster and pool
health, and the batches the loop's journal writes."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from typing import Any, NamedTuple

from spillover.scheduler.model import JobSpec, JobState
from spillover.scheduler.tables import ActionRow


class Estimate(NamedTuple):
    """When and where a waiting job is expected to start, and what holds it back."""

    start_at: float | None = None
    place: str | None = None
    pending: str = ""


# A job stopped past its estimate has not finished: it keeps some work to do.
MAX_PROGRESS = 0.95


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
    interruptions: int = 0  # times its node was taken away under it (spot reclaims, lost nodes)
    avoid: tuple[tuple[str, float], ...] = ()  # (cluster, until): not to be sent back there before then
    progress: float = 0.0  # fraction of its work done before a preemption or interruption (checkpointable jobs)
    est_start_at: float | None = None  # while pending: when the plan expects it to start
    est_place: str | None = None  # ... and on which cluster
    pending: str = ""  # ... and what holds it back: quota, budget, capacity, policy or cost

    @cached_property
    def spec(self) -> JobSpec:
        return _parse_spec(self.spec_json)

    @property
    def dispatch_key(self) -> str:
        return f"dispatch:{self.id}:{self.attempts}"

    def evolve(self, **changes: Any) -> Job:
        """This job with some fields changed (the parsed spec is kept: it never changes). The loop changes jobs
        several times a cycle, and `dataclasses.replace` on a frozen class of this size costs ten times more."""
        unknown = changes.keys() - _JOB_FIELDS
        if unknown:
            raise TypeError(f"Job has no field {sorted(unknown)[0]!r}")
        new = object.__new__(Job)
        new.__dict__.update(self.__dict__)
        new.__dict__.update(changes)
        return new

    def progress_at(self, now: float, speed: float) -> float:
        """The fraction of its work done were it stopped at `now`: a checkpointable job keeps what it ran (at its GPU
        type's `speed`), capped short of done; any other job starts over."""
        spec = self.spec
        if not spec.checkpointable or self.started_at is None or spec.estimated_runtime_s <= 0:
            return self.progress
        ran = max(0.0, now - self.started_at) * speed / spec.estimated_runtime_s
        return min(MAX_PROGRESS, self.progress + ran)

    @property
    def remaining_s(self) -> float:
        """Estimated runtime left on the reference GPU."""
        return self.spec.estimated_runtime_s * (1 - self.progress)

    def avoided(self, now: float) -> set[str]:
        """Clusters the job must not be sent to at `now`."""
        return {c for c, until in self.avoid if until > now}

    @staticmethod
    def of(row: Any) -> Job:
        avoid = json.loads(row.avoid) if row.avoid and row.avoid != "{}" else {}
        return Job(row.id, row.name, row.queue, row.team, row.spec, row.gpus, row.priority, JobState(row.state),
                   row.cluster, row.pool, row.gpu_type, row.reason, row.attempts, row.submitted_at,
                   row.dispatched_at, row.started_at, row.finished_at, row.interruptions or 0,
                   tuple(sorted(avoid.items())), row.progress or 0.0, row.est_start_at, row.est_place,
                   row.pending or "")


_JOB_FIELDS = frozenset(Job.__dataclass_fields__)
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


class LedgerEntry(NamedTuple):
    """Node time in one hour bucket, on one node, for one job ('' = the node's idle share). A tuple: the
    ledger makes hundreds of thousands of them in a long replay."""

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


@dataclass
class ClusterHealth:
    """What the loop knows of a cluster between cycles: reachability, its last signals, the ledger's mark."""

    cluster: str
    available: bool = True
    failures: int = 0  # consecutive failed observations
    unavailable_since: float | None = None
    message: str = ""
    signals: str = "{}"
    last_observed_at: float | None = None
    accrued_until: float | None = None  # node time up to here is in the ledger

    @staticmethod
    def of(row: Any) -> ClusterHealth:
        return ClusterHealth(row.cluster, bool(row.available), row.failures or 0, row.unavailable_since,
                             row.message or "", row.signals or "{}", row.last_observed_at, row.accrued_until)

    def row(self) -> dict[str, Any]:
        return dict(cluster=self.cluster, available=self.available, failures=self.failures,
                    unavailable_since=self.unavailable_since, message=self.message, signals=self.signals,
                    last_observed_at=self.last_observed_at, accrued_until=self.accrued_until)


@dataclass
class PoolHealth:
    """What the loop knows of a cloud pool between cycles: idle and provisioning clocks, cool-off, lost nodes."""

    pool_id: str  # "<cluster>/<pool>"
    idle_since: float | None = None
    cooloff_until: float | None = None
    message: str = ""
    growing_since: float | None = None
    lost_nodes: dict[str, float] = field(default_factory=dict)  # node -> when it was lost under a running job

    @staticmethod
    def of(row: Any) -> PoolHealth:
        return PoolHealth(row.pool_id, row.idle_since, row.cooloff_until, row.message or "", row.growing_since,
                          json.loads(row.lost_nodes or "{}"))

    def row(self) -> dict[str, Any]:
        return dict(pool_id=self.pool_id, idle_since=self.idle_since, cooloff_until=self.cooloff_until,
                    message=self.message, growing_since=self.growing_since,
                    lost_nodes=json.dumps(self.lost_nodes, sort_keys=True))


@dataclass
class NewEvent:
    at: float
    kind: str
    message: str
    job_id: str | None = None
    cluster: str | None = None
    from_state: str | None = None
    to_state: str | None = None


@dataclass
class NewAction:
    """An action to write as intended."""

    key: str
    kind: str
    cluster: str
    created_at: float
    job_id: str | None = None
    pool: str | None = None
    payload: dict[str, Any] = field(default_factory=dict)


@dataclass
class ActionDone:
    key: str
    at: float
    ok: bool = True
    error: str = ""


@dataclass
class JobWrite:
    """One job's row as it should be, written only if the store still holds it in `expected` state; its events,
    intents and finished actions are written with it or not at all."""

    job: Job
    expected: JobState
    at: float  # when it changed (the row's updated_at)
    events: list[NewEvent] = field(default_factory=list)
    intents: list[NewAction] = field(default_factory=list)
    done: list[ActionDone] = field(default_factory=list)


@dataclass
class Batch:
    """Everything one commit of the loop writes, in one transaction."""

    jobs: dict[str, JobWrite] = field(default_factory=dict)
    events: list[NewEvent] = field(default_factory=list)
    intents: list[NewAction] = field(default_factory=list)
    done: list[ActionDone] = field(default_factory=list)
    clusters: dict[str, ClusterHealth] = field(default_factory=dict)
    pools: dict[str, PoolHealth] = field(default_factory=dict)
    ledger: list[LedgerEntry] = field(default_factory=list)
    marks: dict[tuple[str, str], float | None] = field(default_factory=dict)  # (cluster, node) -> until; None: gone
    # a waiting job's reason, rewritten only while it is still pending: job id -> (reason, at, estimate)
    reasons: dict[str, tuple[str, float, Estimate]] = field(default_factory=dict)

    new_jobs: list[tuple[Job, NewEvent]] = field(default_factory=list)  # submitted through the loop

    def __bool__(self) -> bool:
        return bool(self.jobs or self.events or self.intents or self.done or self.clusters or self.pools
                    or self.ledger or self.marks or self.reasons or self.new_jobs)


@dataclass(frozen=True)
class WorkingSet:
    """What the loop loads at start: every job not yet finished, open actions, cluster and pool health, and the
    newest event id (changes by others are read from there on)."""

    jobs: list[Job]
    open_actions: list[Action]
    clusters: dict[str, ClusterHealth]
    pools: dict[str, PoolHealth]
    event_mark: int
    marks: dict[str, dict[str, float]]  # cluster -> node -> how far its time is in the ledger


def new_jobs(specs: Iterable[JobSpec], *, now: float, teams: dict[str, str] | None = None,
             ids: Iterable[str] | None = None) -> list[tuple[Job, NewEvent]]:
    """Queued jobs for these specs, each with its "submitted" event, not yet written."""
    specs = list(specs)
    id_list = list(ids) if ids is not None else [new_job_id(s.name) for s in specs]
    teams = teams or {}
    out = []
    for spec, jid in zip(specs, id_list, strict=True):
        job = Job(jid, spec.name, spec.queue, teams.get(spec.queue, spec.queue), spec.model_dump_json(),
                  spec.total_gpus, spec.priority, JobState.PENDING, None, None, None, "queued", 0, now, None, None,
                  None)
        job.__dict__["spec"] = spec
        out.append((job, NewEvent(now, "submitted", f"submitted to queue {spec.queue}: {spec.total_gpus} GPU(s), "
                                  f"estimated {spec.estimated_runtime_s / 3600:.2f} h", job_id=jid,
                                  to_state=JobState.PENDING.value)))
    return out


def new_job_id(name: str) -> str:
    # a short random suffix keeps resubmissions of one name apart and the id a valid Kubernetes name
    return f"{name}-{secrets.token_hex(3)}"
