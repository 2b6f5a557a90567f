"""Step 2 of the cycle, passive sync: what the clusters report, folded into the working state — a job accepted,
started, finished, lost, stuck unschedulable or interrupted, and copies found where the state does not expect them.
Nothing here calls a cluster; changes go to the state and its journal."""

from __future__ import annotations

from spillover.providers.contract import ClusterState, JobPhase, JobStatus
from spillover.scheduler.config import CloudCluster
from spillover.scheduler.context import LoopContext
from spillover.scheduler.health import Health
from spillover.scheduler.model import JobState
from spillover.scheduler.records import ActionDone
from spillover.scheduler.store import Job

# A job that sat unschedulable in a cluster is not sent back there for this long.
AVOID_AFTER_UNSCHEDULABLE_S = 3600.0
# A job interrupted this many times (spot reclaims, lost nodes) is failed rather than run again.
MAX_INTERRUPTIONS = 5
BOUND = (JobState.RUNNING, JobState.DISPATCHED, JobState.DISPATCHING, JobState.CANCELLING)


class PassiveSync:
    def __init__(self, ctx: LoopContext, health: Health) -> None:
        self.ctx = ctx
        self.health = health
        self._flagged: set[tuple[str, str]] = set()  # (cluster, job id) of copies reported as strangers

    def fold(self, states: dict[str, ClusterState]) -> None:
        """Fold this cycle's observations into the state."""
        ctx, now, report = self.ctx, self.ctx.clock.now(), self.ctx.report
        for job in ctx.state.active():
            state = states.get(job.cluster or "")
            if state is None:
                continue  # not observed this cycle: nothing is known, nothing changes
            status = state.jobs.get(job.id)
            if status is not None and status.phase == JobPhase.RUNNING and job.state == JobState.RUNNING:
                continue  # the common case: still running
            if status is None:
                if job.state == JobState.CANCELLING:
                    self._finish(job, JobState.CANCELLED, now, f"cancelled; removed from {job.cluster}")
                elif job.state in (JobState.DISPATCHED, JobState.RUNNING):
                    # the cluster lost it (deleted by hand, node gone): back to the queue
                    ctx.move(job, JobState.PENDING, now=now, message=f"{job.cluster} no longer has the job; requeued",
                             cluster=None, pool=None, gpu_type=None, dispatched_at=None, started_at=None)
                    ctx.dirty = True
                continue  # DISPATCHING and absent: its open dispatch action is performed again
            if (status.phase == JobPhase.PENDING and job.state == JobState.DISPATCHED
                    and status.unschedulable_since is not None
                    and now - status.unschedulable_since >= self._unschedulable_grace(job)):
                self._requeue_unschedulable(job, status.message, now - status.unschedulable_since, now)
            elif status.phase == JobPhase.PENDING and job.state == JobState.DISPATCHING:
                confirm_dispatch(ctx, job, now)
            elif status.phase == JobPhase.RUNNING and job.state in (JobState.DISPATCHING, JobState.DISPATCHED):
                self._started(job, state, status, now)
                # the plan that dispatched it expected it to start then: only a late start (it waited for a node)
                # changes what the next plan would forecast
                if (status.started_at or now) - (job.dispatched_at or now) > ctx.config.loop.interval_s:
                    ctx.dirty = True
            elif (status.phase == JobPhase.FAILED and status.interrupted and job.state != JobState.CANCELLING
                  and self._requeue_interrupted(job, status, now)):
                report.interrupted += 1
            elif status.phase in (JobPhase.SUCCEEDED, JobPhase.FAILED) and job.state != JobState.CANCELLING:
                to = JobState.SUCCEEDED if status.phase == JobPhase.SUCCEEDED else JobState.FAILED
                if job.state != JobState.RUNNING and status.started_at is not None:
                    job = self._started(job, state, status, now)
                self._finish(job, to, now, f"{to.value} on {job.cluster}"
                             + (f": {status.message}" if status.message else ""),
                             finished_at=status.finished_at or now, done=self._dispatch_done(job, now))
                report.finished += 1
        self._adopt_or_flag(states, now)

    def _started(self, job: Job, state: ClusterState, status: JobStatus, now: float) -> Job:
        return self.ctx.move(job, JobState.RUNNING, now=now, cluster=job.cluster, started_at=status.started_at or now,
                             gpu_type=gpu_type_of(state, status.nodes),
                             message=f"running on {job.cluster} ({', '.join(status.nodes)})",
                             done=self._dispatch_done(job, now))

    def _dispatch_done(self, job: Job, now: float) -> tuple[ActionDone, ...]:
        if job.dispatch_key in self.ctx.state.intents:
            return (ActionDone(job.dispatch_key, now),)
        return ()

    def _finish(self, job: Job, to: JobState, now: float, message: str, finished_at: float | None = None,
                done: tuple[ActionDone, ...] = ()) -> None:
        if job.state in BOUND:
            self.ctx.move(job, to, now=now, message=message, finished_at=finished_at or now, done=done)
            self.ctx.dirty = True

    def _unschedulable_grace(self, job: Job) -> float:
        """Pods wait for a booting node as unschedulable too, so a pool's boot time is added to the grace."""
        grace = self.ctx.config.loop.unschedulable_grace_s
        cluster = self.ctx.config.cluster(job.cluster or "")
        if job.pool and isinstance(cluster, CloudCluster):
            grace += next((p.provisioning_delay_s for p in cluster.pools if p.name == job.pool), 0.0)
        return grace

    def _requeue_unschedulable(self, job: Job, message: str, for_s: float, now: float) -> None:
        """A job no node of its cluster can take goes back to the solver, which will not send it there again soon."""
        avoid = {c: t for c, t in job.avoid if t > now}
        avoid[job.cluster or ""] = now + AVOID_AFTER_UNSCHEDULABLE_S
        self.ctx.take_off_cluster(
            job, now, f"unschedulable on {job.cluster} for {for_s / 60:.0f} min ({message or 'no node fits'}); "
                      "removed there and requeued", avoid=tuple(sorted(avoid.items())))
        self.ctx.dirty = True

    def _requeue_interrupted(self, job: Job, status: JobStatus, now: float) -> bool:
        """A job whose node was taken away (a spot reclaim) runs again elsewhere; False if it has been
        interrupted too often and should fail instead."""
        pool = job.pool or status.pool
        if pool:
            self.health.note_interruption(f"{job.cluster}/{pool}", status.nodes, now)
        if job.interruptions + 1 >= MAX_INTERRUPTIONS:
            return False
        why = status.message or "its node was taken away"
        # the failed Job keeps the job's name there until it is removed
        self.ctx.take_off_cluster(
            job, now, f"{why} on {job.cluster}{'/' + pool if pool else ''}; requeued"
                      + (" to resume from its checkpoint" if job.spec.checkpointable else ""), kind="interrupted",
            dispatch_done=True, interruptions=job.interruptions + 1,
            progress=job.progress_at(now, self.ctx.config.speed(job.gpu_type) if job.gpu_type else 1.0))
        self.ctx.dirty = True
        return True

    def _adopt_or_flag(self, states: dict[str, ClusterState], now: float) -> None:
        """Reconcile what clusters run with what the state expects: adopt, never start a second copy."""
        ctx = self.ctx
        expected = {(j.cluster, j.id) for j in ctx.state.active()}
        unexpected: dict[str, list[tuple[str, JobStatus]]] = {}
        for name, state in states.items():
            for jid, status in state.jobs.items():
                if ((name, jid) not in expected and status.phase in (JobPhase.PENDING, JobPhase.RUNNING)
                        and (name, jid) not in self._flagged):
                    unexpected.setdefault(jid, []).append((name, status))
        if not unexpected:
            return
        stale = {(a.cluster, a.job_id) for a in ctx.state.open_intents("cancel")}
        strangers = [jid for jid in unexpected if ctx.state.get(jid) is None]
        known = ctx.store.jobs_by_ids(strangers) if strangers else {}
        for jid, where in unexpected.items():
            for name, status in where:
                if (name, jid) in stale:
                    continue  # a stale copy about to be removed
                job = ctx.state.get(jid)
                if job is not None and job.state == JobState.PENDING:
                    to = JobState.RUNNING if status.phase == JobPhase.RUNNING else JobState.DISPATCHED
                    ctx.move(job, to, now=now, kind="adopted",
                             message=f"found in {name}; adopted instead of starting a second copy",
                             cluster=name, pool=status.pool, started_at=status.started_at,
                             gpu_type=gpu_type_of(states[name], status.nodes))
                    ctx.dirty = True
                    break
                job = job or known.get(jid)
                what = "unknown to the store" if job is None else f"{job.state.value} in the store"
                ctx.say_once(name, f"{name} runs Spillover job {jid}, which is {what}; left alone", kind="orphan")
                self._flagged.add((name, jid))


def confirm_dispatch(ctx: LoopContext, job: Job, now: float) -> None:
    done = (ActionDone(job.dispatch_key, now),) if job.dispatch_key in ctx.state.intents else ()
    ctx.move(job, JobState.DISPATCHED, now=now, cluster=job.cluster,
             message=f"accepted by {job.cluster}; waiting for its node(s)", done=done)


def gpu_type_of(state: ClusterState, nodes: tuple[str, ...]) -> str | None:
    for n in state.nodes:
        if n.name in nodes:
            return n.gpu_type
    return None
