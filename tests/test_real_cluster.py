"""The Kubernetes provider against a real cluster, when SPILLOVER_TEST_KUBECONFIG names its kubeconfig
(and SPILLOVER_TEST_CONTEXT, optionally, the context); skipped otherwise. Uses namespace spillover-e2etest."""

from __future__ import annotations

import os
import time
import uuid

import pytest

from spillover.providers.contract import DispatchRequest, JobPhase
from spillover.providers.kubernetes import KubernetesProvider, KubeSettings
from spillover.scheduler.model import JobSpec

KUBECONFIG = os.environ.get("SPILLOVER_TEST_KUBECONFIG")
pytestmark = pytest.mark.skipif(not KUBECONFIG, reason="set SPILLOVER_TEST_KUBECONFIG to run against a real cluster")


@pytest.fixture
def provider():
    settings = KubeSettings(kubeconfig=KUBECONFIG, context=os.environ.get("SPILLOVER_TEST_CONTEXT"),
                            namespace="spillover-e2etest", namespace_per_queue=False, ttl_seconds_after_finished=600)
    p = KubernetesProvider("real", settings)
    yield p
    p.close()


def test_a_real_cluster_is_observed_and_a_job_runs_and_is_cancelled(provider):
    state = provider.observe()
    gpu_nodes = [n for n in state.nodes if n.free_gpus >= 1]
    if not gpu_nodes:
        pytest.skip(f"the cluster has no schedulable GPU node with a free GPU ({len(state.nodes)} GPU nodes seen)")
    job_id = f"e2etest-{uuid.uuid4().hex[:6]}"
    spec = JobSpec(name="e2etest", queue="e2etest", image="busybox:1.36", command=["sleep", "600"], gpus=1, cpu=0.1,
                   memory_gib=0.1, estimated_runtime_s=600)
    req = DispatchRequest(job_id=job_id, request_id=f"dispatch:{job_id}:1", spec=spec, gpu_type=gpu_nodes[0].gpu_type)
    provider.dispatch(req)
    provider.dispatch(req)  # a retry adopts
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            st = provider.observe().jobs.get(job_id)
            if st is not None and st.phase == JobPhase.RUNNING:
                break
            time.sleep(2)
        else:
            pytest.fail(f"{job_id} did not start within 5 minutes: {provider.job_status(job_id)}")
    finally:
        provider.cancel(job_id, f"cancel:{job_id}:1")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and provider.job_status(job_id) is not None:
        time.sleep(1)
    assert provider.job_status(job_id) is None
