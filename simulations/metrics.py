"""What a replay measured: cloud GPU-hours and dollars per cloud, job completion time and wait (average, p50, p90,
p99), on-prem utilization, and the lower bound on cloud GPU-hours — averages over all jobs but the first and last
10% by submission, as in the Starburst paper's methodology."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from scheduler.config import CloudCluster, SpilloverConfig
from scheduler.costs import cost_report
from scheduler.model import JobState
from scheduler.store import Job, Store

HOUR = 3600.0
TRIM = 0.10


@dataclass
class RunMetrics:
    """One replay's figures (hours, dollars, fractions)."""

    policy: str
    setting: str  # e.g. "value_of_time=4", "wait_h=2", ""
    queue: str  # the baselines' on-prem queue discipline ("fifo", "easy"); "" for Spillover's solver
    jobs: int
    measured: int  # jobs in the averages
    unfinished: int
    cloud_gpu_hours: float  # GPU-hours jobs ran in the cloud (all jobs)
    cloud_gpu_hours_measured: float  # the same, for the measured jobs only
    cloud_usd: float  # what the cloud bill says: node-hours incl. boot and idle, all clouds
    cloud_usd_by_cloud: dict[str, float] = field(default_factory=dict)
    cloud_gpu_hours_by_cloud: dict[str, float] = field(default_factory=dict)
    jct_avg_h: float = 0.0
    jct_p50_h: float = 0.0
    jct_p90_h: float = 0.0
    jct_p99_h: float = 0.0
    wait_avg_h: float = 0.0
    wait_p90_h: float = 0.0
    onprem_utilization: float = 0.0  # on-prem GPU-hours used / (on-prem GPUs x arrival window)
    window_h: float = 0.0  # first to last submission
    demand_gpu_hours: float = 0.0  # every job's GPUs x runtime
    lower_bound_cloud_gpu_hours: float = 0.0  # what is left if on-prem ran at 100% over the arrival window
    makespan_h: float = 0.0  # first submission to last completion
    # strict: no plan finishing by this run's makespan can send less to the cloud
    lower_bound_at_makespan: float = 0.0
    wall_s: float = 0.0
    cycles: int = 0
    solves: int = 0
    solve_s: float = 0.0

    @classmethod
    def from_row(cls, row: dict[str, object]) -> RunMetrics:
        """Back from `row()` (results.json), per-cloud figures included."""
        known = {f for f in cls.__dataclass_fields__}
        m = cls(**{k: v for k, v in row.items() if k in known})
        for k, v in row.items():
            for name in ("cloud_usd", "cloud_gpu_hours"):
                if k.startswith(f"{name}_") and k != f"{name}_measured" and isinstance(v, (int, float)):
                    getattr(m, f"{name}_by_cloud")[k.removeprefix(f"{name}_")] = float(v)
        return m

    def row(self) -> dict[str, object]:
        out = asdict(self)
        for k in ("cloud_usd_by_cloud", "cloud_gpu_hours_by_cloud"):
            for cloud, v in out.pop(k).items():
                out[f"{k.removesuffix('_by_cloud')}_{cloud}"] = v
        return out


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..100); 0 for no values."""
    if not values:
        return 0.0
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def measure(store: Store, config: SpilloverConfig, *, policy: str, setting: str = "", queue: str = "",
            true_runtime_s: dict[str, float] | None = None) -> RunMetrics:
    """The metrics of the replay held in `store` (one replay per store)."""
    jobs = sorted(store.jobs(), key=lambda j: (j.submitted_at, j.id))
    cloud_of = {c.name: c.cloud.value for c in config.clusters if isinstance(c, CloudCluster)}
    onprem_gpus = sum(c.total_gpus for c in config.clusters if not isinstance(c, CloudCluster))
    n = len(jobs)
    cut = int(n * TRIM)
    measured = jobs[cut:n - cut] if n - 2 * cut > 0 else jobs
    done = [j for j in jobs if j.state == JobState.SUCCEEDED and j.finished_at is not None]

    def ran_h(j: Job) -> float:
        return (j.finished_at - j.started_at) / HOUR if j.started_at is not None and j.finished_at else 0.0

    def runtime_h(j: Job) -> float:
        if true_runtime_s is not None and j.id in true_runtime_s:
            return true_runtime_s[j.id] / HOUR
        return j.spec.estimated_runtime_s / HOUR

    by_cloud_gh: dict[str, float] = {}
    for j in done:
        if j.cluster in cloud_of:
            by_cloud_gh[cloud_of[j.cluster]] = by_cloud_gh.get(cloud_of[j.cluster], 0.0) + j.gpus * ran_h(j)
    measured_ids = {j.id for j in measured}
    cloud_measured = sum(j.gpus * ran_h(j) for j in done if j.cluster in cloud_of and j.id in measured_ids)
    usd = {r.key: r.usd for r in cost_report(store, "cloud") if r.key in set(cloud_of.values())}
    jct = [(j.finished_at - j.submitted_at) / HOUR for j in measured if j.finished_at is not None]
    wait = [(j.started_at - j.submitted_at) / HOUR for j in measured if j.started_at is not None]
    window_h = (jobs[-1].submitted_at - jobs[0].submitted_at) / HOUR if n > 1 else 0.0
    last_end = max((j.finished_at for j in done), default=jobs[0].submitted_at if jobs else 0.0)
    makespan_h = (last_end - jobs[0].submitted_at) / HOUR if jobs else 0.0
    demand = sum(j.gpus * runtime_h(j) for j in jobs)
    onprem_used = 0.0
    if jobs and window_h > 0:
        lo, hi = jobs[0].submitted_at, jobs[-1].submitted_at
        for j in done:
            if j.cluster not in cloud_of and j.started_at is not None:
                onprem_used += j.gpus * max(0.0, min(j.finished_at, hi) - max(j.started_at, lo)) / HOUR
    return RunMetrics(
        policy=policy, setting=setting, queue=queue, jobs=n, measured=len(measured),
        unfinished=n - len(done), cloud_gpu_hours=sum(by_cloud_gh.values()),
        cloud_gpu_hours_measured=cloud_measured, cloud_usd=sum(usd.values()), cloud_usd_by_cloud=usd,
        cloud_gpu_hours_by_cloud=by_cloud_gh,
        jct_avg_h=sum(jct) / len(jct) if jct else 0.0, jct_p50_h=percentile(jct, 50), jct_p90_h=percentile(jct, 90),
        jct_p99_h=percentile(jct, 99), wait_avg_h=sum(wait) / len(wait) if wait else 0.0,
        wait_p90_h=percentile(wait, 90),
        onprem_utilization=onprem_used / (onprem_gpus * window_h) if onprem_gpus and window_h else 0.0,
        window_h=window_h, demand_gpu_hours=demand,
        lower_bound_cloud_gpu_hours=max(0.0, demand - onprem_gpus * window_h),
        makespan_h=makespan_h, lower_bound_at_makespan=max(0.0, demand - onprem_gpus * makespan_h),
    )
