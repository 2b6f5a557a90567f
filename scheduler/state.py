"""The loop's working state in memory: the queue, the jobs bound to clusters, open intents, and the health of clusters
and pools. Loaded from the store once at start; the store is its journal (see journal.py), and what other writers
change (a submission, a cancel) is read back from the events they leave.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

from spillover.scheduler.model import JobState
from spillover.scheduler.store import Action, ClusterHealth, Job, PoolHealth, Store

_ACTIVE = frozenset(s for s in JobState if s.active)
_TERMINAL = frozenset(s for s in JobState if s.terminal)
# Jobs that finished lately stay known this long (by count): the ledger still charges the time they ran.
RECENT_FINISHED = 20_000


class WorkingState:
    """Every job not yet finished, by id, and what the loop must remember between cycles."""

    def __init__(self, store: Store) -> None:
        ws = store.working_set()
        self.jobs: dict[str, Job] = {}
        self._by_state: dict[JobState, dict[str, Job]] = {st: {} for st in JobState if not st.terminal}
        for j in ws.jobs:
            self.put(j)
        self.intents: dict[str, Action] = {a.key: a for a in ws.open_actions}  # open actions, oldest first
        self.clusters: dict[str, ClusterHealth] = ws.clusters
        self.pools: dict[str, PoolHealth] = ws.pools
        self.event_mark = ws.event_mark  # newest event folded in
        self.marks: dict[str, dict[str, float]] = ws.marks  # cluster -> node -> how far its time is in the ledger
        self.recent: dict[str, Job] = {}  # jobs that finished lately, oldest first

    # ---- jobs ------------------------------------------------------------------------------------

    def put(self, job: Job) -> None:
        old = self.jobs.get(job.id)
        if old is not None:
            del self._by_state[old.state][job.id]
        if job.state in _TERMINAL:
            self.jobs.pop(job.id, None)
            self.recent[job.id] = job
            if len(self.recent) > RECENT_FINISHED:
                del self.recent[next(iter(self.recent))]
        else:
            self.jobs[job.id] = job
            self._by_state[job.state][job.id] = job

    def get(self, job_id: str) -> Job | None:
        return self.jobs.get(job_id)

    def in_states(self, states: Iterable[JobState]) -> list[Job]:
        return [j for st in states if not st.terminal for j in self._by_state[st].values()]

    def pending(self) -> list[Job]:
        """The queue, oldest first (as the store orders it)."""
        return sorted(self._by_state[JobState.PENDING].values(), key=lambda j: (j.submitted_at, j.id))

    def active(self) -> list[Job]:
        """Jobs bound to a cluster, which may be running them."""
        return [j for st in _ACTIVE for j in self._by_state[st].values()]

    def count(self, *states: JobState) -> int:
        return sum(len(self._by_state[st]) for st in states)

    def lookup(self, job_id: str) -> Job | None:
        """A job in memory, or one that finished lately."""
        return self.jobs.get(job_id) or self.recent.get(job_id)

    # ---- health ----------------------------------------------------------------------------------

    def cluster(self, name: str) -> ClusterHealth:
        h = self.clusters.get(name)
        if h is None:
            h = self.clusters[name] = ClusterHealth(name)
        return h

    def pool(self, pool_id: str) -> PoolHealth:
        h = self.pools.get(pool_id)
        if h is None:
            h = self.pools[pool_id] = PoolHealth(pool_id)
        return h

    def open_intents(self, kind: str | None = None) -> list[Action]:
        return [a for a in self.intents.values() if kind is None or a.kind == kind]

    # ---- other writers ---------------------------------------------------------------------------

    def refresh(self, store: Store, queued: Collection[str] = ()) -> list[str]:
        """Fold in what other writers did since the last look (a job submitted or cancelled by the CLI, a test's
        hand): one indexed read of the newest events, and a read of the jobs they name whose state differs from
        memory. Jobs with changes of the loop's own still `queued` for the store are left to their compare-and-set,
        which finds out whether someone else got there first. Returns the ids of the jobs that changed."""
        changes, self.event_mark = store.job_changes(self.event_mark)
        stale = []
        for job_id, to_state in changes.items():
            if job_id in queued:
                continue
            mine = self.jobs.get(job_id)
            if mine is None:
                if not JobState(to_state).terminal:
                    stale.append(job_id)  # new, or back from a state memory did not know
            elif mine.state.value != to_state:
                stale.append(job_id)
        if stale:
            found = store.jobs_by_ids(stale)
            for job_id in stale:
                job = found.get(job_id)
                if job is not None:
                    self.put(job)
        return stale

    def reload(self, store: Store, ids: Iterable[str]) -> None:
        """Take the store's version of these jobs (another writer changed them first)."""
        ids = list(ids)
        found = store.jobs_by_ids(ids)
        for job_id in ids:
            job = found.get(job_id)
            if job is not None:
                self.put(job)
