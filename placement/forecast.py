"""On-prem start forecast: a conservative list schedule of waiting jobs over the running jobs' expected ends.

Each on-prem node keeps its capacity as chunks `(available_from_h, gpus, cpu, memory)`: what is free now is a
chunk at 0, each release a chunk at its time. A reservation takes what it needs from the earliest chunks and
gives it back as one chunk at its end. The sum of chunks available by time s therefore never exceeds what is
truly free at s, and it never decreases as s grows, so a job's earliest start on a node is simply the first
chunk time at which the running sums cover its demand, whatever its duration. The price of that speed is that
a later job never slips into a gap in front of an earlier reservation: forecasts are conservative (never
earlier than a real schedule with the same reservations could start the job). Because reservations only ever
push a node's fit times later, the best node per demand shape is kept in a lazily refreshed heap, so thousands
of jobs cost a few heap operations each.
"""

from __future__ import annotations

import heapq
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from spillover.placement.feasibility import feasible
from spillover.placement.memo import kept
from spillover.placement.order import queue_order
from spillover.placement.types import JobDemand, Node, Policy, Release, Target

EPS = 1e-9
INF = float("inf")


@dataclass(frozen=True)
class Forecast:
    """A waiting job's expected on-prem start; `target` is None when no on-prem target can ever run it."""

    start_h: float
    target: str | None


class _FNode:
    __slots__ = ("name", "chunks", "version", "gang_ok", "cap")

    def __init__(self, node: Node, releases: list[Release], gpus_per_node: int) -> None:
        self.name = node.name
        # What is free now becomes usable when the node is ready (0 unless it is still booting).
        now = max(0.0, node.ready_in_h)
        by_time: dict[float, list[float]] = {now: [now, float(node.free_gpus), node.free_cpu, node.free_memory_gib]}
        for r in releases:
            at = max(0.0, r.at_h)
            c = by_time.get(at)
            if c is None:
                c = by_time[at] = [at, 0.0, 0.0, 0.0]
            c[1] += r.gpus
            c[2] += r.cpu
            c[3] += r.memory_gib
        chunks = self.chunks = [by_time[t] for t in sorted(by_time)] if len(by_time) > 1 else [by_time[now]]
        self.cap = _capacity(chunks)
        self.version = 0
        # A busy node becomes whole again only if its releases account for every GPU on it.
        self.gang_ok = node.idle or (bool(releases) and self.cap[0] >= gpus_per_node - EPS)

    def copy(self) -> _FNode:
        other = _FNode.__new__(_FNode)
        other.name = self.name
        other.chunks = [ch[:] for ch in self.chunks]
        other.version = self.version
        other.gang_ok = self.gang_ok
        other.cap = self.cap
        return other

    def fit(self, g: float, c: float, m: float) -> float:
        sg = sc = sm = 0.0
        g -= EPS
        c -= EPS
        m -= EPS
        for t, cg, cc, cm in self.chunks:
            sg += cg
            sc += cc
            sm += cm
            if sg >= g and sc >= c and sm >= m:
                return t
        return INF

    def whole_at(self) -> float:
        return self.chunks[-1][0] if self.chunks else 0.0

    def take(self, g: float, c: float, m: float, start: float, end: float) -> None:
        ng, nc, nm = g, c, m
        limit = start + EPS
        for ch in self.chunks:
            if ch[0] > limit or (ng <= 0 and nc <= 0 and nm <= 0):
                break
            v = ch[1]
            if ng > 0 and v > 0:
                got = ng if ng < v else v
                ch[1] = v - got
                ng -= got
            v = ch[2]
            if nc > 0 and v > 0:
                got = nc if nc < v else v
                ch[2] = v - got
                nc -= got
            v = ch[3]
            if nm > 0 and v > 0:
                got = nm if nm < v else v
                ch[3] = v - got
                nm -= got
        self.chunks = [ch for ch in self.chunks if ch[1] > EPS or ch[2] > EPS or ch[3] > EPS]
        self._give(end, g, c, m)

    def take_all(self, end: float) -> None:
        self.chunks = []
        self._give(end, *self.cap)

    def _give(self, at: float, g: float, c: float, m: float) -> None:
        chunks = self.chunks
        # Chunks are in time order: the first one within EPS of `at` is the one the time belongs to.
        k = bisect_left(chunks, at - EPS, key=_time)
        if k < len(chunks) and chunks[k][0] <= at + EPS:
            ch = chunks[k]
            ch[1] += g
            ch[2] += c
            ch[3] += m
        else:
            chunks.insert(k, [at, g, c, m])
        self.version += 1


