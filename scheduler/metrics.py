"""Prometheus metrics: the loop's, kept from what each cycle already has in memory, and the store's, read on each
scrape by whichever process serves them (the API's stateless replicas)."""

from __future__ import annotations

import logging
import operator
import threading
from collections import Counter as CountBy
from collections.abc import Iterable, Iterator
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    start_http_server,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from spillover.providers.contract import ErrorKind, ProviderError
from spillover.scheduler.config import CloudCluster, SpilloverConfig
from spillover.scheduler.model import JobState
from spillover.scheduler.tables import JobRow, LedgerRow

if TYPE_CHECKING:
    from spillover.placement import Plan
    from spillover.scheduler.context import CycleReport
    from spillover.scheduler.loop import ControlLoop
    from spillover.scheduler.records import Job, LedgerEntry
    from spillover.scheduler.store import Store

log = logging.getLogger("spillover.metrics")

# The ledger's idle share of a cloud node has no team; cost-report shows it the same way.
IDLE_TEAM = "(idle)"
NON_TERMINAL = tuple(s for s in JobState if not s.terminal)
_QUEUE = operator.attrgetter("queue")
# Seconds: a simulated-cluster cycle takes milliseconds, a CP-SAT solve of a large queue tens of seconds.
DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
# The solver's relative optimality gap: 0 proven optimal, the design's target is 1%.
GAP_BUCKETS = (0.0, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
# A job's wait in the queue: seconds to days.
WAIT_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400, 28800, 86400, 259200)


def _version() -> str:
    try:
        return version("spillover")
    except PackageNotFoundError:
        return "unknown"


class NullMetrics:
    """What the loop reports to when nobody scrapes it (the simulator, the tests): every hook does nothing."""

    def attach(self, loop: ControlLoop) -> None:
        pass

    def cycle(self, loop: ControlLoop, report: CycleReport) -> None:
        pass

    def solved(self, plan: Plan) -> None:
        pass

    def admitted(self, job: Job, cluster: str, now: float) -> None:
        pass

    def provider_error(self, cluster: str, error: ProviderError) -> None:
        pass

    def spent(self, entries: Iterable[LedgerEntry]) -> None:
        pass

    def detach(self) -> None:
        pass


NULL_METRICS = NullMetrics()


