"""The simulated cluster honours the provider contract: idempotent dispatch, real durations, provisioning delay, safe shrink."""

from __future__ import annotations

import pytest

from spillover.providers.contract import ClusterProvider, DispatchRequest, ErrorKind, JobPhase, PoolSpec, ProviderError
from spillover.providers.simulated import SimNodeGroup, SimulatedCluster
from spillover.scheduler.clock import SimClock
from spillover.scheduler.model import JobSpec

POOL = PoolSpec(name="p4d", instance_type="p4d.24xlarge", gpu_type="A100", gpus_per_node=8, cpu_per_node=96,
                memory_gib_per_node=1152, min_nodes=0, max_nodes=3, provisioning_delay_s=600)


def req(job_id: str, gpus: int = 8, runtime_s: float = 3600, pool: str | None = None, nodes: int = 1) -> DispatchRequest:
    spec = JobSpec(name="j", queue="q", image="i", gpus=gpus, nodes=nodes, estimated_runtime_s=runtime_s)
    return DispatchRequest(job_id=job_id, request_id=f"dispatch:{job_id}:1", spec=spec, pool=pool)


def onprem(clock, count=2) -> SimulatedCluster:
    return SimulatedCluster("op", clock, node_groups=(SimNodeGroup(count, 8, "A100", 96, 1024),))


def test_it_is_a_cluster_provider(clock):
    assert isinstance(onprem(clock), ClusterProvider)


def test_job_runs_for_its_duration_and_dispatch_is_idempotent(clock):
    c = onprem(clock)
    c.dispatch(req("a"))
    c.dispatch(req("a"))  # retried with the same id: adopted, not duplicated
    assert c.created == ["a"]
    st = c.observe()
    assert st.jobs["a"].phase == JobPhase.RUNNING
    assert sum(n.free_gpus for n in st.nodes) == 8
    clock.advance(3599)
    assert c.job_status("a").phase == JobPhase.RUNNING
    clock.advance(1)
    done = c.job_status("a")
    assert done.phase == JobPhase.SUCCEEDED and done.finished_at - done.started_at == pytest.approx(3600)


def test_a_job_waits_in_the_cluster_until_capacity_frees_and_starts_exactly_then(clock):
    c = onprem(clock, count=1)
    c.dispatch(req("a", runtime_s=100))
    c.dispatch(req("b", runtime_s=100))
    assert c.job_status("b").phase == JobPhase.PENDING
    clock.advance(250)
    b = c.job_status("b")
    assert b.phase == JobPhase.SUCCEEDED and b.started_at == pytest.approx(clock.now() - 250 + 100)


def test_pool_nodes_take_their_provisioning_delay_and_jobs_start_when_ready(clock):
    c = SimulatedCluster("aws", clock, pools=(POOL,))
    t0 = clock.now()
    c.scale_pool("p4d", 2, "scale:1")
    c.dispatch(req("a", pool="p4d", nodes=2))
    st = c.observe()
    assert st.pool("p4d").nodes == 2 and st.pool("p4d").ready_nodes == 0
    assert st.jobs["a"].phase == JobPhase.PENDING
    clock.advance(601)
    a = c.job_status("a")
    assert a.phase == JobPhase.RUNNING and a.started_at == pytest.approx(t0 + 600) and len(a.nodes) == 2


def test_shrinking_a_pool_never_removes_a_busy_node(clock):
    c = SimulatedCluster("aws", clock, pools=(POOL,))
    c.scale_pool("p4d", 3, "s1")
    clock.advance(600)
    c.dispatch(req("a", pool="p4d"))
    c.scale_pool("p4d", 0, "s2")
    st = c.observe()
    assert st.pool("p4d").nodes == 1 and st.jobs["a"].phase == JobPhase.RUNNING
    clock.advance(3600)
    assert c.observe().pool("p4d").nodes == 0  # gone once its job is done


def test_scale_outside_bounds_and_unknown_pool_are_invalid(clock):
    c = SimulatedCluster("aws", clock, pools=(POOL,))
    with pytest.raises(ProviderError) as e:
        c.scale_pool("p4d", 4, "s")
    assert e.value.kind == ErrorKind.INVALID
    with pytest.raises(ProviderError):
        c.scale_pool("nope", 1, "s")


def test_unreachable_cluster_raises_a_classified_error(clock):
    c = onprem(clock)
    c.unreachable = True
    with pytest.raises(ProviderError) as e:
        c.observe()
    assert e.value.kind == ErrorKind.UNREACHABLE


def test_state_file_outlives_the_process(tmp_path):
    clock = SimClock()
    path = tmp_path / "op.json"
    c = SimulatedCluster("op", clock, node_groups=(SimNodeGroup(1, 8, "A100", 96, 1024),), state_path=path)
    c.dispatch(req("a", runtime_s=100))
    again = SimulatedCluster("op", clock, node_groups=(SimNodeGroup(1, 8, "A100", 96, 1024),), state_path=path)
    again.dispatch(req("a", runtime_s=100))  # what a restarted scheduler would do: adoption
    assert again.created == ["a"]
    clock.advance(100)
    assert again.job_status("a").phase == JobPhase.SUCCEEDED
