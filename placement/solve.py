"""`solve`: the production entry point. CP-SAT rounds with greedy as hint and floor, plus the LP bound."""

from __future__ import annotations

import time
from dataclasses import replace

from placement.bound import lp_bound
from placement.cpsat import cpsat_settled
from placement.types import PlacementProblem, Plan


def solve(problem: PlacementProblem) -> Plan:
    """The cheapest consistent plan found within `policy.time_limit_s`; never worse than greedy's.

    `lower_bound` is the LP bound with waiting priced by this plan's forecast (see bound.py), so
    `plan.gap` says how far the plan is from the best plan under that pricing.
    """
    t0 = time.perf_counter()
    settled, _ = cpsat_settled(problem)
    bound = lp_bound(problem, settled.wait_costs, time_limit_s=max(1.0, problem.policy.time_limit_s))
    obj = settled.plan.objective
    if bound is not None and obj < bound <= obj + 1e-6 * max(1.0, obj):
        bound = obj  # float noise of a tight LP; anything larger is left visible
    return replace(
        settled.plan, lower_bound=bound, solve_s=time.perf_counter() - t0
    )