class LoopMetrics(NullMetrics):
    """The loop process's metrics, in a registry of their own (plus the process, platform and GC collectors).

    Named after Kueue's (`kueue_pending_workloads`, `kueue_admitted_workloads_total`,
    `kueue_admission_wait_time_seconds`, `kueue_admission_attempt_duration_seconds`). Everything comes from what the
    loop holds in memory or is handed at a hook; only `attach` reads the store, once, for the ledger's totals so far.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry or CollectorRegistry()
        for c in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
            try:
                r.register(c)
            except ValueError:  # already in a registry given to us
                pass
        Gauge("spillover_build_info", "Spillover's version; always 1.", ["version"], registry=r).labels(
            _version()).set(1)
        self.pending = Gauge("spillover_pending_jobs", "Jobs waiting in the global queue, per queue.", ["queue"],
                             registry=r)
        self.jobs = Gauge("spillover_jobs", "Jobs by state (the loop knows the unfinished ones; the API's "
                          "/metrics counts finished ones too).", ["state"], registry=r)
        self.admitted_total = Counter("spillover_admitted_jobs", "Jobs dispatched to a cluster (a job requeued "
                                      "and dispatched again counts again).", ["queue", "cluster"], registry=r)
        self.wait = Histogram("spillover_admission_wait_time_seconds", "Time from submission until the job was "
                              "dispatched, per queue.", ["queue"], buckets=WAIT_BUCKETS, registry=r)
        self.cloud_gpus = Gauge("spillover_cloud_gpus", "GPUs of the cloud nodes that exist (ready or booting: "
                                "the cloud bills both), per pool.", ["cloud", "cluster", "pool"], registry=r)
        self.cloud_nodes = Gauge("spillover_cloud_nodes", "Cloud nodes that exist, per pool; ready=\"false\" "
                                 "are still booting.", ["cloud", "cluster", "pool", "ready"], registry=r)
        self.cluster_up = Gauge("spillover_cluster_available", "1 while the cluster answers, 0 once it is "
                                "marked unavailable.", ["cluster"], registry=r)
        self.ledger = LedgerTotals()
        r.register(self.ledger)
        self.solver_s = Histogram("spillover_solver_duration_seconds", "Time of one placement solve.", ["solver"],
                                  buckets=DURATION_BUCKETS, registry=r)
        self.gap = Histogram("spillover_solver_gap", "Relative optimality gap of each plan that has a lower "
                             "bound (0 = proven optimal).", buckets=GAP_BUCKETS, registry=r)
        self.solves = Counter("spillover_solves", "Placement solves, by solver and outcome (optimal, feasible, "
                              "greedy-fallback, ...).", ["solver", "status"], registry=r)
        self.cycle_s = Histogram("spillover_cycle_duration_seconds", "Time of one control-loop cycle, observe to "
                                 "commit.", buckets=DURATION_BUCKETS, registry=r)
        self.last_cycle = Gauge("spillover_last_cycle_timestamp_seconds", "When the last cycle ended (alert when "
                                "it falls behind).", registry=r)
        self.errors = Counter("spillover_provider_errors", "Errors from the clusters and their node-pool APIs, "
                              "by kind (stockout, quota, throttled, auth, unreachable, invalid, transient).",
                              ["cluster", "kind"], registry=r)
        self._queues: tuple[str, ...] = ()
        self._values: dict[tuple[Gauge, str], float] = {}  # (gauge, label) -> the value last set
        self._queue_set: frozenset[str] = frozenset()
        self._seen_nodes: dict[str, tuple] = {}  # cloud cluster -> the nodes its gauges were last set from
        self._pools: dict[str, tuple[str, tuple[str, ...]]] = {}  # cloud cluster -> (cloud, its pools)

    # ---- hooks -----------------------------------------------------------------------------------

    def attach(self, loop: ControlLoop) -> None:
        """Series that exist from the start (at zero), so that rates and dashboards see the first change; and the
        ledger's totals so far, so that the spend counters equal the ledger."""
        config = loop.config
        self._queues = tuple(q.name for q in config.queues)
        self._queue_set = frozenset(self._queues)
        for q in self._queues:
            self.pending.labels(q).set(0)
            self.wait.labels(q)
            for c in config.clusters:
                self.admitted_total.labels(q, c.name)
        for c in config.clusters:
            self.cluster_up.labels(c.name).set(1)
            for kind in ErrorKind:
                self.errors.labels(c.name, kind.value)
            if isinstance(c, CloudCluster):
                cloud = _cloud(c)
                self._pools[c.name] = (cloud, tuple(p.name for p in c.pools))
                for p in c.pools:
                    self.cloud_gpus.labels(cloud, c.name, p.name).set(0)
                    for ready in ("true", "false"):
                        self.cloud_nodes.labels(cloud, c.name, p.name, ready).set(0)
        for s in NON_TERMINAL:
            self.jobs.labels(s.value).set(0)
        self._values.clear()  # a new loop (a new lead) sets every gauge again
        self._seen_nodes.clear()
        teams = {q.team or q.name for q in config.queues}
        keys = set()
        for c in config.clusters:
            cloud = _cloud(c) if isinstance(c, CloudCluster) else "onprem"
            keys |= {(cloud, team) for team in teams | ({IDLE_TEAM} if isinstance(c, CloudCluster) else set())}
        # each new lead builds a new loop: the totals start again from the ledger, which has all the old ones did
        self.ledger.reset(keys, ledger_spend(loop.store))

    def cycle(self, loop: ControlLoop, report: CycleReport) -> None:
        # a steady cycle costs little: gauges are set only when their value changed, and a cloud cluster's nodes
        # are summed again only when its observation changed
        state = loop.ctx.state
        now = loop.clock.now()
        self.cycle_s.observe(max(0.0, now - report.at))
        self.last_cycle.set(now)
        pending = state.in_states((JobState.PENDING,))
        # counted in C (map, attrgetter, Counter): a queue of thousands costs a fraction of a millisecond
        counts = CountBy(map(_QUEUE, pending)) if pending else {}
        put = self._put
        for q in self._queues:
            put(self.pending, q, counts.get(q, 0))
        for q, n in counts.items():
            if q not in self._queue_set:  # a queue no longer configured that still holds jobs
                put(self.pending, q, n)
        for s in NON_TERMINAL:
            put(self.jobs, s.value, state.count(s))
        for name, h in state.clusters.items():
            put(self.cluster_up, name, 1 if h.available else 0)
        # an unreachable cluster keeps its last figures: its nodes are most likely still there, and billed
        for name, observed in loop.ctx.states.items():
            if name not in self._pools or self._seen_nodes.get(name) is observed.nodes:
                continue
            self._seen_nodes[name] = observed.nodes
            cloud, pools = self._pools[name]
            gpus = dict.fromkeys(pools, 0)
            nodes = {(p, r): 0 for p in pools for r in ("true", "false")}
            for n in observed.nodes:
                if n.pool in gpus:
                    gpus[n.pool] += n.gpus
                    nodes[(n.pool, "true" if n.ready else "false")] += 1
            for p, g in gpus.items():
                self.cloud_gpus.labels(cloud, name, p).set(g)
            for (p, r), k in nodes.items():
                self.cloud_nodes.labels(cloud, name, p, r).set(k)

    def detach(self) -> None:
        """The loop stopped (this process no longer leads, or it is shutting down): its figures of the queue,
        jobs, clusters and pools go, rather than stay frozen next to the new leader's. Counters and histograms stay:
        they count what this process did."""
        for gauge in (self.pending, self.jobs, self.cluster_up, self.cloud_gpus, self.cloud_nodes):
            gauge.clear()
        self._values.clear()
        self._seen_nodes.clear()

    def _put(self, gauge: Gauge, label: str, value: float) -> None:
        key = (gauge, label)
        if self._values.get(key) != value:
            self._values[key] = value
            gauge.labels(label).set(value)

    def solved(self, plan: Plan) -> None:
        self.solver_s.labels(plan.solver).observe(plan.solve_s)
        self.solves.labels(plan.solver, plan.status).inc()
        gap = plan.gap
        if gap is None and plan.lower_bound is not None and plan.lower_bound >= plan.objective:
            gap = 0.0  # a plan that costs nothing, and whose bound says so: relative gap undefined, but none
        if gap is not None:
            self.gap.observe(gap)

    def admitted(self, job: Job, cluster: str, now: float) -> None:
        self.admitted_total.labels(job.queue, cluster).inc()
        self.wait.labels(job.queue).observe(max(0.0, now - job.submitted_at))

    def provider_error(self, cluster: str, error: ProviderError) -> None:
        self.errors.labels(cluster, error.kind.value).inc()

    def spent(self, entries: Iterable[LedgerEntry]) -> None:
        self.ledger.add(entries)

    def watch_leader(self, leader: Any) -> Any:
        """`spillover_leader` (1 while this process leads) and `spillover_leader_epoch` (the fencing epoch it
        leads at, 0 while it follows), read from the election's `epoch` at each scrape. Returns `leader`."""
        Gauge("spillover_leader", "1 while this loop process leads (acts on the clusters), 0 while it follows.",
              registry=self.registry).set_function(lambda: 0 if leader.epoch is None else 1)
        Gauge("spillover_leader_epoch", "The fencing epoch this process leads at; 0 while it follows.",
              registry=self.registry).set_function(lambda: leader.epoch or 0)
        return leader

    # ---- exposure --------------------------------------------------------------------------------

    def serve(self, port: int, host: str = "127.0.0.1") -> tuple[Any, Any]:
        """Serve /metrics over HTTP in a daemon thread; returns (server, thread). Port 0 picks a free one
        (`server.server_port`)."""
        return start_http_server(port, addr=host, registry=self.registry)


