"""The Kubernetes provider against a stateful fake API server, through the official client and real sockets."""

from __future__ import annotations

import dataclasses
import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from kubernetes import client as k8s

from kube.apiserver import FakeKube
from spillover.providers.contract import (ClusterProvider, ClusterState, DispatchRequest, ErrorKind, JobPhase, JobStatus,
                                ProviderError)
from spillover.providers.kube_objects import job_manifest, parse_quantity, pod_requests, tolerates
from spillover.providers.kubernetes import KubernetesProvider, KubeSettings, PoolInfo
from spillover.scheduler.model import JobSpec

TOKEN = "test-token"
WRONG_TOKEN = "wrong-token-5f2c9a7e41"
POOL_LABEL = "spillover.dev/pool"
GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
TIME_SCALE = 0.01  # a job's estimated second lasts 10 ms in the fake cluster

T = TypeVar("T")


def wait_for(fn: Callable[[], T | None], *, timeout: float = 10.0, what: str = "condition") -> T:
    """Poll until fn returns something truthy; the caches are eventually consistent by contract."""
    end = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < end:
        last = fn()
        if last:
            return last
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}; last saw {last!r}")


def observe_until(provider: KubernetesProvider, pred: Callable[[ClusterState], object], *,
                  what: str, timeout: float = 10.0) -> ClusterState:
    def attempt() -> ClusterState | None:
        state = provider.observe()
        return state if pred(state) else None

    return wait_for(attempt, timeout=timeout, what=what)


def job_in(provider: KubernetesProvider, job_id: str, phase: JobPhase, *, what: str,
           timeout: float = 10.0) -> JobStatus:
    state = observe_until(provider, lambda s: job_id in s.jobs and s.jobs[job_id].phase == phase,
                          what=what, timeout=timeout)
    return state.jobs[job_id]


def spec(name: str = "train", *, queue: str = "research", gpus: int = 2, nodes: int = 1, runtime_s: float = 50.0,
         **kw: Any) -> JobSpec:
    return JobSpec(name=name, queue=queue, image="ghcr.io/acme/train:1.4", command=["python", "train.py"],
                   args=["--epochs", "3"], env={"WANDB_MODE": "offline"}, gpus=gpus, nodes=nodes, cpu=8,
                   memory_gib=64, estimated_runtime_s=runtime_s, **kw)


def request(job_id: str, s: JobSpec, **kw: Any) -> DispatchRequest:
    return DispatchRequest(job_id=job_id, request_id=f"dispatch-{job_id}-1", spec=s, **kw)


@pytest.fixture
def kube() -> Iterator[FakeKube]:
    server = FakeKube(time_scale=TIME_SCALE, token=TOKEN).start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def make_provider(kube: FakeKube) -> Iterator[Callable[..., KubernetesProvider]]:
    made: list[KubernetesProvider] = []

    def make(settings: KubeSettings | None = None, *, api_client: k8s.ApiClient | None = None,
             name: str = "onprem", **kw: Any) -> KubernetesProvider:
        p = KubernetesProvider(name, settings or KubeSettings(request_timeout_s=2.0),
                               api_client=api_client or kube.api_client(), **kw)
        made.append(p)
        return p

    yield make
    for p in made:
        p.close()


def core(kube: FakeKube) -> k8s.CoreV1Api:
    return k8s.CoreV1Api(kube.api_client())


def run_pod(kube: FakeKube, name: str, *, namespace: str = "other", node: str | None = None,
            requests: dict[str, str] | None = None, limits: dict[str, str] | None = None,
            runtime_s: float = 1e6, selector: dict[str, str] | None = None) -> None:
    """Somebody else's pod: it takes capacity Spillover must not count as free."""
    api = core(kube)
    try:
        api.create_namespace({"metadata": {"name": namespace}})
    except k8s.ApiException as e:
        assert e.status == 409
    pod_spec: dict[str, Any] = {"restartPolicy": "Never", "containers": [{
        "name": "app", "image": "busybox", "resources": {"requests": requests or {}, "limits": limits or {}}}]}
    if node:
        pod_spec["nodeSelector"] = {"kubernetes.io/hostname": node}
    if selector:
        pod_spec["nodeSelector"] = selector
    api.create_namespaced_pod(namespace, {
        "metadata": {"name": name, "annotations": {"spillover/estimated-runtime-s": str(runtime_s)}},
        "spec": pod_spec})