def _time(chunk: list[float]) -> float:
    return chunk[0]


@dataclass
class _Spot:
    """Where and when a job would start on one target."""

    start: float
    target: int
    nodes: list[int]


def _target_nodes(t: Target) -> list[_FNode] | None:
    """A target's nodes as `_FNode` builds them, in one pass over all its releases (None when two of its nodes
    share a name, which that construction resolves its own way)."""
    names = [n.name for n in t.nodes]
    if len(set(names)) != len(names):
        return None
    # per node: its chunks by time, the free capacity now first, then each release added in order
    by_node: dict[str, dict[float, list[float]]] = {}
    for n in t.nodes:
        now = max(0.0, n.ready_in_h)
        by_node[n.name] = {now: [now, float(n.free_gpus), n.free_cpu, n.free_memory_gib]}
    known = len(by_node)
    released: dict[str, bool] = {}
    get = by_node.get
    for r in t.releases:
        name = r.node
        by_time = get(name)
        if by_time is None:
            # a fully busy node left out of `nodes`: nothing free now, its releases still bring capacity back
            by_time = by_node[name] = {0.0: [0.0, 0.0, 0.0, 0.0]}
        released[name] = True
        at = r.at_h
        if not at > 0.0:  # max(0.0, at), NaN included
            at = 0.0
        c = by_time.get(at)
        if c is None:
            by_time[at] = [at, 0.0 + r.gpus, 0.0 + r.cpu, 0.0 + r.memory_gib]
        else:
            c[1] += r.gpus
            c[2] += r.cpu
            c[3] += r.memory_gib
    out: list[_FNode] = []
    gpn = t.gpus_per_node
    for k, (name, by_time) in enumerate(by_node.items()):
        fn = _FNode.__new__(_FNode)
        fn.name = name
        chunks = fn.chunks = [by_time[x] for x in sorted(by_time)] if len(by_time) > 1 else list(by_time.values())
        fn.cap = _capacity(chunks)
        fn.version = 0
        idle = t.nodes[k].idle if k < known else False
        fn.gang_ok = idle or (name in released and fn.cap[0] >= gpn - EPS)
        out.append(fn)
    return out


class _Template:
    """The on-prem nodes of a tuple of targets before any start or reservation, copied by each forecast."""

    def __init__(self, targets: Sequence[Target]) -> None:
        self.source = targets
        self.targets = [t for t in targets if t.kind == "onprem"]
        self.nodes: list[list[_FNode]] = []
        self.index: list[dict[str, int]] = []
        for t in self.targets:
            nodes = _target_nodes(t)
            if nodes is None:
                rel: dict[str, list[Release]] = {}
                for r in t.releases:
                    rel.setdefault(r.node, []).append(r)
                nodes = [_FNode(n, rel.pop(n.name, []), t.gpus_per_node) for n in t.nodes]
                # A fully busy node may be left out of `nodes`; its releases still bring capacity back.
                for name, rs in rel.items():
                    nodes.append(_FNode(Node(name, 0, 0.0, 0.0), rs, t.gpus_per_node))
            self.nodes.append(nodes)
            self.index.append({n.name: i for i, n in enumerate(nodes)})
        self.target_index = {t.id: ti for ti, t in enumerate(self.targets)}
        # demand -> per target: the heap of (fit time, node, version 0) over the untouched nodes
        self._heaps: dict[tuple[float, float, float], list[list[tuple[float, int, int]] | None]] = {}

    def heap(self, ti: int, demand: tuple[float, float, float]) -> list[tuple[float, int, int]]:
        """A copy of the heap of target `ti`'s nodes by when `demand` first fits, before any booking."""
        per_target = self._heaps.get(demand)
        if per_target is None:
            per_target = self._heaps[demand] = [None] * len(self.targets)
        heap = per_target[ti]
        if heap is None:
            heap = []
            for i, n in enumerate(self.nodes[ti]):
                t = n.fit(*demand)
                if t < INF:
                    heap.append((t, i, n.version))
            heapq.heapify(heap)
            per_target[ti] = heap
        return list(heap)


