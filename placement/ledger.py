"""Residual capacity of every node as replicas are bound to it, and each job's best way to run now.

The ledger is the one place that knows node fit: greedy binds through it, CP-SAT solutions are bound through
it, the WAIT rule and `check_plan` ask it for a waiting job's best run-now option. Existing nodes keep their
names; new cloud nodes are named "<target id>/new-<i>" and exist only while something is bound to them.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass

from spillover.placement.costs import delay_cost, new_node_cost, run_cost
from spillover.placement.feasibility import feasible
from spillover.placement.limits import Limits
from spillover.placement.memo import kept
from spillover.placement.types import JobDemand, PlacementProblem, Target

EPS = 1e-9


class Slot:
    """One node with what is still free on it."""

    __slots__ = ("name", "target", "g", "c", "m", "ready", "idle", "new", "jobs", "whole", "free_gpus")

    def __init__(
        self, name: str, target: int, g: int, c: float, m: float, ready: float, idle: bool, new: bool
    ) -> None:
        self.name = name
        self.target = target
        self.g = g
        self.c = c
        self.m = m
        self.ready = ready
        self.idle = idle
        self.new = new
        self.jobs = 0  # replicas bound here by the plan
        self.whole = False  # taken whole by a gang replica
        self.free_gpus = g  # as observed, before the plan

    def fits(self, job: JobDemand) -> bool:
        if self.whole:
            return False
        if job.nodes > 1 and (not self.idle or self.jobs > 0):
            return False
        return self.g >= job.gpus and self.c >= job.cpu - EPS and self.m >= job.memory_gib - EPS


@dataclass(frozen=True)
class Option:
    """A way to run one job now: nodes already there (or already opened) plus `fresh` new nodes."""

    target: int
    nodes: tuple[str, ...]
    fresh: int
    start_h: float
    cost: float  # run cost + value of the delay + overhead of the fresh nodes


@dataclass(frozen=True)
class Blocked:
    """Why a job has no run-now option at all."""

    kind: str  # "nothing-fits" | "cap" | "pool-limit" | "full" | "budget" | "quota" | "team-cap"
    detail: str  # target names or numbers for the reason


class _Static:
    """What every ledger of one problem shares: facts about its targets, and per job shape the targets that may
    take it and in which order (filled as shapes come up)."""

    def __init__(self, problem: PlacementProblem) -> None:
        targets = problem.targets
        self.problem = problem
        self.feasible: dict[tuple, list[int]] = {}
        # Run cost is GPUs x runtime x (price per GPU-hour / speed) wherever nodes have GPUs, so one order
        # of targets by that rate is every job's order by run cost.
        self.rate_order = all(t.gpus_per_node > 0 for t in targets)
        self.shape_order: dict[tuple, list[int]] = {}
        # per single-node shape: the targets that may take it, with what about them is fixed for the shape
        self.cands: dict[tuple, list[tuple[int, Target, bool, float]]] = {}
        self.target_index = {t.id: i for i, t in enumerate(targets)}
        self.max_new = [t.max_new_nodes if t.kind == "cloud" else 0 for t in targets]
        self.gpn = [t.gpus_per_node for t in targets]
        # The earliest any node of a target can be ready: its nodes' readiness, or a new node's boot.
        self.ready_floor = [
            min([n.ready_in_h for n in t.nodes] + ([t.provisioning_h] if t.kind == "cloud" else []), default=0.0)
            for t in targets
        ]
        self.nodes = [(ti, n.name, n.free_gpus, n.free_cpu, n.free_memory_gib, n.ready_in_h, n.idle)
                      for ti, t in enumerate(targets) for n in t.nodes]
        # whether a new node's overhead is no saving (never negative): options then cost at least their floor
        self.over_ok = [new_node_cost(t, problem.policy) >= 0 for t in targets]
        # the forecasts and wait costs of plans priced so far, by what decides them (see assemble.py)
        self.priced: dict[tuple, tuple] = {}


# A solve builds many ledgers of one problem. Keyed by the identity of the (immutable) problem, which the entry
# keeps alive so that the identity cannot be reused meanwhile.
_STATICS: dict[int, tuple[PlacementProblem, _Static]] = {}
_STATICS_KEPT = 4


def _static(problem: PlacementProblem) -> _Static:
    return kept(_STATICS, problem, _Static, _STATICS_KEPT)


class Ledger:
    """Which replicas are bound where, and what that leaves free on each node and in the cloud GPU cap."""

    def __init__(self, problem: PlacementProblem) -> None:
        self.problem = problem
        self.jobs = problem.jobs
        self.targets = problem.targets
        self.policy = problem.policy
        st = self._st = _static(problem)
        n_targets = len(self.targets)
        self.slots: dict[tuple[int, str], Slot] = {}  # (target, node name); names repeat across clusters
        # residual GPUs -> slots, per target, for best-fit lookup without scanning every node
        self._buckets: list[dict[int, dict[str, Slot]]] = [{} for _ in range(n_targets)]
        self._whole_free: list[dict[str, Slot]] = [{} for _ in range(n_targets)]
        self._new_seq = [0] * n_targets
        self.new_live = [0] * n_targets
        self.new_gpus = 0
        self.binding: dict[int, tuple[int, tuple[str, ...]]] = {}
        # team quotas and budgets taken so far, when the problem has any
        self.limits = Limits(problem) if self.policy.team_limits else None
        # What depends on the problem alone is shared by every ledger of it (see `_Static`).
        self._feasible = st.feasible
        self._top = [0] * n_targets  # most GPUs left on any node of the target (a bound)
        self._rate_order = st.rate_order
        self._shape_order = st.shape_order
        # Capacity only shrinks while nothing is removed, so a shape that found no run-now option finds none
        # until something is: shape -> the `_freed` count when it found none.
        self._freed = 0
        self._none: dict[tuple, int] = {}
        # Per target: a count of changes to its nodes, and the node each single-node size would take.
        self._tver = [0] * n_targets
        self._slot_memo: dict[tuple, tuple[int, Slot | None]] = {}
        self._cands = st.cands
        # the forecasts and wait costs of this problem's plans priced so far (see assemble.py)
        self.priced = st.priced
        self.target_index = st.target_index
        self._max_new = st.max_new
        self._gpn = st.gpn
        self._ready_floor = st.ready_floor
        # The nodes as observed, filed as `_add_slot` files them (in target and node order).
        slots, buckets, whole_free, top, tver = self.slots, self._buckets, self._whole_free, self._top, self._tver
        for ti, name, g, c, m, ready, idle in st.nodes:
            sl = Slot(name, ti, g, c, m, ready, idle, False)
            slots[(ti, name)] = sl
            tver[ti] += 1
            buckets[ti].setdefault(g, {})[name] = sl
            if g > top[ti]:
                top[ti] = g
            if idle:
                whole_free[ti][name] = sl

    # -- bookkeeping -------------------------------------------------------------------------------

    def _add_slot(self, s: Slot) -> None:
        self.slots[(s.target, s.name)] = s
        self._file(s)

    def _file(self, s: Slot) -> None:
        self._tver[s.target] += 1
        if not s.whole:
            self._buckets[s.target].setdefault(s.g, {})[s.name] = s
            if s.g > self._top[s.target]:
                self._top[s.target] = s.g
        if s.idle and s.jobs == 0:
            self._whole_free[s.target][s.name] = s

    def _unfile(self, s: Slot) -> None:
        self._tver[s.target] += 1
        buckets = self._buckets[s.target]
        b = buckets.get(s.g)
        if b is not None:
            b.pop(s.name, None)
            if not b and s.g == self._top[s.target]:
                top = s.g
                while top > 0 and not buckets.get(top):
                    top -= 1
                self._top[s.target] = top
        self._whole_free[s.target].pop(s.name, None)

    def cap_room(self) -> float:
        if self.policy.max_cloud_gpus is None:
            return float("inf")
        return self.policy.max_cloud_gpus - self.policy.cloud_gpus_in_use - self.new_gpus

    def can_open(self, ti: int, count: int = 1) -> bool:
        t = self.targets[ti]
        if t.kind != "cloud" or count <= 0:
            return count <= 0
        return self.new_live[ti] + count <= t.max_new_nodes and count * t.gpus_per_node <= self.cap_room() + EPS

    def full_node_fits(self, job: JobDemand, t: Target) -> bool:
        return job.gpus <= t.gpus_per_node and job.cpu <= t.cpu_per_node + EPS and job.memory_gib <= (
            t.memory_gib_per_node + EPS
        )

    def feasible_targets(self, i: int) -> list[int]:
        job = self.jobs[i]
        shape = (job.gpus, job.cpu, job.memory_gib, job.gpu_types, job.allowed_targets, job.checkpointable)
        ts = self._feasible.get(shape)
        if ts is None:
            ts = [ti for ti, t in enumerate(self.targets) if feasible(job, t, self.policy)]
            self._feasible[shape] = ts
        return ts

    def _open(self, ti: int) -> Slot:
        t = self.targets[ti]
        name = f"{t.id}/new-{self._new_seq[ti]}"
        while (ti, name) in self.slots:
            self._new_seq[ti] += 1
            name = f"{t.id}/new-{self._new_seq[ti]}"
        self._new_seq[ti] += 1
        s = Slot(name, ti, t.gpus_per_node, t.cpu_per_node, t.memory_gib_per_node, t.provisioning_h, True, True)
        self._add_slot(s)
        self.new_live[ti] += 1
        self.new_gpus += t.gpus_per_node
        return s

    def _close(self, s: Slot) -> None:
        self._unfile(s)
        del self.slots[(s.target, s.name)]
        self.new_live[s.target] -= 1
        self.new_gpus -= self.targets[s.target].gpus_per_node

    def _bind_slot(self, s: Slot, job: JobDemand) -> None:
        self._unfile(s)
        s.g -= job.gpus
        s.c -= job.cpu
        s.m -= job.memory_gib
        s.jobs += 1
        if job.nodes > 1:
            s.whole = True
        self._file(s)

    def _unbind_slot(self, s: Slot, job: JobDemand) -> None:
        self._freed += 1
        self._unfile(s)
        s.g += job.gpus
        s.c += job.cpu
        s.m += job.memory_gib
        s.jobs -= 1
        if job.nodes > 1:
            s.whole = False
        if s.new and s.jobs == 0:
            self._close(s)
            return
        self._file(s)

    # -- binding -----------------------------------------------------------------------------------

    def new_name_target(self, name: str) -> int | None:
        """The target a not-yet-open new-node name belongs to, or None when the name is not one."""
        tid, sep, rest = name.rpartition("/new-")
        if not sep or not rest.isdigit():
            return None
        return self.target_index.get(tid)

    def can_place(self, i: int, ti: int, names: Sequence[str]) -> bool:
        """Would binding job `i` to these nodes of target `ti` keep every node within capacity?"""
        job = self.jobs[i]
        if i in self.binding or ti not in self.feasible_targets(i) or len(names) != job.nodes:
            return False
        if len(set(names)) != len(names):
            return False
        t = self.targets[ti]
        fresh = 0
        for name in names:
            s = self.slots.get((ti, name))
            if s is None:
                if self.new_name_target(name) != ti or not self.full_node_fits(job, t):
                    return False
                fresh += 1
            elif not s.fits(job):
                return False
        if self.limits is not None and self.limits.limits(job) and self.limits.blocks(job, t) is not None:
            return False
        return self.can_open(ti, fresh)

    def place(self, i: int, ti: int, names: Sequence[str]) -> None:
        """Bind job `i`; the caller has checked `can_place`. Unknown new-node names are opened."""
        job = self.jobs[i]
        bound: list[str] = []
        for name in names:
            s = self.slots.get((ti, name))
            if s is None:
                s = Slot(name, ti, *self._full(ti), self.targets[ti].provisioning_h, True, True)
                self._add_slot(s)
                self.new_live[ti] += 1
                self.new_gpus += self.targets[ti].gpus_per_node
            self._bind_slot(s, job)
            bound.append(s.name)
        self.binding[i] = (ti, tuple(bound))
        if self.limits is not None:
            self.limits.charge(job, self.targets[ti], 1)

    def _full(self, ti: int) -> tuple[int, float, float]:
        t = self.targets[ti]
        return t.gpus_per_node, t.cpu_per_node, t.memory_gib_per_node

    def take(self, i: int, opt: Option) -> None:
        """Bind job `i` as `opt` says, opening its fresh nodes."""
        job = self.jobs[i]
        names = list(opt.nodes)
        for name in names:
            self._bind_slot(self.slots[(opt.target, name)], job)
        for _ in range(opt.fresh):
            s = self._open(opt.target)
            self._bind_slot(s, job)
            names.append(s.name)
        self.binding[i] = (opt.target, tuple(names))
        if self.limits is not None:
            self.limits.charge(job, self.targets[opt.target], 1)

    def remove(self, i: int) -> None:
        ti, names = self.binding.pop(i)
        job = self.jobs[i]
        for name in names:
            self._unbind_slot(self.slots[(ti, name)], job)
        if self.limits is not None:
            self.limits.charge(job, self.targets[ti], -1)

    def start_h(self, ti: int, names: Sequence[str]) -> float:
        return max((self.slots[(ti, n)].ready for n in names), default=0.0)

    # -- options -----------------------------------------------------------------------------------

    def best_option(self, i: int) -> Option | None:
        """The cheapest way to run job `i` now, given what is bound; None when there is none."""
        job = self.jobs[i]
        lim = self.limits
        if lim is not None and lim.limits(job):
            held = {ti for ti in self.feasible_targets(i) if lim.blocks(job, self.targets[ti]) is not None}
            if held:
                # what the quota or budget leaves: not the same for every job of the shape, so nothing is kept
                return self._best_generic(i, held)
        shape = (job.gpus, job.cpu, job.memory_gib, job.nodes, job.gpu_types, job.allowed_targets,
                 job.checkpointable)
        if self._none.get(shape) == self._freed:
            return None
        if job.nodes == 1 and self._rate_order:
            best = self._best_single(job, i, shape)
            if best is None:
                self._none[shape] = self._freed
            return best
        best = self._best_generic(i, ())
        if best is None:
            self._none[shape] = self._freed
        return best

    def _best_generic(self, i: int, held: Collection[int]) -> Option | None:
        """`best_option` on every feasible target but those `held` back, one target after the other."""
        job = self.jobs[i]
        best = None
        best_key: tuple[float, int, int] | None = None
        single = job.nodes == 1
        room = self.cap_room() + EPS  # nothing binds while options are sought
        top, live, max_new, gpn, floor = self._top, self.new_live, self._max_new, self._gpn, self._ready_floor
        for ti in self._by_run_cost(i):
            if ti in held:
                continue
            has_room = top[ti] >= job.gpus if single else bool(self._whole_free[ti])
            if not has_room and not (live[ti] < max_new[ti] and gpn[ti] <= room):
                continue
            run = run_cost(job, self.targets[ti])
            # Every option on a target costs at least its run cost, and targets come cheapest first.
            if best is not None and run > best.cost:
                break
            # ... and at least the delay until the target's earliest node can be ready.
            if best is not None and run + delay_cost(job, floor[ti]) > best.cost:
                continue
            opt = self._option(i, ti, run)
            if opt is None:
                continue
            # On equal cost, on-prem first (no cloud spend on the bill), then target order.
            key = (opt.cost, 0 if self.targets[ti].kind == "onprem" else 1, ti)
            if best_key is None or key < best_key:
                best, best_key = opt, key
        return best

    def _best_single(self, job: JobDemand, i: int, shape: tuple) -> Option | None:
        """`best_option` for a single-node job when targets rank alike for every job (`_rate_order`): the
        targets in that order with what about them is fixed for the shape (may a new node host it at all,
        how soon can any node be ready), then per target the node it would take (kept per size until the
        target's nodes change) and whether a new node may open now."""
        cands = self._cands.get(shape)
        if cands is None:
            cands = self._cands[shape] = [
                (ti, t, t.kind == "cloud" and t.max_new_nodes > 0 and self.full_node_fits(job, t),
                 self._ready_floor[ti])
                for ti in self._by_run_cost(i)
                for t in (self.targets[ti],)
            ]
        room = self.cap_room() + EPS
        top, live = self._top, self.new_live
        best: Option | None = None
        best_key: tuple[float, int, int] | None = None
        for ti, t, may_open, floor in cands:
            slot = self._slot_for(ti, job) if top[ti] >= job.gpus else None
            fresh = may_open and live[ti] < t.max_new_nodes and t.gpus_per_node <= room
            if slot is None and not fresh:
                continue
            run = run_cost(job, t)
            if best is not None:
                # Every option on a target costs at least its run cost, and targets come cheapest first ...
                if run > best.cost:
                    break
                # ... and at least the delay until the target's earliest node can be ready.
                least = run + delay_cost(job, floor)
                if least > best.cost:
                    continue
                # An option that can at best tie loses the tie to one of an earlier kind or target.
                if least == best.cost and ((0 if t.kind == "onprem" else 1), ti) > best_key[1:] and (
                        job.value_of_time >= 0 and self._st.over_ok[ti]):
                    continue
            opt: Option | None = None
            if slot is not None:
                opt = Option(ti, (slot.name,), 0, slot.ready, run + delay_cost(job, slot.ready))
            if fresh:
                cost = run + delay_cost(job, t.provisioning_h) + new_node_cost(t, self.policy)
                if opt is None or cost < opt.cost - EPS:
                    opt = Option(ti, (), 1, t.provisioning_h, cost)
            assert opt is not None
            # On equal cost, on-prem first (no cloud spend on the bill), then target order.
            key = (opt.cost, 0 if t.kind == "onprem" else 1, ti)
            if best_key is None or key < best_key:
                best, best_key = opt, key
        return best

    def by_run_cost(self, i: int) -> Iterator[tuple[float, int]]:
        """Job `i`'s feasible targets with its run cost there, cheapest first."""
        job = self.jobs[i]
        for ti in self._by_run_cost(i):
            yield run_cost(job, self.targets[ti]), ti

    def _by_run_cost(self, i: int) -> list[int]:
        job = self.jobs[i]
        if not self._rate_order:
            return [ti for _, ti in sorted((run_cost(job, self.targets[ti]), ti) for ti in self.feasible_targets(i))]
        shape = (job.gpus, job.cpu, job.memory_gib, job.gpu_types, job.allowed_targets, job.checkpointable)
        order = self._shape_order.get(shape)
        if order is None:
            order = sorted(
                self.feasible_targets(i),
                key=lambda ti: (self.targets[ti].price_per_node_h / (self.targets[ti].gpus_per_node
                                                                     * self.targets[ti].speed), ti),
            )
            self._shape_order[shape] = order
        return order

    def option_on(self, i: int, ti: int) -> Option | None:
        job, t = self.jobs[i], self.targets[ti]
        if self.limits is not None and self.limits.limits(job) and self.limits.blocks(job, t) is not None:
            return None
        return self._option(i, ti, run_cost(job, t))

    def _option(self, i: int, ti: int, run: float) -> Option | None:
        job = self.jobs[i]
        if job.nodes == 1:
            return self._single_option(job, ti, run)
        return self._gang_option(job, ti, run)

    def _single_option(self, job: JobDemand, ti: int, run: float) -> Option | None:
        t = self.targets[ti]
        found = self._slot_for(ti, job)
        best: Option | None = None
        if found is not None:
            best = Option(ti, (found.name,), 0, found.ready, run + delay_cost(job, found.ready))
        if t.kind == "cloud" and self.can_open(ti) and self.full_node_fits(job, t):
            cost = run + delay_cost(job, t.provisioning_h) + new_node_cost(t, self.policy)
            if best is None or cost < best.cost - EPS:
                best = Option(ti, (), 1, t.provisioning_h, cost)
        return best

    def _slot_for(self, ti: int, job: JobDemand) -> Slot | None:
        """The node of target `ti` a replica of single-node `job` would take now: the earliest ready among
        those it fits, then the tightest fit (which keeps big holes for big jobs). The same for every job of
        one size until the target's nodes change, so it is kept until then."""
        key = (ti, job.gpus, job.cpu, job.memory_gib)
        hit = self._slot_memo.get(key)
        if hit is not None and hit[0] == self._tver[ti]:
            return hit[1]
        found: Slot | None = None
        buckets = self._buckets[ti]
        # No slot of the target is ready before this: a slot found at it cannot be beaten.
        floor = self._ready_floor[ti] + EPS
        cpu, mem = job.cpu - EPS, job.memory_gib - EPS
        for g in range(job.gpus, self._top[ti] + 1):
            bucket = buckets.get(g)
            if not bucket:
                continue
            for s in bucket.values():
                if s.c >= cpu and s.m >= mem and not s.whole:
                    if found is None or s.ready < found.ready - EPS:
                        found = s
                        if s.ready <= floor:
                            break
            if found is not None and found.ready <= floor:
                break
        self._slot_memo[key] = (self._tver[ti], found)
        return found

    def _gang_option(self, job: JobDemand, ti: int, run: float) -> Option | None:
        t = self.targets[ti]
        k = job.nodes
        cands = sorted((s for s in self._whole_free[ti].values() if s.fits(job)), key=lambda s: (s.ready, s.name))
        max_fresh = 0
        if t.kind == "cloud" and self.full_node_fits(job, t):
            max_fresh = min(k, t.max_new_nodes - self.new_live[ti])
            if self.policy.max_cloud_gpus is not None and t.gpus_per_node > 0:
                max_fresh = min(max_fresh, int((self.cap_room() + EPS) // t.gpus_per_node))
        best: Option | None = None
        for fresh in range(0, max(0, max_fresh) + 1):
            need = k - fresh
            if need > len(cands):
                continue
            start = max(cands[need - 1].ready if need > 0 else 0.0, t.provisioning_h if fresh else 0.0)
            cost = run + delay_cost(job, start) + fresh * new_node_cost(t, self.policy)
            if best is None or cost < best.cost - EPS:
                best = Option(ti, tuple(s.name for s in cands[:need]), fresh, start, cost)
        return best

    def blocked(self, i: int) -> Blocked:
        """Why job `i` has no run-now option (call only when `best_option` is None)."""
        job = self.jobs[i]
        ts = self.feasible_targets(i)
        if not ts:
            return Blocked("nothing-fits", "")
        lim = self.limits
        if lim is not None and lim.limits(job):
            held = {ti: k for ti in ts if (k := lim.blocks(job, self.targets[ti])) is not None}
            clouds = [ti for ti in ts if self.targets[ti].kind == "cloud"]
            onprem = [ti for ti in ts if self.targets[ti].kind == "onprem"]
            quota = [ti for ti in onprem if held.get(ti) == "quota"]
            words = [lim.detail(job, "quota", self.targets[quota[0]])] if quota else []
            if clouds and all(held.get(ti) in ("budget", "team-cap") for ti in clouds):
                cheapest = min(clouds, key=lambda ti: run_cost(job, self.targets[ti]))
                kind = "team-cap" if held[cheapest] == "team-cap" else "budget"
                return Blocked(kind, "; ".join([lim.detail(job, kind, self.targets[cheapest]), *words]))
            if quota:
                rest = self._capacity_blocked(job, ts)
                cloud = {"cap": f"the cloud GPU cap of {self.policy.max_cloud_gpus} is reached",
                         "pool-limit": f"no new nodes left in {rest.detail}",
                         "full": "no cloud target has room"}[rest.kind] if clouds else ""
                return Blocked("quota", "; ".join([words[0], *([cloud] if cloud else [])]))
        return self._capacity_blocked(job, ts)

    def _capacity_blocked(self, job: JobDemand, ts: Sequence[int]) -> Blocked:
        capped: list[str] = []
        limited: list[str] = []
        for ti in ts:
            t = self.targets[ti]
            if t.kind != "cloud" or t.max_new_nodes <= 0 or not self.full_node_fits(job, t):
                continue
            need = job.nodes if job.nodes > 1 else 1
            if self.new_live[ti] + need > t.max_new_nodes:
                limited.append(t.name)
            elif need * t.gpus_per_node > self.cap_room() + EPS:
                capped.append(t.name)
        if capped:
            return Blocked("cap", ", ".join(capped))
        if limited:
            return Blocked("pool-limit", ", ".join(limited))
        return Blocked("full", "")

    def new_nodes(self) -> dict[str, int]:
        return {self.targets[ti].id: n for ti, n in enumerate(self.new_live) if n > 0}
