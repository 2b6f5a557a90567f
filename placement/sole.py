"""Proof that a plan is the only optimal plan of a short queue, so that no search can return another.

The search (cpsat.py) returns the cheapest of greedy's plan, the LP rounding and the CP-SAT rounds, a later
plan winning a tie. When every valid plan that decides differently from greedy's costs clearly more, each of
those candidates either decides as greedy's plan does or loses to it, so the search returns greedy's
decisions at greedy's objective, and running it changes nothing. This module proves that, for queues of a
few single-node jobs whose greedy plan starts or keeps waiting every job (no burst: equally priced pools
make bursts ties), by a complete enumeration with bounds:

- on-prem starts first: every set of jobs started now on nodes that fit them, with their exact cost;
- then, in queue order, each other job waits (its exact wait cost: the forecast only looks at starts and at
  waiting jobs ahead of it) or runs in the cloud (at least its cheapest cloud option, alone);
- a branch stops as soon as what it has spent plus what the rest cost at the least exceeds greedy's objective
  by a margin, and a plan in which a job waits although a run-now option that no other decision can take
  away costs no more (the WAIT rule every candidate of the search satisfies, see `assemble.finish`) is no
  candidate.

If greedy's own plan is the only leaf within the margin, it is the sole optimum. Anything the enumeration
does not model exactly (gangs, bursts in greedy's plan, a forecast that would book a start where the forecast
sees no room) makes it answer False, and the search runs as before.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from spillover.placement.assemble import TOL, Settled
from spillover.placement.costs import delay_cost, new_node_cost, run_cost, wait_cost
from spillover.placement.feasibility import feasible
from spillover.placement.forecast import EPS, INF, _FNode, _template
from spillover.placement.order import queue_order
from spillover.placement.types import PlacementProblem, Target

MAX_JOBS = 8
MAX_STEPS = 400  # branches explored before giving up (the search then runs)
REL_MARGIN = 1e-6  # another plan must cost this much more (relative) than greedy's; the search's tie is 1e-9


class _Stop(Exception):
    """Another plan may cost as little as greedy's, or the enumeration grew too big: no proof."""


def sole_optimum(problem: PlacementProblem, greedy: Settled) -> bool:
    """Whether every valid plan that decides differently from `greedy`'s costs clearly more than it."""
    jobs = problem.jobs
    n = len(jobs)
    if n == 0 or n > MAX_JOBS or any(j.nodes != 1 for j in jobs):
        return False
    targets = problem.targets
    g_start: dict[int, tuple[int, str]] = {}
    for i, (ti, names) in greedy.ledger.binding.items():
        if targets[ti].kind != "onprem":
            return False
        g_start[i] = (ti, names[0])
    limit = greedy.objective + REL_MARGIN * max(1.0, abs(greedy.objective))
    try:
        return _Proof(problem, g_start, greedy.objective, limit).run()
    except _Stop:
        return False


