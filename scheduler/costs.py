"""The cost ledger: turns observed node time into dollars per hour bucket, node and job, and reads reports.

Cloud nodes bill for every hour they exist (booting, busy or idle). Each node's time is split among the
jobs that ran on it by their share of its GPUs, using the jobs' own start and end times; what is left is
recorded as the node's idle share (job ''), so per-cloud totals match the bill and per-job totals match use.
On-prem clusters record the GPU-hours jobs used at the configured amortized price.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Protocol

from spillover.providers.contract import ClusterState, JobPhase
from spillover.scheduler.budgets import BudgetStatus, budget_lines, statuses
from spillover.scheduler.config import CloudCluster, OnPremCluster
from spillover.scheduler.store import Job, LedgerEntry, Store
from spillover.scheduler.teams import calendar_period

HOUR = 3600.0


class JobLookup(Protocol):
    def get(self, job_id: str) -> Job | None: ...

REPORT_KEYS = ("cloud", "cluster", "pool", "queue", "team", "job")
PERIODS = ("day", "week", "month")
SPLITS = ("cloud", "team", "queue")
ONPREM = "onprem"
IDLE = "(idle)"


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


def row_label(key: str, cloud: str, cluster: str, idle: bool) -> str:
    """What a report calls a ledger group: its key; for an empty one, '<cluster> (on-prem)' for on-prem time (which
    has no pool), '(idle)' for the share of a cloud node no job used, '(none)' for anything else."""
    if key:
        return key
    if cloud == ONPREM:
        return f"{cluster} (on-prem)"
    return IDLE if idle else "(none)"


def cost_report(store: Store, by: str, *, since: float | None = None, until: float | None = None,
                include_idle: bool = True, team: str | None = None) -> list[CostRow]:
    """Totals grouped by `by` (cloud, cluster, pool, queue, team or job), most dollars first, over the hour buckets
    starting in [since, until). Idle cloud node time shows as '(idle)', on-prem time without a pool as
    '<cluster> (on-prem)'. With `team`, only what that team's jobs used."""
    if by not in REPORT_KEYS:
        raise ValueError(f"by must be one of {', '.join(REPORT_KEYS)}")
    sums: dict[str, list[float]] = {}
    for _, key, cloud, cluster, idle, nh, gh, usd in store.ledger_sums(by, since=since, until=until, team=team):
        label = row_label(key, cloud, cluster, idle)
        if label == IDLE and not include_idle:
            continue
        acc = sums.setdefault(label, [0.0, 0.0, 0.0])
        acc[0] += nh
        acc[1] += gh
        acc[2] += usd
    rows = [CostRow(k, nh, gh, usd) for k, (nh, gh, usd) in sums.items()]
    return sorted(rows, key=lambda r: (-round(r.usd, 6), r.key))


# ---- reports over time -------------------------------------------------------------------------------


@dataclass(frozen=True)
class PeriodRow:
    """Spend in one calendar period (and one value of the split, '' without one)."""

    period: str  # 2026-11-03, 2026-W45 or 2026-11
    start: float
    end: float
    key: str
    node_hours: float
    gpu_hours: float
    usd: float


def period_label(period: str, start: float) -> str:
    """2026-11-03 for a day, 2026-W45 for the ISO week starting on that Monday, 2026-11 for a month."""
    d = datetime.fromtimestamp(start, timezone.utc)
    if period == "week":
        year, week, _ = d.isocalendar()
        return f"{year}-W{week:02d}"
    return d.strftime("%Y-%m-%d" if period == "day" else "%Y-%m")


def period_report(store: Store, period: str, split: str | None = None, *, since: float | None = None,
                  until: float | None = None, team: str | None = None) -> list[PeriodRow]:
    """Spend per UTC day, week (from Monday) or month over the hour buckets starting in [since, until), oldest first;
    with `split` (cloud, team or queue), one row per period and value, every value in every period (zeros
    included), values by total spend. Periods with no spend between the first and the last are there, as zeros."""
    if period not in PERIODS:
        raise ValueError(f"period must be one of {', '.join(PERIODS)}")
    if split is not None and split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}")
    bounds: dict[float, tuple[float, float]] = {}
    sums: dict[tuple[float, str], list[float]] = {}
    for bucket, key, cloud, cluster, idle, nh, gh, usd in store.ledger_sums(
            split or "cloud", since=since, until=until, team=team, per_bucket=True):
        assert bucket is not None
        b = bounds.get(bucket)
        if b is None:
            b = bounds[bucket] = calendar_period(period, bucket)
        acc = sums.setdefault((b[0], row_label(key, cloud, cluster, idle) if split else ""), [0.0, 0.0, 0.0])
        acc[0] += nh
        acc[1] += gh
        acc[2] += usd
    if not sums:
        return []
    totals: dict[str, float] = {}
    for (_, key), acc in sums.items():
        totals[key] = totals.get(key, 0.0) + acc[2]
    keys = sorted(totals, key=lambda k: (-round(totals[k], 6), k))
    first, last = min(s for s, _ in sums), max(s for s, _ in sums)
    rows: list[PeriodRow] = []
    start = first
    while start <= last:
        _, end = calendar_period(period, start)
        label = period_label(period, start)
        for key in keys:
            nh, gh, usd = sums.get((start, key), (0.0, 0.0, 0.0))
            rows.append(PeriodRow(label, start, end, key, nh, gh, usd))
        start = end
    return rows


