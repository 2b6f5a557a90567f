"""The loop's journal: every change to the working state is applied in memory at once and queued here; `commit`
writes what is queued in one transaction, and only when something changed.

A job's change is a compare-and-set on the state the store holds, written with its events, intents and finished
actions or not at all. When another writer got there first (a user cancelled the job meanwhile), the store keeps
its version, which is read back into memory, and the caller learns the job's id.
"""

from __future__ import annotations

from collections.abc import Iterable

from spillover.scheduler.state import WorkingState
from spillover.scheduler.records import (Action, ActionDone, Batch, ClusterHealth, Estimate, Job, JobWrite,
                                         LedgerEntry, NewAction, NewEvent, PoolHealth)
from spillover.scheduler.store import Store


class Journal:
    def __init__(self, store: Store, state: WorkingState) -> None:
        self.store = store
        self.state = state
        self.batch = Batch()
        self.commits = 0  # transactions written (for benchmarks and tests)

    def change(self, before: Job, after: Job, *, at: float, event: NewEvent | None = None,
               intents: Iterable[NewAction] = (), done: Iterable[ActionDone] = ()) -> Job:
        """Queue a job's change (compare-and-set against the state the store holds) and apply it in memory."""
        w = self.batch.jobs.get(after.id)
        if w is None:
            w = self.batch.jobs[after.id] = JobWrite(after, before.state, at)
        else:  # changed again before the commit: one row write from the store's state, every event kept
            w.job, w.at = after, at
        if event is not None:
            w.events.append(event)
        for a in intents:
            w.intents.append(a)
            self.state.intents[a.key] = _open(a)
        for d in done:
            w.done.append(d)
            self.state.intents.pop(d.key, None)
        self.state.put(after)
        return after

    def reason(self, job: Job, reason: str, *, at: float, event: NewEvent | None = None,
               estimate: Estimate = Estimate()) -> Job:
        """A waiting job's new reason and estimated start: no compare-and-set, the row is rewritten only if the job
        still waits."""
        after = job.evolve(reason=reason, est_start_at=estimate.start_at, est_place=estimate.place,
                           pending=estimate.pending)
        w = self.batch.jobs.get(job.id)
        if w is not None:  # changed otherwise too before the commit: the reason goes with that row
            w.job = after
            if event is not None:
                w.events.append(event)
        else:
            self.batch.reasons[job.id] = (reason, at, estimate)
            if event is not None:
                self.batch.events.append(event)
        self.state.put(after)
        return after

    def event(self, event: NewEvent) -> None:
        self.batch.events.append(event)

    def intend(self, action: NewAction) -> None:
        self.batch.intents.append(action)
        self.state.intents[action.key] = _open(action)

    def done(self, key: str, *, at: float, ok: bool = True, error: str = "") -> None:
        self.batch.done.append(ActionDone(key, at, ok, error))
        self.state.intents.pop(key, None)

    def cluster(self, health: ClusterHealth) -> None:
        self.batch.clusters[health.cluster] = health

    def pool(self, health: PoolHealth) -> None:
        self.batch.pools[health.pool_id] = health

    def ledger(self, entries: Iterable[LedgerEntry]) -> None:
        self.batch.ledger.extend(entries)

    def mark(self, cluster: str, node: str, until: float | None) -> None:
        """How far a node's time is in the ledger (None: the node is gone)."""
        self.batch.marks[(cluster, node)] = until
        marks = self.state.marks.setdefault(cluster, {})
        if until is None:
            marks.pop(node, None)
        else:
            marks[node] = until

    def commit(self) -> set[str]:
        """Write everything queued in one transaction. Returns the ids of jobs another writer changed first; memory
        now holds the store's version of them, and their queued intents are dropped."""
        if not self.batch:
            return set()
        batch, self.batch = self.batch, Batch()
        failed = self.store.apply(batch)
        self.commits += 1
        if failed:
            for jid in failed:
                for a in batch.jobs[jid].intents:
                    self.state.intents.pop(a.key, None)
            self.state.reload(self.store, failed)
            # the actions their change would have finished are still open in the store
            self.state.intents.update({a.key: a for a in self.store.open_actions() if a.job_id in failed})
        return failed


def _open(a: NewAction) -> Action:
    return Action(a.key, a.kind, a.job_id, a.cluster, a.pool, dict(a.payload), "intended", a.created_at)