def pod_phase(kube: FakeKube, namespace: str, name: str) -> str | None:
    for p in kube.objects("pods", namespace):
        if p["metadata"]["name"] == name:
            return (p.get("status") or {}).get("phase")
    return None


# ---- capacity -----------------------------------------------------------------------------------


def test_free_capacity_is_allocatable_minus_what_unfinished_pods_request(kube, make_provider):
    kube.add_node("n1", gpus=8, gpu_product="A100", cpu=96, memory_gib=1024)
    kube.add_node("n2", gpus=4, gpu_product="H100", cpu=64, memory_gib=512)
    # GPUs given only as a limit are requested all the same
    run_pod(kube, "busy", node="n1", requests={"cpu": "10", "memory": "64Gi"}, limits={"nvidia.com/gpu": "2"})
    run_pod(kube, "small", node="n1", requests={"cpu": "500m", "memory": "512Mi"})
    run_pod(kube, "done", node="n2", requests={"cpu": "4", "memory": "8Gi", "nvidia.com/gpu": "4"},
            limits={"nvidia.com/gpu": "4"}, runtime_s=0)
    run_pod(kube, "nowhere", requests={"cpu": "1", "nvidia.com/gpu": "1"}, limits={"nvidia.com/gpu": "1"},
            selector={"no-such": "label"})
    wait_for(lambda: pod_phase(kube, "other", "busy") == "Running" and pod_phase(kube, "other", "small")
             == "Running" and pod_phase(kube, "other", "done") == "Succeeded", what="pods to settle")

    state = make_provider().observe()

    nodes = {n.name: n for n in state.nodes}
    assert set(nodes) == {"n1", "n2"}
    n1, n2 = nodes["n1"], nodes["n2"]
    assert (n1.gpu_type, n1.gpus, n1.free_gpus) == ("A100", 8, 6)
    assert n1.free_cpu == pytest.approx(96 - 10.5)
    assert n1.free_memory_gib == pytest.approx(1024 - 64.5)
    assert n1.jobs == 0  # none of it is Spillover's
    # a finished pod holds nothing; a pod no node can take is bound nowhere
    assert (n2.gpu_type, n2.free_gpus, n2.free_cpu, n2.free_memory_gib) == ("H100", 4, 64, 512)


def test_nodes_our_jobs_cannot_use_are_left_out(kube, make_provider):
    pool = {POOL_LABEL: "p1"}
    kube.add_node("ok", labels=pool)
    kube.add_node("not-ready", ready=False, labels=pool)
    kube.add_node("cordoned", unschedulable=True)
    kube.add_node("dedicated", taints=[{"key": "dedicated", "value": "inference", "effect": "NoSchedule"}])
    kube.add_node("draining", taints=[{"key": "maintenance", "effect": "NoExecute"}])
    kube.add_node("gpu-tainted", gpu_product="H100", taints=[{"key": "nvidia.com/gpu", "effect": "NoSchedule"}])
    kube.add_node("preferred", taints=[{"key": "spot", "effect": "PreferNoSchedule"}])
    kube.add_node("cpu-only", gpus=0)
    settings = KubeSettings(request_timeout_s=2.0, pool_label=POOL_LABEL, tolerations=(GPU_TOLERATION,))
    provider = make_provider(settings, pools=(PoolInfo("p1", "p4d.24xlarge", "A100", 8, 0, 4),))

    state = provider.observe()

    assert sorted(n.name for n in state.nodes) == ["gpu-tainted", "ok", "preferred"]
    by_name = {n.name: n for n in state.nodes}
    assert by_name["gpu-tainted"].gpu_type == "H100"  # tolerated by the settings' tolerations
    assert by_name["ok"].pool == "p1" and by_name["preferred"].pool is None
    p1 = state.pool("p1")
    assert p1 is not None and (p1.nodes, p1.ready_nodes, p1.gpu_type) == (2, 1, "A100")

    # changes arrive through the watch: a node going NotReady leaves, a new one joins
    kube.set_node_ready("ok", False)
    kube.add_node("late", gpu_product="L40S")
    state = observe_until(provider, lambda s: "late" in {n.name for n in s.nodes}
                          and "ok" not in {n.name for n in s.nodes}, what="watched node changes")
    assert {n.name: n.gpu_type for n in state.nodes}["late"] == "L40S"


# ---- dispatch and the job's life ----------------------------------------------------------------


