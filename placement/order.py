"""Queue order: who goes first when capacity is scarce. Within a team: priority, then time already waited, then
arrival; between teams that share by weight, the team whose usage per weight is lowest takes the next turn, its
usage growing by what the job takes (weighted fair queueing over GPU-hours)."""

from __future__ import annotations

import heapq
from collections.abc import Sequence

from spillover.placement.types import JobDemand

# A solve sorts the same jobs many times; the last few orders are kept, by the identity of the (immutable)
# tuple of jobs, which each entry keeps alive so that the identity cannot be reused meanwhile.
_ORDERS: dict[int, tuple[Sequence[JobDemand], list[int]]] = {}
_KEPT = 8


def queue_order(jobs: Sequence[JobDemand]) -> list[int]:
    """Indices of `jobs` in queue order: priority desc, waited_h desc, then their position in `jobs`."""
    if isinstance(jobs, tuple):
        hit = _ORDERS.get(id(jobs))
        if hit is not None and hit[0] is jobs:
            return list(hit[1])
    order = sorted(range(len(jobs)), key=lambda i: (-jobs[i].priority, -jobs[i].waited_h, i))
    if any(j.share is not None for j in jobs):
        order = _fair(jobs, order)
    if isinstance(jobs, tuple):
        while len(_ORDERS) >= _KEPT:
            _ORDERS.pop(next(iter(_ORDERS)), None)
        _ORDERS[id(jobs)] = (jobs, order)
        return list(order)
    return order


def _fair(jobs: Sequence[JobDemand], order: list[int]) -> list[int]:
    """`order` interleaved between teams by fair share."""
    by_team: dict[str, list[int]] = {}
    for i in order:
        by_team.setdefault(jobs[i].team or "", []).append(i)
    heap = []
    for rank, (team, members) in enumerate(by_team.items()):
        heap.append((jobs[members[0]].share or 0.0, rank, team))
    heapq.heapify(heap)
    pos = dict.fromkeys(by_team, 0)
    out: list[int] = []
    while heap:
        share, rank, team = heapq.heappop(heap)
        members = by_team[team]
        i = members[pos[team]]
        out.append(i)
        pos[team] += 1
        if pos[team] < len(members):
            j = jobs[i]
            heapq.heappush(heap, (share + j.total_gpus * j.runtime_h / max(j.weight, 1e-9), rank, team))
    return out
