"""One-sentence reasons, with the numbers behind each decision, in words a job's owner understands."""

from __future__ import annotations

from collections.abc import Sequence

from spillover.placement.feasibility import describe_demand, infeasibility
from spillover.placement.forecast import EPS, Forecast
from spillover.placement.ledger import Blocked, Option, Slot
from spillover.placement.types import JobDemand, Policy, Target


def money(x: float) -> str:
    return f"${x:,.2f}" if abs(x) < 10 else f"${x:,.0f}"


def hours(x: float) -> str:
    return f"{x:.1f} h"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def started(job: JobDemand, target: Target, slots: Sequence[Slot]) -> str:
    gpu = target.gpu_type
    ready = max((s.ready for s in slots), default=0.0)
    when = f", ready in {hours(ready)}" if ready > EPS else ""
    if job.nodes == 1:
        s = slots[0]
        return f"started on {target.name} (node {s.name} had {s.free_gpus} free {gpu}s{when})"
    names = ", ".join(s.name for s in slots)
    return f"started on {target.name} on {job.nodes} idle nodes ({names}) with {job.gpus} {gpu}s each{when}"


def burst(
    job: JobDemand, target: Target, slots: Sequence[Slot], cost: float, fc: Forecast, wait: float, onprem_name: str
) -> str:
    fresh = sum(1 for s in slots if s.new)
    ready = max((s.ready for s in slots), default=0.0)
    where = f"burst to {target.name}"
    if fresh:
        where += f" on {_plural(fresh, 'new node')} ready in {hours(ready)}"
    elif ready > EPS:
        where += f" (its node is ready in {hours(ready)})"
    if fc.target is None:
        return f"{where}: no on-prem cluster can run {describe_demand(job)}; the cloud run costs {money(cost)}"
    if fc.start_h <= EPS:
        return f"{where}: the cloud run costs {money(cost)}, less than running on {onprem_name} ({money(wait)})"
    if wait < cost:
        # Alone it would wait; but its wait would push the jobs queued behind it back, and the whole queue's
        # cost is what the plan minimizes.
        return (
            f"{where}: on-prem is full until ~{hours(fc.start_h)} from now; its own wait ({money(wait)}) is "
            f"cheaper than the cloud run ({money(cost)}), but waiting would delay the jobs queued behind it "
            f"by more than the difference"
        )
    return (
        f"{where}: on-prem is full until ~{hours(fc.start_h)} from now; "
        f"waiting would cost {money(wait)}, the cloud run costs {money(cost)}"
    )


def pending_kind(alt: Option | None, blocked: Blocked | None) -> str:
    """The tier of a waiting job's reason: what would have to change for it to start."""
    if alt is not None:
        return "cost"
    if blocked is None:
        return "capacity"
    return {"quota": "quota", "budget": "budget", "cap": "policy", "team-cap": "policy"}.get(blocked.kind, "capacity")


def waiting(
    job: JobDemand,
    fc: Forecast,
    wait: float,
    onprem_name: str,
    alt: Option | None,
    alt_target: Target | None,
    blocked: Blocked | None,
    targets: Sequence[Target],
    policy: Policy,
) -> str:
    if fc.target is not None:
        head = f"waiting for {onprem_name} (expected start in {hours(fc.start_h)})"
    else:
        head = f"waiting (no on-prem cluster can run it; counted as {hours(policy.max_wait_h)} of delay)"
    if alt is not None and alt_target is not None:
        what = "the cheapest burst" if alt_target.kind == "cloud" else "starting now"
        return f"{head}: waiting costs {money(wait)}, {what} ({alt_target.name}) costs {money(alt.cost)}"
    if blocked is None or blocked.kind == "full":
        return f"{head}: no target has room for {describe_demand(job)} now"
    later = f"; expected start on {onprem_name} in {hours(fc.start_h)}" if fc.target is not None else ""
    if blocked.kind == "cap":
        return f"waiting: cloud GPU cap of {policy.max_cloud_gpus} reached{later}"
    if blocked.kind == "budget":
        return f"waiting on-prem: budget exhausted ({blocked.detail}){later}"
    if blocked.kind == "quota":
        return f"waiting: over quota ({blocked.detail}){later}"
    if blocked.kind == "team-cap":
        return f"waiting on-prem: team cloud GPU cap reached ({blocked.detail}){later}"
    if blocked.kind == "pool-limit":
        return f"waiting: no new nodes left in {blocked.detail}{later}"
    types = ", ".join(sorted(job.gpu_types)) if job.gpu_types else "any"
    why = sorted({r for t in targets if (r := infeasibility(job, t, policy)) is not None})
    because = f"; {'; '.join(why[:3])}" if why else ""
    return f"waiting: no target has a node for {describe_demand(job)} (allowed types: {types}){because}"