def _cloud(c: CloudCluster) -> str:
    return getattr(c.cloud, "value", c.cloud)


class LedgerTotals(Collector):
    """The ledger's dollars and GPU-hours per (cloud, team) as counters: taken from the store when a loop starts,
    then added to as the loop writes entries, so they equal the ledger without reading it each cycle."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # the loop adds while the HTTP thread collects
        self._totals: dict[tuple[str, str], list[float]] = {}

    def reset(self, keys: Iterable[tuple[str, str]], totals: dict[tuple[str, str], tuple[float, float]]) -> None:
        fresh = {k: [0.0, 0.0] for k in keys} | {k: [usd, gh] for k, (usd, gh) in totals.items()}
        with self._lock:
            # a counter never goes down: a new lead that finds less than was counted (it cannot, the ledger only
            # grows; but a restored backup might) keeps the higher figure
            for k, (usd, gh) in self._totals.items():
                if k in fresh:
                    fresh[k] = [max(usd, fresh[k][0]), max(gh, fresh[k][1])]
                else:
                    fresh[k] = [usd, gh]
            self._totals = fresh

    def add(self, entries: Iterable[LedgerEntry]) -> None:
        with self._lock:
            for e in entries:
                t = self._totals.setdefault((e.cloud, e.team or IDLE_TEAM), [0.0, 0.0])
                t[0] += e.usd
                t[1] += e.gpu_hours

    def describe(self) -> list[Metric]:
        return [CounterMetricFamily("spillover_spend_usd", ""), CounterMetricFamily("spillover_ledger_gpu_hours", "")]

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            rows = sorted((k, tuple(v)) for k, v in self._totals.items())
        yield from _spend_families(rows)


def _spend_families(rows: Iterable[tuple[tuple[str, str], tuple[float, float]]]) -> list[Metric]:
    usd = CounterMetricFamily("spillover_spend_usd", "Dollars in the cost ledger (cloud node time, on-prem GPU time "
                              "at its amortized price), per cloud and team; (idle) is cloud node time no job used.",
                              labels=["cloud", "team"])
    gpu_hours = CounterMetricFamily("spillover_ledger_gpu_hours", "GPU-hours in the cost ledger, per cloud and team.",
                                    labels=["cloud", "team"])
    for (cloud, team), (dollars, gh) in rows:
        usd.add_metric([cloud, team], dollars)
        gpu_hours.add_metric([cloud, team], gh)
    return [usd, gpu_hours]


# ---- the store's metrics, read on scrape -----------------------------------------------------------------


def ledger_spend(store: Store) -> dict[tuple[str, str], tuple[float, float]]:
    """{(cloud, team): (dollars, GPU-hours)} over the whole ledger; the idle share's team is IDLE_TEAM."""
    q = (select(LedgerRow.cloud, LedgerRow.team, func.sum(LedgerRow.usd), func.sum(LedgerRow.gpu_hours))
         .group_by(LedgerRow.cloud, LedgerRow.team))
    out: dict[tuple[str, str], tuple[float, float]] = {}
    with store.engine.connect() as conn:
        for cloud, team, usd, gpu_hours in conn.execute(q):
            key = (cloud or "", team or IDLE_TEAM)
            usd0, gh0 = out.get(key, (0.0, 0.0))
            out[key] = (usd0 + float(usd or 0), gh0 + float(gpu_hours or 0))
    return out


