"""From bound replicas to a Plan: enforce the WAIT rule, forecast the waiting jobs, price and explain everything.

Every solver ends here, so every plan is priced the same way: START/BURST at run cost plus the value of the
delay until their nodes are ready, each new node at its boot-and-idle overhead, and WAIT at the forecast
computed from exactly the jobs this plan keeps on-prem (the consistent objective).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from placement import reasons
from placement.costs import delay_cost, new_node_cost, run_cost, wait_cost
from placement.forecast import Forecast, forecast_indexed
from placement.ledger import Ledger, Option
from placement.order import queue_order
from placement.types import Action, Decision, PlacementProblem, Plan

TOL = 1e-6


def runs_now(option_cost: float, wait: float) -> bool:
    """The WAIT rule: a job waits only when waiting is cheaper than its best run-now option (ties run)."""
    return option_cost <= wait + TOL


@dataclass
class Settled:
    """A finished plan plus what the next CP-SAT round needs to know about it."""

    plan: Plan
    # per job: the cost of waiting (consistent for waiting jobs, "if it alone waited" for the others)
    wait_costs: list[float]
    forecasts: list[Forecast]
    ledger: Ledger  # the bindings behind the plan (new nodes under their working names)


def plan_forecasts(problem: PlacementProblem, ledger: Ledger) -> list[Forecast]:
    """Forecasts with the plan's on-prem starts at time 0; bound jobs are probes (where they would start)."""
    targets = problem.targets
    started = [
        (problem.jobs[i], targets[ti].id, names)
        for i, (ti, names) in ledger.binding.items()
        if targets[ti].kind == "onprem"
    ]
    return forecast_indexed(targets, problem.jobs, problem.policy, started, probes=ledger.binding.keys())


def job_wait_costs(problem: PlacementProblem, fc: list[Forecast]) -> list[float]:
    by_id = {t.id: t for t in problem.targets}
    return [
        wait_cost(job, f.start_h, by_id[f.target] if f.target is not None else None)
        for job, f in zip(problem.jobs, fc)
    ]


def plan_wait_costs(problem: PlacementProblem, plan: Plan) -> list[float]:
    """Each job's cost of waiting under `plan` (consistent for its waiting jobs), as the LP bound prices it."""
    ledger = Ledger(problem)
    for i, d in enumerate(plan.decisions):
        if d.action is not Action.WAIT:
            ledger.place(i, ledger.target_index[d.target or ""], d.nodes)
    return job_wait_costs(problem, plan_forecasts(problem, ledger))


def settle(problem: PlacementProblem, ledger: Ledger) -> tuple[list[Forecast], dict[int, Option | None]]:
    """Move waiting jobs to a run-now option while that is cheaper than their consistent wait.

    Each pass moves at least the first offender (nothing before it changed), and jobs never move back to
    WAIT, so this ends after at most as many passes as there are waiting jobs (in practice one or two).
    """
    order = queue_order(problem.jobs)
    while True:
        fc = plan_forecasts(problem, ledger)
        waits = job_wait_costs(problem, fc)
        alts: dict[int, Option | None] = {}
        moved = False
        for i in order:
            if i in ledger.binding:
                continue
            opt = ledger.best_option(i)
            alts[i] = opt
            if opt is not None and runs_now(opt.cost, waits[i]):
                ledger.take(i, opt)
                moved = True
        if not moved:
            return fc, alts


# Each try re-runs the forecast once; past this many the pass stops (the plan stays valid either way).
MAX_WAIT_TRIES = 200


def consistent_total(problem: PlacementProblem, ledger: Ledger) -> float:
    """The plan's objective: run, delay and new-node costs of bound jobs, consistent waits for the rest."""
    fc = plan_forecasts(problem, ledger)
    waits = job_wait_costs(problem, fc)
    targets = problem.targets
    total = 0.0
    for i, job in enumerate(problem.jobs):
        b = ledger.binding.get(i)
        if b is None:
            total += waits[i]
        else:
            total += run_cost(job, targets[b[0]]) + delay_cost(job, ledger.start_h(*b))
    by_id = {t.id: t for t in targets}
    return total + sum(n * new_node_cost(by_id[tid], problem.policy) for tid, n in ledger.new_nodes().items())


