"""The search for queues too big for CP-SAT: LP roundings that price waiting by the last plan, to a fixed point.

A plan prices waiting (its forecast: consistent for its waiting jobs, "if it alone waited" for the others);
the LP relaxation under that pricing is both the bound that says how good the plan is (bound.py) and, rounded
(rounding.py) and re-priced consistently, the next plan. A plan that is optimal for its own pricing is a
fixed point, and its gap to the bound is only the rounding's. Starting from greedy, each step moves the
pricing toward the plan it produces (damped past the first step, where roundings tend to swing). On a huge
queue the first step is rough (a scaled sample's duals, every class on its best option under them: greedy's
pricing is far from the fixed point anyway), and each later one is a single GLOP solve over a few options per
class picked by the last duals (relax.py), one rounding and one forecast; where the LP is cheap it is solved
through. Steps go on while the next one, the WAIT rule and writing the plan out fit before the deadline. The
WAIT rule and the reasons are applied once, to the cheapest rounding seen, kept only if it beats greedy's.
In the deterministic mode (`Policy.work_limit`) the same rule reads a work budget instead of the clock: each
step is charged its modelled work (work.py), from the LP's own counts, and its LP runs to the end.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from spillover.placement.assemble import Settled, finish, priced
from spillover.placement.forecast import Forecast
from spillover.placement.ledger import Ledger
from spillover.placement.relax import MAX_ROUNDS, LinearModel
from spillover.placement.rounding import bind_relaxation
from spillover.placement.types import PlacementProblem
from spillover.placement.work import Work, lp_work

# The rounding needs a near-optimal LP solution, not the optimum: column generation stops within this
# relative distance of it, or after this many solves, each class starting from its LP_COLUMNS best options
# under the last duals (measured on 10,000 x 50: one solve over 6 options per class rounds as well as two
# over 3, in half the time).
LP_GAP = 1e-3
LP_ROUNDS = 1
LP_COLUMNS = 6
ROUGH_TO_SOLVE = 2.0
DAMPING = 0.5  # weight of the newest plan's forecast in the pricing of the next step
MARGIN = 1.2  # steps vary in length by about this much
MIN_TRY = 0.7  # a step is tried if this share of what it is expected to take is left


@dataclass
class Step:
    """One step of the search, for benchmarks and logs."""

    bound: float  # the LP bound under the pricing of the plan the step started from
    objective: float  # the rounding's consistent objective (before the WAIT rule)
    seconds: float


@dataclass
class _Candidate:
    ledger: Ledger
    forecasts: list[Forecast]
    objective: float


def lp_search(
    problem: PlacementProblem, greedy: Settled, deadline: float, work: Work | None = None
) -> tuple[Settled, list[Step], LinearModel, np.ndarray | None]:
    """The best plan of the fixed-point iteration from `greedy` before `deadline` (perf_counter seconds), its
    steps, and the model and last duals (to bound the plan cheaply). With `work` (the deterministic mode) the
    budget is that instead, `deadline` is not read, and each LP runs to the end."""
    m = LinearModel(problem)
    steps: list[Step] = []
    waits = greedy.wait_costs
    duals: np.ndarray | None = None
    best: _Candidate | None = None
    seen: set[frozenset] = set()
    huge = False
    # What the next step and one forecast are expected to cost: measured seconds, or modelled work units.
    next_c = 0.0
    price_c = 0.0 if work is None else work.forecast
    bind_s = 0.0
    cap = None if work is None else work.glop_dtime
    while True:
        t0 = time.perf_counter()
        # After the LP: a rounding, a forecast, then the WAIT rule on the best rounding (a forecast or two) and
        # writing the plan out. A step that looks too long is still tried when it might fit: its LP stops at
        # its own deadline and the best rounding so far stands.
        room = deadline - t0 if work is None else work.left
        if best is not None and room < MIN_TRY * (MARGIN * next_c + 2.5 * price_c):
            break
        if work is not None and room <= 0.0:
            break  # greedy's pass took the whole budget
        left = None
        if work is None:
            left = max(0.0, room - (bind_s + 3.5 * price_c if best is not None else 0.0))
            if best is not None and left <= 0.0:
                break
        rough = duals is None
        if rough:
            # From greedy's pricing, far from the fixed point, a rough solution is as good a first step.
            lp = m.rough(waits, time_limit_s=left, glop_dtime=cap)
        else:
            # Where the LP is cheap, solve it through; on a huge queue one solve from the duals does.
            lp = m.solve(waits, duals=duals, time_limit_s=left, gap_tol=LP_GAP,
                         max_rounds=LP_ROUNDS if huge else MAX_ROUNDS, first_columns=LP_COLUMNS, glop_dtime=cap)
        if lp is None:
            break
        if rough:
            huge = lp.rounds == 0  # the rough stand-in was used rather than the LP itself
        lp_s = time.perf_counter() - t0
        duals = lp.duals
        ledger = bind_relaxation(problem, lp, waits)
        t1 = time.perf_counter()
        bind_s = t1 - t0 - lp_s
        fc, plan_waits, objective = priced(problem, ledger)
        if work is None:
            price_c = time.perf_counter() - t1
        # Past the first steps the roundings tend to swing between two sets of bursts; pricing by the mean
        # of the last two plans' forecasts damps that.
        if steps:
            waits = [DAMPING * a + (1 - DAMPING) * b for a, b in zip(plan_waits, waits)]
        else:
            waits = plan_waits
        step_s = time.perf_counter() - t0
        if work is None:
            lp_c, step_c = lp_s, step_s
        else:
            lp_c = lp_work(lp.options, lp.columns, lp.rounds)
            step_c = lp_c + price_c
            work.spend(step_c)
        # a solve from duals takes a few rounds of what a rough one takes in one
        next_c = step_c + (ROUGH_TO_SOLVE - 1) * lp_c if rough and lp.rounds == 0 else step_c
        steps.append(Step(lp.value, objective, step_s))
        key = frozenset((i, ti, names) for i, (ti, names) in ledger.binding.items())
        if key in seen:
            break  # back to a rounding already priced: the iteration cycles
        seen.add(key)
        if best is None or objective < best.objective:
            best = _Candidate(ledger, fc, objective)
    if best is None:
        return greedy, steps, m, duals
    if work is None:
        settled = finish(problem, best.ledger, "cp-sat", "lp-rounded", deadline=deadline - price_c,
                         forecasts=best.forecasts, forecast_s=price_c)
    else:
        settled = finish(problem, best.ledger, "cp-sat", "lp-rounded", forecasts=best.forecasts, work=work)
    if settled.objective >= greedy.objective:
        return greedy, steps, m, duals
    return settled, steps, m, duals
