"""Preemption on-prem: a team below its quota takes back GPUs a borrower holds, and a job of much higher priority
takes them from its own team's; only checkpointable jobs that have run long enough to checkpoint are stopped, at
most so many an hour, and each goes back to the queue to resume from where it was (on-prem or in the cloud)."""

from __future__ import annotations

from collections import deque

from spillover.providers.contract import ClusterState, JobPhase, NodeInfo
from spillover.scheduler.context import LoopContext, log
from spillover.scheduler.model import JobState
from spillover.scheduler.records import Job
from spillover.scheduler.team_state import TeamView

HOUR = 3600.0
# A preemptor whose room is being made is not given more for this long (its victims are being removed).
CLAIM_S = 600.0


class Preemption:
    def __init__(self, ctx: LoopContext) -> None:
        self.ctx = ctx
        self.recent: deque[float] | None = None  # when the last hour's preemptions were made (read at first use)
        self.claims: dict[str, float] = {}  # preemptor job id -> when room was made for it

    def step(self, states: dict[str, ClusterState], pending: list[Job], view: TeamView | None) -> int:
        """Preempt for the pending jobs that need it; how many jobs were stopped."""
        ctx = self.ctx
        cfg = ctx.config.preemption
        if not cfg.enabled or not pending or cfg.max_per_hour == 0:
            return 0
        now = ctx.clock.now()
        if self.recent is None:  # those an earlier process made count against the rate too
            self.recent = deque(e.at for e in ctx.store.events_of(("preempted",), now - HOUR))
        while self.recent and self.recent[0] <= now - HOUR:
            self.recent.popleft()
        for jid in [j for j, at in self.claims.items() if at <= now - CLAIM_S]:
            del self.claims[jid]
        quotas = {(q.team, q.gpu_type): q for q in view.quotas} if view is not None else {}
        used = {k: q.used for k, q in quotas.items()}
        onprem = {c.name for c in ctx.config.onprem_clusters}
        running: dict[tuple[str, str], list[tuple[Job, int]]] = {}  # (cluster, node) -> [(job, gpus)]
        for j in ctx.state.in_states((JobState.RUNNING,)):
            st = states.get(j.cluster or "")
            status = st.jobs.get(j.id) if st is not None and j.cluster in onprem else None
            if status is None or status.phase != JobPhase.RUNNING or len(status.nodes) != 1:
                continue
            running.setdefault((j.cluster or "", status.nodes[0]), []).append((j, j.spec.gpus))
        stopped = 0
        for p in sorted(pending, key=lambda j: (-j.priority, j.submitted_at)):
            if len(self.recent) >= cfg.max_per_hour:
                break
            if p.spec.nodes > 1 or p.id in self.claims:
                continue  # gangs are not preempted for (yet); one already has room being made
            choice = self._room_for(p, states, onprem, running, quotas, used, now)
            if choice is None:
                continue
            (cluster, node), victims = choice
            for v in victims:
                self._preempt(v, p, now)
                running[(cluster, node)] = [(j, g) for j, g in running[(cluster, node)] if j.id != v.id]
                key = (v.team, v.gpu_type or "")
                if key in used:
                    used[key] -= v.spec.gpus
                stopped += 1
            key = (p.team, _node_type(states[cluster], node))
            if key in used:
                used[key] += p.spec.gpus
            self.claims[p.id] = now
        return stopped

    def _room_for(self, p: Job, states: dict[str, ClusterState], onprem: set[str],
                  running: dict[tuple[str, str], list[tuple[Job, int]]], quotas: dict, used: dict,
                  now: float) -> tuple[tuple[str, str], list[Job]] | None:
        """The node where stopping the fewest GPUs of eligible victims makes room for `p`, and those victims; None
        when `p` fits somewhere already or nothing may be stopped for it."""
        cfg = self.ctx.config.preemption
        spec = p.spec
        allowed = set(spec.gpu_types)
        best: tuple[int, tuple[str, str], list[Job]] | None = None
        for cluster in sorted(onprem):
            st = states.get(cluster)
            if st is None:
                continue
            for n in st.nodes:
                if not n.ready or n.gpus < spec.gpus or (allowed and n.gpu_type not in allowed):
                    continue
                if _fits(n, spec.gpus, spec.cpu, spec.memory_gib):
                    return None  # room without stopping anyone: the solver places it
                q = quotas.get((p.team, n.gpu_type))
                reclaim = q is not None and used.get((p.team, n.gpu_type), 0) + spec.gpus <= q.nominal
                eligible = []
                for v, gpus in running.get((cluster, n.name), []):
                    if not v.spec.checkpointable or v.started_at is None or now - v.started_at < cfg.min_runtime_s:
                        continue
                    vq = quotas.get((v.team, n.gpu_type))
                    borrowing = (vq is not None and v.team != p.team and used.get((v.team, n.gpu_type), 0) > vq.nominal
                                 and q is not None and vq.cohort is not None and vq.cohort == q.cohort)
                    outranked = v.team == p.team and p.priority >= v.priority + cfg.priority_gap
                    if (reclaim and borrowing) or outranked:
                        eligible.append(v)
                # the job that started last has the least to lose
                eligible.sort(key=lambda v: -(v.started_at or 0.0))
                free, taken = n.free_gpus, []
                for v in eligible:
                    if free >= spec.gpus:
                        break
                    taken.append(v)
                    free += v.spec.gpus
                if free >= spec.gpus and taken:
                    cost = sum(v.spec.gpus for v in taken)
                    if best is None or cost < best[0]:
                        best = (cost, (cluster, n.name), taken)
        return None if best is None else (best[1], best[2])

    def _preempt(self, v: Job, p: Job, now: float) -> None:
        ctx = self.ctx
        speed = ctx.config.speed(v.gpu_type) if v.gpu_type else 1.0
        progress = v.progress_at(now, speed)
        why = (f"team {p.team} is below its quota and takes back GPUs team {v.team} borrowed" if v.team != p.team
               else f"job {p.name} of priority {p.priority} outranks it ({v.priority})")
        ctx.take_off_cluster(v, now, f"preempted on {v.cluster} for {p.name}: {why}; requeued to resume from its "
                             f"checkpoint ({progress:.0%} done)", kind="preempted", dispatch_done=True,
                             progress=progress)
        self.recent.append(now)
        ctx.dirty = True
        log.info("preempted %s on %s for %s", v.id, v.cluster, p.id)


def _fits(n: NodeInfo, gpus: int, cpu: float, memory_gib: float) -> bool:
    return n.free_gpus >= gpus and n.free_cpu + 1e-9 >= cpu and n.free_memory_gib + 1e-9 >= memory_gib


def _node_type(state: ClusterState, node: str) -> str:
    return next((n.gpu_type for n in state.nodes if n.name == node), "")
