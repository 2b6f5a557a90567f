"""Cluster and pool health: which clusters answer (step 1, observe), which pools cannot give nodes now (stockout,
quota, provisioning timeout, nodes lost under running jobs) and are left alone for a while, and the jobs of a
cluster gone too long, requeued once. What it learns lives in the working state and is journaled, so a restart
remembers cool-offs, provisioning clocks and lost nodes."""

from __future__ import annotations

import json

from spillover.providers.contract import ClusterState, ErrorKind, ProviderError
from spillover.scheduler.config import CloudCluster
from spillover.scheduler.context import ACTIVE, LoopContext, log
from spillover.scheduler.model import JobState

# Errors after which a pool cannot give nodes for a while: its waiting jobs go elsewhere, it is left alone.
POOL_ERRORS = (ErrorKind.STOCKOUT, ErrorKind.QUOTA, ErrorKind.AUTH, ErrorKind.INVALID)
# How long a pool that stocked out or hit its quota is left alone.
POOL_COOLOFF_S = 900.0
# A pool that lost this many nodes under running jobs within the window is left alone for POOL_COOLOFF_S.
INTERRUPTED_NODES_BACKOFF = 3
INTERRUPTION_WINDOW_S = 3600.0
# A GPU allocated to a pod but busier than this is not idle.
IDLE_UTILIZATION_PCT = 5.0


