"""The loop reconciles with what clusters really run: unschedulable jobs and unavailable clusters are requeued
once and their stale copies removed, jobs a cluster already runs are adopted, strangers are flagged."""

from __future__ import annotations

import pytest

from conftest import make_config
from spillover.providers.contract import DispatchRequest
from spillover.scheduler.loop import ControlLoop
from spillover.scheduler.model import JobSpec, JobState
from spillover.scheduler.store import Store
from spillover.scheduler.wiring import build_providers


def spec(name: str, gpus: int = 8, hours: float = 1.0, **kw) -> JobSpec:
    return JobSpec(name=name, queue="research", image="img:1", gpus=gpus, estimated_runtime_s=hours * 3600, **kw)


@pytest.fixture
def world(clock, sqlite_url):
    config = make_config(loop={"requeue_grace_s": 600, "unschedulable_grace_s": 300})
    store = Store(sqlite_url)
    providers = build_providers(config, clock)
    return config, store, providers, ControlLoop(config, store, providers, clock)


def cycles(loop, clock, n: int, step: float = 30.0) -> None:
    for _ in range(n):
        loop.run_cycle()
        clock.advance(step)


def test_a_job_unschedulable_past_the_grace_is_removed_there_and_requeued_elsewhere(world, clock):
    config, store, providers, loop = world
    (job,) = store.submit([spec("stuck", gpus=4)], now=clock.now())
    loop.run_cycle()
    assert store.job(job.id).cluster == "onprem"
    onprem = providers["onprem"]
    # the job had not started yet when both nodes were cordoned: it is stuck in the cluster
    for n in onprem.observe().nodes:
        onprem.cordon(n.name)
    onprem.cancel(job.id, "test")  # the cluster lost the start; redispatch by hand to get a stuck pod
    store.transition(job.id, [JobState.RUNNING, JobState.DISPATCHED], JobState.DISPATCHED, now=clock.now(),
                     message="test")
    onprem.dispatch(DispatchRequest(job_id=job.id, request_id="again", spec=store.job(job.id).spec))
    cycles(loop, clock, 12)  # 360 s > the 300 s grace
    moved = store.job(job.id)
    events = [e.message for e in store.events(job.id)]
    assert any("unschedulable on onprem" in m and "requeued" in m for m in events), events
    assert onprem.job_status(job.id) is None  # the stuck copy was removed
    assert moved.cluster == "aws" and moved.state in (JobState.DISPATCHED, JobState.RUNNING)


def test_jobs_of_a_cluster_gone_past_the_grace_are_requeued_once_and_the_stale_copy_removed(world, clock):
    config, store, providers, loop = world
    (job,) = store.submit([spec("victim", hours=5)], now=clock.now())
    cycles(loop, clock, 2)
    assert store.job(job.id).state == JobState.RUNNING and store.job(job.id).cluster == "onprem"
    providers["onprem"].unreachable = True
    cycles(loop, clock, 10)  # 3 failures mark it unavailable; 600 s of grace
    assert store.job(job.id).cluster == "onprem"  # still within the grace: nothing moves
    cycles(loop, clock, 15)
    moved = store.job(job.id)
    assert moved.cluster == "aws" and moved.state in (JobState.DISPATCHED, JobState.RUNNING)
    providers["onprem"].unreachable = False
    cycles(loop, clock, 3)
    assert providers["onprem"].job_status(job.id) is None  # the copy that kept running there is gone
    assert providers["aws"].job_status(job.id) is not None
    requeues = [e for e in store.events(job.id) if e.kind == "requeued"]
    assert len(requeues) == 1 and "onprem unavailable" in requeues[0].message
    assert store.open_actions() == []


def test_a_job_the_store_thinks_is_queued_but_a_cluster_runs_is_adopted_not_started_twice(world, clock):
    config, store, providers, loop = world
    (job,) = store.submit([spec("already", gpus=2)], now=clock.now())
    providers["onprem"].dispatch(DispatchRequest(job_id=job.id, request_id="earlier", spec=job.spec))
    cycles(loop, clock, 2)
    adopted = store.job(job.id)
    assert adopted.state == JobState.RUNNING and adopted.cluster == "onprem"
    assert [e.kind for e in store.events(job.id)].count("adopted") == 1
    assert providers["onprem"].created == [job.id] and providers["aws"].created == []


def test_a_job_unknown_to_the_store_is_flagged_once_and_left_alone(world, clock):
    config, store, providers, loop = world
    providers["onprem"].dispatch(DispatchRequest(job_id="stranger-1", request_id="x", spec=spec("stranger")))
    cycles(loop, clock, 3)
    flagged = [e for e in store.events() if e.kind == "orphan"]
    assert len(flagged) == 1 and "stranger-1" in flagged[0].message and "left alone" in flagged[0].message
    assert providers["onprem"].job_status("stranger-1") is not None