def hold_back(problem: PlacementProblem, ledger: Ledger, waits: list[float]) -> bool:
    """Send a cloud job back to wait when that makes the whole plan cheaper.

    A burst whose own wait is cheaper than its cloud run is kept only if waiting would cost the queue
    behind it more than the difference; this pass measures exactly that, job by job, on the consistent
    objective. Returns whether anything moved.
    """
    targets = problem.targets
    candidates = []
    for i, (ti, names) in ledger.binding.items():
        if targets[ti].kind != "cloud":
            continue
        run = run_cost(problem.jobs[i], targets[ti]) + delay_cost(problem.jobs[i], ledger.start_h(ti, names))
        if waits[i] < run - TOL:
            candidates.append((run - waits[i], i))
    if not candidates:
        return False
    candidates.sort(reverse=True)
    best = consistent_total(problem, ledger)
    moved = False
    for _, i in candidates[:MAX_WAIT_TRIES]:
        ti, names = ledger.binding[i]
        fresh = [n for n in names if ledger.slots[(ti, n)].new and ledger.slots[(ti, n)].jobs == 1]
        ledger.remove(i)
        total = consistent_total(problem, ledger)
        if total < best - TOL:
            best, moved = total, True
            continue
        # put it back where it was; a new node it alone used is reopened under the same name
        ledger.place(i, ti, names if not fresh else [n for n in names if n not in fresh] +
                     [f"{targets[ti].id}/new-r{i}-{k}" for k in range(len(fresh))])
    return moved


def finish(
    problem: PlacementProblem,
    ledger: Ledger,
    solver: Literal["cp-sat", "greedy"],
    status: str,
    solve_s: float = 0.0,
) -> Settled:
    fc, alts = settle(problem, ledger)
    for _ in range(3):  # holding jobs back frees cloud room that waiting jobs may then take, and so on
        if not hold_back(problem, ledger, job_wait_costs(problem, fc)):
            break
        fc, alts = settle(problem, ledger)
    waits = job_wait_costs(problem, fc)
    targets = problem.targets
    by_id = {t.id: t for t in targets}
    policy = problem.policy

    # New nodes may have been opened and closed while solving; number the survivors 0..n-1 per target.
    rename: dict[str, str] = {}
    seen: dict[int, int] = {}
    for i in range(len(problem.jobs)):
        b = ledger.binding.get(i)
        if b is None:
            continue
        ti, names = b
        for n in names:
            if ledger.slots[(ti, n)].new and n not in rename:
                k = seen.get(ti, 0)
                rename[n] = f"{targets[ti].id}/new-{k}"
                seen[ti] = k + 1

    decisions: list[Decision] = []
    total = 0.0
    for i, job in enumerate(problem.jobs):
        b = ledger.binding.get(i)
        f = fc[i]
        onprem_name = by_id[f.target].name if f.target is not None else ""
        if b is None:
            alt = alts.get(i)
            blocked = ledger.blocked(i) if alt is None else None
            reason = reasons.waiting(
                job,
                f,
                waits[i],
                onprem_name,
                alt,
                targets[alt.target] if alt is not None else None,
                blocked,
                targets,
                policy,
            )
            decisions.append(
                Decision(job.id, Action.WAIT, reason, start_h=f.start_h, cost=waits[i], wait_target=f.target)
            )
            total += waits[i]
            continue
        ti, names = b
        t = targets[ti]
        slots = [ledger.slots[(ti, n)] for n in names]
        start = max((s.ready for s in slots), default=0.0)
        cost = run_cost(job, t) + delay_cost(job, start)
        if t.kind == "onprem":
            action, reason = Action.START, reasons.started(job, t, slots)
        else:
            action = Action.BURST
            reason = reasons.burst(job, t, slots, cost, f, waits[i], onprem_name)
        decisions.append(
            Decision(job.id, action, reason, target=t.id, nodes=tuple(rename.get(n, n) for n in names),
                     start_h=start, cost=cost)
        )
        total += cost
    new_nodes = ledger.new_nodes()
    total += sum(n * new_node_cost(by_id[tid], policy) for tid, n in new_nodes.items())
    plan = Plan(
        decisions=tuple(decisions),
        new_nodes=new_nodes,
        objective=total,
        lower_bound=None,
        solver=solver,
        status=status,
        solve_s=solve_s,
    )
    return Settled(plan, waits, fc, ledger)
