"""`lp_bound`: a GLOP linear relaxation of the placement model, as a lower bound on plan objectives.

Waiting is priced per job by the caller's `wait_costs`, or by default at what each job's wait would cost if
it were alone in the queue with nothing started now. Reservations and starts only push a node's free capacity
later (see forecast.py), so that default is below the job's forecast wait cost in every plan and the bound is
valid for the consistent objective of every valid plan, but it is loose: it prices every wait as if no one
were ahead. `solve` instead passes the wait costs of the plan it returns (consistent for its waiting jobs,
"if it alone waited" for the others). The plan itself is a point of that relaxation at exactly its
objective, so the bound never exceeds it, and the gap says how far the plan is from the best plan when
waiting is priced by this plan's forecast.

The relaxation is valid for the real node-fit rules, not only for the CP-SAT model's rounded ones:
- fractions of a job may run on several ready-groups and targets; a gang's delay is priced at the average
  readiness of its nodes (never more than the latest, which is what it really pays);
- node fit is exact in the GPU dimension (packing patterns over GPU counts per free-GPU profile, with LP
  counts), while CPU, memory and whole idle nodes for gangs are only summed per ready-group.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from collections.abc import Sequence

from ortools.linear_solver import pywraplp

from placement.costs import delay_cost, new_node_cost, run_cost, wait_cost
from placement.feasibility import feasible
from placement.forecast import EPS, ForecastState
from placement.patterns import maximal_patterns
from placement.types import JobDemand, Node, PlacementProblem, Target


def alone_wait_costs(problem: PlacementProblem) -> list[float]:
    """Each job's wait cost if it were alone in the queue: a lower bound on its wait cost in any plan."""
    state = ForecastState(problem.targets, problem.policy)
    out: list[float] = []
    for job in problem.jobs:
        best = math.inf
        for ti, t in enumerate(state.targets):
            if not feasible(job, t, problem.policy):
                continue
            s = state.spot_on(job, ti)
            if s is not None:
                best = min(best, wait_cost(job, s.start, t))
        out.append(best if best < math.inf else wait_cost(job, problem.policy.max_wait_h, None))
    return out


class _Group:
    def __init__(self, target: int, ready: float, new: bool, nodes: list[Node]) -> None:
        self.target = target
        self.ready = ready
        self.new = new
        self.nodes = nodes
        self.cpu = sum(n.free_cpu for n in nodes)
        self.mem = sum(n.free_memory_gib for n in nodes)
        self.idle = sum(1 for n in nodes if n.idle)


def _node_fits(job: JobDemand, n: Node) -> bool:
    if job.nodes > 1 and not n.idle:
        return False
    return n.free_gpus >= job.gpus and n.free_cpu >= job.cpu - EPS and n.free_memory_gib >= job.memory_gib - EPS


def _full_fits(job: JobDemand, t: Target) -> bool:
    return job.gpus <= t.gpus_per_node and job.cpu <= t.cpu_per_node + EPS and job.memory_gib <= (
        t.memory_gib_per_node + EPS
    )


@dataclass
class Relaxation:
    """The LP optimum and, per class of identical jobs, how much of it runs on each target."""

    value: float
    runs: list[tuple[list[int], dict[int, float]]]  # (job indices, target -> jobs' worth running there)


