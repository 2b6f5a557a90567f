"""What a replay measured: cloud GPU-hours and dollars per cloud, job completion time and wait (average, p50, p90,
p99), on-prem utilization, and lower bounds on cloud GPU-hours — over the measured window (all jobs but the first and
last 10% by submission, as the Starburst paper and simulator count them), with all-jobs figures alongside."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace

from spillover.scheduler.config import CloudCluster, SpilloverConfig
from spillover.scheduler.costs import cost_report
from spillover.scheduler.model import JobState
from spillover.scheduler.store import Job, Store

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
    cloud_gpu_hours_measured: float  # the same, for the measured jobs only: what the benchmark compares
    cloud_usd: float  # what the cloud bill says: node-hours incl. boot and idle, all clouds
    cloud_usd_by_cloud: dict[str, float] = field(default_factory=dict)
    cloud_gpu_hours_by_cloud: dict[str, float] = field(default_factory=dict)
    jct_avg_h: float = 0.0  # these JCT and wait figures are over the measured jobs
    jct_p50_h: float = 0.0
    jct_p90_h: float = 0.0
    jct_p99_h: float = 0.0
    wait_avg_h: float = 0.0
    wait_p90_h: float = 0.0
    jct_avg_all_h: float = 0.0  # average JCT over all jobs, trimmed ones included
    onprem_utilization: float = 0.0  # on-prem GPU-hours used / (on-prem GPUs x arrival window)
    window_h: float = 0.0  # first to last submission
    demand_gpu_hours: float = 0.0  # every job's GPUs x runtime
    lower_bound_cloud_gpu_hours: float = 0.0  # what is left if on-prem ran at 100% over the arrival window
    makespan_h: float = 0.0  # first submission to last completion
    # strict: no plan finishing by this run's makespan can send less to the cloud
    lower_bound_at_makespan: float = 0.0
    # strict, for the measured jobs' cloud GPU-hours: on-prem can give them at most its GPUs from the first measured
    # submission to this run's last completion
    lower_bound_measured_at_makespan: float = 0.0
    # every arrival this much later than the workload says: the same jobs at another phase of the loop's tick
    arrival_shift_s: float = 0.0
    wall_s: float = 0.0
    cycles: int = 0
    solves: int = 0
    solve_s: float = 0.0
    # the same replay booked with every cloud job started at its submission (Starburst's `predict_wait`): set by
    # `measure(..., hindsight_policy=...)`, written as a row of its own
    hindsight: RunMetrics | None = field(default=None, repr=False, compare=False)
    # per team and per budget line (simulations/team_report.py), when the config has teams or budgets
    teams: list[dict] = field(default_factory=list, repr=False, compare=False)
    budgets: list[dict] = field(default_factory=list, repr=False, compare=False)

    @classmethod
    def from_row(cls, row: dict[str, object]) -> RunMetrics:
        """Back from `row()` (results.json), per-cloud figures included."""
        known = {f for f in cls.__dataclass_fields__} - {"hindsight", "teams", "budgets"}
        m = cls(**{k: v for k, v in row.items() if k in known})
        for k, v in row.items():
            for name in ("cloud_usd", "cloud_gpu_hours"):
                if k.startswith(f"{name}_") and k != f"{name}_measured" and isinstance(v, (int, float)):
                    getattr(m, f"{name}_by_cloud")[k.removeprefix(f"{name}_")] = float(v)
        return m

    def row(self) -> dict[str, object]:
        out = asdict(replace(self, hindsight=None, teams=[], budgets=[]))
        del out["hindsight"], out["teams"], out["budgets"]
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


@dataclass(frozen=True)
class Booked:
    """One job as the figures count it (seconds on the replay's clock)."""

    id: str
    gpus: int
    submitted_s: float
    started_s: float | None
    finished_s: float | None
    succeeded: bool
    in_cloud: bool
    measured: bool  # in the measured window: not among the first or last 10% by submission

    @property
    def ran_h(self) -> float:
        return (self.finished_s - self.started_s) / HOUR if self.started_s is not None and self.finished_s else 0.0


def booked(store: Store, config: SpilloverConfig, *, cloud_starts_at_submission: bool = False) -> list[Booked]:
    """The replay's jobs in submission order. With `cloud_starts_at_submission`, every job that ran in the cloud is
    booked as started when it was submitted (its wait zero, its run moved earlier by that wait), as the Starburst
    simulator books cloud jobs under `predict_wait`: hindsight, since no scheduler knows at submission that a job
    will end up in the cloud. On-prem jobs and what ran where are the replay's own."""
    jobs = sorted(store.jobs(), key=lambda j: (j.submitted_at, j.id))
    cloud = {c.name for c in config.clusters if isinstance(c, CloudCluster)}
    n = len(jobs)
    cut = int(n * TRIM)
    out = []
    for k, j in enumerate(jobs):
        started, finished = j.started_at, j.finished_at
        in_cloud = j.cluster in cloud
        if cloud_starts_at_submission and in_cloud and started is not None:
            finished = j.submitted_at + (finished - started) if finished is not None else None
            started = j.submitted_at
        out.append(Booked(j.id, j.gpus, j.submitted_at, started, finished,
                          j.state == JobState.SUCCEEDED and finished is not None, in_cloud,
                          cut <= k < n - cut or n - 2 * cut <= 0))
    return out


def measure(store: Store, config: SpilloverConfig, *, policy: str, setting: str = "", queue: str = "",
            true_runtime_s: dict[str, float] | None = None, hindsight_policy: str | None = None) -> RunMetrics:
    """The metrics of the replay held in `store` (one replay per store). With `hindsight_policy`, the result's
    `hindsight` holds the same replay booked with cloud jobs started at submission, under that policy name."""
    cloud_of = {c.name: c.cloud.value for c in config.clusters if isinstance(c, CloudCluster)}
    jobs = store.jobs()
    cloud_by_job = {j.id: cloud_of[j.cluster] for j in jobs if j.cluster in cloud_of}
    runtime_h = {j.id: (true_runtime_s[j.id] if true_runtime_s is not None and j.id in true_runtime_s
                        else j.spec.estimated_runtime_s) / HOUR for j in jobs}
    usd = {r.key: r.usd for r in cost_report(store, "cloud") if r.key in set(cloud_of.values())}
    onprem_gpus = sum(c.total_gpus for c in config.clusters if not isinstance(c, CloudCluster))

    def figures(rows: list[Booked], name: str) -> RunMetrics:
        return _figures(rows, policy=name, setting=setting, queue=queue, cloud_by_job=cloud_by_job,
                        runtime_h=runtime_h, usd=usd, onprem_gpus=onprem_gpus)

    m = figures(booked(store, config), policy)
    if hindsight_policy is not None:
        m.hindsight = figures(booked(store, config, cloud_starts_at_submission=True), hindsight_policy)
    return m


def _figures(jobs: list[Booked], *, policy: str, setting: str, queue: str, cloud_by_job: dict[str, str],
             runtime_h: dict[str, float], usd: dict[str, float], onprem_gpus: int) -> RunMetrics:
    n = len(jobs)
    measured = [j for j in jobs if j.measured]
    done = [j for j in jobs if j.succeeded]
    by_cloud_gh: dict[str, float] = {}
    for j in done:
        if j.in_cloud:
            by_cloud_gh[cloud_by_job[j.id]] = by_cloud_gh.get(cloud_by_job[j.id], 0.0) + j.gpus * j.ran_h
    cloud_measured = sum(j.gpus * j.ran_h for j in done if j.in_cloud and j.measured)
    jct = [(j.finished_s - j.submitted_s) / HOUR for j in measured if j.finished_s is not None]
    jct_all = [(j.finished_s - j.submitted_s) / HOUR for j in jobs if j.finished_s is not None]
    wait = [(j.started_s - j.submitted_s) / HOUR for j in measured if j.started_s is not None]
    first = jobs[0].submitted_s if jobs else 0.0
    window_h = (jobs[-1].submitted_s - first) / HOUR if n > 1 else 0.0
    last_end = max((j.finished_s for j in done), default=first)
    makespan_h = (last_end - first) / HOUR if jobs else 0.0
    demand = sum(j.gpus * runtime_h[j.id] for j in jobs)
    demand_measured = sum(j.gpus * runtime_h[j.id] for j in measured)
    first_measured = measured[0].submitted_s if measured else first
    onprem_used = 0.0
    if jobs and window_h > 0:
        lo, hi = first, jobs[-1].submitted_s
        for j in done:
            if not j.in_cloud and j.started_s is not None:
                onprem_used += j.gpus * max(0.0, min(j.finished_s, hi) - max(j.started_s, lo)) / HOUR
    return RunMetrics(
        policy=policy, setting=setting, queue=queue, jobs=n, measured=len(measured),
        unfinished=n - len(done), cloud_gpu_hours=sum(by_cloud_gh.values()),
        cloud_gpu_hours_measured=cloud_measured, cloud_usd=sum(usd.values()), cloud_usd_by_cloud=dict(usd),
        cloud_gpu_hours_by_cloud=by_cloud_gh,
        jct_avg_h=sum(jct) / len(jct) if jct else 0.0, jct_p50_h=percentile(jct, 50), jct_p90_h=percentile(jct, 90),
        jct_p99_h=percentile(jct, 99), wait_avg_h=sum(wait) / len(wait) if wait else 0.0,
        wait_p90_h=percentile(wait, 90), jct_avg_all_h=sum(jct_all) / len(jct_all) if jct_all else 0.0,
        onprem_utilization=onprem_used / (onprem_gpus * window_h) if onprem_gpus and window_h else 0.0,
        window_h=window_h, demand_gpu_hours=demand,
        lower_bound_cloud_gpu_hours=max(0.0, demand - onprem_gpus * window_h),
        makespan_h=makespan_h, lower_bound_at_makespan=max(0.0, demand - onprem_gpus * makespan_h),
        lower_bound_measured_at_makespan=max(0.0, demand_measured - onprem_gpus * (last_end - first_measured) / HOUR),
    )