def _capacity(chunks: Sequence[list]) -> tuple[float, float, float]:
    """GPUs, CPUs and memory a node's chunks free in all."""
    g = c = m = 0
    for ch in chunks:
        g += ch[1]
        c += ch[2]
        m += ch[3]
    return (g, c, m)


# A solve forecasts the same targets many times; their starting state is built once. Keyed by the identity of
# the (immutable) tuple, which the entry keeps alive so that the identity cannot be reused meanwhile.
_TEMPLATES: dict[int, tuple[tuple[Target, ...], _Template]] = {}
_TEMPLATES_KEPT = 8


def _template(targets: Sequence[Target]) -> _Template:
    if not isinstance(targets, tuple):
        return _Template(targets)
    return kept(_TEMPLATES, targets, _Template, _TEMPLATES_KEPT)


class ForecastState:
    """The on-prem targets' capacity over time, as reservations are added in queue order."""

    def __init__(self, targets: Sequence[Target], policy: Policy) -> None:
        tpl = _template(targets)
        self._tpl = tpl
        self.policy = policy
        self.targets = tpl.targets
        # The template's nodes until one is booked on: then a copy of its own (`_own`); most stay untouched.
        self._nodes: list[list[_FNode]] = [list(nodes) for nodes in tpl.nodes]
        self._owned: list[list[bool]] = [[False] * len(nodes) for nodes in tpl.nodes]
        self._index = tpl.index
        self._target_index = tpl.target_index
        # demand -> per target: heap of (fit time, node, node version)
        self._heaps: dict[tuple[float, float, float], list[list[tuple[float, int, int]] | None]] = {}
        self._gang_heaps: dict[tuple[int, float, float, float], list[tuple[float, int, int]]] = {}
        self._feasible: dict[tuple, list[int]] = {}

    def _own(self, ti: int, ni: int) -> _FNode:
        """Node ni of on-prem target ti, to book on: this state's own copy, never the template's."""
        if not self._owned[ti][ni]:
            self._nodes[ti][ni] = self._nodes[ti][ni].copy()
            self._owned[ti][ni] = True
        return self._nodes[ti][ni]

    def duration(self, job: JobDemand, ti: int) -> float:
        return job.runtime_h / self.targets[ti].speed

    def consume_now(self, job: JobDemand, target_id: str, node_names: Sequence[str]) -> None:
        """A job started now: it holds its nodes from 0 for its runtime (ahead of every waiting job)."""
        ti = self._target_index.get(target_id)
        if ti is None:
            return
        end = self.duration(job, ti)
        for name in node_names:
            ni = self._index[ti].get(name)
            if ni is None:
                continue
            node = self._own(ti, ni)
            if job.nodes > 1:
                node.take_all(max(end, node.whole_at()))
            else:
                start = node.fit(job.gpus, job.cpu, job.memory_gib)
                if start == INF:
                    start = node.whole_at()
                node.take(job.gpus, job.cpu, job.memory_gib, start, start + end)

    def spot_on(self, job: JobDemand, ti: int) -> _Spot | None:
        """Earliest start of `job` on on-prem target `ti` given the reservations so far (None: never)."""
        if job.nodes == 1:
            start, ni = self._best_single(ti, (float(job.gpus), job.cpu, job.memory_gib))
            return None if start == INF else _Spot(start, ti, [ni])
        chosen = self._best_whole(ti, (float(job.gpus), job.cpu, job.memory_gib), job.nodes)
        if chosen is None:
            return None
        return _Spot(chosen[-1][0], ti, [i for _, i in chosen])

    def feasible_targets(self, job: JobDemand) -> list[int]:
        """The on-prem targets (by index here) that may ever run `job`."""
        shape = (job.gpus, job.cpu, job.memory_gib, job.gpu_types, job.allowed_targets, job.checkpointable)
        ts = self._feasible.get(shape)
        if ts is None:
            ts = [ti for ti, t in enumerate(self.targets) if feasible(job, t, self.policy)]
            self._feasible[shape] = ts
        return ts

    def best_spot(self, job: JobDemand) -> _Spot | None:
        if job.nodes == 1:
            found = self._best_single_anywhere(job)
            return None if found is None else _Spot(found[0], found[1], [found[2]])
        best: _Spot | None = None
        for ti in self.feasible_targets(job):
            s = self.spot_on(job, ti)
            if s is None:
                continue
            if best is None or s.start < best.start - EPS:
                best = s
        return best

    def _best_single_anywhere(self, job: JobDemand) -> tuple[float, int, int] | None:
        """(start, target, node) of a single-node job's earliest start on any on-prem target, or None."""
        demand = (float(job.gpus), job.cpu, job.memory_gib)
        best: tuple[float, int, int] | None = None
        for ti in self.feasible_targets(job):
            start, ni = self._best_single(ti, demand)
            if start != INF and (best is None or start < best[0] - EPS):
                best = (start, ti, ni)
        return best

    def earliest(self, job: JobDemand) -> Forecast:
        if job.nodes == 1:
            found = self._best_single_anywhere(job)
            if found is None:
                return Forecast(self.policy.max_wait_h, None)
            return Forecast(found[0], self.targets[found[1]].id)
        s = self.best_spot(job)
        if s is None:
            return Forecast(self.policy.max_wait_h, None)
        return Forecast(s.start, self.targets[s.target].id)

    def peek(self, job: JobDemand) -> tuple[Forecast, _Spot | None]:
        """`earliest`, and the spot it found, which `book` reserves if nothing changed in between."""
        s = self.best_spot(job)
        if s is None:
            return Forecast(self.policy.max_wait_h, None), None
        return Forecast(s.start, self.targets[s.target].id), s

    def book(self, job: JobDemand, s: _Spot | None) -> None:
        """Reserve the spot `peek` just found for `job` (None: it can never run on-prem; nothing to book)."""
        if s is None:
            return
        end = s.start + self.duration(job, s.target)
        for ni in s.nodes:
            node = self._own(s.target, ni)
            if job.nodes > 1:
                node.take_all(end)
            else:
                node.take(job.gpus, job.cpu, job.memory_gib, s.start, end)

    def reserve(self, job: JobDemand) -> Forecast:
        """Book the job's earliest start and return it; jobs that can never run on-prem book nothing."""
        if job.nodes == 1:
            found = self._best_single_anywhere(job)
            if found is None:
                return Forecast(self.policy.max_wait_h, None)
            start, ti, ni = found
            t = self.targets[ti]
            self._own(ti, ni).take(job.gpus, job.cpu, job.memory_gib, start, start + job.runtime_h / t.speed)
            return Forecast(start, t.id)
        s = self.best_spot(job)
        if s is None:
            return Forecast(self.policy.max_wait_h, None)
        end = s.start + self.duration(job, s.target)
        for ni in s.nodes:
            self._own(s.target, ni).take_all(end)
        return Forecast(s.start, self.targets[s.target].id)

    def _best_whole(
        self, ti: int, demand: tuple[float, float, float], k: int
    ) -> list[tuple[float, int]] | None:
        """The k nodes that become wholly free earliest among those a gang replica fits, or None."""
        key = (ti, *demand)
        heap = self._gang_heaps.get(key)
        nodes = self._nodes[ti]
        if heap is None:
            g, c, m = demand
            heap = [
                (n.whole_at(), i, n.version)
                for i, n in enumerate(nodes)
                if n.gang_ok and n.cap[0] >= g - EPS and n.cap[1] >= c - EPS and n.cap[2] >= m - EPS
            ]
            heapq.heapify(heap)
            self._gang_heaps[key] = heap
        fresh: list[tuple[float, int, int]] = []
        # Like the single-node heaps: whole-free times only grow, so stale entries are refreshed lazily.
        while heap and len(fresh) < k:
            t, i, ver = heapq.heappop(heap)
            node = nodes[i]
            if ver == node.version:
                fresh.append((t, i, ver))
            else:
                heapq.heappush(heap, (node.whole_at(), i, node.version))
        for e in fresh:
            heapq.heappush(heap, e)
        if len(fresh) < k:
            return None
        return [(t, i) for t, i, _ in fresh]

    def _best_single(self, ti: int, demand: tuple[float, float, float]) -> tuple[float, int]:
        per_target = self._heaps.get(demand)
        if per_target is None:
            per_target = self._heaps[demand] = [None] * len(self.targets)
        heap = per_target[ti]
        nodes = self._nodes[ti]
        if heap is None:
            # Bookings since the start only push fit times later, and they bumped the nodes' versions: the
            # untouched nodes' heap is a valid start whose stale entries get refreshed below.
            heap = per_target[ti] = self._tpl.heap(ti, demand)
        # Entries go stale when their node takes a reservation; fit times only grow, so a stale entry
        # can only be too early and is refreshed when it reaches the top.
        while heap:
            t, i, ver = heap[0]
            node = nodes[i]
            if ver == node.version:
                return t, i
            heapq.heappop(heap)
            t = node.fit(*demand)
            if t < INF:
                heapq.heappush(heap, (t, i, node.version))
        return INF, -1


