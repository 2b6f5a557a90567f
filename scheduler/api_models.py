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
    est_start_at: float | None = Field(default=None, description="while pending: when the plan expects it to start "
                                       "(epoch seconds); null when no forecast has it starting")
    est_place: str | None = Field(default=None, description="while pending: the cluster it is expected to start on")
    pending: str = Field(default="", description="while pending, what holds it back: quota, budget, capacity, "
                         "policy (a cap the policy sets) or cost (waiting is cheaper than running now)")
    progress: float = Field(default=0.0, description="fraction of its work done before a preemption or "
                            "interruption; a checkpointable job resumes from there")
    spec: JobSpec

    @staticmethod
    def of(j: Job) -> JobOut:
        return JobOut.model_construct(
            id=j.id, name=j.name, queue=j.queue, team=j.team, state=j.state, gpus=j.gpus, priority=j.priority,
            cluster=j.cluster, pool=j.pool, gpu_type=j.gpu_type, reason=j.reason, attempts=j.attempts,
            submitted_at=j.submitted_at, dispatched_at=j.dispatched_at, started_at=j.started_at,
            finished_at=j.finished_at, spec=j.spec, progress=j.progress,
            **({"est_start_at": j.est_start_at, "est_place": j.est_place, "pending": j.pending}
               if j.state == JobState.PENDING else {}))


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
    key: str = Field(description="the cloud, team, queue, ... ('(idle)' for cloud node time no job used, "
                     "'<cluster> (on-prem)' for on-prem time by pool); in a report by period, the value of `split`, "
                     "or the period itself without one")
    node_hours: float
    gpu_hours: float
    usd: float
    period: str | None = Field(default=None, description="by day, week or month: 2026-11-03, 2026-W45, 2026-11")
    start: float | None = Field(default=None, description="by period: its first second (epoch seconds, UTC)")
    end: float | None = Field(default=None, description="by period: the first second after it")


ReportBy = Literal["cloud", "cluster", "pool", "queue", "team", "job", "day", "week", "month"]
Split = Literal["cloud", "team", "queue"]


class CostReport(_Out):
    by: ReportBy
    split: Split | None = Field(default=None, description="by period: what each period is broken down by")
    since: float | None = Field(default=None, description="hour buckets from here on (epoch seconds); null: all")
    until: float | None = Field(default=None, description="hour buckets before this (epoch seconds); null: all")
    scope: str = Field(description="'all', or 'team:NAME' when the token reads only its team's costs")
    rows: list[CostRowOut] = Field(description="grouped: most dollars first; by period: oldest first, and in each "
                                   "period every value of the split, most dollars (over the report) first")
    total_usd: float

    @staticmethod
    def of_groups(by: str, rows: list, *, since: float | None = None, until: float | None = None,
                  scope: str = "all") -> CostReport:
        """From costs.cost_report's CostRows."""
        out = [CostRowOut(key=r.key, node_hours=r.node_hours, gpu_hours=r.gpu_hours, usd=r.usd) for r in rows]
        return CostReport(by=by, since=since, until=until, scope=scope, rows=out, total_usd=sum(r.usd for r in rows))

    @staticmethod
    def of_periods(by: str, rows: list, *, split: str | None = None, since: float | None = None,
                   until: float | None = None, scope: str = "all") -> CostReport:
        """From costs.period_report's PeriodRows."""
        out = [CostRowOut(key=r.key if split else r.period, node_hours=r.node_hours, gpu_hours=r.gpu_hours, usd=r.usd,
                          period=r.period, start=r.start, end=r.end) for r in rows]
        return CostReport(by=by, split=split, since=since, until=until, scope=scope, rows=out,
                          total_usd=sum(r.usd for r in rows))


class BudgetLineOut(_Out):
    id: str = Field(description="team:NAME or queue:NAME, and :CLOUD for its part on one cloud")
    owner: Literal["team", "queue"]
    name: str
    cloud: str | None = Field(default=None, description="null: the whole budget")
    period_kind: Literal["day", "week", "month", "window"]
    period: str = Field(description="2026-12, 2026-W49, 2026-12-03, or a window's dates")
    start: float = Field(description="the period's first second (epoch seconds, UTC)")
    end: float = Field(description="the first second after it")
    usd: float = Field(description="the budget, dollars per period")
    spent: float = Field(description="dollars in the ledger in the period")
    share: float = Field(description="spent / usd")
    forecast: float = Field(description="dollars at the end of the period at the rate spent so far")
    warn_at: float = Field(description="share at which the state turns to warning")
    state: Literal["ok", "warning", "exhausted", "not open", "closed"] = Field(
        description="ok; warning past warn_at; exhausted: nothing left; a window: not open yet, or closed")


class BudgetReport(_Out):
    at: float = Field(description="when the report was made (epoch seconds): its periods are the ones open then")
    scope: str = Field(description="'all', or 'team:NAME': that team's lines and its queues'")
    lines: list[BudgetLineOut] = Field(description="teams' lines first, each followed by its per-cloud parts")

    @staticmethod
    def of(rows: list, at: float, scope: str = "all") -> BudgetReport:
        """From costs.budget_report's BudgetRows."""
        return BudgetReport(at=at, scope=scope, lines=[BudgetLineOut(**vars(r)) for r in rows])


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