def test_dispatch_creates_namespace_and_a_labelled_job_that_runs_to_success(kube, make_provider):
    kube.add_node("g1", labels={"team": "ml", POOL_LABEL: "p1"},
                  taints=[{"key": "nvidia.com/gpu", "effect": "NoSchedule"}])
    kube.add_node("g2", gpu_product="H100", labels={"team": "ml", POOL_LABEL: "p1"},
                  taints=[{"key": "nvidia.com/gpu", "effect": "NoSchedule"}])
    settings = KubeSettings(request_timeout_s=2.0, pool_label=POOL_LABEL, node_selector={"team": "ml"},
                            tolerations=(GPU_TOLERATION,), ttl_seconds_after_finished=3600)
    provider = make_provider(settings)
    provider.observe()

    provider.dispatch(request("train-a1b2c3", spec(), pool="p1", gpu_type="A100"))

    assert "spillover-research" in {n["metadata"]["name"] for n in kube.objects("namespaces")}
    [job] = kube.objects("jobs", "spillover-research")
    meta, job_spec = job["metadata"], job["spec"]
    assert meta["name"] == "train-a1b2c3"
    assert meta["labels"]["spillover/job-id"] == "train-a1b2c3"
    assert meta["labels"]["spillover/queue"] == "research"
    assert meta["labels"]["app.kubernetes.io/managed-by"] == "spillover"
    assert meta["annotations"]["spillover/request-id"] == "dispatch-train-a1b2c3-1"
    assert job_spec["backoffLimit"] == 0 and job_spec["ttlSecondsAfterFinished"] == 3600
    template = job_spec["template"]
    assert template["metadata"]["labels"]["spillover/job-id"] == "train-a1b2c3"
    assert float(template["metadata"]["annotations"]["spillover/estimated-runtime-s"]) == 50.0
    pod_spec = template["spec"]
    assert pod_spec["restartPolicy"] == "Never"
    assert pod_spec["nodeSelector"] == {"team": "ml", POOL_LABEL: "p1", "nvidia.com/gpu.product": "A100"}
    assert GPU_TOLERATION in pod_spec["tolerations"]
    [container] = pod_spec["containers"]
    assert container["name"] == "train" and container["image"] == "ghcr.io/acme/train:1.4"
    assert container["command"] == ["python", "train.py"] and container["args"] == ["--epochs", "3"]
    assert {"name": "WANDB_MODE", "value": "offline"} in container["env"]
    res = container["resources"]
    assert parse_quantity(res["requests"]["cpu"]) == 8 and parse_quantity(res["requests"]["memory"]) == 64 * 2**30
    assert res["requests"]["nvidia.com/gpu"] == "2" and res["limits"]["nvidia.com/gpu"] == "2"

    done = job_in(provider, "train-a1b2c3", JobPhase.SUCCEEDED, what="the job to succeed")
    assert done.nodes == ("g1",)  # the A100 node, as pinned
    assert done.pool == "p1" and done.queue == "research"
    assert done.started_at is not None and done.finished_at is not None and done.finished_at >= done.started_at
    direct = provider.job_status("train-a1b2c3")
    assert direct is not None and direct.phase == JobPhase.SUCCEEDED and direct.nodes == ("g1",)