def forecast_indexed(
    targets: Sequence[Target],
    jobs: Sequence[JobDemand],
    policy: Policy,
    started: Iterable[tuple[JobDemand, str, Sequence[str]]] = (),
    probes: Iterable[int] = (),
) -> list[Forecast]:
    """`forecast_starts` by position in `jobs` (job ids need not be unique here)."""
    state = ForecastState(targets, policy)
    for job, tid, nodes in started:
        state.consume_now(job, tid, nodes)
    probe = set(probes)
    never = Forecast(policy.max_wait_h, None)
    out: list[Forecast] = [never] * len(jobs)
    ids = [t.id for t in state.targets]
    speeds = [t.speed for t in state.targets]
    best_single = state._best_single
    own = state._own
    for i in queue_order(jobs):
        job = jobs[i]
        if job.nodes != 1:
            out[i] = state.earliest(job) if i in probe else state.reserve(job)
            continue
        # The single-node case of `reserve` and `earliest`, inlined: most of a forecast's time is here.
        demand = (float(job.gpus), job.cpu, job.memory_gib)
        best_t = INF
        best_ti = best_ni = -1
        for ti in state.feasible_targets(job):
            start, ni = best_single(ti, demand)
            if start != INF and (best_ti < 0 or start < best_t - EPS):
                best_t, best_ti, best_ni = start, ti, ni
        if best_ti < 0:
            continue
        if i not in probe:
            own(best_ti, best_ni).take(job.gpus, job.cpu, job.memory_gib, best_t,
                                       best_t + job.runtime_h / speeds[best_ti])
        out[i] = Forecast(best_t, ids[best_ti])
    return out


def forecast_starts(
    targets: Sequence[Target],
    jobs: Sequence[JobDemand],
    policy: Policy | None = None,
    started: Iterable[tuple[JobDemand, str, Sequence[str]]] = (),
    probes: Iterable[str] = (),
) -> dict[str, Forecast]:
    """Each job's expected on-prem start, by a conservative list schedule.

    `started` are jobs the plan starts now on on-prem targets, as (job, target id, node names); they hold
    their nodes from time 0 ahead of everyone. The other `jobs` reserve, in queue order, the earliest time
    at which they fit on one on-prem target (ties go to the target listed first). Jobs named in `probes`
    are only asked where they would start if they waited (behind the jobs ahead of them) and reserve
    nothing, so they delay no one.
    """
    probe = set(probes)
    idx = [i for i, j in enumerate(jobs) if j.id in probe]
    fc = forecast_indexed(targets, jobs, policy or Policy(), started, idx)
    return {j.id: f for j, f in zip(jobs, fc)}
