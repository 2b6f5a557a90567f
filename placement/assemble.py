"""From bound replicas to a Plan: enforce the WAIT rule, forecast the waiting jobs, price and explain everything.

Every solver ends here, so every plan is priced the same way: START/BURST at run cost plus the value of the
delay until their nodes are ready, each new node at its boot-and-idle overhead, and WAIT at the forecast
computed from exactly the jobs this plan keeps on-prem (the consistent objective).
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import TYPE_CHECKING, Literal

from spillover.placement import reasons
from spillover.placement.costs import delay_cost, new_node_cost, run_cost, wait_cost
from spillover.placement.forecast import Forecast, forecast_indexed
from spillover.placement.ledger import Blocked, Ledger, Option
from spillover.placement.order import queue_order
from spillover.placement.types import Action, Decision, PlacementProblem, Plan

if TYPE_CHECKING:
    import numpy as np

    from spillover.placement.relax import LinearModel
    from spillover.placement.work import Work

TOL = 1e-6


def runs_now(option_cost: float, wait: float) -> bool:
    """The WAIT rule: a job waits only when waiting is cheaper than its best run-now option (ties run)."""
    return option_cost <= wait + TOL


class Settled:
    """A priced plan plus what the next round of a search needs to know about it.

    Its decisions and their reasons are written out only when `plan` is first read: a search prices many
    plans and returns one.
    """

    def __init__(
        self,
        problem: PlacementProblem,
        ledger: Ledger,
        forecasts: list[Forecast],
        wait_costs: list[float],
        alts: dict[int, Option | None],
        objective: float,
        solver: Literal["cp-sat", "greedy"],
        status: str,
        solve_s: float = 0.0,
    ) -> None:
        self.problem = problem
        self.ledger = ledger  # the bindings behind the plan (new nodes under their working names)
        self.forecasts = forecasts
        # per job: the cost of waiting (consistent for waiting jobs, "if it alone waited" for the others)
        self.wait_costs = wait_costs
        self.alts = alts  # per waiting job: its best run-now option, for its reason
        self.objective = objective
        self.solver: Literal["cp-sat", "greedy"] = solver
        self.status = status
        self.solve_s = solve_s
        self.bound: float | None = None  # the LP bound under this plan's own pricing, once a search solved it
        # the LP model a search built, and its last duals, to bound this plan with
        self.lp: tuple[LinearModel, np.ndarray | None] | None = None
        # what holding on-prem capacity in this plan costs the queue (see `cpsat.queue_pressure`), once asked
        self.pressure: tuple[list[float], dict[int, float]] | None = None
        self._plan: Plan | None = None

    @property
    def plan(self) -> Plan:
        if self._plan is None:
            self._plan = _explain(self)
        return self._plan

    @plan.setter
    def plan(self, plan: Plan) -> None:
        self._plan = plan
        self.status, self.solve_s = plan.status, plan.solve_s

    def tagged(self, status: str, solve_s: float | None = None) -> Settled:
        """The same plan under another status (and solve time)."""
        other = Settled(self.problem, self.ledger, self.forecasts, self.wait_costs, self.alts, self.objective,
                        self.solver, status, self.solve_s if solve_s is None else solve_s)
        other.bound = self.bound
        other.lp = self.lp
        if self._plan is not None:
            other._plan = replace(self._plan, status=other.status, solve_s=other.solve_s)
        return other

    def bindings(self) -> frozenset[tuple[int, int, tuple[str, ...]]]:
        """What the plan runs where, to tell plans apart without writing them out."""
        return frozenset((i, ti, names) for i, (ti, names) in self.ledger.binding.items())


def plan_forecasts(problem: PlacementProblem, ledger: Ledger) -> list[Forecast]:
    """Forecasts with the plan's on-prem starts at time 0; bound jobs are probes (where they would start).

    Starts are booked in job order, not in the order the ledger took them: a node's chunks can depend on the
    order (a job of no size leaves an empty chunk behind), and the plan's forecast must be the same however
    it was found.
    """
    targets = problem.targets
    started = [
        (problem.jobs[i], targets[ti].id, names)
        for i, (ti, names) in sorted(ledger.binding.items())
        if targets[ti].kind == "onprem"
    ]
    return forecast_indexed(targets, problem.jobs, problem.policy, started, probes=ledger.binding.keys())


# Plans of a short queue priced during one solve often bind the same jobs to the same on-prem nodes (a round
# finds greedy's plan again, holding back puts a job back): their forecasts are the same, kept per problem.
PRICED_MEMO = True  # tests turn it off to price every plan afresh
PRICED_MAX_JOBS = 500
PRICED_KEPT = 64


def _forecast_waits(problem: PlacementProblem, ledger: Ledger) -> tuple[list[Forecast], list[float]]:
    """`plan_forecasts` and `job_wait_costs` of the ledger, which depend only on its on-prem bindings and on
    which jobs are bound (the probes), never on how the ledger got there."""
    if not PRICED_MEMO or len(problem.jobs) > PRICED_MAX_JOBS:
        fc = plan_forecasts(problem, ledger)
        return fc, job_wait_costs(problem, fc)
    targets = problem.targets
    key = (tuple((i, ti, names) for i, (ti, names) in sorted(ledger.binding.items())
                 if targets[ti].kind == "onprem"), frozenset(ledger.binding))
    memo = ledger.priced
    hit = memo.get(key)
    if hit is None:
        fc = plan_forecasts(problem, ledger)
        hit = (fc, job_wait_costs(problem, fc))
        if len(memo) < PRICED_KEPT:
            memo[key] = hit
    return hit


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


def settle(
    problem: PlacementProblem, ledger: Ledger, forecasts: list[Forecast] | None = None
) -> tuple[list[Forecast], dict[int, Option | None]]:
    """Move waiting jobs to a run-now option while that is cheaper than their consistent wait.

    Each pass moves at least the first offender (nothing before it changed), and jobs never move back to
    WAIT, so this ends after at most as many passes as there are waiting jobs (in practice one or two).
    `forecasts`, when given, are the ledger's own (`plan_forecasts`), computed already.
    """
    fc, _, alts = _settle(problem, ledger, forecasts)
    return fc, alts


def _settle(
    problem: PlacementProblem, ledger: Ledger, forecasts: list[Forecast] | None = None
) -> tuple[list[Forecast], list[float], dict[int, Option | None]]:
    """`settle`, and the wait costs of the forecasts it ends with."""
    order = queue_order(problem.jobs)
    binding = ledger.binding
    while True:
        if forecasts is not None:
            fc, waits = forecasts, job_wait_costs(problem, forecasts)
            forecasts = None
        else:
            fc, waits = _forecast_waits(problem, ledger)
        alts: dict[int, Option | None] = {}
        moved = False
        for i in order:
            if i in binding:
                continue
            opt = ledger.best_option(i)
            alts[i] = opt
            if opt is not None and runs_now(opt.cost, waits[i]):
                ledger.take(i, opt)
                moved = True
        if not moved:
            return fc, waits, alts


# Each try re-runs the forecast once; past this many the pass stops (the plan stays valid either way).
MAX_WAIT_TRIES = 200


def consistent_total(problem: PlacementProblem, ledger: Ledger) -> float:
    """The plan's objective: run, delay and new-node costs of bound jobs, consistent waits for the rest."""
    return priced(problem, ledger)[2]


