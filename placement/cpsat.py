"""`solve_cpsat`: one joint CP-SAT model of the whole queue, solved in rounds that price waiting well.

Formulation (one model per round; structure.py builds its fixed part, cpsat_round.py solves and binds it):
- Jobs with the same shape and the same run-now costs form a class with a count. x[c, g] is how many jobs of
  class c run on ready-group g of a target (the nodes of one target that are ready at the same time, or the
  pool's new nodes); the rest of the class waits. Waiting costs differ inside a class (each job has its own
  forecast), so the jobs that run are those whose wait is dearest: saved[c] <= the concave piecewise-linear
  sum of the u largest wait costs, u = sum_g x[c, g]. Options that cost at least the dearest wait are
  dropped (waiting is always possible and needs no capacity), as are (class, target) pairs that can never fit.
- Nodes of a target are grouped into profiles (same free capacity, ready time, idleness) with counts.
  z[p, k] is how many nodes of profile p use packing pattern k (see patterns.py); each replica size needs
  no more slots in a group than its patterns provide. A gang replica needs a "whole node" pattern, which only
  idle profiles and new nodes have; a gang's replicas share one ready-group. New nodes of a pool = the nodes
  its new-node profile uses, under the pool limit; all pools' new GPUs under the cloud GPU cap.
- Minimise run cost + value of delay + new-node overhead + wait costs, in integer cents.

CPU and memory enter the patterns rounded to 1/64 of a node (demands up, free capacity down), so every model
solution binds to concrete nodes. Binding still checks each replica against the exact numbers through the
ledger and leaves any that does not fit waiting, for the WAIT rule in `assemble.settle` to place it on its
best run-now option if that is cheaper; pattern limits and float edges are the only ways to get there.

Why rounds: a job's wait cost depends on who else waits, which a linear model cannot see. Each round prices
waiting by the forecast of a plan (its waiting jobs at their own forecast, every other job at the start it
would get if it alone waited), optionally plus "queue pressure": what holding on-prem GPU-hours costs the
jobs queued behind (see `queue_pressure`). Every round's solution is re-priced consistently by
`assemble.finish`, and the cheapest plan seen wins, greedy's and the LP rounding's included, so the result is
never worse than greedy's. Before the rounds, the LP relaxation (GLOP) is solved and rounded (rounding.py);
the better of that plan and greedy's is the first round's hint; a round priced exactly like an earlier one
is skipped. Models of a few thousand variables are solved by one CP-SAT worker (a second costs more to start
than it saves), bigger ones by two with LP-based subsolvers. On queues beyond CPSAT_MAX_PAIRS (job, target)
pairs CP-SAT does not reach a useful gap in seconds on two cores; there the LP roundings are iterated to a
fixed point of their own pricing instead (lpsearch.py).

In the deterministic mode (`Policy.work_limit`) the rounds are the same and share a work budget instead of the
time left (work.py): each CP-SAT round gets its share as CP-SAT deterministic time on one worker, and is
charged what CP-SAT reports having used; the LP rounding runs without a time limit.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from spillover.placement.assemble import Settled, finish
from spillover.placement.costs import cents
from spillover.placement.cpsat_round import bind, solve_round
from spillover.placement.greedy import greedy_settled
from spillover.placement.ledger import Ledger
from spillover.placement.lpsearch import lp_search
from spillover.placement.order import queue_order
from spillover.placement.relax import LinearModel, Relaxation
from spillover.placement.rounding import lp_rounded
from spillover.placement.structure import Structure
from spillover.placement.types import PlacementProblem, Plan
from spillover.placement.work import CPSAT_DTIME_PER_UNIT, Work, cpsat_work, greedy_work, lp_work

# Rounds as (plan whose forecast prices waiting, weight of the queue pressure). "start" is the better of
# greedy and the LP rounding. Chosen on benchmark instances of 50-1,000 jobs: pricing waits by the plan's
# own forecast alone is often too optimistic about waiting, full pressure too pessimistic; trying both and
# then splitting the difference from the best plan so far beat every single setting on average.
CPSAT_ROUNDS: list[tuple[str, float]] = [("start", 0.0), ("greedy", 0.5), ("best", 0.25)]
LP_PRESSURE = 0.5  # queue pressure in the LP whose rounding starts the search
CPSAT_MAX_PAIRS = 40_000  # (job, target) pairs; beyond, e.g. 10,000 x 50, the LP search takes over
REUSE_BOUND = True  # a solution bound in an earlier round takes that round's plan again; tests turn it off


def queue_pressure(problem: PlacementProblem, cur: Settled) -> tuple[list[float], dict[int, float]]:
    """What a job's use of on-prem capacity costs the jobs waiting behind it, to first order.

    A job that waits for target t, or starts on it now, holds G x d GPU-hours there; in the forecast every
    job queued after it for t starts about G x d / C_t hours later (C_t: the target's GPUs), which costs
    them their value of time. Per job: that cost if it waits (the jobs behind it in queue order); per
    on-prem target: dollars per GPU-hour held by a start now (every waiting job, since starts go first).
    Without it each round would see waiting as cheap as it is for one job alone, and the consistent
    re-pricing would punish plans that make many jobs wait at once.
    """
    targets = problem.targets
    jobs = problem.jobs
    gpus: dict[str, float] = {}
    index = {t.id: ti for ti, t in enumerate(targets)}
    for t in targets:
        if t.kind == "onprem":
            gpus[t.id] = sum(n.free_gpus for n in t.nodes) + sum(r.gpus for r in t.releases)
    behind: dict[str, float] = {tid: 0.0 for tid in gpus}
    ext = [0.0] * len(jobs)
    for i in reversed(queue_order(jobs)):
        tid = cur.forecasts[i].target
        if tid is None or not gpus.get(tid):
            continue
        job = jobs[i]
        held = job.total_gpus * job.runtime_h / targets[index[tid]].speed
        ext[i] = held / gpus[tid] * behind[tid]
        if i not in cur.ledger.binding:
            behind[tid] += job.value_of_time * job.total_gpus
    rate = {index[tid]: behind[tid] / g for tid, g in gpus.items() if g > 0 and behind[tid] > 0}
    return ext, rate


@dataclass(frozen=True)
class RoundInfo:
    """One round (CP-SAT or LP rounding), for benchmarks and logs."""

    status: str  # CP-SAT's status, or "lp-rounded"
    model_objective: float  # dollars, with waiting priced by the round's forecast (and pressure)
    model_bound: float  # the solver's bound on that model (the LP's value for an LP round)
    plan_objective: float  # the round's plan re-priced consistently
    seconds: float
    overhead: float  # seconds outside the solver: building, binding, re-pricing
    # the deterministic mode's counterparts, in work units: all the round was charged, and that outside the solver
    work: float = 0.0
    work_overhead: float = 0.0


def _priced(problem: PlacementProblem, cur: Settled, pressure: float) -> tuple[list[float], dict[int, float]]:
    """Wait costs and on-prem start charges for a round: `cur`'s forecast plus `pressure` x queue pressure."""
    # the pressure of one plan, kept with it: several rounds are priced from the same plan
    if cur.pressure is None:
        cur.pressure = queue_pressure(problem, cur)
    ext, rate = cur.pressure
    waits = [w + pressure * e for w, e in zip(cur.wait_costs, ext)]
    return waits, {ti: pressure * r for ti, r in rate.items()}


def _finished(problem: PlacementProblem, ledger: Ledger, status: str, work: Work | None) -> tuple[Settled, float]:
    """`finish` a round's plan in full, as without a work budget (a round's plan then depends on its solve
    alone, not on the budget left), charging what that cost to `work`; the plan and the work charged."""
    if work is None:
        return finish(problem, ledger, "cp-sat", status), 0.0
    meter = work.meter()
    settled = finish(problem, ledger, "cp-sat", status, work=meter)
    work.spend(meter.spent)
    return settled, meter.spent


def _cpsat_round(
    problem: PlacementProblem, m: Structure, cur: Settled, pressure: float, seconds: float,
    tried: set[tuple] | None = None, work: Work | None = None, bound: dict[tuple, tuple[Settled, float]] | None = None,
) -> tuple[Settled, RoundInfo] | None | bool:
    """One CP-SAT round priced by `cur` and `pressure`; False when a round in `tried` was priced the same.

    With `work` (the deterministic mode), `seconds` are work units: CP-SAT gets them as deterministic time,
    and what it used, the binding and the re-pricing are charged to `work`. `bound` keeps, per solution already
    bound in an earlier round of the same model, the plan `finish` made of it and the work that cost: binding
    depends on the counts and on the order of each class's members by wait, so the same solution in that order
    gives the same plan, which is taken again (and charged again) instead of being bound and re-priced anew."""
    t0 = time.perf_counter()
    waits, rate = _priced(problem, cur, pressure)
    wait = [cents(w) for w in waits]
    if tried is not None:
        key = (tuple(wait), tuple(sorted(rate.items())))
        if key in tried:
            return False  # the same model as a round already solved
        tried.add(key)
    before = 0.0 if work is None else work.left
    res = solve_round(m, wait, rate, cur.ledger, seconds,
                      work=None if work is None else seconds * CPSAT_DTIME_PER_UNIT)
    solver_w = 0.0
    if work is not None:
        solver_w = cpsat_work(res.work) if res is not None else seconds  # a solve that found nothing used it all
        work.spend(solver_w)
    if res is None:
        return None
    key = None
    if bound is not None:
        key = (tuple(sorted(res.x.items())), tuple(sorted(res.z.items())),
               tuple(tuple(sorted(c.members, key=lambda i: -wait[i])) for c in m.classes))
    seen = bound.get(key) if bound is not None else None
    if seen is not None:
        settled = seen[0].tagged(res.status)
        if work is not None:
            work.spend(seen[1])
    else:
        settled, charged = _finished(problem, bind(m, res, wait), res.status, work)
        if bound is not None:
            bound[key] = (settled, charged)
    took = time.perf_counter() - t0
    used = 0.0 if work is None else before - work.left
    info = RoundInfo(res.status, res.objective, res.bound, settled.objective, took, took - res.seconds,
                     used, used - solver_w)
    return settled, info


def _lp_round(
    problem: PlacementProblem, cur: Settled, pressure: float, seconds: float | None, model: LinearModel,
    work: Work | None = None,
) -> tuple[Settled, RoundInfo, Relaxation] | None:
    """The LP rounding priced by `cur` and `pressure`, within `seconds`; with `work` (the deterministic mode),
    without a time limit, its modelled work charged to `work`."""
    t0 = time.perf_counter()
    waits, rate = _priced(problem, cur, pressure)
    before = 0.0 if work is None else work.left
    lp = lp_rounded(problem, waits, rate, time_limit_s=seconds, model=model,
                    glop_dtime=None if work is None else work.glop_dtime)
    if work is not None and lp is not None:
        work.spend(lp_work(lp[1].options, lp[1].columns, lp[1].rounds))
    if lp is None:
        return None
    settled, _ = _finished(problem, lp[0], "lp-rounded", work)
    took = time.perf_counter() - t0
    used = 0.0 if work is None else before - work.left
    return settled, RoundInfo("lp-rounded", lp[1].value, lp[1].value, settled.objective, took, took, used,
                              used), lp[1]


def cpsat_settled(
    problem: PlacementProblem, greedy: Settled | None = None, time_limit_s: float | None = None
) -> tuple[Settled, list[RoundInfo]]:
    """Cheapest consistent plan among greedy, the LP rounding and the CP-SAT rounds, and what each round did.

    `time_limit_s` (default: the policy's) counts from this call; with `policy.work_limit` set, neither is
    read: the whole decision, greedy's pass included, keeps to that budget of work."""
    t0 = time.perf_counter()
    deadline = t0 + (problem.policy.time_limit_s if time_limit_s is None else time_limit_s)
    work = None
    if problem.policy.work_limit is not None:
        work = Work(problem.policy.work_limit, len(problem.jobs))
        work.spend(greedy_work(len(problem.jobs)))
    if greedy is None:
        greedy = greedy_settled(problem)
    rounds: list[RoundInfo] = []
    if not problem.jobs:
        return greedy, rounds
    # Past this size CP-SAT does not get near its gap within seconds on two cores, while the LP solves in a
    # fraction of one; the search then iterates LP roundings instead (lpsearch.py).
    if len(problem.jobs) * len(problem.targets) > CPSAT_MAX_PAIRS:
        found, steps, m, duals = lp_search(problem, greedy, deadline, work)
        rounds = [RoundInfo("lp-rounded", st.bound, st.bound, st.objective, st.seconds, st.seconds) for st in steps]
        status = "lp-rounded" if found is not greedy else ("greedy-kept" if steps else "greedy-fallback")
        found = found.tagged(status, time.perf_counter() - t0)
        found.lp = (m, duals)
        return found, rounds
    best, best_status = greedy, ""
    lpm = LinearModel(problem)
    if work is None:
        first = _lp_round(problem, greedy, LP_PRESSURE, max(0.05, 0.6 * (deadline - time.perf_counter())), lpm)
    else:
        first = _lp_round(problem, greedy, LP_PRESSURE, None, lpm, work)
    start = greedy
    # Python time around each solve (building, binding, re-pricing), learnt as rounds go; in the deterministic
    # mode, the work charged for it
    overhead = 0.0
    if first is not None:
        rounds.append(first[1])
        overhead = first[1].overhead if work is None else first[1].work_overhead
        if first[0].objective < best.objective:
            best, best_status, start = first[0], "lp-rounded", first[0]
    m = Structure(problem) if (time.perf_counter() < deadline if work is None else work.left > 0) else None
    prev = greedy
    schedule = CPSAT_ROUNDS
    solved = 0  # rounds after the first LP rounding that found a plan
    tried: set[tuple] = set()
    bound: dict[tuple, tuple[Settled, float]] | None = {} if REUSE_BOUND else None
    for k, (origin, pressure) in enumerate(schedule):
        left = deadline - time.perf_counter() - overhead if work is None else work.left - overhead
        if m is None or (left < 0.05 and solved):
            break
        cur = {"greedy": greedy, "start": start, "best": best, "prev": prev}[origin]
        # The first round may take all the time: on big queues one good solve beats several short ones.
        # When it proves its gap early, the time left goes to the next rounds.
        share = 0.6 if 0 < k < len(schedule) - 1 else 1.0
        done = _cpsat_round(problem, m, cur, pressure, max(0.05, left * share), tried, work, bound)
        if done is False:
            continue
        if done is None:
            break
        settled, info = done
        solved += 1
        rounds.append(info)
        overhead = max(overhead, info.overhead if work is None else info.work_overhead)
        # On a tie the later plan wins: same cost, and it comes from the joint model.
        if settled.objective <= best.objective + 1e-9:
            best, best_status = settled, info.status
        prev = settled
    if best is greedy:
        best_status = "greedy-kept" if solved else "greedy-fallback"
    found = best.tagged(best_status, time.perf_counter() - t0)
    found.lp = (lpm, first[2].duals if first is not None else None)  # to bound the plan without a new model
    return found, rounds


def solve_cpsat(problem: PlacementProblem) -> Plan:
    """The joint CP-SAT plan (greedy as hint and as the floor), within `policy.time_limit_s`."""
    return cpsat_settled(problem)[0].plan
