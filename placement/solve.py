"""`solve`: the production entry point. Greedy first; a proof that it is optimal ends the search (a bound it
meets, or on short queues an enumeration showing that every other plan costs more, see sole.py), otherwise
CP-SAT rounds (or, on huge queues, the LP search) with greedy as hint and floor, plus the LP bound.

The whole decision keeps to `policy.time_limit_s`, or in the deterministic mode to `policy.work_limit` (see
work.py), reading no clock; the LP bound, when asked for (`policy.compute_bound`), comes after it, from the
model the search built."""

from __future__ import annotations

import time
from dataclasses import replace

from spillover.placement.bound import lp_bound
from spillover.placement.certify import proven_optimal
from spillover.placement.cpsat import CPSAT_MAX_PAIRS, cpsat_settled
from spillover.placement.greedy import greedy_settled
from spillover.placement.sole import sole_optimum
from spillover.placement.types import PlacementProblem, Plan
from spillover.placement.work import glop_dtime

# Whether a short queue whose greedy plan is provably the only optimal plan skips the search (which would return
# that very plan, see sole.py); tests turn it off to compare with the full search.
SOLE_OPTIMUM = True


def solve(problem: PlacementProblem) -> Plan:
    """The cheapest consistent plan found within `policy.time_limit_s` (or `policy.work_limit`, when set: then
    the same problem always gives the same plan); never worse than greedy's.

    `lower_bound` is the LP bound with waiting priced by this plan's forecast (see bound.py), so
    `plan.gap` says how far the plan is from the best plan under that pricing; it is None when
    `policy.compute_bound` is off.
    """
    t0 = time.perf_counter()
    policy = problem.policy
    greedy = greedy_settled(problem)
    # A short queue often needs no search: greedy's plan may be provably optimal. A huge one hardly ever.
    if problem.jobs and len(problem.jobs) * len(problem.targets) <= CPSAT_MAX_PAIRS:
        proof = proven_optimal(problem, greedy.objective)
        # the enumeration knows nothing of quotas and budgets; the bound, a relaxation of them, still holds
        sole = SOLE_OPTIMUM and not policy.team_limits
        if proof is not None or (sole and sole_optimum(problem, greedy)):
            # Every plan costs at least the objective (the bound meets it, or every other plan costs more): no
            # bound can be tighter. A plan that is the only optimum is also what the search would return.
            plan = greedy.tagged("optimal").plan
            return replace(plan, lower_bound=plan.objective if policy.compute_bound else None,
                           solve_s=time.perf_counter() - t0)
    if policy.work_limit is None:
        left = policy.time_limit_s - (time.perf_counter() - t0)
        settled, _ = cpsat_settled(problem, greedy, time_limit_s=max(0.0, left))
    else:
        settled, _ = cpsat_settled(problem, greedy)
    if policy.team_limits and settled.status == "optimal":
        # CP-SAT's model leaves quotas and budgets to the ledger that binds its answer: optimal for the model only
        settled = settled.tagged("feasible")
    obj = settled.objective
    bound = None
    if policy.compute_bound:
        # the deterministic mode caps GLOP by its own deterministic time, so that the bound repeats as well
        limit = max(1.0, policy.time_limit_s) if policy.work_limit is None else None
        cap = None if policy.work_limit is None else glop_dtime(policy.work_limit)
        if settled.lp is not None:
            # the search's model, started from its last duals, which priced waiting much as this plan does
            m, duals = settled.lp
            r = m.solve(settled.wait_costs, duals=duals, time_limit_s=limit, glop_dtime=cap)
            bound = None if r is None else r.value
        else:
            bound = lp_bound(problem, settled.wait_costs, time_limit_s=limit, glop_dtime=cap)
        if bound is not None and obj < bound <= obj + 1e-6 * max(1.0, obj):
            bound = obj  # float noise of a tight LP; anything larger is left visible
    return replace(settled.plan, lower_bound=bound, solve_s=time.perf_counter() - t0)
