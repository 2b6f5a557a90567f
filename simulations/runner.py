"""Drives the real control loop through simulated clusters on a simulated clock, jumping from event to event.

Between cycles the clock jumps to the next thing that can change a decision — an arrival, a job's end, a node
becoming ready, a pool's idle deadline — rounded up to the loop's tick grid, as the real loop (which wakes
every `loop.interval_s`) would see it. With nothing pending and nothing running the run ends.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from spillover.placement import PlacementProblem, Plan
from spillover.providers.contract import ClusterProvider
from spillover.providers.simulated import RuntimeFn
from spillover.scheduler.clock import SimClock
from spillover.scheduler.config import SpilloverConfig
from spillover.scheduler.loop import ControlLoop, CycleReport
from spillover.scheduler.model import JobSpec
from spillover.scheduler.store import Store
from spillover.scheduler.wiring import build_providers


@dataclass(frozen=True)
class Arrival:
    at_s: float  # seconds after the start of the run
    spec: JobSpec
    job_id: str | None = None


@dataclass
class RunResult:
    started_at: float
    ended_at: float
    cycles: int
    solves: int
    solve_s: float
    job_ids: list[str] = field(default_factory=list)
    pools_at_end: dict[str, tuple[int, int]] = field(default_factory=dict)  # pool id -> (nodes, min nodes)


Progress = Callable[[float, int, int], None]  # (simulated seconds so far, jobs finished, jobs submitted)


def run_simulation(config: SpilloverConfig, arrivals: list[Arrival], store: Store, *, clock: SimClock | None = None,
                   providers: dict[str, ClusterProvider] | None = None, max_sim_s: float = 30 * 86400.0,
                   progress: Progress | None = None,
                   on_cycle: Callable[[CycleReport], None] | None = None,
                   solver: Callable[[PlacementProblem], Plan] | None = None,
                   runtime: RuntimeFn | None = None, resolve_every_s: float | None = None) -> RunResult:
    """Replay `arrivals` through the real loop. `solver` replaces Spillover's (a baseline rule); `runtime` gives
    each job's true runtime when it differs from its estimate; `resolve_every_s` overrides the loop's periodic
    re-plan (infinity: only when something changes or a plan asks to be revisited)."""
    clock = clock or SimClock()
    providers = providers if providers is not None else build_providers(config, clock, runtime=runtime)
    loop = ControlLoop(config, store, providers, clock, **({"solver": solver} if solver is not None else {}))
    if resolve_every_s is not None:
        loop.resolve_every_s = resolve_every_s
    start = clock.now()
    tick = config.loop.interval_s
    teams = {q.name: q.team for q in config.queues}
    todo = sorted(arrivals, key=lambda a: a.at_s)
    i = cycles = solves = 0
    solve_s = 0.0
    ids: list[str] = []
    finished = 0
    while True:
        now = clock.now()
        batch = []
        while i < len(todo) and start + todo[i].at_s <= now + 1e-9:
            batch.append(todo[i])
            i += 1
        if batch:
            jobs = loop.submit([a.spec for a in batch], now=now, teams=teams,
                               ids=[a.job_id for a in batch] if all(a.job_id for a in batch) else None)
            ids.extend(j.id for j in jobs)
        report = loop.run_cycle(record=on_cycle is not None)  # a hook may read the store
        cycles += 1
        finished += report.finished
        if report.solved and report.plan is not None:
            solves += 1
            solve_s += report.plan.solve_s
        if on_cycle:
            on_cycle(report)
        if progress:
            progress(now - start, finished, len(ids))
        nxt = _next_event(loop, providers, now, todo[i].at_s + start if i < len(todo) else None)
        if nxt is None or nxt - start > max_sim_s:
            break
        # the real loop wakes on its tick grid, so a change is seen at the first tick after it
        grid = start + math.ceil((nxt - start) / tick - 1e-9) * tick
        clock.advance_to(max(grid, now + tick))
    loop.flush()
    pools_at_end = {}
    for name, state in loop.last_states.items():
        for ps in state.pools:
            pools_at_end[f"{name}/{ps.name}"] = (ps.nodes, ps.min_nodes)
    return RunResult(started_at=start, ended_at=clock.now(), cycles=cycles, solves=solves, solve_s=solve_s,
                     job_ids=ids, pools_at_end=pools_at_end)


# When nothing waits, a job ending outside the cloud pools changes no decision: the loop records it at its next
# cycle (with the cluster's exact end time), at the latest this long after it ended — well within the simulated
# cluster's 6 hours of keeping finished jobs, after which one would look lost.
RECORD_WITHIN_S = 3 * 3600.0


def _next_event(loop: ControlLoop, providers: dict[str, ClusterProvider], now: float,
                next_arrival: float | None) -> float | None:
    """When the loop next has a reason to look: an arrival, a change in a cluster that matters now (any, while jobs
    wait or are on their way; else only in cloud pools, whose idle nodes bill until they scale down), or the loop's
    own deadlines. The working state is in memory: this reads no store."""
    times = [t for t in (next_arrival,) if t is not None]
    watching = loop.watching()
    for p in providers.values():
        events = getattr(p, "next_event_at", None)
        if events is None:
            continue
        if watching:
            nxt = events()
        else:
            nxt = events(pools_only=True)
            other = events()
            if other is not None:
                times.append(other + RECORD_WITHIN_S)
        if nxt is not None:
            times.append(nxt)
        stuck = getattr(p, "stuck_since", lambda: None)()
        if stuck is not None:  # the loop gives up on a job stuck in its cluster after the grace
            times.append(stuck + loop.config.loop.unschedulable_grace_s)
    wake = loop.next_wakeup()
    if wake is not None:
        times.append(max(now, wake))
    return min(times) if times else None
