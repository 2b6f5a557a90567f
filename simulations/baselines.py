"""The burst rules Spillover is measured against, written from the Starburst paper (ATC'24), as solvers the real
loop can run in place of Spillover's: each turns a `PlacementProblem` into a `Plan`.

- on-prem only: never burst;
- No-Wait: a job that cannot start on-prem now bursts at once;
- Constant-Wait(T): a job waits at most T hours, then bursts;
- Compute-Wait(k): a job waits at most k x GPUs x runtime hours, then bursts.

Constant-Wait and Compute-Wait also come as hindsight variants (`constant-wait-hindsight`,
`compute-wait-hindsight`): the same replay, with every job that went to the cloud booked as started at its submission,
as the Starburst simulator books them with `predict_wait` ("exact wait prediction"). No scheduler can do that, since
it would have to know at submission that the job will time out; the variants are bounds to compare with, not rules
the loop runs. On-prem scheduling and cloud GPU-hours are those of the plain rule.

The on-prem queue runs first-in first-out with skipping (a head that does not fit does not stop smaller jobs
behind it) or with EASY backfill (the first job that does not fit gets a reservation at its forecast start, and a
job behind it starts now only if that does not push the reservation back). Node fit, node names and new cloud
nodes go through the same ledger as Spillover's own solvers, so the only difference is the decision rule.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from placement.costs import delay_cost, new_node_cost, run_cost
from placement.forecast import ForecastState
from placement.ledger import Ledger, Option
from placement.order import queue_order
from placement.types import Action, Decision, JobDemand, PlacementProblem, Plan, Target

Queue = Literal["fifo", "easy"]
POLICIES = ("spillover", "spillover-job", "no-wait", "constant-wait", "compute-wait", "onprem-only")
# the hindsight variant each waiting rule's replay also yields (No-Wait never waits; on-prem only never bursts)
HINDSIGHT = {"constant-wait": "constant-wait-hindsight", "compute-wait": "compute-wait-hindsight"}
LABELS = {
    "spillover": "Spillover (value of time per GPU-hour)", "spillover-job": "Spillover (value of time per job-hour)",
    "no-wait": "No-Wait", "constant-wait": "Constant-Wait", "compute-wait": "Compute-Wait",
    "onprem-only": "on-prem only",
    "constant-wait-hindsight": "Constant-Wait, exact wait prediction (hindsight)",
    "compute-wait-hindsight": "Compute-Wait, exact wait prediction (hindsight)",
}
EPS = 1e-9


@dataclass(frozen=True)
class BurstRule:
    """How long a job that cannot start on-prem may wait before it bursts (None: never)."""

    name: str
    budget_h: Callable[[JobDemand], float | None]

    def describe(self, job: JobDemand) -> str:
        b = self.budget_h(job)
        return "never bursts" if b is None else f"waits at most {b:.2f} h"


def rule(policy: str, *, wait_h: float = 1.0, k: float = 0.1) -> BurstRule:
    """The rule of a baseline by its name, with its knob (T for constant-wait, k for compute-wait)."""
    if policy == "no-wait":
        return BurstRule("No-Wait", lambda _j: 0.0)
    if policy == "constant-wait":
        return BurstRule(f"Constant-Wait(T={wait_h:g} h)", lambda _j: wait_h)
    if policy == "compute-wait":
        return BurstRule(f"Compute-Wait(k={k:g})", lambda j: k * j.total_gpus * j.runtime_h)
    if policy == "onprem-only":
        return BurstRule("on-prem only", lambda _j: None)
    raise ValueError(f"unknown baseline {policy!r}; valid: "
                     f"{', '.join(p for p in POLICIES if not p.startswith('spillover'))}")


def baseline_solver(burst: BurstRule, queue: Queue = "fifo") -> Callable[[PlacementProblem], Plan]:
    """A solver for the loop that applies `burst` with the on-prem queue run FIFO-with-skipping or EASY."""

    def solve(problem: PlacementProblem) -> Plan:
        return _plan(problem, burst, queue)

    solve.__name__ = f"{burst.name} ({queue})"
    return solve


def _plan(problem: PlacementProblem, burst: BurstRule, queue: Queue) -> Plan:
    t0 = time.perf_counter()
    ledger = Ledger(problem)
    targets = problem.targets
    onprem = [ti for ti, t in enumerate(targets) if t.kind == "onprem"]
    cloud = [ti for ti, t in enumerate(targets) if t.kind == "cloud"]
    # what runs on-prem (now or already), without the EASY reservation: the base a backfill is checked on
    base = ForecastState(targets, problem.policy)
    head: tuple[int, float] | None = None  # EASY: (job index, reserved start) of the first job that waits
    decisions: dict[int, Decision] = {}
    revisit: float | None = None
    total = 0.0
    for i in queue_order(problem.jobs):
        job = problem.jobs[i]
        here = _cheapest(ledger, i, onprem, now_only=True)
        if here is not None and (queue == "fifo" or head is None or _keeps_reservation(base, job, here, head,
                                                                                        problem)):
            ledger.take(i, here)
            base.consume_now(job, targets[here.target].id, ledger.binding[i][1])
            decisions[i] = _run(i, targets[here.target], here, ledger, f"started on {targets[here.target].name} "
                                f"({queue.upper() if queue == 'easy' else 'FIFO'} queue, it fits now)")
            total += decisions[i].cost
            continue
        budget = burst.budget_h(job)
        if budget is not None and job.waited_h >= budget - EPS:
            there = _cheapest(ledger, i, cloud, now_only=False)
            if there is not None:
                ledger.take(i, there)
                decisions[i] = _run(i, targets[there.target], there, ledger,
                                    f"burst to {targets[there.target].name}: waited {job.waited_h:.2f} h, "
                                    f"{burst.name} {burst.describe(job)}")
                total += decisions[i].cost
                continue
        if budget is not None and job.waited_h < budget - EPS:
            due = budget - job.waited_h
            revisit = due if revisit is None else min(revisit, due)
        if queue == "easy" and head is None:
            fc = base.earliest(job)
            if fc.target is not None:
                head = (i, fc.start_h)
        why = (f"waiting for on-prem ({burst.name} {burst.describe(job)}; waited {job.waited_h:.2f} h)"
               if budget is not None else f"waiting for on-prem ({burst.name})")
        decisions[i] = Decision(job.id, Action.WAIT, why, cost=delay_cost(job, 0.0))
    new_nodes = ledger.new_nodes()
    by_id = {t.id: t for t in targets}
    total += sum(n * new_node_cost(by_id[tid], problem.policy) for tid, n in new_nodes.items())
    return Plan(decisions=tuple(_renamed(decisions, ledger, problem)), new_nodes=new_nodes, objective=total,
                lower_bound=None, solver="baseline", status=f"{burst.name}, {queue}",
                solve_s=time.perf_counter() - t0, revisit_h=revisit)


def _cheapest(ledger: Ledger, i: int, among: list[int], *, now_only: bool) -> Option | None:
    """The cheapest option on these targets (on-prem: only nodes free now); tighter nodes win ties."""
    best: Option | None = None
    key: tuple | None = None
    feasible = set(ledger.feasible_targets(i))
    for ti in among:
        if ti not in feasible:
            continue
        opt = ledger.option_on(i, ti)
        if opt is None or (now_only and opt.start_h > EPS):
            continue
        k = (opt.cost, ledger.targets[ti].gpus_per_node, ti)
        if key is None or k < key:
            best, key = opt, k
    return best


def _keeps_reservation(base: ForecastState, job: JobDemand, opt: Option, head: tuple[int, float],
                       problem: PlacementProblem) -> bool:
    """EASY backfill: may `job` start now without delaying the reserved head of the queue?"""
    head_job = problem.jobs[head[0]]
    trial = copy.deepcopy(base)
    trial.consume_now(job, problem.targets[opt.target].id, opt.nodes)
    return trial.earliest(head_job).start_h <= head[1] + 1e-6


def _run(i: int, target: Target, opt: Option, ledger: Ledger, reason: str) -> Decision:
    job = ledger.jobs[i]
    action = Action.START if target.kind == "onprem" else Action.BURST
    cost = run_cost(job, target) + delay_cost(job, opt.start_h)
    return Decision(job.id, action, reason, target=target.id, nodes=ledger.binding[i][1], start_h=opt.start_h,
                    cost=cost)


def _renamed(decisions: dict[int, Decision], ledger: Ledger, problem: PlacementProblem) -> list[Decision]:
    """Decisions in the problem's job order, new nodes numbered 0..n-1 per target as the loop expects."""
    rename: dict[str, str] = {}
    seen: dict[int, int] = {}
    out = []
    for i in range(len(problem.jobs)):
        d = decisions[i]
        b = ledger.binding.get(i)
        if b is not None:
            ti, names = b
            for n in names:
                if ledger.slots[(ti, n)].new and n not in rename:
                    rename[n] = f"{problem.targets[ti].id}/new-{seen.get(ti, 0)}"
                    seen[ti] = seen.get(ti, 0) + 1
            d = Decision(d.job_id, d.action, d.reason, target=d.target, nodes=tuple(rename.get(n, n) for n in names),
                         start_h=d.start_h, cost=d.cost)
        out.append(d)
    return out
