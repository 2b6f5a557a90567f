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
behind it) or with EASY backfill as the Starburst simulator runs it (skyburst/cluster.py `try_reserve`,
`try_fit_v2`): each plan, the first job that neither starts nor holds a reservation gets one, on the nodes where
it could start first, if that start comes before its wait budget runs out (a job that would time out first gets
none and holds nobody back); a reservation is kept from plan to plan, and a job holding one no longer bursts; a
job starts now only on a node where it leaves every reservation its GPUs. Both queues place a single-node job on
the first node (in the order of their names) where it fits, as Starburst's first fit does. Node fit, node names and
new cloud nodes go through the same ledger as Spillover's own solvers, so the only difference is the decision rule.
"""

from __future__ import annotations

import re
import time
from bisect import bisect_right
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from spillover.placement.costs import delay_cost, new_node_cost, run_cost
from spillover.placement.ledger import Ledger, Option
from spillover.placement.order import queue_order
from spillover.placement.types import Action, Decision, JobDemand, PlacementProblem, Plan, Target

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
OVERDUE_H = 1e-6  # when a release that is already due is expected: just after now


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
    """A solver for the loop that applies `burst` with the on-prem queue run FIFO-with-skipping or EASY. The
    solver keeps its EASY reservations between calls: use one per replay."""
    held: dict[str, Reservation] = {}  # by job id, in the order they were made

    def solve(problem: PlacementProblem) -> Plan:
        return _plan(problem, burst, queue, held)

    solve.__name__ = f"{burst.name} ({queue})"
    return solve


@dataclass(frozen=True)
class Reservation:
    """On-prem nodes held for a waiting job, from plan to plan, as Starburst's EASY backfill holds GPUs."""

    target: str
    nodes: tuple[str, ...]
    gpus: int  # per node
    due_wait_h: float  # the job is due to start when it has waited this long
    runtime_h: float


class _Holds:
    """Free GPUs of each on-prem node over the coming hours: free now, plus the running jobs' releases, minus what
    this plan starts and what reservations hold, as steps in time."""

    def __init__(self, problem: PlacementProblem) -> None:
        self.free: dict[tuple[str, str], int] = {}
        self.steps: dict[tuple[str, str], list[tuple[float, int]]] = defaultdict(list)
        self.names: dict[str, list[str]] = defaultdict(list)  # target id -> its nodes
        self._profiles: dict[tuple[str, str], tuple[list[float], list[int]]] = {}
        for t in problem.targets:
            if t.kind != "onprem":
                continue
            for n in t.nodes:
                self.free[(t.id, n.name)] = n.free_gpus
            for r in t.releases:
                self.free.setdefault((t.id, r.node), 0)
                # a job past its expected end still holds its GPUs now; it frees them just after
                self.steps[(t.id, r.node)].append((max(r.at_h, OVERDUE_H), r.gpus))
        for tid, name in self.free:
            self.names[tid].append(name)

    def hold(self, key: tuple[str, str], gpus: int, start: float, end: float, sign: int = 1) -> None:
        self.steps[key] += [(start, -sign * gpus), (end, sign * gpus)]
        self._profiles.pop(key, None)

    def profile(self, key: tuple[str, str]) -> tuple[list[float], list[int]]:
        """The node's breakpoints (0 first) and the GPUs free from each until the next."""
        p = self._profiles.get(key)
        if p is None:
            times, levels = [0.0], [self.free.get(key, 0)]
            for t, d in sorted(self.steps[key]):
                if t - times[-1] <= EPS:
                    levels[-1] += d
                else:
                    times.append(t)
                    levels.append(levels[-1] + d)
            p = self._profiles[key] = (times, levels)
        return p

    def low(self, key: tuple[str, str], start: float, end: float) -> int:
        """The fewest GPUs free on the node at any time in [start, end)."""
        times, levels = self.profile(key)
        k = bisect_right(times, start + EPS) - 1
        least = levels[k]
        for k in range(k + 1, len(times)):
            if times[k] >= end - EPS:
                break
            least = min(least, levels[k])
        return least

    def earliest(self, key: tuple[str, str], gpus: int, run_h: float, within_h: float | None) -> float | None:
        """The first time (within `within_h` hours, if given) from which the node has `gpus` free for `run_h`."""
        for at in self.profile(key)[0]:
            if within_h is not None and at > within_h + EPS:
                break
            if self.low(key, at, at + run_h) >= gpus:
                return at
        return None

    def times(self, keys: list[tuple[str, str]]) -> list[float]:
        return sorted({t for key in keys for t in self.profile(key)[0]})


