"""Queue order: who goes first when capacity is scarce (priority, then time already waited, then arrival)."""

from __future__ import annotations

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
    if isinstance(jobs, tuple):
        while len(_ORDERS) >= _KEPT:
            _ORDERS.pop(next(iter(_ORDERS)), None)
        _ORDERS[id(jobs)] = (jobs, order)
        return list(order)
    return order
