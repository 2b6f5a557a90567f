"""Acting (step 4) and repair: every action is intended and committed before it is performed, and marked done
after. An action still open — the process died between the two, or the call failed in a way worth retrying — is
performed again with the same key; providers are idempotent under that key, so a job is never dispatched twice and
a crash loses nothing."""

from __future__ import annotations

import math

from spillover.placement import Action as Decide
from spillover.placement import Decision, Plan
from spillover.providers.contract import ClusterProvider, DispatchRequest, ErrorKind
from spillover.scheduler.context import FINAL_ERRORS, LoopContext, log
from spillover.scheduler.health import POOL_ERRORS, Health
from spillover.scheduler.model import JobState
from spillover.scheduler.problem import TargetRef
from spillover.scheduler.records import Estimate, NewAction
from spillover.scheduler.store import Job
from spillover.scheduler.sync import confirm_dispatch

# A waiting job's reason is rewritten when its gist changes, or at most this often when only its figures do.
REASON_REFRESH_S = 300.0


class Actor:
    def __init__(self, ctx: LoopContext, health: Health) -> None:
        self.ctx = ctx
        self.health = health
        self._wait_signature: dict[str, tuple] = {}  # job id -> the gist of its last WAIT reason
        self._reason_at: dict[str, float] = {}  # job id -> when its reason was last written
        self.requeued = False  # a pool refused its scale-up in the last `act`: worth planning again at once
        # a stale copy was removed after this cycle's observation: the room it leaves is seen, and used, next cycle
        self.freed = False

    # ---- repair ----------------------------------------------------------------------------------

    def repair(self) -> None:
        """Perform what a crash or a failed call left intended, on the clusters that answer now."""
        ctx = self.ctx
        for action in ctx.state.open_intents():
            if action.cluster not in ctx.states or action.key not in ctx.state.intents:
                continue  # the cluster is not reachable now; retry when it is
            provider = ctx.providers[action.cluster]
            now = ctx.clock.now()
            if action.kind == "dispatch":
                job = ctx.state.get(action.job_id or "")
                if job is None or job.state != JobState.DISPATCHING or job.dispatch_key != action.key:
                    ctx.journal.done(action.key, at=now)  # superseded (cancelled, requeued, started)
                    continue
                if action.job_id in ctx.states[action.cluster].jobs:
                    confirm_dispatch(ctx, job, now)  # it got there before the crash: adopt it
                    continue
                self._dispatch(job, provider, action.key, tuple(action.payload.get("nodes", ())),
                               action.payload.get("gpu_type"))
            elif action.kind == "cancel":
                if ctx.perform(action.key, lambda p=provider, a=action: p.cancel(a.job_id or "", a.key)) is None:
                    self.freed = True
            elif action.kind == "scale":
                ctx.perform(action.key, lambda p=provider, a=action: p.scale_pool(a.pool or "",
                                                                                  int(a.payload["desired"]), a.key))

    def cancel_requested(self) -> None:
        """Remove from their clusters the jobs a user asked to cancel."""
        ctx = self.ctx
        todo = []
        for job in ctx.state.in_states((JobState.CANCELLING,)):
            if job.cluster not in ctx.states:
                continue
            key = f"cancel:{job.id}:{job.attempts}"
            if ctx.intend("cancel", key, cluster=job.cluster or "", job_id=job.id, now=ctx.clock.now()):
                todo.append((job, key))
        if todo:
            ctx.commit()
        for job, key in todo:
            ctx.perform(key, lambda p=ctx.providers[job.cluster or ""], k=key, j=job.id: p.cancel(j, k))

    # ---- 4. act ----------------------------------------------------------------------------------

    def act(self, plan: Plan, refs: dict[str, TargetRef], pending: dict[str, Job]) -> None:
        """Write every intent of the plan, commit, then scale pools up and dispatch."""
        ctx, report = self.ctx, self.ctx.report
        now = ctx.clock.now()
        self.requeued = False
        scales: list[tuple[str, str, int, str]] = []
        dispatches: list[tuple[str, str, tuple[str, ...], str]] = []
        for target_id, add in plan.new_nodes.items():
            if add <= 0:
                continue
            ref = refs[target_id]
            ps = ctx.states[ref.cluster].pool(ref.pool or "")
            desired = min(ps.max_nodes, max(ps.nodes, ps.desired_nodes) + add)
            key = f"scale:{target_id}:{desired}:{now:.3f}"
            ctx.intend("scale", key, cluster=ref.cluster, pool=ref.pool, now=now, payload={"desired": desired})
            ctx.on_resize(ref.cluster, ref.pool or "", True)
            scales.append((ref.cluster, ref.pool or "", desired, key))
        for d in plan.decisions:
            job = ctx.state.get(d.job_id)
            if job is None or job.state != JobState.PENDING:
                continue  # cancelled meanwhile
            if d.action == Decide.WAIT:
                report.waiting += 1
                self._waiting(job, d, refs, now)
                continue
            ref = refs[d.target or ""]
            key = f"dispatch:{job.id}:{job.attempts + 1}"
            intent = NewAction(key, "dispatch", ref.cluster, now, job_id=job.id, pool=ref.pool,
                               payload={"nodes": list(d.nodes), "target": d.target, "gpu_type": ref.gpu_type})
            ctx.move(job, JobState.DISPATCHING, now=now, cluster=ref.cluster, gpu_type=ref.gpu_type,
                     kind="burst" if d.action == Decide.BURST else "placed", message=d.reason, pool=ref.pool,
                     attempts=job.attempts + 1, dispatched_at=now, reason=d.reason, intents=(intent,))
            self._wait_signature.pop(job.id, None)
            self._reason_at.pop(job.id, None)
            ctx.metrics.admitted(job, ref.cluster, now)
            dispatches.append((job.id, ref.cluster, d.nodes, ref.gpu_type))
            if d.action == Decide.BURST:
                report.burst += 1
            else:
                report.started += 1
        failed = ctx.commit()  # every intent of this cycle is written before anything is done
        ctx.crash_hook("after-intent")
        for cluster, pool, desired, key in scales:
            err = ctx.perform(key, lambda c=cluster, p=pool, n=desired, k=key: ctx.providers[c].scale_pool(p, n, k))
            if err is None:
                report.scaled.append(f"{cluster}/{pool}->{desired}")
                ctx.event("scale", f"{cluster}/{pool} scaled up to {desired} node(s) for the burst", now=now,
                          cluster=cluster)
            elif err.kind in POOL_ERRORS:
                self.health.pool_failed(f"{cluster}/{pool}", now, str(err))
                self.requeued = True
        for job_id, cluster, hints, gpu_type in dispatches:
            job = ctx.state.get(job_id)
            if job_id in failed or job is None or job.state != JobState.DISPATCHING:
                continue  # cancelled meanwhile, or sent back to the solver: its pool refused to grow
            self._dispatch(job, ctx.providers[cluster], job.dispatch_key, hints, gpu_type)

    def _waiting(self, job: Job, d: Decision, refs: dict[str, TargetRef], now: float) -> None:
        """A waiting job's reason and estimated start: an event when its gist changes; the row kept fresh, but not
        rewritten each cycle."""
        reason, wait_target = d.reason, d.wait_target
        sig = (d.action, wait_target, reason.split(":")[0].split("(")[0])
        new = self._wait_signature.get(job.id) != sig
        self._wait_signature[job.id] = sig
        if job.reason == reason:
            return
        if new or now - self._reason_at.get(job.id, -1e18) >= REASON_REFRESH_S:
            ref = refs.get(wait_target or "")
            start = now + d.start_h * 3600.0 if ref is not None and math.isfinite(d.start_h) else None
            estimate = Estimate(start, ref.cluster if ref is not None else None, d.pending)
            self.ctx.set_reason(job, reason, now=now, event_kind="waiting" if new else None, estimate=estimate)
            self._reason_at[job.id] = now

    def _dispatch(self, job: Job, provider: ClusterProvider, key: str, hints: tuple[str, ...],
                  gpu_type: str | None = None) -> None:
        ctx = self.ctx
        req = DispatchRequest(job_id=job.id, request_id=key, spec=job.spec, pool=job.pool, node_hints=hints,
                              gpu_type=gpu_type, progress=job.progress)

        def call() -> None:
            provider.dispatch(req)
            ctx.crash_hook("after-dispatch")

        err = ctx.perform(key, call)
        now = ctx.clock.now()
        job = ctx.state.get(job.id) or job
        if err is None:
            ctx.move(job, JobState.DISPATCHED, now=now, cluster=job.cluster, message=f"accepted by {job.cluster}")
        elif err.kind in FINAL_ERRORS:
            if err.kind in (ErrorKind.STOCKOUT, ErrorKind.QUOTA) and job.pool:
                self.health.cool_pool(f"{job.cluster}/{job.pool}", now, str(err))
            ctx.move(job, JobState.PENDING, now=now, message=f"dispatch to {job.cluster} failed ({err}); back in the "
                     "queue", cluster=None, pool=None, gpu_type=None, dispatched_at=None)
            ctx.dirty = True
        else:
            log.warning("dispatch of %s to %s will be retried: %s", job.id, job.cluster, err)

    def forget_gone(self) -> None:
        """Drop what is remembered of jobs no longer in the queue."""
        jobs = self.ctx.state.jobs
        for memo in (self._wait_signature, self._reason_at):
            for jid in [j for j in memo if j not in jobs]:
                del memo[jid]

