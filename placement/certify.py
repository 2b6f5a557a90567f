"""Proof that a plan is optimal when each job already pays the least it could pay in any plan.

Every plan's objective is at least the sum over jobs of the cheapest thing each job could do on its own: wait
with nobody ahead and nothing started (no plan forecasts an earlier start, see bound.py), or run on the node
or new node that costs it least in an empty cluster. A new node's boot-and-idle overhead is shared by the
jobs on it, so each job is charged only its GPU share of it (the shares on one node sum to at most one),
unless the job is alone in the queue. When a plan costs no more than that sum, nothing can beat it: for a
short queue on an idle cluster, or one job with one obvious option, this settles the decision at the cost of
a greedy pass instead of a search.
"""

from __future__ import annotations

import math

from spillover.placement.bound import alone_wait_costs
from spillover.placement.costs import delay_cost, new_node_cost, run_cost
from spillover.placement.forecast import EPS
from spillover.placement.ledger import Ledger
from spillover.placement.types import JobDemand, PlacementProblem, Target

# Relative slack for float noise: the plan and the bound add the same costs in a different order.
REL_TOL = 1e-9


def _cheapest_run(
    problem: PlacementProblem, ledger: Ledger, i: int, shared: bool, ready_memo: dict[tuple, list[float]]
) -> float:
    """The least job `i` can pay to run on any target, alone in the cluster (new-node overhead shared or not)."""
    job = problem.jobs[i]
    k = job.nodes
    best = math.inf
    for ti in ledger.feasible_targets(i):
        t = problem.targets[ti]
        run = run_cost(job, t)
        if run >= best:
            continue
        rk = (ti, job.gpus, job.cpu, job.memory_gib, job.nodes > 1)
        ready = ready_memo.get(rk)
        if ready is None:
            ready = ready_memo[rk] = _ready_times(ledger, ti, job)
        max_fresh = 0
        if t.kind == "cloud" and ledger.full_node_fits(job, t):
            max_fresh = min(k, t.max_new_nodes)
            if t.gpus_per_node > 0 and ledger.cap_room() < math.inf:
                max_fresh = min(max_fresh, int((ledger.cap_room() + EPS) // t.gpus_per_node))
        over = new_node_cost(t, problem.policy) * _share(job, t, shared)
        for fresh in range(0, max(0, max_fresh) + 1):
            need = k - fresh
            if need > len(ready):
                continue
            start = max(ready[need - 1] if need else 0.0, t.provisioning_h if fresh else 0.0)
            best = min(best, run + delay_cost(job, start) + fresh * over)
    return best


def _share(job: JobDemand, t: Target, shared: bool) -> float:
    """The part of a new node's overhead one replica certainly causes: all of it for a gang replica (it takes
    the node whole) or when nobody else could share it, its GPU share otherwise."""
    if not shared or job.nodes > 1:
        return 1.0
    return min(1.0, job.gpus / t.gpus_per_node) if t.gpus_per_node > 0 else 0.0


def _ready_times(ledger: Ledger, ti: int, job: JobDemand) -> list[float]:
    """Ready times of the existing nodes of target `ti` that can host a replica of `job`, earliest first."""
    return sorted(ledger.slots[(ti, n.name)].ready for n in ledger.targets[ti].nodes
                  if ledger.slots[(ti, n.name)].fits(job))


def plan_lower_bound(problem: PlacementProblem, stop_below: float = -math.inf) -> float:
    """A lower bound on the objective of every plan: each job's cheapest way to wait or run, on its own.

    Each job's term is at most its wait alone, so once the bound cannot reach `stop_below` any more, what
    has been summed so far is returned (still a lower bound, just not the best one).
    """
    if not problem.jobs:
        return 0.0
    ledger = Ledger(problem)
    alone = alone_wait_costs(problem)
    shared = len(problem.jobs) > 1
    ready_memo: dict[tuple, list[float]] = {}
    total = 0.0
    rest = sum(alone)
    for i in range(len(problem.jobs)):
        if total + rest < stop_below:
            return total
        rest -= alone[i]
        total += min(alone[i], _cheapest_run(problem, ledger, i, shared, ready_memo))
    return total


def proven_optimal(problem: PlacementProblem, objective: float) -> float | None:
    """The lower bound that proves a plan of this objective optimal, or None when it does not."""
    slack = REL_TOL * max(1.0, abs(objective))
    bound = plan_lower_bound(problem, objective - slack)
    if objective <= bound + slack:
        return bound
    return None