class StoreCollector(Collector):
    """Queue and ledger figures read from the store at each scrape, so any number of stateless processes can serve
    them and all agree: pending jobs per queue, jobs by state, spend and GPU-hours per cloud and team. Same names as
    the loop's, so a dashboard's `max by (...)` reads either. A store that does not answer gives
    `spillover_store_up 0` instead of an error page, so the scrape still says what is wrong."""

    def __init__(self, store: Store, config: SpilloverConfig | None = None) -> None:
        self.store = store
        self.queues = tuple(q.name for q in config.queues) if config is not None else ()
        self._down = False

    def describe(self) -> list[Metric]:
        return []  # registering must not query the store

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("spillover_store_up", "1 if the store answered this scrape's queries.")
        try:
            figures = self._read()
        except SQLAlchemyError as e:
            if not self._down:
                log.warning("metrics: the store does not answer: %s", type(e).__name__)
            self._down = True
            up.add_metric([], 0)
            yield up
            return
        if self._down:
            log.info("metrics: the store answers again")
        self._down = False
        up.add_metric([], 1)
        yield up
        yield from figures

    def _read(self) -> list[Metric]:
        t = JobRow.__table__
        with self.store.engine.connect() as conn:
            by_state = dict(conn.execute(select(t.c.state, func.count()).group_by(t.c.state)).all())
            by_queue = dict(conn.execute(select(t.c.queue, func.count()).where(t.c.state == JobState.PENDING.value)
                                         .group_by(t.c.queue)).all())
        spend = ledger_spend(self.store)
        pending = GaugeMetricFamily("spillover_pending_jobs", "Jobs waiting in the global queue, per queue.",
                                    labels=["queue"])
        for q, n in (dict.fromkeys(self.queues, 0) | by_queue).items():
            pending.add_metric([q], n)
        jobs = GaugeMetricFamily("spillover_jobs", "Jobs by state.", labels=["state"])
        for s in JobState:
            jobs.add_metric([s.value], by_state.get(s.value, 0))
        return [pending, jobs, *_spend_families(sorted(spend.items()))]


def store_registry(store: Store, config: SpilloverConfig | None = None) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(StoreCollector(store, config))
    return registry


def render(registry: CollectorRegistry) -> tuple[bytes, str]:
    """The text exposition of a registry and its content type, for a web framework's response."""
    return generate_latest(registry), CONTENT_TYPE_LATEST


def metrics_app(store: Store, config: SpilloverConfig | None = None) -> Any:
    """An ASGI app serving the store's metrics, for a web server to mount."""
    from prometheus_client import make_asgi_app

    return make_asgi_app(store_registry(store, config))