def test_gpu_feature_discovery_product_names_are_read_as_gpu_types_and_pinned_by_their_own_name(
        kube, make_provider):
    kube.add_node("a100", gpu_product="NVIDIA-A100-SXM4-80GB")
    kube.add_node("h100", gpu_product="NVIDIA-H100-80GB-HBM3")
    kube.add_node("v100", gpu_product="Tesla-V100-SXM2-16GB")
    kube.add_node("custom", gpu_product="Acme-Accel-9")
    provider = make_provider(KubeSettings(request_timeout_s=2.0, gpu_product_aliases={"Acme-Accel-9": "ACC9"}))
    types = {n.name: n.gpu_type for n in provider.observe().nodes}
    assert types == {"a100": "A100", "h100": "H100", "v100": "V100", "custom": "ACC9"}

    provider.dispatch(request("pinned-1", spec(), gpu_type="H100"))
    [job] = kube.objects("jobs", "spillover-research")
    assert job["spec"]["template"]["spec"]["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    done = job_in(provider, "pinned-1", JobPhase.SUCCEEDED, what="the pinned job to succeed")
    assert done.nodes == ("h100",)


def test_running_job_shows_its_node_and_takes_its_gpus(kube, make_provider):
    kube.add_node("g1")
    provider = make_provider()
    provider.observe()
    provider.dispatch(request("long-1", spec(runtime_s=1e5, gpus=3)))

    state = observe_until(provider, lambda s: "long-1" in s.jobs and s.jobs["long-1"].phase == JobPhase.RUNNING,
                          what="the job to run")
    status = state.jobs["long-1"]
    assert status.nodes == ("g1",) and status.started_at is not None and status.queue == "research"
    [g1] = state.nodes
    assert (g1.free_gpus, g1.jobs) == (5, 1)
    assert g1.free_cpu == pytest.approx(96 - 8) and g1.free_memory_gib == pytest.approx(1024 - 64)


def test_dispatching_twice_leaves_one_job(kube, make_provider):
    kube.add_node("g1")
    provider = make_provider()
    provider.observe()
    req = request("twice-1", spec(runtime_s=1e5))
    provider.dispatch(req)
    provider.dispatch(req)
    # a scheduler restarted mid-action has no cache yet: the API's 409 leads to the same adoption
    make_provider().dispatch(req)
    assert [j["metadata"]["name"] for j in kube.objects("jobs", "spillover-research")] == ["twice-1"]


def test_a_namespace_deleted_behind_our_back_is_created_again(kube, make_provider):
    kube.add_node("g1")
    provider = make_provider()
    provider.dispatch(request("first-1", spec()))
    core(kube).delete_namespace("spillover-research")
    wait_for(lambda: "spillover-research" not in {n["metadata"]["name"] for n in kube.objects("namespaces")},
             what="the namespace to go")

    provider.dispatch(request("second-1", spec()))

    assert [j["metadata"]["name"] for j in kube.objects("jobs", "spillover-research")] == ["second-1"]


def test_a_foreign_job_with_the_same_name_is_not_adopted(kube, make_provider):
    api = core(kube)
    api.create_namespace({"metadata": {"name": "spillover-research"}})
    k8s.BatchV1Api(kube.api_client()).create_namespaced_job("spillover-research", {
        "metadata": {"name": "clash-1"},
        "spec": {"template": {"spec": {"restartPolicy": "Never",
                                       "containers": [{"name": "x", "image": "busybox"}]}}}})
    provider = make_provider()

    with pytest.raises(ProviderError) as err:
        provider.dispatch(request("clash-1", spec()))

    assert err.value.kind == ErrorKind.INVALID
    assert "clash-1" in err.value.message
    assert len(kube.objects("jobs", "spillover-research")) == 1


def test_gang_job_is_an_indexed_job_with_one_pod_per_node(kube, make_provider):
    kube.add_node("g1")
    kube.add_node("g2")
    provider = make_provider()
    provider.observe()

    provider.dispatch(request("gang-1", spec(gpus=8, nodes=2, runtime_s=1e5)))

    [job] = kube.objects("jobs", "spillover-research")
    assert job["spec"]["completionMode"] == "Indexed"
    assert job["spec"]["completions"] == job["spec"]["parallelism"] == 2
    running = job_in(provider, "gang-1", JobPhase.RUNNING, what="the gang to run")
    assert running.nodes == ("g1", "g2")
    pods = kube.objects("pods", "spillover-research")
    assert sorted(p["spec"]["nodeName"] for p in pods) == ["g1", "g2"]


def test_job_no_node_can_take_reports_since_when(kube, make_provider):
    kube.add_node("g1", gpus=8)
    provider = make_provider()
    provider.observe()
    before = time.time()

    provider.dispatch(request("huge-1", spec(gpus=16)))

    status = observe_until(provider, lambda s: "huge-1" in s.jobs and s.jobs["huge-1"].unschedulable_since,
                           what="the job to be marked unschedulable").jobs["huge-1"]
    assert status.phase == JobPhase.PENDING
    assert before - 2 <= status.unschedulable_since <= time.time() + 1  # the API's times have 1 s resolution
    assert status.message  # the scheduler's own words, e.g. "0/1 nodes are available: ..."


def test_failed_job_reports_why(kube, make_provider):
    kube.add_node("g1")
    settings = KubeSettings(request_timeout_s=2.0)
    provider = make_provider(settings)
    provider.observe()
    provider.dispatch(request("setup-1", spec()))  # creates the namespace
    body = job_manifest(request("oom-1", spec(runtime_s=10)), "spillover-research", settings)
    body["spec"]["template"]["metadata"]["annotations"]["spillover/exit-code"] = "137"
    k8s.BatchV1Api(kube.api_client()).create_namespaced_job("spillover-research", body)

    failed = job_in(provider, "oom-1", JobPhase.FAILED, what="the job to fail")
    assert "137" in failed.message
    assert failed.nodes == ("g1",) and failed.finished_at is not None


def test_cancel_deletes_the_job_and_its_pods_and_cancelling_again_succeeds(kube, make_provider):
    kube.add_node("g1")
    provider = make_provider()
    provider.observe()
    provider.dispatch(request("stop-1", spec(runtime_s=1e5)))
    job_in(provider, "stop-1", JobPhase.RUNNING, what="the job to run")

    provider.cancel("stop-1", "cancel-stop-1")

    wait_for(lambda: not kube.objects("jobs", "spillover-research") and not kube.objects("pods", "spillover-research"),
             what="the Job and its pods to be gone")
    provider.cancel("stop-1", "cancel-stop-1")  # already gone: success
    assert provider.job_status("stop-1") is None
    state = observe_until(provider, lambda s: "stop-1" not in s.jobs and s.nodes[0].free_gpus == 8,
                          what="the cache to drop the job")
    assert state.nodes[0].jobs == 0


def test_job_status_of_an_unknown_job_is_none(kube, make_provider):
    assert make_provider().job_status("never-1") is None


def test_scale_pool_is_invalid_without_a_node_pool_api(kube, make_provider):
    with pytest.raises(ProviderError) as err:
        make_provider().scale_pool("p1", 3, "scale-1")
    assert err.value.kind == ErrorKind.INVALID and "node-pool API" in err.value.message


# ---- the watch cache under trouble --------------------------------------------------------------


def test_cache_lists_again_after_the_api_forgets_its_history(kube, make_provider):
    kube.add_node("g1")
    # watches that end every second reconnect from their last resourceVersion, as after any disconnect
    provider = make_provider(watch_timeout_s=1.0)
    provider.observe()
    caches = (provider.nodes_cache, provider.pods_cache, provider.job_pods_cache, provider.jobs_cache)
    lists_before = sum(c.lists for c in caches)

    kube.add_node("g2", gpu_product="H100")  # a write the pod and Job caches have no reason to see
    kube.compact()
    provider.dispatch(request("after-1", spec(runtime_s=1e5)))

    state = observe_until(provider, lambda s: {n.name for n in s.nodes} == {"g1", "g2"} and "after-1" in s.jobs,
                          what="changes made after the compaction")
    wait_for(lambda: sum(c.lists for c in caches) > lists_before, what="a second list")
    assert sum(n.gpus - n.free_gpus for n in state.nodes) in (0, 2)  # pending or running, never counted twice
    errors = provider.poll_errors()
    assert errors and all(e.kind == ErrorKind.TRANSIENT and "410" in e.message for e in errors)
    assert provider.poll_errors() == []  # each reported once


def test_stopped_api_is_unreachable_at_once_and_recovers(kube, make_provider):
    kube.add_node("g1")
    provider = make_provider()
    provider.observe()

    kube.stop()
    t0 = time.monotonic()
    with pytest.raises(ProviderError) as err:
        provider.observe()
    assert err.value.kind == ErrorKind.UNREACHABLE
    assert time.monotonic() - t0 < 2.0
    with pytest.raises(ProviderError) as err:
        provider.dispatch(request("down-1", spec()))
    assert err.value.kind == ErrorKind.UNREACHABLE

    kube.start()
    kube.add_node("g2")
    state = observe_until(provider, lambda s: len(s.nodes) == 2, what="the cache to catch up after the restart")
    assert {n.name for n in state.nodes} == {"g1", "g2"}


def test_first_observe_of_an_api_that_is_down_is_unreachable(kube, make_provider):
    provider = make_provider()
    kube.stop()
    t0 = time.monotonic()
    with pytest.raises(ProviderError) as err:
        provider.observe()
    assert err.value.kind == ErrorKind.UNREACHABLE and time.monotonic() - t0 < 3.0
    kube.start()
    kube.add_node("g1")
    assert [n.name for n in provider.observe().nodes] == ["g1"]


def test_wrong_token_is_an_auth_error_that_never_shows_the_token(kube, make_provider, caplog):
    caplog.set_level(logging.DEBUG)
    provider = make_provider(api_client=kube.api_client(token=WRONG_TOKEN))

    errors: list[ProviderError] = []
    for call in (provider.observe, lambda: provider.dispatch(request("auth-1", spec())),
                 lambda: provider.cancel("auth-1", "c-1"), lambda: provider.job_status("auth-1")):
        with pytest.raises(ProviderError) as err:
            call()
        errors.append(err.value)

    assert all(e.kind == ErrorKind.AUTH for e in errors)
    errors += provider.poll_errors()
    texts = [str(e) for e in errors] + [r.getMessage() for r in caplog.records]
    texts += [str(r.args) for r in caplog.records] + [str(r.exc_info) for r in caplog.records if r.exc_info]
    assert not [t for t in texts if WRONG_TOKEN in t or TOKEN in t]
    assert any("401" in str(e) for e in errors)


def test_a_kubeconfig_context_reaches_the_cluster(kube, tmp_path: Path):
    kube.add_node("g1")
    path = tmp_path / "kubeconfig"
    kube.write_kubeconfig(str(path), "fake-ctx")
    with KubernetesProvider("onprem", KubeSettings(kubeconfig=str(path), context="fake-ctx",
                                                   request_timeout_s=2.0)) as provider:
        assert isinstance(provider, ClusterProvider)
        assert [n.name for n in provider.observe().nodes] == ["g1"]
    with pytest.raises(ProviderError) as err:
        KubernetesProvider("onprem", KubeSettings(kubeconfig=str(path), context="no-such-context"))
    assert err.value.kind == ErrorKind.INVALID and "no-such-context" in err.value.message


def test_a_denied_permission_is_an_auth_error_naming_verb_and_resource(kube, make_provider):
    kube.add_node("g1")
    provider = make_provider()
    provider.observe()
    kube.forbid("create", "jobs")

    with pytest.raises(ProviderError) as err:
        provider.dispatch(request("denied-1", spec()))

    assert err.value.kind == ErrorKind.AUTH
    assert 'cannot create resource "jobs"' in err.value.message and "403" in err.value.message
    kube.allow("create", "jobs")
    provider.dispatch(request("denied-1", spec()))
    assert [j["metadata"]["name"] for j in kube.objects("jobs", "spillover-research")] == ["denied-1"]


def test_a_cluster_that_cannot_list_pods_cannot_be_observed(kube, make_provider):
    kube.add_node("g1")
    kube.forbid("list", "pods")
    with pytest.raises(ProviderError) as err:
        make_provider().observe()
    assert err.value.kind == ErrorKind.AUTH and 'cannot list resource "pods"' in err.value.message


def test_one_server_error_is_retried_and_throttling_is_reported_as_such(kube, make_provider):
    provider = make_provider()
    kube.inject_error("create", "jobs", code=500)
    provider.dispatch(request("retry-1", spec()))  # the second try goes through
    assert len(kube.objects("jobs", "spillover-research")) == 1

    kube.inject_error("create", "jobs", code=429, times=2)
    with pytest.raises(ProviderError) as err:
        provider.dispatch(request("retry-2", spec()))
    assert err.value.kind == ErrorKind.THROTTLED
    kube.inject_error("delete", "jobs", code=503, times=2)
    with pytest.raises(ProviderError) as err:
        provider.cancel("retry-1", "cancel-retry-1")
    assert err.value.kind == ErrorKind.TRANSIENT


def test_an_api_that_accepts_but_never_answers_times_out_fast(tmp_path: Path):
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(32)  # connections complete in the backlog; nothing is ever read or answered
    try:
        path = tmp_path / "kubeconfig"
        server = f"http://127.0.0.1:{silent.getsockname()[1]}"
        path.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "silent",
            "clusters": [{"name": "silent", "cluster": {"server": server}}],
            "users": [{"name": "silent", "user": {"token": TOKEN}}],
            "contexts": [{"name": "silent", "context": {"cluster": "silent", "user": "silent"}}]}))
        with KubernetesProvider("silent", KubeSettings(kubeconfig=str(path), request_timeout_s=0.3)) as provider:
            t0 = time.monotonic()
            with pytest.raises(ProviderError) as err:
                provider.observe()
            assert err.value.kind == ErrorKind.UNREACHABLE and time.monotonic() - t0 < 3.0
            t0 = time.monotonic()
            with pytest.raises(ProviderError) as err:
                provider.dispatch(request("silent-1", spec()))
            assert err.value.kind == ErrorKind.UNREACHABLE and time.monotonic() - t0 < 3.0
    finally:
        silent.close()


