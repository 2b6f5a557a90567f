"""A plan from the LP relaxation: round its fractional assignment to jobs and bind them through the ledger.

On large queues the LP (GLOP) is much faster than CP-SAT's search and nearly integral (it is an assignment
with a few coupling rows), so its rounding is a strong starting point: a candidate plan of its own and the
hint of the first CP-SAT round.
"""

from __future__ import annotations

from collections.abc import Sequence

from placement.bound import relaxation
from placement.ledger import Ledger
from placement.types import PlacementProblem


def lp_rounded(
    problem: PlacementProblem,
    waits: Sequence[float],
    start_rate: dict[int, float] | None = None,
    time_limit_s: float | None = None,
) -> tuple[Ledger, float] | None:
    """Bindings that follow the LP's choices, and the LP's value; None when the LP does not solve in time."""
    lp = relaxation(problem, waits, start_rate, time_limit_s)
    if lp is None:
        return None
    wanted: list[tuple[float, int, int]] = []  # (-(wait saved), job, target)
    for members, by_target in lp.runs:
        # In a class the jobs whose wait is dearest run; the targets get them by largest remainder.
        members = sorted(members, key=lambda i: -waits[i])
        share = sorted(by_target.items(), key=lambda kv: -kv[1])
        counts = {ti: int(v + 1e-6) for ti, v in share}
        left = min(len(members), int(sum(by_target.values()) + 0.5)) - sum(counts.values())
        for ti, v in sorted(share, key=lambda kv: -(kv[1] - int(kv[1] + 1e-6))):
            if left <= 0:
                break
            counts[ti] += 1
            left -= 1
        pos = 0
        for ti, _ in share:
            for _ in range(counts[ti]):
                if pos < len(members):
                    wanted.append((-waits[members[pos]], members[pos], ti))
                    pos += 1
    ledger = Ledger(problem)
    # Where the rounding over-commits a target, the jobs that would lose most by waiting go first.
    for _, i, ti in sorted(wanted):
        opt = ledger.option_on(i, ti)
        if opt is not None and opt.cost < waits[i]:
            ledger.take(i, opt)
    return ledger, lp.value
