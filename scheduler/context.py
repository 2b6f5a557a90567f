"""What every part of the cycle shares: the config, the working state and its journal, the providers and the clock,
and the vocabulary of the cycle: move a job, take it off its cluster, intend an action and perform it."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from spillover.placement import Plan, PlacementProblem
from spillover.providers.contract import ClusterProvider, ClusterState, ErrorKind, ProviderError
from spillover.scheduler.clock import Clock
from spillover.scheduler.config import SpilloverConfig
from spillover.scheduler.journal import Journal
from spillover.scheduler.metrics import NULL_METRICS, NullMetrics
from spillover.scheduler.model import JobState
from spillover.scheduler.state import WorkingState
from spillover.scheduler.records import ActionDone, Estimate, Job, NewAction, NewEvent
from spillover.scheduler.store import Store

log = logging.getLogger("spillover.loop")

ACTIVE = (JobState.DISPATCHING, JobState.DISPATCHED, JobState.RUNNING, JobState.CANCELLING)
# Errors after which retrying the same call cannot help: the job goes back to the solver instead.
FINAL_ERRORS = (ErrorKind.STOCKOUT, ErrorKind.QUOTA, ErrorKind.AUTH, ErrorKind.INVALID)


@dataclass
class CycleReport:
    at: float
    observed: int = 0
    unreachable: list[str] = field(default_factory=list)
    pending: int = 0
    started: int = 0
    burst: int = 0
    waiting: int = 0
    scaled: list[str] = field(default_factory=list)
    finished: int = 0
    interrupted: int = 0
    preempted: int = 0  # running jobs stopped to hand their GPUs back
    solved: bool = False
    problem: PlacementProblem | None = None
    plan: Plan | None = None
    commits: int = 0  # transactions the cycle wrote


class LoopContext:
    def __init__(self, config: SpilloverConfig, store: Store, providers: dict[str, ClusterProvider], clock: Clock,
                 *, crash_hook: Callable[[str], None] | None = None) -> None:
        self.config = config
        self.store = store
        self.providers = providers
        self.clock = clock
        self.state = WorkingState(store)
        self.journal = Journal(store, self.state)
        # lets crash tests stop the process at a named point between writing an intent and acting on it
        self.crash_hook = crash_hook or (lambda _point: None)
        self.dirty = True  # something changed that is worth a new plan
        self.report = CycleReport(at=clock.now())
        self.states: dict[str, ClusterState] = {}  # this cycle's observations of the reachable clusters
        # called before a pool is asked to grow (True) or shrink (False): the ledger writes what it must first
        self.on_resize: Callable[[str, str, bool], None] = lambda _cluster, _pool, _grow: None
        self._said: set[tuple[str, str]] = set()  # warnings and orphans already reported, said once
        self.metrics: NullMetrics = NULL_METRICS  # the loop's Prometheus metrics, when served
        # told of ledger entries once they are written (budgets count them)
        self.on_ledger: Callable[[list], None] = lambda _entries: None

    # ---- job changes -----------------------------------------------------------------------------

    def move(self, job: Job, to: JobState, *, now: float, message: str, kind: str = "state",
             intents: tuple[NewAction, ...] = (), done: tuple[ActionDone, ...] = (), **fields: Any) -> Job:
        """Change a job's state (and columns), with its event: in memory now, in the store at the next commit."""
        after = job.evolve(state=to, **fields)
        cluster = fields["cluster"] if "cluster" in fields else job.cluster
        event = NewEvent(at=now, kind=kind, message=message, job_id=job.id, cluster=cluster,
                         from_state=job.state.value, to_state=to.value)
        return self.journal.change(job, after, at=now, event=event, intents=intents, done=done)

    def set_reason(self, job: Job, reason: str, *, now: float, event_kind: str | None = None,
                   estimate: Estimate = Estimate()) -> Job:
        """A waiting job's reason and estimated start (and an event, when `event_kind` is given)."""
        event = NewEvent(at=now, kind=event_kind, message=reason, job_id=job.id) if event_kind else None
        return self.journal.reason(job, reason, at=now, event=event, estimate=estimate)

    def take_off_cluster(self, job: Job, now: float, message: str, *, kind: str = "state",
                         to: JobState = JobState.PENDING, dispatch_error: str | None = None,
                         dispatch_done: bool = False, **fields: Any) -> Job:
        """Take a job off its cluster: back to the queue (or cancelled), and with it an action that removes its copy
        there, in one write, so a restart between the two can neither lose the removal nor run it twice."""
        cancel = NewAction(f"cancel-stale:{job.id}:{job.attempts}", "cancel", job.cluster or "", now, job_id=job.id)
        done = ()
        if job.dispatch_key in self.state.intents and (dispatch_error is not None or dispatch_done):
            done = (ActionDone(job.dispatch_key, now, ok=dispatch_error is None, error=dispatch_error or ""),)
        if to == JobState.PENDING:
            fields = dict(cluster=None, pool=None, gpu_type=None, dispatched_at=None, started_at=None) | fields
        else:
            fields = dict(finished_at=now) | fields
        return self.move(job, to, now=now, message=message, kind=kind, intents=(cancel,), done=done, **fields)

    def pool_clock(self, pool_id: str, clock: str, running: bool, now: float) -> float | None:
        """Start, keep or stop one of a pool's clocks (`idle_since`, `growing_since`), journaled when it changes.
        Since when it runs, or None."""
        h = self.state.pools.get(pool_id)
        if not running:
            if h is not None and getattr(h, clock) is not None:
                setattr(h, clock, None)
                self.journal.pool(h)
            return None
        h = self.state.pool(pool_id)
        if getattr(h, clock) is None:
            setattr(h, clock, now)
            self.journal.pool(h)
        return getattr(h, clock)

    # ---- events ----------------------------------------------------------------------------------

    def event(self, kind: str, message: str, *, now: float, job_id: str | None = None,
              cluster: str | None = None) -> None:
        self.journal.event(NewEvent(at=now, kind=kind, message=message, job_id=job_id, cluster=cluster))

    def say_once(self, cluster: str, message: str, *, kind: str) -> None:
        if (cluster, message) in self._said:
            return
        self._said.add((cluster, message))
        log.warning("%s: %s", cluster, message)
        self.event(kind, message, now=self.clock.now(), cluster=cluster)

    # ---- actions ---------------------------------------------------------------------------------

    def intend(self, kind: str, key: str, *, cluster: str, now: float, job_id: str | None = None,
               pool: str | None = None, payload: dict[str, Any] | None = None) -> bool:
        """Queue an intended action; False if one with this key is open already."""
        if key in self.state.intents:
            return False
        self.journal.intend(NewAction(key, kind, cluster, now, job_id=job_id, pool=pool, payload=payload or {}))
        return True

    def perform(self, key: str, call: Callable[[], None]) -> ProviderError | None:
        """Make an intended call. Done, or failed for good, is journaled; other errors leave it intended, so it is
        made again (under the same key) next cycle."""
        try:
            call()
        except ProviderError as e:
            intent = self.state.intents.get(key)
            self.metrics.provider_error(intent.cluster if intent is not None else e.cluster, e)
            if e.kind in FINAL_ERRORS:
                self.journal.done(key, at=self.clock.now(), ok=False, error=str(e))
            return e
        self.journal.done(key, at=self.clock.now())
        return None

    def scale(self, cluster: str, pool: str, desired: int, now: float, event: str) -> ProviderError | None:
        """Shrink a pool: intended and committed first (with the node time it billed so far), then asked of the
        cloud."""
        key = f"scale:{cluster}/{pool}:{desired}:{now:.3f}"
        self.intend("scale", key, cluster=cluster, pool=pool, now=now, payload={"desired": desired})
        self.on_resize(cluster, pool, False)
        self.commit()
        err = self.perform(key, lambda: self.providers[cluster].scale_pool(pool, desired, key))
        if err is None:
            self.event("scale", event, now=now, cluster=cluster)
        return err

    def commit(self) -> set[str]:
        """Write what the cycle queued so far; jobs another writer changed first count as a change."""
        before = self.journal.commits
        ledger = self.journal.batch.ledger  # counted once written
        failed = self.journal.commit()
        if ledger:
            self.metrics.spent(ledger)
            self.on_ledger(ledger)
        self.report.commits += self.journal.commits - before
        if failed:
            self.dirty = True
        return failed