_DURATION = re.compile(r"(\d+(?:\.\d+)?)([mhdw])")
_UNIT_S = {"m": 60.0, "h": 3600.0, "d": 86400.0, "w": 7 * 86400.0}
WHEN_FORMS = ("an ISO 8601 date or time (2026-11-01, 2026-11-01T08:00, 2026-11-01T08:00+01:00; UTC when it has no "
              "zone), a month (2026-11) or a duration back from now (90m, 24h, 7d, 2w)")


def parse_when(text: str, now: float) -> float:
    """Epoch seconds of an ISO 8601 date or time (UTC when it names no zone), a month (YYYY-MM, its first day), or a
    duration back from `now` (90m, 24h, 7d, 2w); ValueError saying what is valid otherwise."""
    t = text.strip()
    m = _DURATION.fullmatch(t)
    if m:
        at = now - float(m[1]) * _UNIT_S[m[2]]
    else:
        if re.fullmatch(r"\d{4}-\d{2}", t):
            t += "-01"
        try:
            d = datetime.fromisoformat(t)
        except ValueError:
            raise ValueError(f"must be {WHEN_FORMS} (got {_shown(text)})") from None
        at = (d if d.tzinfo is not None else d.replace(tzinfo=timezone.utc)).timestamp()
    try:
        datetime.fromtimestamp(at, timezone.utc)
    except (OverflowError, OSError, ValueError):
        raise ValueError(f"out of range (got {_shown(text)})") from None
    return at


def _shown(text: str) -> str:
    return repr(text if len(text) <= 40 else text[:39] + "…")


def utc_text(t: float) -> str:
    """2026-11-01T08:00:00Z: an instant as reports print it."""
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# ---- budgets -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BudgetRow:
    """A budget line against its spend in the period open now (a fixed window not open now: state 'not open', or
    'closed' with what it spent)."""

    id: str
    owner: str  # team | queue
    name: str
    cloud: str | None
    period_kind: str  # day | week | month | window
    period: str
    start: float
    end: float
    usd: float
    spent: float
    share: float
    forecast: float
    warn_at: float
    state: str  # ok | warning | exhausted | not open | closed


def budget_report(config, store: Store, now: float, *, team: str | None = None) -> list[BudgetRow]:
    """Every budget line of the config in its current period, teams' first; with `team`, only that team's lines and
    those of its queues."""
    queue_team = {q.name: q.team for q in config.queues}
    lines = [b for b in budget_lines(config) if team is None
             or (b.name if b.owner == "team" else queue_team.get(b.name)) == team]
    open_now = {s.line.id: s for s in statuses(lines, store, now)}
    rows = []
    for line in lines:
        budget = line.budget
        st = open_now.get(line.id)
        if st is not None:
            state, forecast = st.state, st.forecast(now)
        else:  # a window that has not opened yet, or has closed
            start, end = (_aware(budget.start).timestamp(), _aware(budget.end).timestamp())
            spent = 0.0
            if now >= end:
                spent = sum(usd for t, q, c, usd in store.ledger_groups(start, end) if line.counts(t, q, c))
            st = BudgetStatus(line, start, end, spent)
            state, forecast = ("closed" if now >= end else "not open"), spent
        rows.append(BudgetRow(line.id, line.owner, line.name, line.cloud, budget.period,
                              _budget_period(budget.period, st.start, st.end), st.start, st.end, line.usd, st.spent,
                              st.share, forecast, budget.warn_at, state))
    return rows


def _budget_period(kind: str, start: float, end: float) -> str:
    if kind != "window":
        return period_label(kind, start)

    def text(t: float) -> str:
        d = datetime.fromtimestamp(t, timezone.utc)
        return d.strftime("%Y-%m-%d" if (d.hour, d.minute, d.second) == (0, 0, 0) else "%Y-%m-%d %H:%M")

    return f"{text(start)} to {text(end)}"


def _aware(d: datetime | None) -> datetime:
    assert d is not None
    return d if d.tzinfo is not None else d.replace(tzinfo=timezone.utc)
