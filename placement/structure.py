"""The fixed structure of the CP-SAT model: ready-groups, node profiles, size keys, patterns, job classes.

Nothing here depends on how waiting is priced, so it is built once and shared by every round.
CPU and memory are counted in units of 1/64 of a node: demands rounded up, free capacity rounded down, so a
pattern that fits in units fits in the exact numbers too.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from spillover.placement.costs import cents, delay_cost, run_cost
from spillover.placement.feasibility import feasible
from spillover.placement.order import queue_order
from spillover.placement.patterns import Pattern, maximal_patterns
from spillover.placement.types import JobDemand, PlacementProblem, Target

GRID = 64  # CPU and memory units per node in the patterns

Key = tuple[bool, int, int, int]  # (gang replica, GPUs, CPU units, memory units)


@dataclass
class Group:
    """The nodes of one target that are ready at the same time, or the pool's new nodes."""

    target: int
    ready: float
    new: bool
    profiles: list[int] = field(default_factory=list)


@dataclass
class Profile:
    """Nodes of one group with the same free capacity (in units) and idleness, with their names."""

    target: int
    group: int
    cap: tuple[int, int, int]
    idle: bool
    new: bool
    nodes: list[str]
    patterns: list[Pattern] = field(default_factory=list)
    pattern_keys: list[tuple[int, ...]] = field(default_factory=list)  # per pattern: the size keys in it

    @property
    def count(self) -> int:
        return len(self.nodes)


@dataclass
class JobClass:
    """Jobs with the same shape and the same run-now costs everywhere."""

    members: list[int]  # job indices, queue order
    key_by_group: dict[int, int]  # group -> key id
    options: list[tuple[int, int]]  # (group, cost in cents)
    nodes: int  # replicas per job


def _units(x: float, unit: float, up: bool) -> int:
    if unit <= 0:
        return 0 if x <= 0 else 1 << 30
    v = x / unit
    return math.ceil(v - 1e-9) if up else math.floor(v + 1e-9)