def test_closing_the_provider_stops_its_watch_threads(kube, make_provider):
    kube.add_node("g1")
    provider = make_provider(name="closing")
    provider.observe()

    def threads() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t.name.startswith("kube-cache closing:")]

    assert len(threads()) == 4
    provider.close()
    assert threads() == []
    with pytest.raises(ProviderError):
        provider.observe()


def test_in_cluster_settings_outside_a_cluster_say_so(monkeypatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(ProviderError) as err:
        KubernetesProvider("onprem", KubeSettings(in_cluster=True))
    assert err.value.kind == ErrorKind.INVALID and "in-cluster service account" in err.value.message


# ---- pure pieces ----------------------------------------------------------------------------------


def test_tolerations_match_as_the_scheduler_matches_them():
    taint = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}
    assert tolerates([{"operator": "Exists"}], taint)
    assert tolerates([{"key": "nvidia.com/gpu", "operator": "Exists"}], taint)
    assert tolerates([{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}], taint)
    assert not tolerates([{"key": "nvidia.com/gpu", "value": "absent"}], taint)
    assert not tolerates([{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoExecute"}], taint)


def test_a_pod_reserves_what_the_scheduler_reserves_for_it():
    def c(cpu: str, gpu: str | None = None, **extra: Any) -> dict[str, Any]:
        res: dict[str, Any] = {"requests": {"cpu": cpu, "memory": "1Gi"}}
        if gpu:
            res["limits"] = {"nvidia.com/gpu": gpu}
        return {"name": "c", "resources": res, **extra}

    spec_ = {"containers": [c("2", "1"), c("1")],
             "initContainers": [c("8"), c("500m", restartPolicy="Always")],  # a setup step, then a sidecar
             "overhead": {"cpu": "250m"}}
    gpus, cpu, mem = pod_requests(spec_, "nvidia.com/gpu")
    # the setup step runs alone (8 cores) and outweighs app + sidecar (3.5 cores)
    assert (gpus, cpu, mem) == (1, pytest.approx(8.25), 3 * 2**30)


def test_job_without_a_chosen_type_is_kept_to_the_allowed_types():
    body = job_manifest(request("typed-1", spec(gpu_types=["A100", "H100"])), "ns", KubeSettings())
    pod_spec = body["spec"]["template"]["spec"]
    assert "nodeSelector" not in pod_spec
    [term] = pod_spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"]
    assert term["matchExpressions"] == [{"key": "nvidia.com/gpu.product", "operator": "In",
                                         "values": ["A100", "H100"]}]


def test_settings_mirror_the_kubernetes_config_section():
    from spillover.scheduler.config import KubernetesConfig

    config = KubernetesConfig(context="gpu-prod", namespace="ml", pool_label="cloud.google.com/gke-nodepool",
                              node_selector={"team": "ml"}, tolerations=[GPU_TOLERATION], request_timeout_s=5)
    settings = KubeSettings.of(config)
    assert set(KubernetesConfig.model_fields) <= {f.name for f in dataclasses.fields(KubeSettings)}
    assert settings == KubeSettings(context="gpu-prod", namespace="ml", pool_label="cloud.google.com/gke-nodepool",
                                    node_selector={"team": "ml"}, tolerations=(GPU_TOLERATION,),
                                    request_timeout_s=5.0)
    defaults = KubeSettings.of(KubernetesConfig())
    assert defaults == KubeSettings()
    assert defaults.namespace_for("research") == "spillover-research"


def test_a_job_for_a_pool_with_no_nodes_yet_is_pinned_by_the_pool_alone():
    # the pool's first node joins before GPU feature discovery labels it; the pool label already fixes the type
    settings = KubeSettings(pool_label=POOL_LABEL)
    body = job_manifest(request("burst-1", spec(), pool="p4d", gpu_type="A100"), "ns", settings, lambda _t: [])
    assert body["spec"]["template"]["spec"]["nodeSelector"] == {POOL_LABEL: "p4d"}
    on_prem = job_manifest(request("local-1", spec(), gpu_type="A100"), "ns", settings, lambda _t: [])
    assert on_prem["spec"]["template"]["spec"]["nodeSelector"] == {"nvidia.com/gpu.product": "A100"}
