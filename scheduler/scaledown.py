"""Scale-down: a cloud pool with more nodes than its busy ones and its minimum, and no job on its way to it, shrinks
once it has stayed so for the policy's `scale_down_idle_s`; back to zero when idle."""

from __future__ import annotations

from spillover.providers.contract import ClusterState
from spillover.scheduler.config import CloudCluster
from spillover.scheduler.context import LoopContext
from spillover.scheduler.model import JobState


class ScaleDown:
    def __init__(self, ctx: LoopContext) -> None:
        self.ctx = ctx

    def step(self, states: dict[str, ClusterState]) -> None:
        ctx = self.ctx
        now = ctx.clock.now()
        idle_s = ctx.config.policy.scale_down_idle_s
        bound: dict[str, int] = {}
        for job in ctx.state.in_states((JobState.DISPATCHING, JobState.DISPATCHED)):
            if job.pool:
                bound[f"{job.cluster}/{job.pool}"] = bound.get(f"{job.cluster}/{job.pool}", 0) + 1
        for cluster in ctx.config.clusters:
            if not isinstance(cluster, CloudCluster) or cluster.name not in states:
                continue
            state = states[cluster.name]
            for p in cluster.pools:
                pid = f"{cluster.name}/{p.name}"
                ps = state.pool(p.name)
                if ps is None:
                    continue
                busy_nodes = state.busy_nodes_by_pool.get(p.name, 0)
                keep = max(p.min_nodes, busy_nodes)
                surplus = max(ps.nodes, ps.desired_nodes) > keep and not bound.get(pid)
                if not ps.removes_idle_first and busy_nodes:
                    surplus = False  # the cloud would pick which nodes go, busy ones included
                since = ctx.pool_clock(pid, "idle_since", surplus, now)
                if since is None or now - since < idle_s:
                    continue
                err = ctx.scale(cluster.name, p.name, keep, now, f"{pid} scaled down to {keep} node(s) after "
                                f"{(now - since) / 60:.0f} min with idle nodes")
                if err is None:
                    ctx.report.scaled.append(f"{pid}->{keep}")
                    ctx.pool_clock(pid, "idle_since", False, now)

    def idle_deadlines(self) -> list[float]:
        """When pools whose idle clock runs will be due for a scale-down (for the simulator)."""
        idle_s = self.ctx.config.policy.scale_down_idle_s
        return [h.idle_since + idle_s for h in self.ctx.state.pools.values() if h.idle_since is not None]