class Health:
    def __init__(self, ctx: LoopContext, unavailable_after: int) -> None:
        self.ctx = ctx
        self.unavailable_after = unavailable_after

    # ---- 1. observe ------------------------------------------------------------------------------

    def observe(self) -> dict[str, ClusterState]:
        """Observe every cluster; one that does not answer `unavailable_after` times in a row is marked unavailable."""
        ctx, report = self.ctx, self.ctx.report
        states: dict[str, ClusterState] = {}
        found: list[tuple[str, ProviderError]] = []
        for name, provider in ctx.providers.items():
            h = ctx.state.cluster(name)
            try:
                state = provider.observe()
                errors = provider.poll_errors()
            except ProviderError as e:
                h.failures += 1
                report.unreachable.append(name)
                ctx.metrics.provider_error(name, e)
                if h.available and h.failures >= self.unavailable_after:
                    h.available, h.unavailable_since, h.message = False, ctx.clock.now(), str(e)
                    ctx.event("cluster", f"{name} marked unavailable after {h.failures} failed observations: {e}",
                              now=ctx.clock.now(), cluster=name)
                    log.warning("cluster %s unavailable: %s", name, e)
                ctx.journal.cluster(h)
                ctx.dirty = True
                continue
            if not h.available:
                ctx.event("cluster", f"{name} is reachable again", now=ctx.clock.now(), cluster=name)
                ctx.dirty = True
            if h.failures or not h.available:
                h.failures, h.available, h.message, h.unavailable_since = 0, True, "", None
                ctx.journal.cluster(h)
            for warning in state.warnings:
                ctx.say_once(name, warning, kind="warning")
            if state.signals or state.gpu_utilization or h.signals != "{}":
                signals = json.dumps(summarize_signals(state), sort_keys=True)
                if signals != h.signals:
                    h.signals = signals
                    ctx.journal.cluster(h)
            states[name] = state
            found.extend((name, err) for err in errors)
            report.observed += 1
        ctx.states = states
        for name, err in found:  # after every cluster is seen, so a failed pool's size is this cycle's
            ctx.event("error", str(err), now=ctx.clock.now(), cluster=name)
            ctx.metrics.provider_error(name, err)
            if err.pool and err.kind in POOL_ERRORS:
                self.pool_failed(f"{name}/{err.pool}", ctx.clock.now(), str(err))
            ctx.dirty = True
        return states

    # ---- clusters gone -----------------------------------------------------------------------------

    def requeue_from_unavailable(self) -> None:
        """Jobs of a cluster unavailable for longer than the grace go back to the queue, once.

        Their copy in that cluster is cancelled by an action that stays open until the cluster answers again;
        until then the solver does not place the job there.
        """
        ctx = self.ctx
        now = ctx.clock.now()
        grace = ctx.config.loop.requeue_grace_s
        gone = {name for name, h in ctx.state.clusters.items()
                if not h.available and h.unavailable_since is not None and now - h.unavailable_since >= grace}
        if not gone:
            return
        for job in ctx.state.in_states(ACTIVE):
            if job.cluster not in gone:
                continue
            since = ctx.state.cluster(job.cluster).unavailable_since or now
            if job.state == JobState.CANCELLING:
                ctx.take_off_cluster(job, now, f"cancelled; {job.cluster} is unavailable, its copy there is removed "
                                               "when it answers again", to=JobState.CANCELLED)
            else:
                ctx.take_off_cluster(job, now, f"{job.cluster} unavailable for {(now - since) / 60:.0f} min; requeued "
                                               f"(its copy there is removed when {job.cluster} answers again)",
                                     kind="requeued")
            ctx.dirty = True

    # ---- pools -------------------------------------------------------------------------------------

    def pool_failed(self, pool_id: str, now: float, message: str) -> None:
        """A pool that cannot give nodes now (stockout, quota, no permission, provisioning timed out): left
        alone for a while, the jobs waiting for its nodes go back to the solver, and its unused size is given back."""
        ctx = self.ctx
        self.cool_pool(pool_id, now, message)
        cluster_name, pool = pool_id.split("/", 1)
        for job in ctx.state.in_states((JobState.DISPATCHING, JobState.DISPATCHED)):
            if job.cluster != cluster_name or job.pool != pool:
                continue
            # it may have reached the cluster already: removed there before it can start late
            ctx.take_off_cluster(job, now, f"{pool_id} cannot provide nodes now ({message}); back to the solver",
                                 kind="requeued", dispatch_error=message)
            ctx.dirty = True
        state = ctx.states.get(cluster_name)
        cfg = ctx.config.cluster(cluster_name)
        spec = next((p for p in cfg.pools if p.name == pool), None) if isinstance(cfg, CloudCluster) else None
        ps = state.pool(pool) if state else None
        if spec is None or ps is None:
            return
        busy = sum(1 for n in state.nodes if n.pool == pool and n.jobs > 0)
        asked = max(ps.nodes, ps.desired_nodes)
        keep = max(spec.min_nodes, busy)
        if asked > keep and (busy == 0 or ps.removes_idle_first):
            ctx.scale(cluster_name, pool, keep, now, f"{pool_id} scaled back to {keep} node(s): it cannot provide "
                                                     "nodes now")

    def cool_pool(self, pool_id: str, now: float, message: str) -> None:
        ctx = self.ctx
        h = ctx.state.pool(pool_id)
        h.cooloff_until, h.message = now + POOL_COOLOFF_S, message
        ctx.journal.pool(h)
        ctx.event("pool", f"{pool_id} not used for {POOL_COOLOFF_S / 60:.0f} min: {message}", now=now,
                  cluster=pool_id.split("/")[0])
        ctx.dirty = True

    def cooling_pools(self, now: float) -> set[str]:
        return {pid for pid, h in self.ctx.state.pools.items()
                if h.cooloff_until is not None and h.cooloff_until > now}

    def check_provisioning(self, states: dict[str, ClusterState]) -> None:
        """A pool still short of the nodes it was asked for after its provisioning timeout counts as failed."""
        ctx = self.ctx
        now = ctx.clock.now()
        for cluster in ctx.config.clusters:
            if not isinstance(cluster, CloudCluster) or cluster.name not in states:
                continue
            for p in cluster.pools:
                pid, ps = f"{cluster.name}/{p.name}", states[cluster.name].pool(p.name)
                short = ps is not None and ps.desired_nodes > ps.ready_nodes
                since = ctx.pool_clock(pid, "growing_since", short, now)
                if since is not None and now - since >= p.provisioning_timeout:
                    ctx.pool_clock(pid, "growing_since", False, now)
                    self.pool_failed(pid, now, f"{ps.desired_nodes - ps.ready_nodes} of {ps.desired_nodes} node(s) "
                                               f"not ready {(now - since) / 60:.0f} min after the scale-up "
                                               "(provisioning timeout)")

    def note_interruption(self, pool_id: str, nodes: tuple[str, ...], now: float) -> None:
        """A pool that keeps losing nodes under running jobs (spot reclaims) is backed off."""
        h = self.ctx.state.pool(pool_id)
        lost = {n: t for n, t in h.lost_nodes.items() if now - t < INTERRUPTION_WINDOW_S}
        for n in nodes or (f"?{len(lost)}",):
            lost.setdefault(n, now)
        h.lost_nodes = lost
        if len(lost) >= INTERRUPTED_NODES_BACKOFF:
            h.lost_nodes = {}
            self.cool_pool(pool_id, now, f"lost {len(lost)} nodes under running jobs in the last "
                                         f"{INTERRUPTION_WINDOW_S / 60:.0f} min")
        self.ctx.journal.pool(h)


def summarize_signals(state: ClusterState) -> dict[str, float]:
    """The cluster's signals plus what follows from them: mean GPU utilization, GPUs allocated but idle."""
    out = dict(state.signals)
    if state.gpu_utilization:
        out["gpu_utilization_avg"] = sum(state.gpu_utilization.values()) / len(state.gpu_utilization)
        allocated = {n.name: n.gpus - n.free_gpus for n in state.nodes}
        out["idle_allocated_gpus"] = float(sum(
            allocated.get(node, 0) for node, util in state.gpu_utilization.items() if util < IDLE_UTILIZATION_PCT))
    return out