def priced(problem: PlacementProblem, ledger: Ledger) -> tuple[list[Forecast], list[float], float]:
    """The ledger's forecasts, every job's wait cost and the consistent objective, as they stand (no WAIT
    rule applied)."""
    fc, waits = _forecast_waits(problem, ledger)
    return fc, waits, _total(problem, ledger, waits)


def _total(problem: PlacementProblem, ledger: Ledger, waits: list[float]) -> float:
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


def hold_back(
    problem: PlacementProblem, ledger: Ledger, waits: list[float], deadline: float | None = None,
    work: Work | None = None,
) -> bool:
    """Send a cloud job back to wait when that makes the whole plan cheaper.

    A burst whose own wait is cheaper than its cloud run is kept only if waiting would cost the queue
    behind it more than the difference; this pass measures exactly that, job by job, on the consistent
    objective. With a `deadline` (perf_counter seconds) it stops trying early enough to re-forecast twice
    before it; with `work` (the deterministic mode) likewise, each try charged one forecast of it. Returns
    whether anything moved.
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
    t0 = time.perf_counter()
    best = consistent_total(problem, ledger)
    per_try = time.perf_counter() - t0  # each try forecasts the plan once
    moved = False
    if work is not None:
        work.spend(work.forecast)
    for _, i in candidates[:MAX_WAIT_TRIES]:
        if deadline is not None and time.perf_counter() + 3 * per_try > deadline:
            break
        if work is not None:
            if not work.affords(3 * work.forecast):
                break
            work.spend(work.forecast)
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
    deadline: float | None = None,
    forecasts: list[Forecast] | None = None,
    forecast_s: float = 0.0,
    work: Work | None = None,
) -> Settled:
    """Apply the WAIT rule to `ledger`, hold back bursts that cost the queue more than they save, forecast
    the plan and price it. With a `deadline` (perf_counter seconds), holding back is tried only while there
    is time for it, a forecast taking about `forecast_s`; with `work` (the deterministic mode), only while
    that budget covers it. `forecasts`: the ledger's, if known already."""
    fc, waits, alts = _settle(problem, ledger, forecasts)
    if work is not None:
        work.spend(work.forecast)
    for _ in range(3):  # holding jobs back frees cloud room that waiting jobs may then take, and so on
        if deadline is not None and time.perf_counter() + 4 * forecast_s > deadline:
            break
        if work is not None and not work.affords(4 * work.forecast):
            break
        if not hold_back(problem, ledger, waits, deadline, work):
            break
        fc, waits, alts = _settle(problem, ledger)
        if work is not None:
            work.spend(work.forecast)
    return Settled(problem, ledger, fc, waits, alts, _total(problem, ledger, waits), solver, status, solve_s)


def _explain(settled: Settled) -> Plan:
    """The plan's decisions, each with its reason, and its new nodes numbered 0..n-1 per target."""
    problem, ledger, fc, waits, alts = settled.problem, settled.ledger, settled.forecasts, settled.wait_costs, \
        settled.alts
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
    why_blocked: dict[tuple, Blocked] = {}  # the ledger is final here: why a shape cannot run is the same for all
    for i, job in enumerate(problem.jobs):
        b = ledger.binding.get(i)
        f = fc[i]
        onprem_name = by_id[f.target].name if f.target is not None else ""
        if b is None:
            alt = alts.get(i)
            blocked = None
            if alt is None:
                shape = (job.gpus, job.cpu, job.memory_gib, job.nodes, job.gpu_types, job.allowed_targets,
                         job.checkpointable, job.team, job.budgets)
                blocked = why_blocked.get(shape)
                if blocked is None:
                    blocked = why_blocked[shape] = ledger.blocked(i)
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
                Decision(job.id, Action.WAIT, reason, start_h=f.start_h, cost=waits[i], wait_target=f.target,
                         pending=reasons.pending_kind(alt, blocked))
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
    return Plan(
        decisions=tuple(decisions),
        new_nodes=new_nodes,
        objective=total,
        lower_bound=None,
        solver=settled.solver,
        status=settled.status,
        solve_s=settled.solve_s,
    )