class _Proof:
    def __init__(self, problem: PlacementProblem, g_start: dict[int, tuple[int, str]], objective: float,
                 limit: float) -> None:
        self.problem = problem
        self.objective = objective
        self.limit = limit
        self.g_start = g_start
        self.steps = 0
        self.found = False
        jobs = problem.jobs
        targets = problem.targets
        policy = problem.policy
        n = len(jobs)
        self.order = queue_order(jobs)
        room = math.inf if policy.max_cloud_gpus is None else policy.max_cloud_gpus - policy.cloud_gpus_in_use
        cloud_gpn = max((t.gpus_per_node for t in targets if t.kind == "cloud"), default=0)

        # The forecast's nodes before anything is booked, shared by every branch (copied when booked on).
        tpl = _template(targets)
        self.tpl_targets = tpl.targets
        self.index = tpl.index
        self.onprem_target = [next(t for t in targets if t.id == ft.id) for ft in tpl.targets]
        self.base: list[list[_FNode]] = tpl.nodes
        # rows made by booking, kept alive while their ids key the fit memo, and the row each came from
        self._rows: list[list[_FNode]] = []
        self._parent: dict[int, tuple[list[_FNode], int]] = {}
        self._fit: dict[tuple[int, tuple[float, float, float]], list[float]] = {}

        self.demand = [(float(j.gpus), j.cpu, j.memory_gib) for j in jobs]
        self.fc_targets = [[k for k, t in enumerate(tpl.targets) if feasible(j, t, policy)] for j in jobs]
        # per job: on-prem nodes it fits now (target, node, cost), the least any cloud option costs it, the
        # cost of a cloud option no other decision can take away, and the least it pays in any plan
        self.starts: list[list[tuple[int, int, float]]] = []
        self.cloud_min: list[float] = []
        self.cloud_sure: list[float] = []
        self.alone: list[float] = []
        self.least: list[float] = []
        # per job shape: the targets it may run on and their nodes it fits now (index, readiness)
        by_shape: dict[tuple, list[tuple[int, Target, list[tuple[int, float]], bool]]] = {}
        for i, job in enumerate(jobs):
            shape = (job.gpus, job.cpu, job.memory_gib, job.gpu_types, job.allowed_targets, job.checkpointable)
            where = by_shape.get(shape)
            if where is None:
                where = by_shape[shape] = [
                    (ti, t, [(ni, nd.ready_in_h) for ni, nd in enumerate(t.nodes)
                             if _fits(job, nd.free_gpus, nd.free_cpu, nd.free_memory_gib)],
                     job.gpus <= t.gpus_per_node and job.cpu <= t.cpu_per_node + EPS
                     and job.memory_gib <= t.memory_gib_per_node + EPS)
                    for ti, t in enumerate(targets) if feasible(job, t, policy)]
            opts: list[tuple[int, int, float]] = []
            cmin = csure = math.inf
            for ti, t, fit_now, full in where:
                run = run_cost(job, t)
                if t.kind == "onprem":
                    for ni, ready in fit_now:
                        opts.append((ti, ni, run + delay_cost(job, ready)))
                    continue
                for _, ready in fit_now:
                    cmin = min(cmin, run + delay_cost(job, ready))
                if not full or t.max_new_nodes <= 0 or t.gpus_per_node > room + EPS:
                    continue
                over = new_node_cost(t, policy)
                share = 1.0 if n == 1 else (min(1.0, job.gpus / t.gpus_per_node) if t.gpus_per_node > 0 else 0.0)
                cmin = min(cmin, run + delay_cost(job, t.provisioning_h) + over * share)
                # open whatever the other jobs open: still room for this one
                if t.max_new_nodes >= n and t.gpus_per_node + (n - 1) * cloud_gpn <= room + EPS:
                    csure = min(csure, run + delay_cost(job, t.provisioning_h) + over)
            self.starts.append(opts)
            self.cloud_min.append(cmin)
            self.cloud_sure.append(csure)
            w = self._alone(i)
            self.alone.append(w)
            self.least.append(min([w, cmin] + [c for _, _, c in opts]))
        # What a job that does not start on-prem pays at the least: its wait alone (no plan forecasts an earlier
        # start, see bound.py) or its cheapest cloud option.
        self.off_wait = [min(self.cloud_min[i], self.alone[i]) for i in range(n)]

    # -- the forecast ------------------------------------------------------------------------------

    def _fits_of(self, row: list[_FNode], d: tuple[float, float, float]) -> list[float]:
        """When `d` first fits on each node of a row (one target's nodes in some state), kept per row: a row
        booked on differs from the row it came from in one node, whose fit alone is computed again."""
        key = (id(row), d)
        fits = self._fit.get(key)
        if fits is None:
            came = self._parent.get(id(row))
            if came is None:
                fits = [node.fit(*d) for node in row]
            else:
                parent, ni = came
                fits = list(self._fits_of(parent, d))
                fits[ni] = row[ni].fit(*d)
            self._fit[key] = fits
        return fits

    def _wait(self, i: int, state: list[list[_FNode]]) -> tuple[float, int, int, float]:
        """Job i's wait cost as the forecast prices it given `state`, and where it would book: (cost, target,
        node, start); target -1 when no on-prem target can ever run it."""
        job = self.problem.jobs[i]
        d = self.demand[i]
        best_t, best_k, best_n = INF, -1, -1
        for k in self.fc_targets[i]:
            fits = self._fits_of(state[k], d)
            bt = min(fits, default=INF)
            # the forecast's heap yields the earliest node, the first of them on a tie
            if bt != INF and (best_k < 0 or bt < best_t - EPS):
                best_t, best_k, best_n = bt, k, fits.index(bt)
        if best_k < 0:
            return wait_cost(job, self.problem.policy.max_wait_h, None), -1, -1, 0.0
        return wait_cost(job, best_t, self.onprem_target[best_k]), best_k, best_n, best_t

    def _alone(self, i: int) -> float:
        """The least job i's wait costs in any plan: bookings only push fit times later, so on each on-prem
        target it starts no earlier than with nothing booked (the forecast picks the earliest target, which
        may be a dearer one, so the least is over all of them)."""
        job = self.problem.jobs[i]
        d = self.demand[i]
        best = math.inf
        for k in self.fc_targets[i]:
            t = min(self._fits_of(self.base[k], d), default=INF)
            if t != INF:
                best = min(best, wait_cost(job, t, self.onprem_target[k]))
        return best if best < math.inf else wait_cost(job, self.problem.policy.max_wait_h, None)

    def _booked(self, state: list[list[_FNode]], k: int, ni: int, i: int, start: float | None) -> list[list[_FNode]]:
        """`state` with job i booked on node ni of forecast target k from `start` (None: started now, as
        `ForecastState.consume_now` books it)."""
        job = self.problem.jobs[i]
        node = state[k][ni].copy()
        if start is None:
            start = node.fit(job.gpus, job.cpu, job.memory_gib)
            if start == INF:
                raise _Stop  # the forecast would book room it does not see; not modelled here
        end = start + job.runtime_h / self.tpl_targets[k].speed
        # Fit times only grow under bookings that find all they take before their start and give it back
        # clearly later: then the forecast's heaps find each demand's earliest node, as the scan here does.
        have = [0.0, 0.0, 0.0]
        for ch in node.chunks:
            if ch[0] > start + EPS:
                break
            have[0] += ch[1]
            have[1] += ch[2]
            have[2] += ch[3]
        if have[0] < job.gpus or have[1] < job.cpu or have[2] < job.memory_gib or not end > start + 2 * EPS:
            raise _Stop
        node.take(job.gpus, job.cpu, job.memory_gib, start, end)
        row = list(state[k])
        row[ni] = node
        self._rows.append(row)
        self._parent[id(row)] = (state[k], ni)
        out = list(state)
        out[k] = row
        return out

    def _step(self) -> None:
        self.steps += 1
        if self.steps > MAX_STEPS:
            raise _Stop

    # -- the enumeration ---------------------------------------------------------------------------

    def run(self) -> bool:
        jobs = self.problem.jobs
        targets = self.problem.targets
        free = {(ti, ni): [nd.free_gpus, nd.free_cpu, nd.free_memory_gib]
                for ti, t in enumerate(targets) if t.kind == "onprem" for ni, nd in enumerate(t.nodes)}
        self._starts(0, {}, 0.0, 0.0, free)
        return self.found

    def _starts(self, i: int, chosen: dict[int, tuple[int, int]], cost: float, fixed: float,
                free: dict[tuple[int, int], list[float]]) -> None:
        """Every set of on-prem starts now, job by job (index order); `fixed`: the least the jobs before i that
        do not start will cost."""
        jobs = self.problem.jobs
        n = len(jobs)
        if cost + fixed + sum(self.least[j] for j in range(i, n)) > self.limit:
            return
        self._step()
        if i == n:
            self._after_starts(chosen, cost, free)
            return
        job = jobs[i]
        for ti, ni, c in self.starts[i]:
            f = free[(ti, ni)]
            if not _fits(job, f[0], f[1], f[2]):
                continue
            f[0] -= job.gpus
            f[1] -= job.cpu
            f[2] -= job.memory_gib
            chosen[i] = (ti, ni)
            self._starts(i + 1, chosen, cost + c, fixed, free)
            del chosen[i]
            f[0] += job.gpus
            f[1] += job.cpu
            f[2] += job.memory_gib
        self._starts(i + 1, chosen, cost, fixed + self.off_wait[i], free)

    def _after_starts(self, chosen: dict[int, tuple[int, int]], cost: float,
                      free: dict[tuple[int, int], list[float]]) -> None:
        jobs = self.problem.jobs
        targets = self.problem.targets
        state = self.base
        for i in sorted(chosen):
            ti, ni = chosen[i]
            t = targets[ti]
            k = next(k for k, ft in enumerate(self.tpl_targets) if ft.id == t.id)
            state = self._booked(state, k, self.index[k][t.nodes[ni].name], i, None)
        # Per job left: the cheapest on-prem start still open now, which rules out waiting at no lower cost.
        open_now: dict[int, float] = {}
        for i in range(len(jobs)):
            if i in chosen:
                continue
            best = math.inf
            for ti, ni, c in self.starts[i]:
                f = free[(ti, ni)]
                if c < best and _fits(jobs[i], f[0], f[1], f[2]):
                    best = c
            open_now[i] = min(best, self.cloud_sure[i])
        left = [i for i in self.order if i not in chosen]
        is_greedy_starts = {i: (targets[ti].id, targets[ti].nodes[ni].name) for i, (ti, ni) in chosen.items()} == {
            i: (targets[ti].id, name) for i, (ti, name) in self.g_start.items()}
        self._rest(left, 0, state, cost, open_now, is_greedy_starts)

    def _rest(self, left: Sequence[int], pos: int, state: list[list[_FNode]], cost: float,
              open_now: dict[int, float], greedy_path: bool) -> None:
        """Jobs not started, in queue order: each waits (exact cost) or runs in the cloud (at least its least)."""
        rest = sum(self.off_wait[j] for j in left[pos:])
        if cost + rest > self.limit:
            return
        self._step()
        if pos == len(left):
            if greedy_path:
                # greedy's own plan (its starts, every other job waiting), priced as `finish` priced it
                if abs(cost - self.objective) > self.limit - self.objective:
                    raise _Stop
                self.found = True
                return
            raise _Stop  # another plan may cost as little
        i = left[pos]
        w, k, ni, start = self._wait(i, state)
        # The WAIT rule: no candidate keeps a job waiting when a run-now option it surely has costs no more.
        if not open_now[i] <= w + TOL - 1e-9 * max(1.0, abs(w)):
            nxt = state if k < 0 else self._booked(state, k, ni, i, start)
            self._rest(left, pos + 1, nxt, cost + w, open_now, greedy_path)
        if self.cloud_min[i] < math.inf:
            self._rest(left, pos + 1, state, cost + self.cloud_min[i], open_now, False)


def _fits(job, g: float, c: float, m: float) -> bool:
    """`Slot.fits` for a single-node job on a node with this much free."""
    return g >= job.gpus and c >= job.cpu - EPS and m >= job.memory_gib - EPS
