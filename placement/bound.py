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
relax.py builds and solves it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from spillover.placement.costs import wait_cost
from spillover.placement.feasibility import feasible
from spillover.placement.forecast import ForecastState
from spillover.placement.relax import LinearModel, Relaxation
from spillover.placement.types import PlacementProblem


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


def relaxation(
    problem: PlacementProblem,
    waits: Sequence[float],
    start_rate: dict[int, float] | None = None,
    time_limit_s: float | None = None,
    glop_dtime: float | None = None,
) -> Relaxation | None:
    """Solve the LP relaxation with waiting priced at `waits` (and on-prem starts charged `start_rate`
    dollars per GPU-hour held, per target); None when GLOP does not finish."""
    return LinearModel(problem).solve(waits, start_rate, time_limit_s, glop_dtime=glop_dtime)


def lp_bound(
    problem: PlacementProblem, wait_costs: Sequence[float] | None = None, time_limit_s: float | None = None,
    glop_dtime: float | None = None,
) -> float | None:
    """The LP relaxation's optimum in dollars; None when GLOP does not finish in `time_limit_s` (or within
    `glop_dtime` of GLOP's deterministic time)."""
    if not problem.jobs:
        return 0.0
    waits = list(wait_costs) if wait_costs is not None else alone_wait_costs(problem)
    r = relaxation(problem, waits, time_limit_s=time_limit_s, glop_dtime=glop_dtime)
    return None if r is None else r.value
