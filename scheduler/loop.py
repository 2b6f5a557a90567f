"""The control loop: one cycle at a time, on an injected clock, over a working state held in memory.

    0. refresh   fold in what others wrote since the last cycle (a submission, a cancel), from the store's events
    1. observe   every cluster, passively; clusters that stop answering are marked unavailable (health.py)
    2. sync      fold the observations into the state: started, finished, lost, stuck, interrupted (sync.py);
                 charge node time to the ledger when what is billed changed (accrual.py)
    3. health    requeue the jobs of clusters gone too long; fail pools whose nodes never came (health.py)
    4. repair    perform what was intended and not done; cancel what users asked to (act.py)
    5. decide    when something changed: build the problem from the state and solve it (problem.py, placement)
    6. act       intents written and committed first, then scale pools and dispatch (act.py)
    7. scale down pools idle long enough (scaledown.py)
    8. record    commit what the cycle changed: one transaction, none when nothing changed (journal.py)

The store is the journal: the state is loaded from it at start, and every transition is written with its events
and intents. Whatever a crash interrupts is repaired by the next cycle: the store says what was intended, the
clusters say what happened, providers are idempotent under each action's key.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

from spillover import placement
from spillover.placement import PlacementProblem, Plan
from spillover.providers.contract import ClusterProvider, ClusterState
from spillover.scheduler.accrual import Accrual
from spillover.scheduler.act import Actor
from spillover.scheduler.clock import Clock
from spillover.scheduler.config import CloudCluster, SpilloverConfig
from spillover.scheduler.context import ACTIVE, CycleReport, LoopContext, log
from spillover.scheduler.health import Health, summarize_signals
from spillover.scheduler.metrics import NULL_METRICS, NullMetrics
from spillover.scheduler.model import JobSpec, JobState
from spillover.scheduler.preempt import Preemption
from spillover.scheduler.problem import ProblemBuilder, Snapshot
from spillover.scheduler.scaledown import ScaleDown
from spillover.scheduler.store import Job, Store, new_jobs
from spillover.scheduler.sync import PassiveSync
from spillover.scheduler.team_state import TeamState

__all__ = ["ACTIVE", "ControlLoop", "CycleReport", "RESOLVE_EVERY_S", "summarize_signals"]

# Re-plan at least this often while jobs wait, even when nothing changed.
RESOLVE_EVERY_S = 300.0


class ControlLoop:
    def __init__(self, config: SpilloverConfig, store: Store, providers: dict[str, ClusterProvider],
                 clock: Clock, *, solver: Callable[[PlacementProblem], Plan] = placement.solve,
                 unavailable_after: int | None = None, crash_hook: Callable[[str], None] | None = None,
                 metrics: NullMetrics | None = None) -> None:
        self.config = config
        self.store = store
        self.providers = providers
        self.clock = clock
        self.solver = solver
        self.ctx = LoopContext(config, store, providers, clock, crash_hook=crash_hook)
        # metrics are kept only when someone serves them (`spillover run --metrics-port`); a replay pays nothing
        self.metrics = self.ctx.metrics = metrics or NULL_METRICS
        self.health = Health(self.ctx, unavailable_after or config.loop.unavailable_after)
        self.sync = PassiveSync(self.ctx, self.health)
        self.accrual = Accrual(self.ctx)
        self.ctx.on_resize = self.accrual.resized
        self.actor = Actor(self.ctx, self.health)
        self.scaledown = ScaleDown(self.ctx)
        self.problems = ProblemBuilder(config)
        self.teams = TeamState(config)
        self.ctx.on_ledger = self.teams.ledger
        self.preemption = Preemption(self.ctx)
        # Re-plan at least this often while jobs wait, even when nothing changed. The simulator may set it
        # to infinity when runtimes are exact, since then time alone changes no decision but a plan's revisit.
        self.resolve_every_s = RESOLVE_EVERY_S
        self._last_solve_at = -math.inf
        self._solved_for: set[str] = set()  # pending job ids the last solve saw
        self._revisit_at: float | None = None  # the last plan's "decide again by then"
        self.last_states: dict[str, ClusterState] = {}
        self.metrics.attach(self)

    @property
    def state(self):
        return self.ctx.state

    # ---- the cycle -------------------------------------------------------------------------------

    def run_cycle(self, *, record: bool = True) -> CycleReport:
        """One cycle. With `record` off, what the cycle changed after its last commit point (outcomes of what it
        performed, what it folded in after acting) stays queued and goes out with the next cycle's first commit:
        a replay, where nothing reads the store between cycles, saves a transaction a cycle. All of it can be
        derived again from the clusters and the open intents, should the process die first."""
        ctx = self.ctx
        ctx.report = report = CycleReport(at=self.clock.now())
        if ctx.state.refresh(self.store, ctx.journal.batch.jobs):  # 0. refresh
            ctx.dirty = True
        if self.actor.freed:
            self.actor.freed, ctx.dirty = False, True
        states = self.health.observe()  # 1. observe
        self.sync.fold(states)  # 2. sync
        self.accrual.step(states)
        self.health.requeue_from_unavailable()  # 3. health
        self.health.check_provisioning(states)
        self.actor.repair()  # 4. repair
        self.actor.cancel_requested()
        pending = ctx.state.pending()
        report.pending = len(pending)
        if pending and self._due(pending):
            self._decide_and_act(states, pending)  # 5. decide, 6. act
            if ctx.dirty and self.actor.requeued:
                # a pool refused its scale-up: those jobs go to their next best target now, not a cycle later
                self._decide_and_act(states, ctx.state.pending())
            self.actor.forget_gone()
        ctx.dirty = False
        self.scaledown.step(states)  # 7. scale down
        if record:
            ctx.commit()  # 8. record
        self.last_states = states
        self.metrics.cycle(self, report)
        return report

    def _due(self, pending: list[Job]) -> bool:
        """Is a new plan worth making: something changed, a job arrived (from any process), a plan's revisit fell
        due, or the periodic re-plan?"""
        now = self.clock.now()
        if self.ctx.dirty or any(j.id not in self._solved_for for j in pending):
            return True
        if self._revisit_at is not None and now >= self._revisit_at - 1e-6:
            return True
        return now - self._last_solve_at >= self.resolve_every_s

    def _decide_and_act(self, states: dict[str, ClusterState], pending: list[Job]) -> None:
        ctx, report = self.ctx, self.ctx.report
        now = self.clock.now()
        active = ctx.state.active()
        teams = None
        if self.teams.enabled:
            teams = self.teams.view(self.store, now, active, states, ctx.state.marks, pending,
                                    unwritten=ctx.journal.batch.ledger, lookup=ctx.state.lookup)
            for kind, message in self.teams.announcements(teams.statuses, self.store):
                log.warning("%s", message)
                ctx.event(kind, message, now=now)
        report.preempted = self.preemption.step(states, pending, teams)
        snap = Snapshot(now=now, states=states, pending=pending, active=active,
                        cooling_pools=self.health.cooling_pools(now), avoid=self._avoid_now(now, pending), teams=teams)
        problem, refs = self.problems.build(snap)
        plan = self.solver(problem)  # 5. decide
        report.solved, report.problem, report.plan = True, problem, plan
        self.metrics.solved(plan)
        self._last_solve_at = now
        self._revisit_at = now + plan.revisit_h * 3600.0 if plan.revisit_h is not None else None
        self._solved_for = {j.id for j in pending}
        ctx.dirty = False
        self.actor.act(plan, refs, {j.id: j for j in pending})  # 6. act
        log.info("cycle: %d pending, %d started on-prem, %d burst, %d waiting (%s %s in %.2fs, gap %s)",
                 len(pending), report.started, report.burst, report.waiting, plan.solver, plan.status,
                 plan.solve_s, "n/a" if plan.gap is None else f"{plan.gap:.2%}")

    def _avoid_now(self, now: float, pending: list[Job]) -> dict[str, set[str]]:
        """Clusters each job must not go to now: where it was stuck lately, and where its stale copy is being
        removed."""
        out: dict[str, set[str]] = {}
        for j in pending:
            if j.avoid:
                live = j.avoided(now)
                if live:
                    out[j.id] = live
        for a in self.ctx.state.open_intents("cancel"):
            if a.job_id and a.key.startswith("cancel-stale:"):
                out.setdefault(a.job_id, set()).add(a.cluster)
        return out

    def run(self, *, max_cycles: int | None = None, should_stop: Callable[[], bool] = lambda: False) -> None:
        """Cycle every `loop.interval_s` on the clock until told to stop; the ledger is written up at the end."""
        n = 0
        try:
            while not should_stop() and (max_cycles is None or n < max_cycles):
                started = self.clock.now()
                self.run_cycle()
                n += 1
                self.clock.sleep(max(0.0, self.config.loop.interval_s - (self.clock.now() - started)))
        finally:
            try:
                self.flush()
            finally:
                self.metrics.detach()  # a process that stops leading shows no stale queue or pool figures

    def flush(self) -> None:
        """Charge all node time observed so far and write it (at shutdown; at the end of a replay)."""
        self.accrual.flush()
        self.ctx.commit()

    def submitted(self, jobs: Iterable[Job]) -> None:
        """Jobs this process has just written to the store: known at once, without reading them back."""
        for j in jobs:
            self.ctx.state.put(j)

    def submit(self, specs: Iterable[JobSpec], *, now: float, teams: dict[str, str] | None = None,
               ids: Iterable[str] | None = None) -> list[Job]:
        """Queue jobs through the loop itself: they are written with its next commit, in the transaction that
        dispatches them. For a submitter in the loop's own process that needs no acknowledgement before then, such
        as a replay; everyone else submits through the store (`spillover submit`, the API)."""
        made = new_jobs(specs, now=now, teams=teams, ids=ids)
        self.ctx.journal.batch.new_jobs.extend(made)
        for job, _ in made:
            self.ctx.state.put(job)
        return [j for j, _ in made]

    # ---- for the simulator: when is there something to do? ---------------------------------------

    def watching(self) -> bool:
        """Does a change in any cluster matter now — jobs wait, or an action is under way — or only one in cloud
        pools (whose idle nodes are billed until they scale down)?"""
        st = self.ctx.state
        return bool(st.intents) or bool(st.count(JobState.PENDING, JobState.DISPATCHING, JobState.CANCELLING))

    def next_wakeup(self) -> float | None:
        """The earliest time the loop has something to do of its own though nothing else changes: a plan's revisit
        or the periodic re-plan while jobs wait, a pool's idle deadline or provisioning timeout, and now when
        something is half done."""
        st = self.ctx.state
        times: list[float] = []
        now = self.clock.now()
        if st.count(JobState.PENDING):
            if self._revisit_at is not None:
                times.append(max(now, self._revisit_at))
            if self._solved_for and math.isfinite(self.resolve_every_s):
                times.append(max(now, self._last_solve_at + self.resolve_every_s))
        if st.intents or st.count(JobState.DISPATCHING, JobState.CANCELLING):
            times.append(now)
        times += self.scaledown.idle_deadlines()
        for c in self.config.clusters:
            if not isinstance(c, CloudCluster):
                continue
            state = self.last_states.get(c.name)
            for p in c.pools:
                h = st.pools.get(f"{c.name}/{p.name}")
                if h is not None and h.growing_since is not None:
                    times.append(h.growing_since + p.provisioning_timeout)
                ps = state.pool(p.name) if state else None
                if ps is not None and (h is None or h.idle_since is None):
                    if ps.nodes > max(p.min_nodes, state.busy_nodes_by_pool.get(p.name, 0)):
                        times.append(now)  # surplus nodes whose idle clock has not started yet
        return min(times) if times else None