def relaxation(
    problem: PlacementProblem,
    waits: Sequence[float],
    start_rate: dict[int, float] | None = None,
    time_limit_s: float | None = None,
) -> Relaxation | None:
    """Solve the LP relaxation with waiting priced at `waits` (and on-prem starts charged `start_rate`
    dollars per GPU-hour held, per target); None when GLOP does not finish."""
    policy = problem.policy
    targets = problem.targets
    jobs = problem.jobs
    start_rate = start_rate or {}
    room = math.inf if policy.max_cloud_gpus is None else policy.max_cloud_gpus - policy.cloud_gpus_in_use

    groups: list[_Group] = []
    target_groups: list[list[int]] = []
    for ti, t in enumerate(targets):
        by_ready: dict[float, list[Node]] = {}
        for n in t.nodes:
            by_ready.setdefault(n.ready_in_h, []).append(n)
        gs = []
        for ready, nodes in sorted(by_ready.items()):
            gs.append(len(groups))
            groups.append(_Group(ti, ready, False, nodes))
        if t.kind == "cloud" and t.max_new_nodes > 0 and t.gpus_per_node <= room:
            gs.append(len(groups))
            groups.append(_Group(ti, t.provisioning_h, True, []))
        target_groups.append(gs)

    fit_memo: dict[tuple, bool] = {}
    shape_targets: dict[tuple, list[int]] = {}
    classes: dict[tuple, list[int]] = {}
    for i, job in enumerate(jobs):
        shape = (job.gpus, job.nodes, job.cpu, job.memory_gib, job.gpu_types, job.checkpointable,
                 job.allowed_targets)
        ts = shape_targets.get(shape)
        if ts is None:
            ts = [ti for ti, t in enumerate(targets) if feasible(job, t, policy)]
            shape_targets[shape] = ts
        opts = []
        for ti in ts:
            t = targets[ti]
            run = run_cost(job, t)
            if ti in start_rate:
                run += start_rate[ti] * job.total_gpus * job.runtime_h / t.speed
            for gi in target_groups[ti]:
                g = groups[gi]
                fk = (gi, job.gpus, job.cpu, job.memory_gib, job.nodes > 1)
                ok = fit_memo.get(fk)
                if ok is None:
                    ok = _full_fits(job, t) if g.new else any(_node_fits(job, n) for n in g.nodes)
                    fit_memo[fk] = ok
                # An option at least as dear as waiting is never needed: waiting takes no capacity.
                cost = run + delay_cost(job, g.ready)
                if ok and cost < waits[i]:
                    opts.append((gi, cost))
        classes.setdefault((job.gpus, job.nodes, job.cpu, job.memory_gib, waits[i], tuple(opts)), []).append(i)

    lp = pywraplp.Solver.CreateSolver("GLOP")
    if lp is None:
        return None
    inf = lp.infinity()
    objective = lp.Objective()
    # Per group: coverage rows by GPU size, and CPU, memory and whole-node rows.
    cover: dict[tuple[int, int], pywraplp.Constraint] = {}
    sizes: dict[int, set[int]] = {}
    cpu_row: dict[int, pywraplp.Constraint] = {}
    mem_row: dict[int, pywraplp.Constraint] = {}
    gang_row: dict[int, pywraplp.Constraint] = {}
    new_vars: dict[int, pywraplp.Variable] = {}

    def new_var(ti: int) -> pywraplp.Variable:
        v = new_vars.get(ti)
        if v is None:
            t = targets[ti]
            v = lp.NumVar(0, t.max_new_nodes, "")
            objective.SetCoefficient(v, new_node_cost(t, policy))
            new_vars[ti] = v
        return v

    def row(
        store: dict[int, pywraplp.Constraint], gi: int, per_node: float, existing: float
    ) -> pywraplp.Constraint:
        r = store.get(gi)
        if r is None:
            g = groups[gi]
            r = lp.Constraint(-inf, existing if not g.new else 0.0)
            if g.new:
                r.SetCoefficient(new_var(g.target), -per_node)
            store[gi] = r
        return r

    class_vars: list[tuple[list[int], list[tuple[int, pywraplp.Variable]]]] = []
    const = 0.0
    for (gpus, nodes, cpu, mem, w, opts), members in classes.items():
        n = len(members)
        const += w * n
        if not opts:
            continue
        one = lp.Constraint(-inf, n)
        vs: list[tuple[int, pywraplp.Variable]] = []
        for gi, cost in opts:
            g = groups[gi]
            t = targets[g.target]
            v = lp.NumVar(0, n, "")
            vs.append((g.target, v))
            one.SetCoefficient(v, 1)
            objective.SetCoefficient(v, cost - w)
            if gpus > 0:
                key = (gi, gpus)
                r = cover.get(key)
                if r is None:
                    r = lp.Constraint(-inf, 0.0)
                    cover[key] = r
                    sizes.setdefault(gi, set()).add(gpus)
                r.SetCoefficient(v, nodes)
            if cpu > 0:
                row(cpu_row, gi, t.cpu_per_node, g.cpu).SetCoefficient(v, nodes * cpu)
            if mem > 0:
                row(mem_row, gi, t.memory_gib_per_node, g.mem).SetCoefficient(v, nodes * mem)
            if nodes > 1:
                row(gang_row, gi, 1.0, g.idle).SetCoefficient(v, nodes)
        class_vars.append((members, vs))

    for gi, szs in sizes.items():
        g = groups[gi]
        t = targets[g.target]
        order = sorted(szs)
        profiles = Counter(x.free_gpus for x in g.nodes) if not g.new else Counter({t.gpus_per_node: 0})
        for free, count in profiles.items():
            pats = maximal_patterns((free,), [(s,) for s in order], limit=10_000, steps=1_000_000)
            if not pats:
                continue
            if not g.new:
                total = lp.Constraint(-inf, count)
            else:
                total = lp.Constraint(0, 0)
                total.SetCoefficient(new_var(g.target), -1)
            for pat in pats:
                z = lp.NumVar(0, inf, "")
                total.SetCoefficient(z, 1)
                for k, c in pat:
                    cover[(gi, order[k])].SetCoefficient(z, -c)

    if policy.max_cloud_gpus is not None and new_vars:
        cap = lp.Constraint(-inf, max(0.0, room))
        for ti, v in new_vars.items():
            cap.SetCoefficient(v, targets[ti].gpus_per_node)
    objective.SetMinimization()
    # Dual simplex is about 3x faster than primal here (many columns, few coupling rows).
    lp.SetSolverSpecificParametersAsString("use_dual_simplex: true")
    if time_limit_s is not None:
        lp.SetTimeLimit(int(time_limit_s * 1000))
    if lp.Solve() != pywraplp.Solver.OPTIMAL:
        return None
    runs: list[tuple[list[int], dict[int, float]]] = []
    for members, vs in class_vars:
        by_target: dict[int, float] = {}
        for ti, v in vs:
            val = v.solution_value()
            if val > 1e-6:
                by_target[ti] = by_target.get(ti, 0.0) + val
        if by_target:
            runs.append((members, by_target))
    return Relaxation(objective.Value() + const, runs)


def lp_bound(
    problem: PlacementProblem, wait_costs: Sequence[float] | None = None, time_limit_s: float | None = None
) -> float | None:
    """The LP relaxation's optimum in dollars; None when GLOP does not finish in `time_limit_s`."""
    if not problem.jobs:
        return 0.0
    waits = list(wait_costs) if wait_costs is not None else alone_wait_costs(problem)
    r = relaxation(problem, waits, time_limit_s=time_limit_s)
    return None if r is None else r.value
