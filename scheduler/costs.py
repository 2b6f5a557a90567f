"""The cost ledger: turns observed node time into dollars per hour bucket, node and job, and reads reports.

Cloud nodes bill for every hour they exist (booting, busy or idle). Each node's time is split among the
jobs that ran on it by their share of its GPUs, using the jobs' own start and end times; what is left is
recorded as the node's idle share (job ''), so per-cloud totals match the bill and per-job totals match use.
On-prem clusters record the GPU-hours jobs used at the configured amortized price.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from spillover.providers.contract import ClusterState, JobPhase
from spillover.scheduler.config import CloudCluster, OnPremCluster
from spillover.scheduler.store import Job, LedgerEntry, Store

HOUR = 3600.0


class JobLookup(Protocol):
    def get(self, job_id: str) -> Job | None: ...

REPORT_KEYS = ("cloud", "cluster", "pool", "queue", "team", "job")


def _buckets(since: float, until: float) -> list[tuple[float, float, float]]:
    """[(bucket start, segment start, segment end)] cutting [since, until) at hour boundaries."""
    out = []
    t = since
    while t < until - 1e-9:
        b = math.floor(t / HOUR) * HOUR
        end = min(until, b + HOUR)
        out.append((b, t, end))
        t = end
    return out


def _overlap(a0: float, a1: float, b0: float | None, b1: float | None) -> float:
    if b0 is None:
        return 0.0
    return max(0.0, min(a1, b1 if b1 is not None else a1) - max(a0, b0))


def ledger_entries(cluster: CloudCluster | OnPremCluster, state: ClusterState, since: float, until: float,
                   jobs: JobLookup, node_since: Mapping[str, float] | None = None) -> list[LedgerEntry]:
    """Entries for the node time in [since, until) that `state` shows; with `node_since`, only for those nodes,
    each from its own time."""
    entries: list[LedgerEntry] = []
    on_node: dict[str, list] = {}
    for st in state.jobs.values():
        if st.started_at is not None and st.phase in _RAN:
            for n in st.nodes:
                if node_since is None or n in node_since:
                    on_node.setdefault(n, []).append(st)
    cloud = isinstance(cluster, CloudCluster)
    pools = {p.name: p for p in cluster.pools} if cloud else {}
    name = cluster.name
    cloud_name = getattr(cluster.cloud, "value", cluster.cloud) if cloud else "onprem"
    region = cluster.region if cloud else ""
    for node in state.nodes if node_since is None else [n for n in state.nodes if n.name in node_since]:
        if node_since is not None:
            since = node_since[node.name]
        pool = pools.get(node.pool or "") if cloud else None
        if cloud and pool is None:
            continue
        where = (f"{name}/{pool.name}", pool.instance_type, pool.spot) if pool is not None else ("", "", False)
        for bucket, t0, t1 in _buckets(since, until):
            seg_h = (t1 - t0) / HOUR
            used_h = 0.0
            for st in on_node.get(node.name, ()):
                h = _overlap(t0, t1, st.started_at, st.finished_at) / HOUR
                if h <= 0:
                    continue
                job = jobs.get(st.job_id)
                gpus = job.spec.gpus if job else node.gpus
                share = min(1.0, gpus / node.gpus) if node.gpus else 1.0
                used_h += share * h
                usd = (pool.price_per_hour * share * h) if pool else cluster.gpu_hour_cost * gpus * h
                entries.append(LedgerEntry(bucket, name, cloud_name, node.name, share * h, gpus * h, usd, st.job_id,
                                           job.queue if job else "", job.team if job else "", region, *where))
            if pool is not None:
                idle_h = max(0.0, seg_h - used_h)
                if idle_h > 1e-12:
                    entries.append(LedgerEntry(bucket, name, cloud_name, node.name, idle_h, node.gpus * idle_h,
                                               pool.price_per_hour * idle_h, "", "", "", region, *where))
    return entries


_RAN = (JobPhase.RUNNING, JobPhase.SUCCEEDED, JobPhase.FAILED)


@dataclass(frozen=True)
class CostRow:
    key: str
    node_hours: float
    gpu_hours: float
    usd: float


def cost_report(store: Store, by: str, *, since: float | None = None, until: float | None = None,
                include_idle: bool = True, team: str | None = None) -> list[CostRow]:
    """Totals grouped by `by` (cloud, cluster, pool, queue, team or job); idle node time shows as '(idle)'. With
    `team`, only what that team's jobs used."""
    if by not in REPORT_KEYS:
        raise ValueError(f"by must be one of {', '.join(REPORT_KEYS)}")
    rows = []
    for key, nh, gh, usd in store.ledger_totals(by, since=since, until=until, team=team):
        if not key:
            if not include_idle:
                continue
            key = "(idle)"
        rows.append(CostRow(key, nh, gh, usd))
    return rows