def _plan(problem: PlacementProblem, burst: BurstRule, queue: Queue, held: dict[str, Reservation]) -> Plan:
    t0 = time.perf_counter()
    ledger = Ledger(problem)
    jobs = problem.jobs
    targets = problem.targets
    by_id = {t.id: t for t in targets}
    onprem = [ti for ti, t in enumerate(targets) if t.kind == "onprem"]
    cloud = [ti for ti, t in enumerate(targets) if t.kind == "cloud"]
    index = {j.id: i for i, j in enumerate(jobs)}
    for jid in [jid for jid in held if jid not in index or queue != "easy"]:  # started, or gone
        del held[jid]
    holds = _Holds(problem)
    windows: dict[str, tuple[float, float]] = {}  # when each reservation holds its nodes, in hours from now
    for jid, r in held.items():
        start = r.due_wait_h - jobs[index[jid]].waited_h
        if start < EPS:
            # overdue (a job on its nodes runs late, or the loop saw its end a tick late): it holds them from
            # when they have room
            keys = [(r.target, n) for n in r.nodes]
            start = next((at for at in holds.times(keys) if all(
                holds.low(key, at, at + r.runtime_h) >= r.gpus for key in keys)), 0.0)
        windows[jid] = (start, start + r.runtime_h)
        for n in r.nodes:
            holds.hold((r.target, n), r.gpus, *windows[jid])

    def per_node(job: JobDemand, t: Target) -> int:
        return t.gpus_per_node if job.nodes > 1 else job.gpus  # a gang's replica takes its node whole

    def leaves_reservations(i: int, opt: Option) -> bool:
        """Does starting job `i` now as `opt` says leave every reservation (but its own) its GPUs?"""
        job, t = jobs[i], targets[opt.target]
        own = held.get(job.id)
        if own is not None:
            for n in own.nodes:
                holds.hold((own.target, n), own.gpus, *windows[job.id], sign=-1)
        ok = all(holds.low((t.id, n), 0.0, job.runtime_h / t.speed) >= per_node(job, t) for n in opt.nodes)
        if own is not None:
            for n in own.nodes:
                holds.hold((own.target, n), own.gpus, *windows[job.id])
        return ok

    def start_now(i: int) -> Option | None:
        """Where job `i` may start on-prem now: first fit, as Starburst's `try_fit_v2` places jobs (under EASY its
        reserved node first, and only a node that leaves every other reservation its GPUs); a gang where the
        ledger puts it."""
        opt = _cheapest(ledger, i, onprem, now_only=True)
        job = jobs[i]
        if opt is None or job.nodes > 1:
            return opt if opt is None or queue == "fifo" or leaves_reservations(i, opt) else None
        own = held.get(job.id)
        slots = [s for (ti, name), s in ledger.slots.items() if ti == opt.target and not s.new and not s.whole
                 and s.ready <= EPS and s.g >= job.gpus and s.c >= job.cpu - EPS and s.m >= job.memory_gib - EPS]
        slots.sort(key=lambda s: (own is None or s.name not in own.nodes, _node_order(s.name)))
        for s in slots:
            alt = Option(opt.target, (s.name,), 0, 0.0, opt.cost)
            if queue == "fifo" or leaves_reservations(i, alt):
                return alt
        return None

    def reserve(i: int, within_h: float | None) -> Reservation | None:
        """Starburst's try_reserve: the nodes where job `i` could start first, given what runs and what is
        reserved, if it could start there within `within_h` hours (None: ever)."""
        job = jobs[i]
        best: tuple[float, Target, tuple[str, ...]] | None = None  # (start, target, nodes)
        for ti in onprem:
            t = targets[ti]
            if ti not in ledger.feasible_targets(i):
                continue
            run_h = job.runtime_h / t.speed
            need = per_node(job, t)
            keys = [(t.id, n) for n in holds.names[t.id]]
            if job.nodes == 1:
                for key in keys:
                    at = holds.earliest(key, need, run_h, within_h)
                    if at is not None:
                        if best is None or (at, _node_order(key[1])) < (best[0], _node_order(best[2][0])):
                            best = (at, t, (key[1],))  # the first node that has room first
                continue
            for at in holds.times(keys):
                if (within_h is not None and at > within_h + EPS) or (best is not None and at >= best[0]):
                    break
                room = sorted((n for (_, n) in keys if holds.low((t.id, n), at, at + run_h) >= need), key=_node_order)
                if len(room) >= job.nodes:
                    best = (at, t, tuple(room[:job.nodes]))
                    break
        if best is None:
            return None
        at, t, nodes = best
        r = Reservation(t.id, nodes, per_node(job, t), job.waited_h + at, job.runtime_h / t.speed)
        windows[job.id] = (at, at + r.runtime_h)
        for n in nodes:
            holds.hold((t.id, n), r.gpus, *windows[job.id])
        return r

    head_tried = False  # EASY: one new reservation per plan, for the first job that neither starts nor holds one
    decisions: dict[int, Decision] = {}
    revisit: float | None = None
    total = 0.0
    for i in queue_order(jobs):
        job = jobs[i]
        here = start_now(i)
        if here is not None:
            ledger.take(i, here)
            t = targets[here.target]
            own = held.pop(job.id, None)
            if own is not None:
                for n in own.nodes:
                    holds.hold((own.target, n), own.gpus, *windows.pop(job.id), sign=-1)
            for n in ledger.binding[i][1]:
                holds.hold((t.id, n), per_node(job, t), 0.0, job.runtime_h / t.speed)
            decisions[i] = _run(i, t, here, ledger, f"started on {t.name} "
                                f"({queue.upper() if queue == 'easy' else 'FIFO'} queue, it fits now)")
            total += decisions[i].cost
            continue
        if job.id in held:
            due = held[job.id].due_wait_h - job.waited_h
            decisions[i] = Decision(job.id, Action.WAIT, f"holds an on-prem reservation (EASY) in "
                                    f"{max(0.0, due):.2f} h; waited {job.waited_h:.2f} h", cost=delay_cost(job, 0.0))
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
        if queue == "easy" and not head_tried:
            head_tried = True
            # as Starburst's try_reserve: no reservation for a job that would time out before it could start
            r = reserve(i, None if budget is None else budget - job.waited_h)
            if r is not None:
                held[job.id] = r
                decisions[i] = Decision(job.id, Action.WAIT, f"reserved on-prem (EASY) in "
                                        f"{r.due_wait_h - job.waited_h:.2f} h on {', '.join(r.nodes)}; waited "
                                        f"{job.waited_h:.2f} h", cost=delay_cost(job, 0.0))
                continue
        if budget is not None and job.waited_h < budget - EPS:
            due = budget - job.waited_h
            revisit = due if revisit is None else min(revisit, due)
        why = (f"waiting for on-prem ({burst.name} {burst.describe(job)}; waited {job.waited_h:.2f} h)"
               if budget is not None else f"waiting for on-prem ({burst.name})")
        decisions[i] = Decision(job.id, Action.WAIT, why, cost=delay_cost(job, 0.0))
    new_nodes = ledger.new_nodes()
    total += sum(n * new_node_cost(by_id[tid], problem.policy) for tid, n in new_nodes.items())
    return Plan(decisions=tuple(_renamed(decisions, ledger, problem)), new_nodes=new_nodes, objective=total,
                lower_bound=None, solver="baseline", status=f"{burst.name}, {queue}",
                solve_s=time.perf_counter() - t0, revisit_h=revisit)


def _node_order(name: str) -> tuple:
    """Nodes in the order their names count them (node-2 before node-10): the order first fit goes through."""
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name))


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
