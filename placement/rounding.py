"""A plan from the LP relaxation: round its fractional assignment to jobs and bind them through the ledger.

On large queues the LP (GLOP) is much faster than CP-SAT's search and nearly integral (it is an assignment
with a few coupling rows), so its rounding is a strong starting point: a candidate plan of its own and the
hint of the first CP-SAT round. What the LP leaves fractional is mostly packing: it fills new cloud nodes
in fractions, each job paying its share of the node's overhead, and spreads the cloud GPU cap over them.
So the rounding packs each target's jobs largest first (gangs, then by GPUs) into the nodes the LP opened
there, rounded up, and charges a new node's overhead to the node rather than to the job that happens to
open it; pools whose LP nodes save the most per GPU go first when the cap cannot cover every rounded-up
node. Jobs that find no room take their best other option when it beats waiting, and a new node whose jobs
save less than its overhead is given back (its jobs wait, and the WAIT rule in `finish` re-places them).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from spillover.placement.costs import delay_cost, new_node_cost, run_cost
from spillover.placement.ledger import Ledger
from spillover.placement.relax import LinearModel, Relaxation
from spillover.placement.types import PlacementProblem


def lp_rounded(
    problem: PlacementProblem,
    waits: Sequence[float],
    start_rate: dict[int, float] | None = None,
    time_limit_s: float | None = None,
    model: LinearModel | None = None,
    glop_dtime: float | None = None,
) -> tuple[Ledger, Relaxation] | None:
    """Bindings that follow the LP's choices, and the LP; None when the LP does not solve in time. `model`: the
    problem's relaxation, if built already; `glop_dtime`: see `LinearModel.solve`."""
    m = model if model is not None else LinearModel(problem)
    lp = m.solve(waits, start_rate, time_limit_s, glop_dtime=glop_dtime)
    if lp is None:
        return None
    return bind_relaxation(problem, lp, waits), lp


def bind_relaxation(problem: PlacementProblem, lp: Relaxation, waits: Sequence[float]) -> Ledger:
    """Round `lp` (solved with waiting priced at `waits`) to bindings on named nodes."""
    jobs = problem.jobs
    targets = problem.targets
    policy = problem.policy
    ledger = Ledger(problem)
    # Per class: the jobs whose wait is dearest run; the targets get them by largest remainder.
    wanted: dict[int, list[int]] = {}
    for members, by_group in lp.runs:
        by_target: dict[int, float] = {}
        for gi, v in by_group.items():
            ti = lp.group_target[gi]
            by_target[ti] = by_target.get(ti, 0.0) + v
        members = sorted(members, key=lambda i: -waits[i])
        share = sorted(by_target.items(), key=lambda kv: -kv[1])
        counts = {ti: int(v + 1e-6) for ti, v in share}
        left = min(len(members), int(sum(by_target.values()) + 0.5)) - sum(counts.values())
        for ti, v in sorted(share, key=lambda kv: -(kv[1] - int(kv[1] + 1e-6))):
            if left <= 0:
                break
            counts[ti] += 1
            left -= 1
        pos = 0
        for ti, _ in share:
            for _ in range(counts[ti]):
                if pos < len(members):
                    wanted.setdefault(ti, []).append(members[pos])
                    pos += 1

    def saving(i: int, ti: int) -> float:
        return waits[i] - run_cost(jobs[i], targets[ti])

    # On-prem first (no cap), then pools by what their LP nodes save per GPU of the cap.
    def density(ti: int) -> float:
        t = targets[ti]
        nodes = lp.new_nodes.get(ti, 0.0)
        if t.kind == "onprem" or nodes <= 1e-9 or t.gpus_per_node <= 0:
            return math.inf
        return sum(saving(i, ti) for i in wanted[ti]) / (nodes * t.gpus_per_node)

    overflow: list[int] = []
    for ti in sorted(wanted, key=lambda ti: (-density(ti), ti)):
        t = targets[ti]
        budget = math.ceil(lp.new_nodes.get(ti, 0.0) - 1e-6)
        opened = ledger.new_live[ti]
        # Largest first packs nodes tightly; among equals the job that saves most goes first.
        order = sorted(wanted[ti], key=lambda i: (-(jobs[i].nodes > 1), -jobs[i].gpus, -jobs[i].cpu,
                                                  -jobs[i].memory_gib, -saving(i, ti)))
        for i in order:
            opt = ledger.option_on(i, ti)
            if opt is None or (opt.fresh and ledger.new_live[ti] + opt.fresh > opened + budget):
                overflow.append(i)
                continue
            # The LP paid the new node's overhead across its jobs; only the run itself must beat waiting.
            if opt.cost - opt.fresh * new_node_cost(t, policy) < waits[i]:
                ledger.take(i, opt)
            else:
                overflow.append(i)
    for i in sorted(overflow, key=lambda i: waits[i] - _cheapest(problem, i), reverse=True):
        opt = ledger.best_option(i)
        if opt is not None and opt.cost < waits[i]:
            ledger.take(i, opt)
    _give_back_idle(problem, ledger, waits)
    return ledger


def _cheapest(problem: PlacementProblem, i: int) -> float:
    job = problem.jobs[i]
    return min((run_cost(job, t) for t in problem.targets), default=0.0)


def _give_back_idle(problem: PlacementProblem, ledger: Ledger, waits: Sequence[float]) -> None:
    """Unbind the jobs of every new node whose jobs together save less than the node's overhead."""
    targets = problem.targets
    saved: dict[tuple[int, str], float] = {}
    on_node: dict[tuple[int, str], list[int]] = {}
    for i, (ti, names) in ledger.binding.items():
        job = problem.jobs[i]
        # a gang's saving is shared by its nodes
        share = (waits[i] - run_cost(job, targets[ti]) - delay_cost(job, ledger.start_h(ti, names))) / len(names)
        for name in names:
            if ledger.slots[(ti, name)].new:
                on_node.setdefault((ti, name), []).append(i)
                saved[(ti, name)] = saved.get((ti, name), 0.0) + share
    drop: set[int] = set()
    for node, js in on_node.items():
        if saved[node] < new_node_cost(targets[node[0]], problem.policy):
            drop.update(js)
    for i in drop:
        if i in ledger.binding:
            ledger.remove(i)
