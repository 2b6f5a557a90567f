"""Queue order: who goes first when capacity is scarce (priority, then time already waited, then arrival)."""

from __future__ import annotations

from collections.abc import Sequence

from placement.types import JobDemand


def queue_order(jobs: Sequence[JobDemand]) -> list[int]:
    """Indices of `jobs` in queue order: priority desc, waited_h desc, then their position in `jobs`."""
    return sorted(range(len(jobs)), key=lambda i: (-jobs[i].priority, -jobs[i].waited_h, i))
