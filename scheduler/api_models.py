"""What the HTTP API sends and receives, as pydantic models; the CLI renders the same models in both of its modes."""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from spillover.scheduler.config import CloudCluster, SpilloverConfig
from spillover.scheduler.model import JobSpec, JobState
from spillover.scheduler.records import Event, Job

# event kinds that record a placement decision: where the job went, or why it waits
PLACEMENT_KINDS = ("placed", "burst", "waiting", "requeued")


class _Out(BaseModel):
    model_config = ConfigDict(extra="ignore")


class FieldError(_Out):
    field: str = Field(description="where the problem is, e.g. spec.gpus or body[2].spec.queue, query.limit")
    message: str


class Problem(_Out):
    """An RFC 9457 problem detail (application/problem+json)."""

    type: str = Field(default="about:blank", description="a URI reference naming the kind of problem")
    title: str = Field(description="the HTTP status phrase")
    status: int
    detail: str = Field(default="", description="what went wrong, in one line")
    errors: list[FieldError] | None = Field(default=None, description="for invalid input: every problem, by field")


class JobOut(_Out):
    """A job as the store holds it."""

    id: str
    name: str
    queue: str
    team: str
    state: JobState
    gpus: int = Field(description="GPUs in all (per replica x replicas)")
    priority: int
    cluster: str | None = None
    pool: str | None = None
    gpu_type: str | None = None
    reason: str = Field(description="why it is where it is, or why it waits")
    attempts: int
    submitted_at: float
    dispatched_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    spec: JobSpec

    @staticmethod
    def of(j: Job) -> JobOut:
        return JobOut.model_construct(
            id=j.id, name=j.name, queue=j.queue, team=j.team, state=j.state, gpus=j.gpus, priority=j.priority,
            cluster=j.cluster, pool=j.pool, gpu_type=j.gpu_type, reason=j.reason, attempts=j.attempts,
            submitted_at=j.submitted_at, dispatched_at=j.dispatched_at, started_at=j.started_at,
            finished_at=j.finished_at, spec=j.spec)


class EventOut(_Out):
    at: float
    kind: str
    cluster: str | None = None
    from_state: str | None = None
    to_state: str | None = None
    message: str

    @staticmethod
    def of(e: Event) -> EventOut:
        return EventOut.model_construct(at=e.at, kind=e.kind, cluster=e.cluster, from_state=e.from_state,
                                        to_state=e.to_state, message=e.message)


class Placement(_Out):
    reason: str = Field(description="the job's current reason")
    events: list[EventOut] = Field(description="every placement decision: placed, burst, waiting, requeued")


class JobDetail(_Out):
    job: JobOut
    placement: Placement
    events: list[EventOut] = Field(description="every event of the job's life, oldest first")

    @staticmethod
    def of(j: Job, events: list[Event]) -> JobDetail:
        evs = [EventOut.of(e) for e in events]
        return JobDetail.model_construct(
            job=JobOut.of(j), events=evs,
            placement=Placement.model_construct(reason=j.reason, events=[e for e in evs if e.kind in PLACEMENT_KINDS]))


class JobPage(_Out):
    items: list[JobOut] = Field(description="newest first")
    continue_: str | None = Field(default=None, alias="continue",
                                  description="pass as ?continue= for the next page; null on the last one")

    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)


class SubmitResult(_Out):
    jobs: list[JobOut]


class CancelResult(_Out):
    job: JobOut
    outcome: Literal["cancelled", "cancelling"] = Field(
        description="cancelled: it was queued; cancelling: the loop removes it from its cluster")
    message: str


class NodeGroupOut(_Out):
    count: int
    gpus_per_node: int
    gpu_type: str
    gpu_hour_cost: float


class PoolOut(_Out):
    name: str
    instance_type: str
    spot: bool
    gpu_type: str
    gpus_per_node: int
    price_per_hour: float
    min_nodes: int
    max_nodes: int
    cooling_off: bool
    message: str = ""


class ClusterOut(_Out):
    name: str
    kind: Literal["onprem", "cloud"]
    cloud: str | None = None
    region: str | None = None
    available: bool
    observed: bool = Field(description="whether the loop has observed it yet")
    message: str = ""
    last_observed_at: float | None = None
    signals: dict[str, float] = Field(default_factory=dict)
    node_groups: list[NodeGroupOut] = Field(default_factory=list)
    pools: list[PoolOut] = Field(default_factory=list)


def cluster_overview(config: SpilloverConfig, statuses: dict[str, Any], pool_statuses: dict[str, Any],
                     now: float) -> list[ClusterOut]:
    """Every configured cluster and pool with what the loop last saw of it (read-only: missing status rows are
    shown as not observed, never created)."""
    out = []
    for c in config.clusters:
        st = statuses.get(c.name)
        signals = {k: float(v) for k, v in json.loads((st.signals if st else None) or "{}").items()
                   if isinstance(v, int | float)}
        base = dict(name=c.name, available=bool(st.available) if st else True,
                    observed=st is not None and st.last_observed_at is not None,
                    message=(st.message or "") if st else "", last_observed_at=st.last_observed_at if st else None,
                    signals=signals)
        if isinstance(c, CloudCluster):
            pools = []
            for p in c.pools:
                ps = pool_statuses.get(f"{c.name}/{p.name}")
                cooling = ps is not None and ps.cooloff_until is not None and ps.cooloff_until > now
                pools.append(PoolOut(name=p.name, instance_type=p.instance_type, spot=p.spot, gpu_type=p.gpu_type,
                                     gpus_per_node=p.gpus_per_node, price_per_hour=p.price_per_hour,
                                     min_nodes=p.min_nodes, max_nodes=p.max_nodes, cooling_off=cooling,
                                     message=(ps.message or "") if cooling else ""))
            out.append(ClusterOut(kind="cloud", cloud=str(getattr(c.cloud, "value", c.cloud)), region=c.region,
                                  pools=pools, **base))
        else:
            out.append(ClusterOut(kind="onprem", node_groups=[
                NodeGroupOut(count=g.count, gpus_per_node=g.gpus_per_node, gpu_type=g.gpu_type,
                             gpu_hour_cost=c.gpu_hour_cost) for g in c.node_groups], **base))
    return out


class CostRowOut(_Out):
    key: str = Field(description="the cloud, team, queue, ... ('(idle)' for node time no job used)")
    node_hours: float
    gpu_hours: float
    usd: float


ReportBy = Literal["cloud", "cluster", "pool", "queue", "team", "job"]


class CostReport(_Out):
    by: ReportBy
    scope: str = Field(description="'all', or 'team:NAME' when the token reads only its team's costs")
    rows: list[CostRowOut]
    total_usd: float


class QueuePolicy(_Out):
    name: str
    team: str
    value_of_time_per_gpu_hour: float | None = None
    value_of_time_per_job_hour: float | None = None


class PolicyOut(_Out):
    """The active burst policy (from the config) and each queue's own value of time."""

    allowed_clouds: list[str]
    allowed_regions: list[str]
    max_cloud_gpus: int | None = None
    value_of_time_per_gpu_hour: float
    value_of_time_per_job_hour: float | None = None
    scale_down_idle_s: float
    spot_for_checkpointable: bool
    spot_for_non_checkpointable: bool
    onprem_first: bool
    queues: list[QueuePolicy]

    @staticmethod
    def of(config: SpilloverConfig) -> PolicyOut:
        return PolicyOut(**config.policy.model_dump(mode="json"),
                         queues=[QueuePolicy(**q.model_dump(mode="json")) for q in config.queues])


class Health(_Out):
    status: Literal["ok", "ready"]
