"""Bursting when clouds misbehave, on simulated clusters: spot nodes reclaimed under running jobs, a pool that
stocks out on scale-up, a scale-up whose nodes never come."""

from __future__ import annotations

import copy

import pytest

from conftest import BASE_CONFIG
from spillover.providers.contract import ErrorKind, ProviderError
from spillover.scheduler.model import JobSpec, JobState


def spec(name: str, gpus: int = 8, hours: float = 1.0, **kw) -> JobSpec:
    return JobSpec(name=name, queue="research", image="img:1", gpus=gpus, estimated_runtime_s=hours * 3600, **kw)


def clusters(**aws_pool):
    out = copy.deepcopy(BASE_CONFIG["clusters"])
    out[1]["pools"][0].update(aws_pool)
    out.append({"name": "gcp", "kind": "cloud", "provider": "simulated", "cloud": "gcp", "region": "us-central1",
                "pools": [{"name": "a2", "instance_type": "a2-highgpu-8g", "max_nodes": 4,
                           "provisioning_delay_s": 600}]})
    return out


def fill_on_prem(store, clock, loop):
    store.submit([spec("fill-1", hours=50), spec("fill-2", hours=50)], now=clock.now(), teams={})
    loop.run_cycle()


def cycles(loop, clock, n: int, step: float = 30.0):
    for _ in range(n):
        clock.advance(step)
        loop.run_cycle()


def test_a_job_whose_spot_node_is_reclaimed_runs_again_and_a_pool_that_keeps_losing_nodes_is_backed_off(
        world, clock):
    config, store, providers, loop = world(clusters=clusters(spot=True))
    fill_on_prem(store, clock, loop)
    (job,) = store.submit([spec("ckpt", hours=5, checkpointable=True)], now=clock.now(), teams={})
    cycles(loop, clock, 25)  # the spot node boots (600 s) and the job starts
    assert (store.job(job.id).state, store.job(job.id).pool) == (JobState.RUNNING, "p4d")
    aws = providers["aws"]
    for lost in range(1, 4):
        [node] = [n.name for n in aws.observe().nodes if n.jobs]
        aws.reclaim(node)
        loop.run_cycle()
        events = [e for e in store.events(job.id) if e.kind == "interrupted"]
        assert len(events) == lost and "reclaimed" in events[-1].message and "requeued" in events[-1].message
        if lost < 3:
            cycles(loop, clock, 25)  # the replacement node boots and the job resumes there
            assert store.job(job.id).state == JobState.RUNNING
    # three nodes lost within the hour: the spot pool is left alone, the job goes to the next target
    assert store.pool_status("aws/p4d").cooloff_until > clock.now()
    assert any("lost 3 nodes" in e.message for e in store.events() if e.kind == "pool")
    cycles(loop, clock, 25)
    assert (store.job(job.id).cluster, store.job(job.id).state) == ("gcp", JobState.RUNNING)


def test_a_stockout_on_the_cheapest_pool_sends_its_jobs_to_the_next_cheapest_at_once(world, clock):
    config, store, providers, loop = world(clusters=clusters())
    fill_on_prem(store, clock, loop)
    providers["aws"].fail_next["scale_pool"] = ProviderError(
        ErrorKind.STOCKOUT, "InsufficientInstanceCapacity for p4d.24xlarge", cluster="aws", pool="p4d")
    jobs = store.submit([spec(f"b-{i}", hours=3) for i in range(2)], now=clock.now(), teams={})
    clock.advance(30)
    loop.run_cycle()
    for j in jobs:
        job = store.job(j.id)
        assert (job.cluster, job.pool) == ("gcp", "a2")
        kinds = [(e.kind, e.message) for e in store.events(j.id)]
        assert any(k == "requeued" and "InsufficientInstanceCapacity" in m for k, m in kinds), kinds
    assert providers["gcp"].observe().pool("a2").desired_nodes == 2
    assert providers["aws"].observe().pool("p4d").desired_nodes == 0
    assert store.pool_status("aws/p4d").cooloff_until > clock.now()


def test_a_scale_up_whose_nodes_never_come_times_out_and_the_pool_is_given_back(world, clock):
    only_aws = copy.deepcopy(BASE_CONFIG["clusters"])
    only_aws[1]["pools"][0].update(provisioning_delay_s=7200, provisioning_timeout_s=900)
    config, store, providers, loop = world(clusters=only_aws, policy={"value_of_time_per_gpu_hour": 40.0})
    fill_on_prem(store, clock, loop)
    (job,) = store.submit([spec("b", hours=3)], now=clock.now(), teams={})
    clock.advance(30)
    loop.run_cycle()
    assert store.job(job.id).pool == "p4d"
    cycles(loop, clock, 31)  # 930 s
    job = store.job(job.id)
    assert job.state == JobState.PENDING
    assert any("provisioning timeout" in e.message for e in store.events(job.id))
    assert providers["aws"].observe().pool("p4d").desired_nodes == 0


def test_with_a_value_per_job_hour_small_jobs_burst_first_and_big_ones_wait(world, clock):
    # on-prem frees in 2 h; waiting is worth $20 per job-hour whatever the job's size: a 1-GPU job's burst (an
    # eighth of a p4d for 3 h plus the new node's boot and idle time, ~$16) is cheaper than its wait ($40), an
    # 8-GPU job's (~$73) is not
    config, store, providers, loop = world(policy={"value_of_time_per_job_hour": 20.0})
    store.submit([spec("fill-1", hours=2), spec("fill-2", hours=2)], now=clock.now(), teams={})
    loop.run_cycle()
    small, big = store.submit([spec("small", gpus=1, hours=3), spec("big", gpus=8, hours=3)], now=clock.now(),
                              teams={})
    clock.advance(30)
    loop.run_cycle()
    assert store.job(small.id).cluster == "aws"
    assert store.job(big.id).state == JobState.PENDING
    assert config.value_of_time("research", 8) == pytest.approx(20.0 / 8)
