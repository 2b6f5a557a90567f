"""The greedy solver: the reference plan and the fallback when CP-SAT has nothing in time.

Jobs go in queue order; each takes its cheapest option given what the jobs ahead of it took: a node that is
free now (earliest ready, then the tightest fit, so big holes stay for big jobs), a new cloud node under the
pool limit and the cloud GPU cap, or waiting, priced by an on-prem forecast that grows as jobs ahead decide
to wait or start. That running forecast does not yet see the on-prem starts of jobs behind, so `finish`
re-forecasts the whole plan and applies the WAIT rule before pricing it.
"""

from __future__ import annotations

import time

from spillover.placement.assemble import Settled, finish, runs_now
from spillover.placement.costs import wait_cost
from spillover.placement.forecast import ForecastState
from spillover.placement.ledger import Ledger
from spillover.placement.order import queue_order
from spillover.placement.types import PlacementProblem, Plan


def greedy_settled(problem: PlacementProblem) -> Settled:
    t0 = time.perf_counter()
    ledger = Ledger(problem)
    state = ForecastState(problem.targets, problem.policy)
    by_id = {t.id: t for t in problem.targets}
    for i in queue_order(problem.jobs):
        job = problem.jobs[i]
        opt = ledger.best_option(i)
        fc, spot = state.peek(job)
        wait = wait_cost(job, fc.start_h, by_id[fc.target] if fc.target is not None else None)
        if opt is not None and runs_now(opt.cost, wait):
            ledger.take(i, opt)
            ti, names = ledger.binding[i]
            if problem.targets[ti].kind == "onprem":
                state.consume_now(job, problem.targets[ti].id, names)
        else:
            state.book(job, spot)
    settled = finish(problem, ledger, "greedy", "greedy")
    settled.solve_s = time.perf_counter() - t0
    return settled


def solve_greedy(problem: PlacementProblem) -> Plan:
    """Queue-order greedy plan; always valid (see `check_plan`)."""
    return greedy_settled(problem).plan
