"""The control loop: observe -> sync -> decide -> act -> record, one cycle at a time, on an injected clock.

Every action is written to the store as *intended* (with an idempotency key) before it is performed, and
marked done after. Any action still open at the start of a cycle — because the process died between the
two, or the call failed — is performed again with the same key; providers are idempotent under that key, so
a job is never dispatched twice and a crash loses nothing.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import placement
from placement import Action as Decide
from placement import Plan, PlacementProblem
from providers.contract import (ClusterProvider, ClusterState, DispatchRequest, ErrorKind, JobPhase, JobStatus,
                                ProviderError)
from scheduler.clock import Clock
from scheduler.config import CloudCluster, SpilloverConfig
from scheduler.costs import ledger_entries
from scheduler.model import JobState
from scheduler.problem import Snapshot, TargetRef, build_problem
from scheduler.store import Job, Store

log = logging.getLogger("spillover.loop")

ACTIVE = (JobState.DISPATCHING, JobState.DISPATCHED, JobState.RUNNING, JobState.CANCELLING)
# Errors after which retrying the same call cannot help: the job goes back to the solver instead.
FINAL_ERRORS = (ErrorKind.STOCKOUT, ErrorKind.QUOTA, ErrorKind.AUTH, ErrorKind.INVALID)
# Errors after which a pool cannot give nodes for a while: its waiting jobs go elsewhere, it is left alone.
POOL_ERRORS = (ErrorKind.STOCKOUT, ErrorKind.QUOTA, ErrorKind.AUTH, ErrorKind.INVALID)
# How long a pool that stocked out or hit its quota is left alone.
POOL_COOLOFF_S = 900.0
# Re-plan at least this often while jobs wait, even when nothing changed.
RESOLVE_EVERY_S = 300.0
# A job that sat unschedulable in a cluster is not sent back there for this long.
AVOID_AFTER_UNSCHEDULABLE_S = 3600.0
# A job interrupted this many times (spot reclaims, lost nodes) is failed rather than run again.
MAX_INTERRUPTIONS = 5
# A pool that lost this many nodes under running jobs within the window is left alone for POOL_COOLOFF_S.
INTERRUPTED_NODES_BACKOFF = 3
INTERRUPTION_WINDOW_S = 3600.0


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
    solved: bool = False
    problem: PlacementProblem | None = None
    plan: Plan | None = None


class ControlLoop:
    def __init__(self, config: SpilloverConfig, store: Store, providers: dict[str, ClusterProvider],
                 clock: Clock, *, solver: Callable[[PlacementProblem], Plan] = placement.solve,
                 unavailable_after: int | None = None, crash_hook: Callable[[str], None] | None = None) -> None:
        self.config = config
        self.store = store
        self.providers = providers
        self.clock = clock
        self.solver = solver
        self.unavailable_after = unavailable_after or config.loop.unavailable_after
        # lets crash tests stop the process at a named point between writing an intent and acting on it
        self._crash_hook = crash_hook or (lambda _point: None)
        self._dirty = True
        self._last_solve_at = -math.inf
        self._solved_for: set[str] = set()  # pending job ids the last solve saw
        self._requeued_in_act = False
        self._revisit_at: float | None = None  # the last plan's "decide again by then"
        # Re-plan at least this often while jobs wait, even when nothing changed. The simulator may set it
        # to infinity when runtimes are exact, since then time alone changes no decision but a plan's revisit.
        self.resolve_every_s = RESOLVE_EVERY_S
        self._wait_signature: dict[str, tuple] = {}
        self.last_states: dict[str, ClusterState] = {}
        self._accrued_until: dict[str, float | None] = {}
        # job id -> {cluster: until}: clusters a job must not go back to for a while (it was unschedulable there)
        self._avoid: dict[str, dict[str, float]] = {}
        self._said: set[tuple[str, str]] = set()  # warnings and orphans already reported, said once
        self._pool_status: dict = {}
        self._interrupted_nodes: dict[str, dict[str, float]] = {}  # pool id -> {node: when it was lost}
        self._growing_since: dict[str, float] = {}  # pool id -> since when it has had fewer ready nodes than asked

    # ---- the cycle -------------------------------------------------------------------------------

    def run_cycle(self) -> CycleReport:
        now = self.clock.now()
        report = CycleReport(at=now)
        self._pool_status = self.store.pool_statuses()
        states = self._observe(report)  # 1. observe
        self._sync(states, report)  # 2. sync
        self._requeue_from_unavailable()
        self._check_provisioning(states)
        self._repair_open_actions(states)  # performs what a crash or a failed call left intended
        self._cancel_requested(states)
        pending = self.store.jobs([JobState.PENDING])
        report.pending = len(pending)
        # a job submitted since the last solve (by another process, too) is a change worth a solve
        arrived = any(j.id not in self._solved_for for j in pending)
        now = self.clock.now()
        due = self._revisit_at is not None and now >= self._revisit_at - 1e-6
        if pending and (self._dirty or arrived or due or now - self._last_solve_at >= self.resolve_every_s):
            self._decide_and_act(states, pending, report)
            if self._dirty and self._requeued_in_act:
                # a pool refused its scale-up: those jobs go to their next best target now, not a cycle later
                self._decide_and_act(states, self.store.jobs([JobState.PENDING]), report)
        self._dirty = False
        self._scale_down_idle(states, report)
        self.last_states = states
        return report

    def _decide_and_act(self, states: dict[str, ClusterState], pending: list[Job], report: CycleReport) -> None:
        now = self.clock.now()
        active = self.store.jobs(ACTIVE)
        snap = Snapshot(now=now, states=states, pending=pending, active=active,
                        cooling_pools=self._cooling_pools(now), avoid=self._avoid_now(now))
        problem, refs = build_problem(self.config, snap)
        plan = self.solver(problem)  # 3. decide
        report.solved, report.problem, report.plan = True, problem, plan
        self._last_solve_at = now
        self._revisit_at = now + plan.revisit_h * 3600.0 if plan.revisit_h is not None else None
        self._solved_for = {j.id for j in pending}
        self._dirty = False
        self._requeued_in_act = False
        self._act(plan, refs, {j.id: j for j in pending}, states, report)  # 4. act
        log.info("cycle: %d pending, %d started on-prem, %d burst, %d waiting (%s %s in %.2fs, gap %s)",
                 len(pending), report.started, report.burst, report.waiting, plan.solver, plan.status,
                 plan.solve_s, "n/a" if plan.gap is None else f"{plan.gap:.2%}")

    def run(self, *, max_cycles: int | None = None, should_stop: Callable[[], bool] = lambda: False) -> None:
        """Cycle every `loop.interval_s` on the clock until told to stop."""
        n = 0
        while not should_stop() and (max_cycles is None or n < max_cycles):
            started = self.clock.now()
            self.run_cycle()
            n += 1
            self.clock.sleep(max(0.0, self.config.loop.interval_s - (self.clock.now() - started)))

    # ---- 1. observe ------------------------------------------------------------------------------

    def _observe(self, report: CycleReport) -> dict[str, ClusterState]:
        states: dict[str, ClusterState] = {}
        found: list[tuple[str, ProviderError]] = []
        statuses = self.store.cluster_statuses()
        for name, provider in self.providers.items():
            status = statuses.get(name) or self.store.cluster_status(name)
            try:
                state = provider.observe()
                errors = provider.poll_errors()
            except ProviderError as e:
                status.failures += 1
                report.unreachable.append(name)
                if status.available and status.failures >= self.unavailable_after:
                    status.available = False
                    status.unavailable_since = self.clock.now()
                    status.message = str(e)
                    self.store.record_event("cluster", f"{name} marked unavailable after {status.failures} "
                                            f"failed observations: {e}", now=self.clock.now(), cluster=name)
                    log.warning("cluster %s unavailable: %s", name, e)
                self.store.save_cluster_status(status)
                self._dirty = True
                continue
            if not status.available:
                self.store.record_event("cluster", f"{name} is reachable again", now=self.clock.now(), cluster=name)
                self._dirty = True
            if status.failures or not status.available:
                status.failures, status.available, status.message = 0, True, ""
                status.unavailable_since = None
                self.store.save_cluster_status(status)
            for warning in state.warnings:
                self._say_once(name, warning, kind="warning")
            signals = json.dumps(summarize_signals(state), sort_keys=True)
            if signals != status.signals:
                status.signals = signals
                self.store.save_cluster_status(status)
            self._accrued_until[name] = status.accrued_until
            states[name] = state
            found.extend((name, err) for err in errors)
            report.observed += 1
        for name, err in found:  # after every cluster is seen, so a failed pool's size is this cycle's
            self._on_async_error(name, err, states)
        return states

    def _on_async_error(self, cluster: str, err: ProviderError, states: dict[str, ClusterState]) -> None:
        now = self.clock.now()
        self.store.record_event("error", str(err), now=now, cluster=cluster)
        if err.pool and err.kind in POOL_ERRORS:
            self._pool_failed(f"{cluster}/{err.pool}", now, str(err), states)
        self._dirty = True

    # ---- 2. sync ---------------------------------------------------------------------------------

    def _sync(self, states: dict[str, ClusterState], report: CycleReport) -> None:
        now = self.clock.now()
        for job in self.store.jobs(ACTIVE):
            state = states.get(job.cluster or "")
            if state is None:
                continue  # not observed this cycle: nothing is known, nothing changes
            status = state.jobs.get(job.id)
            if status is None:
                if job.state == JobState.CANCELLING:
                    self._finish(job, JobState.CANCELLED, now, f"cancelled; removed from {job.cluster}")
                elif job.state in (JobState.DISPATCHED, JobState.RUNNING):
                    # the cluster lost it (deleted by hand, node gone): back to the queue
                    if self._requeue(job, now):
                        self._dirty = True
                continue  # DISPATCHING and absent: the open dispatch action is performed below
            if (status.phase == JobPhase.PENDING and job.state == JobState.DISPATCHED
                    and status.unschedulable_since is not None
                    and now - status.unschedulable_since >= self._unschedulable_grace(job)):
                self._requeue_unschedulable(job, status.message, now - status.unschedulable_since, now)
            elif status.phase == JobPhase.PENDING and job.state == JobState.DISPATCHING:
                self._confirm_dispatch(job, now)
            elif status.phase == JobPhase.RUNNING and job.state in (JobState.DISPATCHING, JobState.DISPATCHED):
                gpu_type = _gpu_type_of(state, status.nodes)
                self.store.finish_action(job.dispatch_key, now=now)
                if self.store.transition(job.id, [JobState.DISPATCHING, JobState.DISPATCHED], JobState.RUNNING,
                                         now=now, cluster=job.cluster, started_at=status.started_at or now,
                                         gpu_type=gpu_type,
                                         message=f"running on {job.cluster} ({', '.join(status.nodes)})"):
                    self._dirty = True
            elif (status.phase == JobPhase.FAILED and status.interrupted and job.state != JobState.CANCELLING
                  and self._requeue_interrupted(job, status, now)):
                report.interrupted += 1
            elif status.phase in (JobPhase.SUCCEEDED, JobPhase.FAILED) and job.state != JobState.CANCELLING:
                to = JobState.SUCCEEDED if status.phase == JobPhase.SUCCEEDED else JobState.FAILED
                self.store.finish_action(job.dispatch_key, now=now)
                if job.state != JobState.RUNNING and status.started_at is not None:
                    self.store.transition(job.id, [job.state], JobState.RUNNING, now=now, cluster=job.cluster,
                                          started_at=status.started_at,
                                          gpu_type=_gpu_type_of(state, status.nodes),
                                          message=f"running on {job.cluster} ({', '.join(status.nodes)})")
                self._finish(job, to, now, f"{to.value} on {job.cluster}" + (f": {status.message}"
                                                                               if status.message else ""),
                             finished_at=status.finished_at or now)
                report.finished += 1
        self._adopt_or_flag(states, now)
        self._accrue(states)

    def _confirm_dispatch(self, job: Job, now: float) -> None:
        self.store.finish_action(job.dispatch_key, now=now)
        self.store.transition(job.id, [JobState.DISPATCHING], JobState.DISPATCHED, now=now, cluster=job.cluster,
                              message=f"accepted by {job.cluster}; waiting for its node(s)")

    def _finish(self, job: Job, to: JobState, now: float, message: str, finished_at: float | None = None) -> None:
        states = [JobState.RUNNING, JobState.DISPATCHED, JobState.DISPATCHING, JobState.CANCELLING]
        if self.store.transition(job.id, states, to, now=now, cluster=job.cluster, message=message,
                                 finished_at=finished_at or now):
            self._dirty = True

    def _requeue(self, job: Job, now: float) -> bool:
        return self.store.transition(job.id, [job.state], JobState.PENDING, now=now,
                                     message=f"{job.cluster} no longer has the job; requeued",
                                     cluster=None, pool=None, gpu_type=None, dispatched_at=None, started_at=None)

    def _accrue(self, states: dict[str, ClusterState]) -> None:
        """Charge node time since each cluster's accrual mark to the ledger, all clusters in one transaction."""
        accruals = {}
        for name, state in states.items():
            since = self._accrued_until.get(name)
            if since is not None and state.observed_at <= since:
                continue
            if since is None:  # first sight of this cluster: start the clock now
                accruals[name] = (state.observed_at, [])
                continue
            ids = [st.job_id for st in state.jobs.values() if st.started_at is not None
                   and (st.finished_at is None or st.finished_at > since)]
            jobs = self.store.jobs_by_ids(ids) if ids else {}
            accruals[name] = (state.observed_at, ledger_entries(self.config.cluster(name), state, since,
                                                                state.observed_at, jobs))
        if accruals:
            self.store.accrue_many(accruals)
            for name, (until, _) in accruals.items():
                self._accrued_until[name] = until

    def _unschedulable_grace(self, job: Job) -> float:
        """Pods wait for a booting node as unschedulable too, so a pool's boot time is added to the grace."""
        grace = self.config.loop.unschedulable_grace_s
        cluster = self.config.cluster(job.cluster or "")
        if job.pool and isinstance(cluster, CloudCluster):
            grace += next((p.provisioning_delay_s for p in cluster.pools if p.name == job.pool), 0.0)
        return grace

    def _take_off_cluster(self, job: Job, now: float, message: str, *, kind: str = "state",
                          to: JobState = JobState.PENDING, dispatch_error: str | None = None) -> bool:
        """Take a job off its cluster: back to the queue (or cancelled), and in the same transaction a cancel action
        that removes its copy there, so a restart between the two can neither lose the removal nor run it twice."""
        with self.store.tx() as s:
            if to == JobState.PENDING:
                moved = self.store.transition(job.id, [job.state], to, now=now, s=s, kind=kind, message=message,
                                              cluster=None, pool=None, gpu_type=None, dispatched_at=None,
                                              started_at=None)
            else:
                moved = self.store.transition(job.id, [job.state], to, now=now, s=s, kind=kind, message=message,
                                              finished_at=now)
            if moved:
                if dispatch_error is not None and job.dispatch_key:
                    self.store.finish_action(job.dispatch_key, now=now, ok=False, error=dispatch_error, s=s)
                self.store.intend("cancel", f"cancel-stale:{job.id}:{job.attempts}", cluster=job.cluster or "",
                                  job_id=job.id, now=now, s=s)
        return moved

    def _requeue_unschedulable(self, job: Job, message: str, for_s: float, now: float) -> None:
        """A job no node of its cluster can take goes back to the solver, which will not send it there again soon."""
        moved = self._take_off_cluster(
            job, now, f"unschedulable on {job.cluster} for {for_s / 60:.0f} min ({message or 'no node fits'}); "
                      "removed there and requeued")
        if moved:
            self._avoid.setdefault(job.id, {})[job.cluster or ""] = now + AVOID_AFTER_UNSCHEDULABLE_S
            self._dirty = True

    def _requeue_interrupted(self, job: Job, status: JobStatus, now: float) -> bool:
        """A job whose node was taken away (a spot reclaim) runs again elsewhere; False if it has been
        interrupted too often and should fail instead."""
        pool = job.pool or status.pool
        if pool:
            self._note_interruption(f"{job.cluster}/{pool}", status.nodes, now)
        times = sum(1 for e in self.store.events(job.id) if e.kind == "interrupted")
        if times + 1 >= MAX_INTERRUPTIONS:
            return False
        why = status.message or "its node was taken away"
        # the failed Job keeps the job's name there until it is removed
        moved = self._take_off_cluster(
            job, now, f"{why} on {job.cluster}{'/' + pool if pool else ''}; requeued"
                      + (" to resume from its checkpoint" if job.spec.checkpointable else ""), kind="interrupted")
        if moved:
            self.store.finish_action(job.dispatch_key, now=now)
            self._dirty = True
        return moved

    def _note_interruption(self, pool_id: str, nodes: tuple[str, ...], now: float) -> None:
        """A pool that keeps losing nodes under running jobs (spot reclaims) is backed off."""
        lost = {n: t for n, t in self._interrupted_nodes.get(pool_id, {}).items() if now - t < INTERRUPTION_WINDOW_S}
        for n in nodes or (f"?{len(lost)}",):
            lost.setdefault(n, now)
        self._interrupted_nodes[pool_id] = lost
        if len(lost) >= INTERRUPTED_NODES_BACKOFF:
            self._interrupted_nodes.pop(pool_id)
            self._cool_pool(pool_id, now, f"lost {len(lost)} nodes under running jobs in the last "
                                          f"{INTERRUPTION_WINDOW_S / 60:.0f} min")

    def _requeue_from_unavailable(self) -> None:
        """Jobs of a cluster unavailable for longer than the grace go back to the queue, once.

        Their copy in that cluster is cancelled by an action that stays open until the cluster answers again;
        until then the solver does not place the job there.
        """
        now = self.clock.now()
        grace = self.config.loop.requeue_grace_s
        for name, status in self.store.cluster_statuses().items():
            if status.available or status.unavailable_since is None or now - status.unavailable_since < grace:
                continue
            for job in self.store.jobs(ACTIVE):
                if job.cluster != name:
                    continue
                if job.state == JobState.CANCELLING:
                    moved = self._take_off_cluster(job, now, f"cancelled; {name} is unavailable, its copy there is "
                                                             "removed when it answers again", to=JobState.CANCELLED)
                else:
                    moved = self._take_off_cluster(
                        job, now, f"{name} unavailable for {(now - status.unavailable_since) / 60:.0f} min; "
                                  f"requeued (its copy there is removed when {name} answers again)", kind="requeued")
                if moved:
                    self._dirty = True

    def _adopt_or_flag(self, states: dict[str, ClusterState], now: float) -> None:
        """Reconcile what clusters run with what the store expects: adopt, never start a second copy."""
        unexpected: dict[str, list[tuple[str, JobStatus]]] = {}
        expected = {(j.cluster, j.id) for j in self.store.jobs(ACTIVE)}
        for name, state in states.items():
            for jid, status in state.jobs.items():
                if (name, jid) not in expected and status.phase in (JobPhase.PENDING, JobPhase.RUNNING):
                    unexpected.setdefault(jid, []).append((name, status))
        if not unexpected:
            return
        stale = {(a.cluster, a.job_id) for a in self.store.open_actions("cancel")}
        known = self.store.jobs_by_ids(unexpected)
        for jid, where in unexpected.items():
            for name, status in where:
                if (name, jid) in stale:
                    continue  # a stale copy about to be removed
                job = known.get(jid)
                if job is not None and job.state == JobState.PENDING:
                    to = JobState.RUNNING if status.phase == JobPhase.RUNNING else JobState.DISPATCHED
                    if self.store.transition(job.id, [JobState.PENDING], to, now=now, kind="adopted",
                                             message=f"found in {name}; adopted instead of starting a second copy",
                                             cluster=name, pool=status.pool, started_at=status.started_at,
                                             gpu_type=_gpu_type_of(states[name], status.nodes)):
                        self._dirty = True
                    break
                what = "unknown to the store" if job is None else f"{job.state.value} in the store"
                self._say_once(name, f"{name} runs Spillover job {jid}, which is {what}; left alone",
                               kind="orphan")

    def _say_once(self, cluster: str, message: str, *, kind: str) -> None:
        if (cluster, message) in self._said:
            return
        self._said.add((cluster, message))
        log.warning("%s: %s", cluster, message)
        self.store.record_event(kind, message, now=self.clock.now(), cluster=cluster)

    def _avoid_now(self, now: float) -> dict[str, set[str]]:
        out = {}
        for jid, clusters in list(self._avoid.items()):
            live = {c for c, until in clusters.items() if until > now}
            if live:
                out[jid] = live
            else:
                del self._avoid[jid]
        for a in self.store.open_actions("cancel"):
            if a.job_id and a.key.startswith("cancel-stale:"):
                out.setdefault(a.job_id, set()).add(a.cluster)
        return out

    # ---- repair ----------------------------------------------------------------------------------

    def _repair_open_actions(self, states: dict[str, ClusterState]) -> None:
        for action in self.store.open_actions():
            if action.cluster not in states:
                continue  # the cluster is not reachable now; retry when it is
            provider = self.providers[action.cluster]
            now = self.clock.now()
            if action.kind == "dispatch":
                job = self.store.job(action.job_id or "")
                if job.state != JobState.DISPATCHING or job.dispatch_key != action.key:
                    self.store.finish_action(action.key, now=now)  # superseded (cancelled, requeued, started)
                    continue
                if action.job_id in states[action.cluster].jobs:
                    self._confirm_dispatch(job, now)  # it got there before the crash: adopt it
                    continue
                self._perform_dispatch(job, provider, action.key, tuple(action.payload.get("nodes", ())),
                                       action.payload.get("gpu_type"))
            elif action.kind == "cancel":
                self._perform(action.key, lambda p=provider, a=action: p.cancel(a.job_id or "", a.key))
            elif action.kind == "scale":
                self._perform(action.key, lambda p=provider, a=action: p.scale_pool(a.pool or "",
                                                                                       int(a.payload["desired"]),
                                                                                       a.key))

    def _perform(self, key: str, call: Callable[[], None]) -> ProviderError | None:
        try:
            call()
        except ProviderError as e:
            if e.kind in FINAL_ERRORS:
                self.store.finish_action(key, now=self.clock.now(), ok=False, error=str(e))
            return e  # other kinds stay intended and are retried next cycle
        self.store.finish_action(key, now=self.clock.now())
        return None

    def _perform_dispatch(self, job: Job, provider: ClusterProvider, key: str, hints: tuple[str, ...],
                          gpu_type: str | None = None) -> None:
        req = DispatchRequest(job_id=job.id, request_id=key, spec=job.spec, pool=job.pool, node_hints=hints,
                              gpu_type=gpu_type)
        def call() -> None:
            provider.dispatch(req)
            self._crash_hook("after-dispatch")

        err = self._perform(key, call)
        now = self.clock.now()
        if err is None:
            self.store.transition(job.id, [JobState.DISPATCHING], JobState.DISPATCHED, now=now, cluster=job.cluster,
                                  message=f"accepted by {job.cluster}")
        elif err.kind in FINAL_ERRORS:
            if err.kind in (ErrorKind.STOCKOUT, ErrorKind.QUOTA) and job.pool:
                self._cool_pool(f"{job.cluster}/{job.pool}", now, str(err))
            self.store.transition(job.id, [JobState.DISPATCHING], JobState.PENDING, now=now,
                                  message=f"dispatch to {job.cluster} failed ({err}); back in the queue",
                                  cluster=None, pool=None, gpu_type=None, dispatched_at=None)
            self._dirty = True
        else:
            log.warning("dispatch of %s to %s will be retried: %s", job.id, job.cluster, err)

    def _cancel_requested(self, states: dict[str, ClusterState]) -> None:
        for job in self.store.jobs([JobState.CANCELLING]):
            if job.cluster not in states:
                continue
            key = f"cancel:{job.id}:{job.attempts}"
            if self.store.intend("cancel", key, cluster=job.cluster, job_id=job.id, now=self.clock.now()):
                self._perform(key, lambda p=self.providers[job.cluster], k=key, j=job.id: p.cancel(j, k))

    # ---- 4. act ----------------------------------------------------------------------------------

    def _act(self, plan: Plan, refs: dict[str, TargetRef], pending: dict[str, Job],
             states: dict[str, ClusterState], report: CycleReport) -> None:
        now = self.clock.now()
        scales: list[tuple[str, str, int, str]] = []
        dispatches: list[tuple[Job, str, tuple[str, ...], str]] = []
        reasons: dict[str, tuple[str, bool]] = {}
        with self.store.tx() as s:  # every intent of this cycle is written before anything is done
            for target_id, add in plan.new_nodes.items():
                if add <= 0:
                    continue
                ref = refs[target_id]
                ps = states[ref.cluster].pool(ref.pool or "")
                desired = min(ps.max_nodes, max(ps.nodes, ps.desired_nodes) + add)
                key = f"scale:{target_id}:{desired}:{now:.3f}"
                self.store.intend("scale", key, cluster=ref.cluster, pool=ref.pool, now=now,
                                  payload={"desired": desired}, s=s)
                scales.append((ref.cluster, ref.pool or "", desired, key))
            for d in plan.decisions:
                job = pending[d.job_id]
                if d.action == Decide.WAIT:
                    report.waiting += 1
                    sig = (d.action, d.wait_target, d.reason.split(":")[0].split("(")[0])
                    new = self._wait_signature.get(job.id) != sig
                    self._wait_signature[job.id] = sig
                    if new or job.reason != d.reason:
                        reasons[job.id] = (d.reason, new)
                    continue
                ref = refs[d.target or ""]
                key = f"dispatch:{job.id}:{job.attempts + 1}"
                moved = self.store.transition(
                    job.id, [JobState.PENDING], JobState.DISPATCHING, now=now, cluster=ref.cluster,
                    kind="burst" if d.action == Decide.BURST else "placed", s=s,
                    message=d.reason, pool=ref.pool, attempts=job.attempts + 1, dispatched_at=now, reason=d.reason)
                if not moved:
                    continue  # cancelled meanwhile
                self.store.intend("dispatch", key, cluster=ref.cluster, job_id=job.id, pool=ref.pool, now=now,
                                  payload={"nodes": list(d.nodes), "target": d.target, "gpu_type": ref.gpu_type},
                                  s=s)
                self._wait_signature.pop(job.id, None)
                dispatches.append((job, ref.cluster, d.nodes, ref.gpu_type))
                if d.action == Decide.BURST:
                    report.burst += 1
                else:
                    report.started += 1
        self.store.set_reasons(reasons, now=now, event_kind="waiting")
        self._crash_hook("after-intent")
        for cluster, pool, desired, key in scales:
            err = self._perform(key, lambda c=cluster, p=pool, n=desired, k=key:
                                self.providers[c].scale_pool(p, n, k))
            if err is None:
                report.scaled.append(f"{cluster}/{pool}->{desired}")
                self.store.record_event("scale", f"{cluster}/{pool} scaled up to {desired} node(s) for the burst",
                                        now=now, cluster=cluster)
            elif err.kind in POOL_ERRORS:
                self._pool_failed(f"{cluster}/{pool}", now, str(err), states)
                self._requeued_in_act = True
        for job, cluster, hints, gpu_type in dispatches:
            fresh = self.store.job(job.id)
            if fresh.state != JobState.DISPATCHING or fresh.dispatch_key is None:
                continue  # sent back to the solver: its pool refused to grow
            self._perform_dispatch(fresh, self.providers[cluster], fresh.dispatch_key, hints, gpu_type)

    # ---- scale-down and pool health --------------------------------------------------------------

    def _scale_down_idle(self, states: dict[str, ClusterState], report: CycleReport) -> None:
        now = self.clock.now()
        idle_s = self.config.policy.scale_down_idle_s
        bound: dict[str, int] = {}
        for job in self.store.jobs([JobState.DISPATCHING, JobState.DISPATCHED]):
            if job.pool:
                bound[f"{job.cluster}/{job.pool}"] = bound.get(f"{job.cluster}/{job.pool}", 0) + 1
        for cluster in self.config.clusters:
            if not isinstance(cluster, CloudCluster) or cluster.name not in states:
                continue
            state = states[cluster.name]
            for p in cluster.pools:
                pid = f"{cluster.name}/{p.name}"
                ps = state.pool(p.name)
                if ps is None:
                    continue
                busy_nodes = sum(1 for n in state.nodes if n.pool == p.name and n.jobs > 0)
                keep = max(p.min_nodes, busy_nodes)
                surplus = max(ps.nodes, ps.desired_nodes) > keep and not bound.get(pid)
                if not ps.removes_idle_first and busy_nodes:
                    surplus = False  # the cloud would pick which nodes go, busy ones included
                status = self._pool(pid)
                if not surplus:
                    if status.idle_since is not None:
                        status.idle_since = None
                        self.store.save_pool_status(status)
                    continue
                if status.idle_since is None:
                    status.idle_since = now
                    self.store.save_pool_status(status)
                    continue
                if now - status.idle_since < idle_s:
                    continue
                err = self._shrink(cluster.name, p.name, keep, now, f"{pid} scaled down to {keep} node(s) after "
                                   f"{(now - status.idle_since) / 60:.0f} min with idle nodes")
                if err is None:
                    report.scaled.append(f"{pid}->{keep}")
                    status.idle_since = None
                    self.store.save_pool_status(status)

    def _pool(self, pool_id: str):
        status = self._pool_status.get(pool_id)
        if status is None:
            status = self._pool_status[pool_id] = self.store.pool_status(pool_id)
        return status

    def _pool_failed(self, pool_id: str, now: float, message: str,
                     states: dict[str, ClusterState] | None = None) -> None:
        """A pool that cannot give nodes now (stockout, quota, no permission, provisioning timed out): left
        alone for a while, the jobs waiting for its nodes go back to the solver, and its unused size is given back."""
        self._cool_pool(pool_id, now, message)
        cluster_name, pool = pool_id.split("/", 1)
        for job in self.store.jobs([JobState.DISPATCHING, JobState.DISPATCHED]):
            if job.cluster != cluster_name or job.pool != pool:
                continue
            # it may have reached the cluster already: removed there before it can start late
            moved = self._take_off_cluster(job, now, f"{pool_id} cannot provide nodes now ({message}); back to the "
                                                     "solver", kind="requeued", dispatch_error=message)
            if moved:
                self._dirty = True
        state = (states or self.last_states).get(cluster_name)
        cfg = self.config.cluster(cluster_name)
        spec = next((p for p in cfg.pools if p.name == pool), None) if isinstance(cfg, CloudCluster) else None
        ps = state.pool(pool) if state else None
        if spec is None or ps is None:
            return
        busy = sum(1 for n in state.nodes if n.pool == pool and n.jobs > 0)
        asked = max(ps.nodes, ps.desired_nodes)
        if asked > max(spec.min_nodes, busy) and (busy == 0 or ps.removes_idle_first):
            self._shrink(cluster_name, pool, max(spec.min_nodes, busy), now,
                         f"{pool_id} scaled back to {max(spec.min_nodes, busy)} node(s): it cannot provide nodes now")

    def _shrink(self, cluster: str, pool: str, keep: int, now: float, event: str) -> ProviderError | None:
        key = f"scale:{cluster}/{pool}:{keep}:{now:.3f}"
        self.store.intend("scale", key, cluster=cluster, pool=pool, now=now, payload={"desired": keep})
        err = self._perform(key, lambda: self.providers[cluster].scale_pool(pool, keep, key))
        if err is None:
            self.store.record_event("scale", event, now=now, cluster=cluster)
        return err

    def _check_provisioning(self, states: dict[str, ClusterState]) -> None:
        """A pool still short of the nodes it was asked for after its provisioning timeout counts as failed."""
        now = self.clock.now()
        for cluster in self.config.clusters:
            if not isinstance(cluster, CloudCluster) or cluster.name not in states:
                continue
            for p in cluster.pools:
                pid, ps = f"{cluster.name}/{p.name}", states[cluster.name].pool(p.name)
                if ps is None or ps.desired_nodes <= ps.ready_nodes:
                    self._growing_since.pop(pid, None)
                    continue
                since = self._growing_since.setdefault(pid, now)
                if now - since >= p.provisioning_timeout:
                    self._growing_since.pop(pid, None)
                    self._pool_failed(pid, now, f"{ps.desired_nodes - ps.ready_nodes} of {ps.desired_nodes} node(s) "
                                                f"not ready {(now - since) / 60:.0f} min after the scale-up "
                                                "(provisioning timeout)", states)

    def _cool_pool(self, pool_id: str, now: float, message: str) -> None:
        status = self._pool(pool_id)
        status.cooloff_until = now + POOL_COOLOFF_S
        status.message = message
        self.store.save_pool_status(status)
        self.store.record_event("pool", f"{pool_id} not used for {POOL_COOLOFF_S / 60:.0f} min: {message}",
                                now=now, cluster=pool_id.split("/")[0])
        self._dirty = True

    def _cooling_pools(self, now: float) -> set[str]:
        out = set()
        for cluster in self.config.clusters:
            if isinstance(cluster, CloudCluster):
                for p in cluster.pools:
                    st = self._pool(f"{cluster.name}/{p.name}")
                    if st.cooloff_until is not None and st.cooloff_until > now:
                        out.add(f"{cluster.name}/{p.name}")
        return out

    def next_wakeup(self) -> float | None:
        """The earliest time the loop will re-plan on its own though nothing changes (for the simulator)."""
        times = [self._revisit_at] if self._revisit_at is not None else []
        if self._solved_for and math.isfinite(self.resolve_every_s):
            times.append(self._last_solve_at + self.resolve_every_s)
        return min(times) if times else None


# A GPU allocated to a pod but busier than this is not idle.
IDLE_UTILIZATION_PCT = 5.0


def summarize_signals(state: ClusterState) -> dict[str, float]:
    """The cluster's signals plus what follows from them: mean GPU utilization, GPUs allocated but idle."""
    out = dict(state.signals)
    if state.gpu_utilization:
        out["gpu_utilization_avg"] = sum(state.gpu_utilization.values()) / len(state.gpu_utilization)
        allocated = {n.name: n.gpus - n.free_gpus for n in state.nodes}
        out["idle_allocated_gpus"] = float(sum(
            allocated.get(node, 0) for node, util in state.gpu_utilization.items() if util < IDLE_UTILIZATION_PCT))
    return out


def _gpu_type_of(state: ClusterState, nodes: tuple[str, ...]) -> str | None:
    for n in state.nodes:
        if n.name in nodes:
            return n.gpu_type
    return None
