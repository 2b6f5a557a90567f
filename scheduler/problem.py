"""Builds the solver's `PlacementProblem` from a snapshot: pending jobs, observed clusters, policy and prices.

Observed free capacity is corrected for jobs the scheduler has dispatched but the cluster has not started
yet (they will take that room: assume-then-act, as Kueue does), and running jobs' expected ends become the
on-prem release forecast.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from spillover.placement import JobDemand, Node, PlacementProblem, Policy, Release, Target
from spillover.providers.contract import ClusterState, JobPhase, NodeInfo
from spillover.scheduler.config import CloudCluster, OnPremCluster, SpilloverConfig
from spillover.scheduler.model import JobState
from spillover.scheduler.store import Job
from spillover.scheduler.team_state import TeamView

# A job running past its estimate is expected to end soon, not at a time already past.
OVERDUE_GRACE_H = 0.1


@dataclass(frozen=True)
class TargetRef:
    """Where a solver target lives in the world."""

    target_id: str
    cluster: str
    pool: str | None  # None for on-prem
    gpu_type: str
    kind: str


@dataclass
class Snapshot:
    """What the loop knows at the start of a decision."""

    now: float
    states: dict[str, ClusterState]  # clusters observed this cycle and usable
    pending: list[Job]
    active: list[Job]
    cooling_pools: set[str] = field(default_factory=set)  # pool ids ("cluster/pool") not to be used now
    avoid: dict[str, set[str]] = field(default_factory=dict)  # job id -> clusters it must not go to now
    teams: TeamView | None = None  # quotas, budgets and fair share, when the config has any


class ProblemBuilder:
    """`build_problem` for one loop, remembering the targets of cloud clusters whose observation did not change:
    a replay builds tens of thousands of problems from clusters that mostly stay as they were."""

    def __init__(self, config: SpilloverConfig) -> None:
        self.config = config
        self._cloud: dict[str, tuple[tuple, list[tuple[TargetRef, Target]]]] = {}

    def build(self, snap: Snapshot) -> tuple[PlacementProblem, dict[str, TargetRef]]:
        return build_problem(self.config, snap, self._cloud)


def build_problem(config: SpilloverConfig, snap: Snapshot,
                  cache: dict[str, tuple[tuple, list[tuple[TargetRef, Target]]]] | None = None
                  ) -> tuple[PlacementProblem, dict[str, TargetRef]]:
    refs: dict[str, TargetRef] = {}
    targets: list[Target] = []
    policy = config.policy
    allowed_clouds = {getattr(c, "value", c) for c in policy.allowed_clouds}
    allowed_regions = set(policy.allowed_regions)
    in_flight = _in_flight_by_cluster(snap)
    running_by_cluster = _running_by_cluster(snap)
    cloud_gpus_in_use = 0

    for cluster in config.clusters:
        state = snap.states.get(cluster.name)
        if isinstance(cluster, CloudCluster):
            for p in cluster.pools:
                ps = state.pool(p.name) if state else None
                if ps is not None:
                    cloud_gpus_in_use += max(ps.nodes, ps.desired_nodes) * p.gpus_per_node
        if state is None:
            continue
        flying = in_flight.get(cluster.name, [])
        if isinstance(cluster, CloudCluster) and cache is not None:
            # the same observation (the very objects), the same jobs on their way, the same pools cooling off, no
            # node booting (whose ready time counts from now): the same targets
            key = (state.nodes, state.pools, tuple(j.id for j in flying),
                   tuple(sorted(pid for pid in snap.cooling_pools if pid.startswith(cluster.name + "/"))))
            hit = cache.get(cluster.name)
            if hit is not None and len(hit[0]) == len(key) and all(a is b or a == b for a, b in zip(hit[0], key)):
                for ref, target in hit[1]:
                    refs[ref.target_id] = ref
                    targets.append(target)
                continue
        nodes = _nodes_after_in_flight(state.nodes, flying, snap.now)
        if isinstance(cluster, OnPremCluster):
            releases = _releases(running_by_cluster.get(cluster.name, []), snap.now, config)
            groups: dict[tuple[str, int], list[NodeInfo]] = defaultdict(list)
            for n in state.nodes:
                if n.ready:
                    groups[(n.gpu_type, n.gpus)].append(n)
            for (gpu_type, gpn), members in sorted(groups.items()):
                tid = cluster.name if len(groups) == 1 else f"{cluster.name}[{gpu_type}x{gpn}]"
                names = {m.name for m in members}
                ref = TargetRef(tid, cluster.name, None, gpu_type, "onprem")
                refs[tid] = ref
                targets.append(Target(
                    id=tid, kind="onprem", gpu_type=gpu_type, gpus_per_node=gpn,
                    cpu_per_node=max(m.cpu for m in members), memory_gib_per_node=max(m.memory_gib for m in members),
                    # on-prem first: capacity already paid for is free to the solver, so it always fills first
                    price_per_node_h=0.0 if policy.onprem_first else cluster.gpu_hour_cost * gpn,
                    nodes=tuple(nodes[m.name] for m in members if m.name in nodes),
                    speed=config.speed(gpu_type),
                    releases=tuple(r for r in releases if r.node in names),
                    label=tid,
                ))
        else:
            if getattr(cluster.cloud, "value", cluster.cloud) not in allowed_clouds:
                continue
            if allowed_regions and cluster.region not in allowed_regions:
                continue
            made: list[tuple[TargetRef, Target]] = []
            for p in cluster.pools:
                pid = f"{cluster.name}/{p.name}"
                if pid in snap.cooling_pools:
                    continue
                if p.spot and not policy.spot_for_checkpointable:
                    continue
                ps = state.pool(p.name)
                if ps is None:
                    continue
                size = max(ps.nodes, ps.desired_nodes)
                refs[pid] = TargetRef(pid, cluster.name, p.name, p.gpu_type, "cloud")
                targets.append(Target(
                    id=pid, kind="cloud", gpu_type=p.gpu_type, gpus_per_node=p.gpus_per_node,
                    cpu_per_node=p.cpu_per_node, memory_gib_per_node=p.memory_gib_per_node,
                    price_per_node_h=p.price_per_hour,
                    nodes=tuple(nodes[n.name] for n in state.nodes if n.pool == p.name and n.name in nodes),
                    speed=config.speed(p.gpu_type), max_new_nodes=max(0, p.max_nodes - size),
                    provisioning_h=p.provisioning_delay_s / 3600.0, spot=p.spot,
                    cloud=getattr(cluster.cloud, "value", cluster.cloud), region=cluster.region,
                    label=f"{pid} ({p.instance_type}{', spot' if p.spot else ''})",
                ))
                made.append((refs[pid], targets[-1]))
            if cache is not None and all(n.ready or n.ready_at is None for n in state.nodes):
                cache[cluster.name] = (key, made)

    teams = snap.teams
    jobs = tuple(
        JobDemand(
            id=j.id, gpus=j.spec.gpus, nodes=j.spec.nodes, cpu=j.spec.cpu, memory_gib=j.spec.memory_gib,
            gpu_types=frozenset(j.spec.gpu_types), runtime_h=j.remaining_s / 3600.0,
            value_of_time=config.value_of_time(j.queue, j.spec.total_gpus), priority=j.priority,
            checkpointable=j.spec.checkpointable, waited_h=max(0.0, snap.now - j.submitted_at) / 3600.0,
            allowed_targets=(frozenset(t for t, ref in refs.items() if ref.cluster not in snap.avoid[j.id])
                             if j.id in snap.avoid else None),
            **(teams.demand(j) if teams is not None else {}),
        )
        for j in snap.pending
    )
    problem = PlacementProblem(
        jobs=jobs, targets=tuple(targets),
        policy=Policy(
            max_cloud_gpus=policy.max_cloud_gpus, cloud_gpus_in_use=cloud_gpus_in_use,
            idle_h=policy.scale_down_idle_s / 3600.0,
            prefer_spot_for_checkpointable=policy.spot_for_checkpointable,
            spot_for_non_checkpointable=policy.spot_for_non_checkpointable,
            time_limit_s=config.loop.solver_time_limit_s, work_limit=config.loop.solver_work_limit,
            compute_bound=config.loop.solver_bound,
            quotas=teams.quotas if teams is not None else (), budgets=teams.budgets if teams is not None else (),
            cloud_caps=teams.cloud_caps if teams is not None else (),
        ),
    )
    return problem, refs


def _in_flight_by_cluster(snap: Snapshot) -> dict[str, list[Job]]:
    """Jobs bound to a cluster that the cluster has not started: their demand is spoken for."""
    out: dict[str, list[Job]] = defaultdict(list)
    for j in snap.active:
        if j.cluster is None or j.state not in (JobState.DISPATCHING, JobState.DISPATCHED):
            continue
        st = snap.states.get(j.cluster)
        status = st.jobs.get(j.id) if st else None
        if status is None or status.phase == JobPhase.PENDING:
            out[j.cluster].append(j)
    return out


def _running_by_cluster(snap: Snapshot) -> dict[str, list[tuple[Job, tuple[str, ...], float]]]:
    out: dict[str, list[tuple[Job, tuple[str, ...], float]]] = defaultdict(list)
    for j in snap.active:
        st = snap.states.get(j.cluster or "")
        status = st.jobs.get(j.id) if st else None
        if status is not None and status.phase == JobPhase.RUNNING and status.started_at is not None:
            out[j.cluster or ""].append((j, status.nodes, status.started_at))
    return out


def _releases(running: list[tuple[Job, tuple[str, ...], float]], now: float,
              config: SpilloverConfig) -> list[Release]:
    out = []
    speeds = config.gpu_speeds
    for job, nodes, started_at in running:
        spec = job.spec
        speed = speeds.get(job.gpu_type, 1.0) if job.gpu_type else 1.0
        at_h = max(OVERDUE_GRACE_H, (started_at + job.remaining_s / speed - now) / 3600.0)
        gpus, cpu, mem = spec.gpus, spec.cpu, spec.memory_gib
        for n in nodes:
            out.append(Release(at_h, n, gpus, cpu, mem))
    return out


def _nodes_after_in_flight(observed: tuple[NodeInfo, ...], in_flight: list[Job], now: float) -> dict[str, Node]:
    """Solver nodes with the demand of dispatched-but-not-started jobs taken out (first fit, largest first)."""
    free = {n.name: [n.free_gpus, n.free_cpu, n.free_memory_gib, n.jobs == 0] for n in observed}
    by_name = {n.name: n for n in observed}
    for job in sorted(in_flight, key=lambda j: -j.gpus):
        spec = job.spec
        allowed = set(spec.gpu_types)
        candidates = [n for n in observed if (job.pool is None or n.pool == job.pool)
                      and (not allowed or n.gpu_type in allowed)]
        candidates.sort(key=lambda n: (not n.ready, free[n.name][0]))
        need = spec.nodes
        for n in candidates:
            if need == 0:
                break
            f = free[n.name]
            fits = f[0] >= spec.gpus and f[1] + 1e-9 >= spec.cpu and f[2] + 1e-9 >= spec.memory_gib
            if spec.nodes > 1:
                fits = fits and f[3]
            if fits:
                f[0] -= spec.gpus if spec.nodes == 1 else f[0]
                f[1] -= spec.cpu
                f[2] -= spec.memory_gib
                f[3] = False
                need -= 1
    out = {}
    for name, (g, c, m, idle) in free.items():
        n = by_name[name]
        if n.ready_at is None and not n.ready:
            continue  # a node that is neither ready nor coming up (e.g. NotReady) takes no work
        ready_in_h = 0.0 if n.ready else max(0.0, (n.ready_at - now) / 3600.0)
        out[name] = Node(name, max(0, int(g)), max(0.0, c), max(0.0, m), ready_in_h, idle)
    return out
