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
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from placement.feasibility import feasible
from placement.order import queue_order
from placement.types import JobDemand, Node, Policy, Release, Target

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
        by_time: dict[float, list[float]] = {now: [float(node.free_gpus), node.free_cpu, node.free_memory_gib]}
        for r in releases:
            c = by_time.setdefault(max(0.0, r.at_h), [0.0, 0.0, 0.0])
            c[0] += r.gpus
            c[1] += r.cpu
            c[2] += r.memory_gib
        self.chunks: list[list[float]] = [[t, *v] for t, v in sorted(by_time.items())]
        self.cap = (
            sum(c[1] for c in self.chunks),
            sum(c[2] for c in self.chunks),
            sum(c[3] for c in self.chunks),
        )
        self.version = 0
        # A busy node becomes whole again only if its releases account for every GPU on it.
        self.gang_ok = node.idle or (bool(releases) and self.cap[0] >= gpus_per_node - EPS)

    def fit(self, g: float, c: float, m: float) -> float:
        sg = sc = sm = 0.0
        for t, cg, cc, cm in self.chunks:
            sg += cg
            sc += cc
            sm += cm
            if sg >= g - EPS and sc >= c - EPS and sm >= m - EPS:
                return t
        return INF

    def whole_at(self) -> float:
        return self.chunks[-1][0] if self.chunks else 0.0

    def take(self, g: float, c: float, m: float, start: float, end: float) -> None:
        need = [g, c, m]
        for ch in self.chunks:
            if ch[0] > start + EPS:
                break
            for k in range(3):
                got = min(need[k], ch[k + 1])
                if got > 0:
                    ch[k + 1] -= got
                    need[k] -= got
        self.chunks = [ch for ch in self.chunks if ch[1] > EPS or ch[2] > EPS or ch[3] > EPS]
        self._give(end, g, c, m)

    def take_all(self, end: float) -> None:
        self.chunks = []
        self._give(end, *self.cap)

    def _give(self, at: float, g: float, c: float, m: float) -> None:
        for ch in self.chunks:
            if abs(ch[0] - at) <= EPS:
                ch[1] += g
                ch[2] += c
                ch[3] += m
                break
        else:
            self.chunks.append([at, g, c, m])
            self.chunks.sort(key=lambda ch: ch[0])
        self.version += 1


@dataclass
class _Spot:
    """Where and when a job would start on one target."""

    start: float
    target: int
    nodes: list[int]


class ForecastState:
    """The on-prem targets' capacity over time, as reservations are added in queue order."""

    def __init__(self, targets: Sequence[Target], policy: Policy) -> None:
        self.policy = policy
        self.targets = [t for t in targets if t.kind == "onprem"]
        self._nodes: list[list[_FNode]] = []
        self._index: list[dict[str, int]] = []
        for t in self.targets:
            rel: dict[str, list[Release]] = {}
            for r in t.releases:
                rel.setdefault(r.node, []).append(r)
            nodes = [_FNode(n, rel.pop(n.name, []), t.gpus_per_node) for n in t.nodes]
            # A fully busy node may be left out of `nodes`; its releases still bring capacity back.
            for name, rs in rel.items():
                nodes.append(_FNode(Node(name, 0, 0.0, 0.0), rs, t.gpus_per_node))
            self._nodes.append(nodes)
            self._index.append({n.name: i for i, n in enumerate(nodes)})
        self._heaps: dict[tuple[int, float, float, float], list[tuple[float, int, int]]] = {}
        self._gang_heaps: dict[tuple[int, float, float, float], list[tuple[float, int, int]]] = {}

    def duration(self, job: JobDemand, ti: int) -> float:
        return job.runtime_h / self.targets[ti].speed

    def consume_now(self, job: JobDemand, target_id: str, node_names: Sequence[str]) -> None:
        """A job started now: it holds its nodes from 0 for its runtime (ahead of every waiting job)."""
        for ti, t in enumerate(self.targets):
            if t.id == target_id:
                break
        else:
            return
        end = self.duration(job, ti)
        for name in node_names:
            ni = self._index[ti].get(name)
            if ni is None:
                continue
            node = self._nodes[ti][ni]
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

    def best_spot(self, job: JobDemand) -> _Spot | None:
        best: _Spot | None = None
        for ti, t in enumerate(self.targets):
            if not feasible(job, t, self.policy):
                continue
            s = self.spot_on(job, ti)
            if s is None:
                continue
            if best is None or s.start < best.start - EPS:
                best = s
        return best

    def earliest(self, job: JobDemand) -> Forecast:
        s = self.best_spot(job)
        if s is None:
            return Forecast(self.policy.max_wait_h, None)
        return Forecast(s.start, self.targets[s.target].id)

    def reserve(self, job: JobDemand) -> Forecast:
        """Book the job's earliest start and return it; jobs that can never run on-prem book nothing."""
        s = self.best_spot(job)
        if s is None:
            return Forecast(self.policy.max_wait_h, None)
        end = s.start + self.duration(job, s.target)
        for ni in s.nodes:
            node = self._nodes[s.target][ni]
            if job.nodes > 1:
                node.take_all(end)
            else:
                node.take(job.gpus, job.cpu, job.memory_gib, s.start, end)
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
        key = (ti, *demand)
        heap = self._heaps.get(key)
        nodes = self._nodes[ti]
        if heap is None:
            heap = []
            for i, n in enumerate(nodes):
                t = n.fit(*demand)
                if t < INF:
                    heap.append((t, i, n.version))
            heapq.heapify(heap)
            self._heaps[key] = heap
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
    out: list[Forecast] = [Forecast(policy.max_wait_h, None)] * len(jobs)
    for i in queue_order(jobs):
        out[i] = state.earliest(jobs[i]) if i in probe else state.reserve(jobs[i])
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