class Structure:
    """What stays fixed across rounds: groups, profiles, size keys, patterns and job classes."""

    def __init__(self, problem: PlacementProblem) -> None:
        self.problem = problem
        policy = problem.policy
        targets = problem.targets
        self.groups: list[Group] = []
        self.profiles: list[Profile] = []
        self.keys: list[Key] = []
        self.key_target: list[int] = []
        self._key_ids: list[dict[Key, int]] = [{} for _ in targets]
        self.node_profile: dict[tuple[int, str], int] = {}
        self.new_profile: dict[int, int] = {}
        self.units = [
            (t.cpu_per_node / GRID if t.cpu_per_node > 0 else 0.0,
             t.memory_gib_per_node / GRID if t.memory_gib_per_node > 0 else 0.0)
            for t in targets
        ]
        room = math.inf if policy.max_cloud_gpus is None else policy.max_cloud_gpus - policy.cloud_gpus_in_use
        self.cap_room = room
        self.target_groups: list[list[int]] = [[] for _ in targets]

        # Feasibility and size keys depend only on a job's shape; many jobs share one.
        shape_keys: dict[tuple, list[tuple[int, int]]] = {}
        job_keys: list[list[tuple[int, int]]] = []  # per job: (target, size key) where it may run
        for job in problem.jobs:
            sig = (job.gpus, job.nodes, job.cpu, job.memory_gib, job.gpu_types, job.checkpointable,
                   job.allowed_targets)
            tk = shape_keys.get(sig)
            if tk is None:
                tk = [(ti, self.key(ti, job)) for ti, t in enumerate(targets) if feasible(job, t, policy)]
                shape_keys[sig] = tk
            job_keys.append(tk)

        for ti, t in enumerate(targets):
            self._build_target(ti, t)

        # Which groups can take a job of each shape: (group, size key, replicas) -> fits.
        self.group_ok: dict[tuple[int, int, int], bool] = {}
        classes: dict[tuple, JobClass] = {}
        for i in queue_order(problem.jobs):
            job = problem.jobs[i]
            opts: list[tuple[int, int]] = []
            kb: dict[int, int] = {}
            for ti, k in job_keys[i]:
                run = run_cost(job, targets[ti])
                for gi in self.target_groups[ti]:
                    if self._group_fits(gi, k, job.nodes):
                        opts.append((gi, cents(run + delay_cost(job, self.groups[gi].ready))))
                        kb[gi] = k
            ck = (job.gpus, job.nodes, job.cpu, job.memory_gib, tuple(opts))
            c = classes.get(ck)
            if c is None:
                classes[ck] = JobClass([i], kb, opts, job.nodes)
            else:
                c.members.append(i)
        self.classes = list(classes.values())
        self.job_class = [0] * len(problem.jobs)
        for ci, c in enumerate(self.classes):
            for i in c.members:
                self.job_class[i] = ci

    def key(self, ti: int, job: JobDemand) -> int:
        uc, um = self.units[ti]
        key: Key = (job.nodes > 1, job.gpus, _units(job.cpu, uc, True), _units(job.memory_gib, um, True))
        ids = self._key_ids[ti]
        k = ids.get(key)
        if k is None:
            k = len(self.keys)
            self.keys.append(key)
            self.key_target.append(ti)
            ids[key] = k
        return k

    def _build_target(self, ti: int, t: Target) -> None:
        uc, um = self.units[ti]
        by_ready: dict[float, int] = {}
        by_profile: dict[tuple, int] = {}
        for n in t.nodes:
            gi = by_ready.get(n.ready_in_h)
            if gi is None:
                gi = len(self.groups)
                self.groups.append(Group(ti, n.ready_in_h, False))
                self.target_groups[ti].append(gi)
                by_ready[n.ready_in_h] = gi
            cap = (n.free_gpus, _units(n.free_cpu, uc, False), _units(n.free_memory_gib, um, False))
            pk = (gi, cap, n.idle)
            pi = by_profile.get(pk)
            if pi is None:
                pi = len(self.profiles)
                self.profiles.append(Profile(ti, gi, cap, n.idle, False, []))
                self.groups[gi].profiles.append(pi)
                by_profile[pk] = pi
            self.profiles[pi].nodes.append(n.name)
            self.node_profile[(ti, n.name)] = pi
        if t.kind == "cloud" and t.max_new_nodes > 0:
            gi = len(self.groups)
            self.groups.append(Group(ti, t.provisioning_h, True))
            self.target_groups[ti].append(gi)
            pi = len(self.profiles)
            self.profiles.append(Profile(ti, gi, (t.gpus_per_node, GRID if uc > 0 else 0, GRID if um > 0 else 0),
                                          True, True, []))
            self.groups[gi].profiles.append(pi)
            self.new_profile[ti] = pi
        singles = [k for k in self._key_ids[ti].values() if not self.keys[k][0]]
        gangs = [k for k in self._key_ids[ti].values() if self.keys[k][0]]
        sizes = [self.keys[k][1:] for k in singles]
        for pi in [p for gi in self.target_groups[ti] for p in self.groups[gi].profiles]:
            prof = self.profiles[pi]
            pats = maximal_patterns(prof.cap, sizes)
            prof.patterns = [tuple((singles[i], n) for i, n in p) for p in pats]
            if prof.idle:
                prof.patterns += [((k, 1),) for k in gangs if _fits(self.keys[k][1:], prof.cap)]
            prof.pattern_keys = [tuple(k for k, _ in pat) for pat in prof.patterns]

    def _group_fits(self, gi: int, k: int, nodes: int) -> bool:
        memo = self.group_ok.get((gi, k, nodes))
        if memo is None:
            memo = self._group_fits_uncached(gi, k, nodes)
            self.group_ok[(gi, k, nodes)] = memo
        return memo

    def _group_fits_uncached(self, gi: int, k: int, nodes: int) -> bool:
        g = self.groups[gi]
        t = self.problem.targets[g.target]
        gang, *size = self.keys[k]
        if g.new:
            return nodes <= t.max_new_nodes and nodes * t.gpus_per_node <= self.cap_room and _fits(
                size, self.profiles[g.profiles[0]].cap)
        if not gang:
            if not any(size):
                return bool(g.profiles)
            return any(any(kk == k for p in self.profiles[pi].patterns for kk, _ in p) for pi in g.profiles)
        whole = sum(self.profiles[pi].count for pi in g.profiles
                    if self.profiles[pi].idle and _fits(size, self.profiles[pi].cap))
        return whole >= nodes


def _fits(size: Sequence[int], cap: Sequence[int]) -> bool:
    return all(s <= c for s, c in zip(size, cap))
