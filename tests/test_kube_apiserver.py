"""The local Kubernetes API server, exercised only through the official client over a real socket."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import pytest
import urllib3
from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

from kube import FakeKube

RUNTIME = "spillover/estimated-runtime-s"


@pytest.fixture
def kube():
    k = FakeKube(time_scale=0.05).start()
    yield k
    k.close()
    assert not k.errors, k.errors[0]


@pytest.fixture
def core(kube):
    return client.CoreV1Api(kube.api_client())


@pytest.fixture
def batch(kube):
    return client.BatchV1Api(kube.api_client())


def wait_for(predicate, timeout=5.0, interval=0.02):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {predicate}")
        time.sleep(interval)


def reason_of(exc: ApiException) -> str:
    return json.loads(exc.body)["reason"]


def namespace(core, name):
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))


def job(name, *, gpus=1, runtime=10.0, completions=None, parallelism=None, indexed=False, tolerations=None,
        node_selector=None, ttl=None, backoff=None, labels=None, restart_policy="Never"):
    return client.V1Job(
        metadata=client.V1ObjectMeta(name=name, labels=labels or {"app.kubernetes.io/managed-by": "spillover"}),
        spec=client.V1JobSpec(
            completions=completions, parallelism=parallelism, completion_mode="Indexed" if indexed else None,
            backoff_limit=backoff, ttl_seconds_after_finished=ttl,
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels={"spillover/job-id": name}, annotations={RUNTIME: str(runtime)}),
                spec=client.V1PodSpec(
                    restart_policy=restart_policy, tolerations=tolerations, node_selector=node_selector,
                    containers=[client.V1Container(
                        name="train", image="ghcr.io/example/train:1.0",
                        resources=client.V1ResourceRequirements(
                            requests={"cpu": "500m", "memory": "1024Mi"}, limits={"nvidia.com/gpu": str(gpus)}))]))))


def job_condition(j, type_):
    return next((c for c in j.status.conditions or [] if c.type == type_ and c.status == "True"), None)


def pods_of(core, ns, name):
    return core.list_namespaced_pod(ns, label_selector=f"job-name={name}").items


# ---------------------------------------------------------------------------------------------------- basics

def test_discovery_answers_like_a_real_server(kube):
    api = kube.api_client()
    assert client.VersionApi(api).get_code().git_version.startswith("v1.")
    assert client.CoreApi(api).get_api_versions().versions == ["v1"]
    groups = client.ApisApi(api).get_api_versions().groups
    assert [g.name for g in groups] == ["batch"]
    resources = {r.name for r in client.BatchV1Api(api).get_api_resources().resources}
    assert resources == {"jobs"}


def test_indexed_job_creates_pods_that_bind_run_and_complete(kube, core, batch):
    kube.add_node("gpu-a", gpus=8)
    namespace(core, "spillover-research")
    created = batch.create_namespaced_job("spillover-research",
                                          job("train-1", gpus=4, runtime=30, completions=2, parallelism=2,
                                              indexed=True))  # 1.5 s at this time scale
    assert created.metadata.uid and created.metadata.generation == 1
    assert int(created.metadata.resource_version) > 0
    assert created.spec.backoff_limit == 0 and created.spec.completion_mode == "Indexed"

    def running():
        pods = pods_of(core, "spillover-research", "train-1")
        return len(pods) == 2 and all(p.status.phase == "Running" for p in pods) and pods

    pods = wait_for(running)
    assert sorted(p.metadata.annotations["batch.kubernetes.io/job-completion-index"] for p in pods) == ["0", "1"]
    for p in pods:
        assert p.metadata.labels["spillover/job-id"] == "train-1"
        assert p.metadata.labels["job-name"] == p.metadata.labels["batch.kubernetes.io/job-name"] == "train-1"
        assert p.metadata.labels["controller-uid"] == created.metadata.uid
        owner = p.metadata.owner_references[0]
        assert (owner.kind, owner.name, owner.uid, owner.controller) == ("Job", "train-1", created.metadata.uid, True)
        assert p.spec.node_name == "gpu-a"
        # a GPU limit without a request becomes the request, as the API server defaults it
        assert p.spec.containers[0].resources.requests["nvidia.com/gpu"] == "4"
        assert p.status.start_time and p.status.container_statuses[0].state.running
        scheduled = [c for c in p.status.conditions if c.type == "PodScheduled"][0]
        assert scheduled.status == "True"

    done = wait_for(lambda: job_condition(batch.read_namespaced_job("train-1", "spillover-research"), "Complete")
                    and batch.read_namespaced_job("train-1", "spillover-research"))
    assert done.status.succeeded == 2 and not done.status.active
    assert done.status.completion_time and done.status.start_time
    assert done.status.completed_indexes == "0-1"
    assert {p.status.phase for p in pods_of(core, "spillover-research", "train-1")} == {"Succeeded"}


def test_duplicate_create_is_409_already_exists(kube, core, batch):
    namespace(core, "q")
    with pytest.raises(ApiException) as e:
        namespace(core, "q")
    assert e.value.status == 409 and reason_of(e.value) == "AlreadyExists"

    batch.create_namespaced_job("q", job("j"))
    with pytest.raises(ApiException) as e:
        batch.create_namespaced_job("q", job("j"))
    assert e.value.status == 409 and reason_of(e.value) == "AlreadyExists"
    assert json.loads(e.value.body)["message"] == 'jobs.batch "j" already exists'

    kube.add_node("n1")
    with pytest.raises(ApiException) as e:
        core.create_node(client.V1Node(metadata=client.V1ObjectMeta(name="n1")))
    assert e.value.status == 409 and reason_of(e.value) == "AlreadyExists"


def test_missing_objects_are_404_with_a_status_body(kube, core, batch):
    with pytest.raises(ApiException) as e:
        batch.read_namespaced_job("nope", "default")
    assert e.value.status == 404
    body = json.loads(e.value.body)
    assert body["kind"] == "Status" and body["reason"] == "NotFound" and body["code"] == 404
    assert body["details"]["name"] == "nope"

    with pytest.raises(ApiException) as e:
        core.read_namespaced_pod("nope", "default")
    assert e.value.status == 404
    with pytest.raises(ApiException) as e:
        batch.delete_namespaced_job("nope", "default")
    assert e.value.status == 404

    with pytest.raises(ApiException) as e:
        batch.create_namespaced_job("ghost", job("j"))
    assert e.value.status == 404
    assert json.loads(e.value.body)["message"] == 'namespaces "ghost" not found'


def test_invalid_job_is_422_like_the_real_validation(kube, core, batch):
    with pytest.raises(ApiException) as e:
        batch.create_namespaced_job("default", job("j", restart_policy=None))
    assert e.value.status == 422 and reason_of(e.value) == "Invalid"
    assert "spec.template.spec.restartPolicy" in json.loads(e.value.body)["message"]

    with pytest.raises(ApiException) as e:
        batch.create_namespaced_job("default", job("Bad_Name"))
    assert e.value.status == 422

    with pytest.raises(ApiException) as e:
        batch.create_namespaced_job("default", job("j", labels={"spillover/job-id": "has spaces"}))
    assert e.value.status == 422


# ---------------------------------------------------------------------------------------------------- selectors

def test_label_selectors(kube, core):
    kube.add_node("a", labels={"pool": "p4d", "zone": "z1"})
    kube.add_node("b", labels={"pool": "p5", "zone": "z1"})
    kube.add_node("c", labels={"pool": "p5"}, gpus=0)

    def names(sel):
        return [n.metadata.name for n in core.list_node(label_selector=sel).items]

    assert names("pool=p5") == ["b", "c"]
    assert names("pool==p4d") == ["a"]
    assert names("pool!=p5") == ["a"]
    assert names("pool in (p4d,p5),zone") == ["a", "b"]
    assert names("pool notin (p4d)") == ["b", "c"]
    assert names("!zone") == ["c"]
    assert names("nvidia.com/gpu.product=A100") == ["a", "b"]
    assert names("kubernetes.io/hostname=c") == ["c"]
    with pytest.raises(ApiException) as e:
        core.list_node(label_selector="pool in (p4d")
    assert e.value.status == 400


def test_field_selectors(kube, core, batch):
    kube.add_node("n1", gpus=1)
    namespace(core, "q")
    batch.create_namespaced_job("q", job("fits", gpus=1, runtime=100))
    batch.create_namespaced_job("q", job("waits", gpus=1, runtime=100))
    wait_for(lambda: len(core.list_namespaced_pod("q", field_selector="status.phase=Running").items) == 1)
    kube.settle()

    running = core.list_pod_for_all_namespaces(field_selector="spec.nodeName=n1").items
    assert [p.metadata.labels["job-name"] for p in running] == ["fits"]
    unbound = core.list_namespaced_pod("q", field_selector="spec.nodeName=").items
    assert [p.metadata.labels["job-name"] for p in unbound] == ["waits"]
    assert len(core.list_namespaced_pod("q", field_selector="status.phase!=Running").items) == 1
    name = running[0].metadata.name
    assert [p.metadata.name for p in core.list_namespaced_pod(
        "q", field_selector=f"metadata.name={name},metadata.namespace=q").items] == [name]
    assert core.list_namespaced_pod("other", field_selector=f"metadata.name={name}").items == []
    assert [j.metadata.name for j in batch.list_job_for_all_namespaces(field_selector="metadata.name==waits").items] \
        == ["waits"]
    with pytest.raises(ApiException) as e:
        core.list_namespaced_pod("q", field_selector="spec.unknown=x")
    assert e.value.status == 400


# ---------------------------------------------------------------------------------------------------- watch

def test_watch_from_a_resource_version_sees_later_events(kube, core, batch):
    namespace(core, "q")
    rv = batch.list_namespaced_job("q").metadata.resource_version
    batch.create_namespaced_job("q", job("w1", runtime=0.5))
    # the job controller makes the pod asynchronously; delete only once it exists, so its watch has both ends
    wait_for(lambda: pods_of(core, "q", "w1"))
    batch.delete_namespaced_job("w1", "q", propagation_policy="Background")

    seen = [(e["type"], e["object"].metadata.name)
            for e in watch.Watch().stream(batch.list_namespaced_job, "q", resource_version=rv, timeout_seconds=2)]
    assert seen[0] == ("ADDED", "w1")
    assert seen[-1] == ("DELETED", "w1")
    assert all(t == "MODIFIED" for t, _ in seen[1:-1])

    # a pod watch with a label selector starts at ADDED and also sees the pod go away
    pod_events = [(e["type"], e["object"].status.phase) for e in watch.Watch().stream(
        core.list_namespaced_pod, "q", label_selector="job-name=w1", resource_version=rv, timeout_seconds=1)]
    assert pod_events[0] == ("ADDED", "Pending") and pod_events[-1][0] == "DELETED"


def test_watch_without_a_version_starts_with_the_current_state_then_streams(kube, core):
    kube.add_node("n1")
    stream = watch.Watch().stream(core.list_node, timeout_seconds=2)
    first = next(stream)
    assert (first["type"], first["object"].metadata.name) == ("ADDED", "n1")
    kube.add_node("n2")
    second = next(stream)
    assert (second["type"], second["object"].metadata.name) == ("ADDED", "n2")
    stream.close()


def test_watch_from_a_compacted_version_raises_410(kube, core):
    kube.add_node("n1")
    rv = core.list_node().metadata.resource_version
    kube.add_node("n2")
    kube.compact()
    with pytest.raises(ApiException) as e:
        list(watch.Watch().stream(core.list_node, resource_version=rv, timeout_seconds=2))
    assert e.value.status == 410
    with pytest.raises(ApiException) as e:
        core.list_node(resource_version=rv, resource_version_match="Exact")
    assert e.value.status == 410
    # the usual recovery: list again, watch from the fresh version
    fresh = core.list_node().metadata.resource_version
    kube.add_node("n3")
    events = list(watch.Watch().stream(core.list_node, resource_version=fresh, timeout_seconds=1))
    assert [e["object"].metadata.name for e in events] == ["n3"]


def test_watch_older_than_the_history_ring_raises_410():
    with FakeKube(history=5) as k:
        core = client.CoreV1Api(k.api_client())
        rv = core.list_node().metadata.resource_version
        for i in range(10):
            k.add_node(f"n{i}")
        with pytest.raises(ApiException) as e:
            list(watch.Watch().stream(core.list_node, resource_version=rv, timeout_seconds=1))
        assert e.value.status == 410


# ---------------------------------------------------------------------------------------------------- scheduling

def test_unschedulable_pod_gets_a_condition_and_schedules_when_a_node_fits(kube, core, batch):
    kube.add_node("small", gpus=8)
    namespace(core, "q")
    batch.create_namespaced_job("q", job("big", gpus=16))

    def unschedulable():
        pods = pods_of(core, "q", "big")
        conds = [c for p in pods for c in p.status.conditions or [] if c.type == "PodScheduled"]
        return conds and conds[0].status == "False" and conds[0]

    cond = wait_for(unschedulable)
    assert cond.reason == "Unschedulable" and cond.last_transition_time
    assert "0/1 nodes are available: 1 Insufficient nvidia.com/gpu" in cond.message
    assert pods_of(core, "q", "big")[0].status.phase == "Pending"

    kube.add_node("large", gpus=16)
    pod = wait_for(lambda: [p for p in pods_of(core, "q", "big") if p.spec.node_name])[0]
    assert pod.spec.node_name == "large"


def test_taints_need_tolerations_and_nodes_must_be_ready_and_schedulable(kube, core, batch):
    kube.add_node("tainted", taints=[{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}])
    kube.add_node("down", ready=False)
    kube.add_node("cordoned", unschedulable=True)
    namespace(core, "q")
    batch.create_namespaced_job("q", job("plain"))
    batch.create_namespaced_job("q", job("tolerant", tolerations=[
        client.V1Toleration(key="nvidia.com/gpu", operator="Exists", effect="NoSchedule")]))

    pod = wait_for(lambda: [p for p in pods_of(core, "q", "tolerant") if p.spec.node_name])[0]
    assert pod.spec.node_name == "tainted"
    kube.settle()
    plain = pods_of(core, "q", "plain")[0]
    assert plain.spec.node_name is None
    message = [c for c in plain.status.conditions if c.type == "PodScheduled"][0].message
    assert "1 node(s) had untolerated taint {nvidia.com/gpu: present}" in message
    assert "1 node(s) were unschedulable" in message
    assert "node.kubernetes.io/not-ready" in message

    kube.set_node_ready("down", True)
    assert wait_for(lambda: pods_of(core, "q", "plain")[0].spec.node_name) == "down"


def test_node_selector_and_capacity_queue_pods_until_others_finish(kube, core, batch):
    kube.add_node("h100", gpus=8, gpu_product="H100")
    kube.add_node("a100", gpus=8, gpu_product="A100")
    namespace(core, "q")
    sel = {"nvidia.com/gpu.product": "H100"}
    batch.create_namespaced_job("q", job("first", gpus=8, runtime=40, node_selector=sel))
    batch.create_namespaced_job("q", job("second", gpus=8, runtime=40, node_selector=sel))
    wait_for(lambda: pods_of(core, "q", "first") and pods_of(core, "q", "first")[0].status.phase == "Running")
    kube.settle()
    assert pods_of(core, "q", "first")[0].spec.node_name == "h100"
    assert pods_of(core, "q", "second")[0].spec.node_name is None
    # when the first pod finishes its GPUs are free again and the second one binds there, not on the A100
    assert wait_for(lambda: pods_of(core, "q", "second")[0].spec.node_name) == "h100"


# ---------------------------------------------------------------------------------------------------- deletion

def test_delete_job_background_removes_its_pods_orphan_keeps_them(kube, core, batch):
    kube.add_node("n1")
    namespace(core, "q")
    for name in ("bg", "fg", "orphan", "default"):
        batch.create_namespaced_job("q", job(name, runtime=100))
    wait_for(lambda: all(pods_of(core, "q", n) for n in ("bg", "fg", "orphan", "default")))

    # the client types this response as a plain dict: Background answers with a Status, ...
    status = batch.delete_namespaced_job("bg", "q", propagation_policy="Background")
    assert status["kind"] == "Status" and status["status"] == "Success"
    # ... Foreground and Orphan with the Job, marked for deletion until the garbage collector is done
    marked = batch.delete_namespaced_job("fg", "q", body=client.V1DeleteOptions(propagation_policy="Foreground"))
    assert marked["kind"] == "Job" and marked["metadata"]["deletionTimestamp"]
    assert marked["metadata"]["finalizers"] == ["foregroundDeletion"]
    batch.delete_namespaced_job("orphan", "q", propagation_policy="Orphan")
    batch.delete_namespaced_job("default", "q")
    wait_for(lambda: pods_of(core, "q", "bg") == [] and pods_of(core, "q", "fg") == [])
    kube.settle()
    kept = pods_of(core, "q", "orphan") + pods_of(core, "q", "default")
    assert len(kept) == 2 and all(not p.metadata.owner_references for p in kept)
    assert [j.metadata.name for j in batch.list_namespaced_job("q").items] == []


def test_deleted_pod_counts_as_a_failure_and_is_replaced_within_the_backoff_limit(kube, core, batch):
    kube.add_node("n1")
    namespace(core, "q")
    batch.create_namespaced_job("q", job("retry", runtime=100, backoff=1))
    first = wait_for(lambda: pods_of(core, "q", "retry"))[0]
    kube.delete_pod("q", first.metadata.name)
    second = wait_for(lambda: [p for p in pods_of(core, "q", "retry") if p.metadata.name != first.metadata.name])
    assert second
    assert wait_for(lambda: batch.read_namespaced_job("retry", "q").status.failed) == 1
    core.delete_namespaced_pod(second[0].metadata.name, "q")
    failed = wait_for(lambda: job_condition(batch.read_namespaced_job("retry", "q"), "Failed"))
    assert failed.reason == "BackoffLimitExceeded"


def test_exit_code_annotation_fails_the_pod_and_the_job(kube, core, batch):
    kube.add_node("n1")
    namespace(core, "q")
    crashing = job("crash", runtime=1)
    crashing.spec.template.metadata.annotations["spillover/exit-code"] = "3"
    batch.create_namespaced_job("q", crashing)
    failed = wait_for(lambda: job_condition(batch.read_namespaced_job("crash", "q"), "Failed"))
    assert failed.reason == "BackoffLimitExceeded"
    pod = pods_of(core, "q", "crash")[0]
    assert pod.status.phase == "Failed"
    assert pod.status.container_statuses[0].state.terminated.exit_code == 3
    assert batch.read_namespaced_job("crash", "q").status.failed == 1


def test_lost_node_fails_its_pods_and_the_job(kube, core, batch):
    kube.add_node("n1")
    kube.add_node("n2")
    namespace(core, "q")
    batch.create_namespaced_job("q", job("a", gpus=8, runtime=100))
    batch.create_namespaced_job("q", job("b", gpus=8, runtime=100))
    wait_for(lambda: len(core.list_namespaced_pod("q", field_selector="status.phase=Running").items) == 2)
    on_n1 = core.list_namespaced_pod("q", field_selector="spec.nodeName=n1").items[0]
    kube.remove_node("n1")
    pod = wait_for(lambda: core.read_namespaced_pod(on_n1.metadata.name, "q").status.phase == "Failed"
                   and core.read_namespaced_pod(on_n1.metadata.name, "q"))
    assert pod.status.reason == "NodeLost"
    failed = wait_for(lambda: job_condition(batch.read_namespaced_job(on_n1.metadata.labels["job-name"], "q"),
                                            "Failed"))
    assert failed.reason == "BackoffLimitExceeded"

    kube.set_node_ready("n2", False)
    assert core.read_node("n2").status.conditions[-1].status == "False"
    wait_for(lambda: core.list_namespaced_pod("q", field_selector="status.phase=Running").items == [])


def test_ttl_after_finished_deletes_the_job_and_its_pods(kube, core, batch):
    kube.add_node("n1")
    namespace(core, "q")
    batch.create_namespaced_job("q", job("short", runtime=1, ttl=20))  # 0.05 s and 1 s at this time scale
    wait_for(lambda: job_condition(batch.read_namespaced_job("short", "q"), "Complete"))
    wait_for(lambda: batch.list_namespaced_job("q").items == [] and pods_of(core, "q", "short") == [])


# ---------------------------------------------------------------------------------------------------- the API itself

def test_stop_and_start_keep_state_and_port(kube, core, batch):
    kube.add_node("n1")
    namespace(core, "q")
    batch.create_namespaced_job("q", job("survivor", runtime=1000))
    url, rv = kube.url, int(core.list_node().metadata.resource_version)
    kube.stop()
    with pytest.raises(urllib3.exceptions.MaxRetryError):
        core.list_node(_request_timeout=2)
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", kube.port)) != 0
    kube.start()
    assert kube.url == url
    assert [n.metadata.name for n in core.list_node().items] == ["n1"]
    assert batch.read_namespaced_job("survivor", "q").metadata.name == "survivor"
    assert int(core.list_node().metadata.resource_version) >= rv


def test_stop_ends_open_watches_and_refuses_new_connections(kube, core):
    kube.add_node("n1")
    stream = watch.Watch().stream(core.list_node, timeout_seconds=30)
    assert next(stream)["object"].metadata.name == "n1"
    t0 = time.monotonic()
    kube.stop()
    with pytest.raises((urllib3.exceptions.ProtocolError, urllib3.exceptions.HTTPError)):
        next(stream)
    assert time.monotonic() - t0 < 5
    kube.start()
    assert [n.metadata.name for n in core.list_node().items] == ["n1"]


def test_requests_without_the_token_are_401(kube):
    anonymous = client.CoreV1Api(kube.api_client(token=None))
    with pytest.raises(ApiException) as e:
        anonymous.list_node()
    assert e.value.status == 401 and reason_of(e.value) == "Unauthorized"
    wrong = client.CoreV1Api(kube.api_client(token="not-the-token"))
    with pytest.raises(ApiException) as e:
        wrong.list_namespace()
    assert e.value.status == 401


def test_pagination_with_limit_and_continue_is_a_consistent_snapshot(kube, core):
    for i in range(25):
        kube.add_node(f"n{i:02d}")
    first = core.list_node(limit=10)
    assert len(first.items) == 10 and first.metadata._continue and first.metadata.remaining_item_count == 15
    kube.add_node("n99")  # not in the snapshot the pages come from
    names = [n.metadata.name for n in first.items]
    token = first.metadata._continue
    while token:
        page = core.list_node(limit=10, _continue=token)
        names += [n.metadata.name for n in page.items]
        token = page.metadata._continue
    assert names == [f"n{i:02d}" for i in range(25)]
    again = core.list_node(limit=10)
    kube.compact()
    with pytest.raises(ApiException) as e:
        core.list_node(limit=10, _continue=again.metadata._continue)
    assert e.value.status == 410


def test_kubeconfig_holds_several_contexts(kube, tmp_path: Path):
    with FakeKube(token="other-token") as other:
        other.add_node("elsewhere")
        kube.add_node("here")
        path = tmp_path / "kubeconfig"
        kube.write_kubeconfig(path, "onprem-a")
        other.write_kubeconfig(path, "onprem-b")
        contexts, current = config.list_kube_config_contexts(config_file=str(path))
        assert sorted(c["name"] for c in contexts) == ["onprem-a", "onprem-b"] and current["name"] == "onprem-b"
        for ctx, node in (("onprem-a", "here"), ("onprem-b", "elsewhere")):
            api = config.new_client_from_config(config_file=str(path), context=ctx)
            assert [n.metadata.name for n in client.CoreV1Api(api).list_node().items] == [node]


def test_request_counter_measures_calls_per_operation(kube, core, batch):
    namespace(core, "q")
    before = kube.requests.copy()
    batch.create_namespaced_job("q", job("counted"))
    batch.list_namespaced_job("q")
    core.list_node()
    diff = kube.requests - before
    assert diff == {("POST", "jobs"): 1, ("GET", "jobs"): 1, ("GET", "nodes"): 1}
    assert kube.verbs[("create", "jobs")] == 1 and kube.verbs[("list", "nodes")] == 1


def test_forbidden_and_injected_failures(kube, core, batch):
    kube.forbid("list", "pods")
    with pytest.raises(ApiException) as e:
        core.list_pod_for_all_namespaces()
    assert e.value.status == 403 and 'cannot list resource "pods"' in json.loads(e.value.body)["message"]
    kube.allow("list", "pods")
    core.list_pod_for_all_namespaces()
    kube.inject_error("list", "jobs", code=500, times=1)
    with pytest.raises(ApiException) as e:
        batch.list_job_for_all_namespaces()
    assert e.value.status == 500
    batch.list_job_for_all_namespaces()


def test_patch_cordons_a_node_through_the_client(kube, core, batch):
    kube.add_node("n1")
    core.patch_node("n1", {"spec": {"unschedulable": True}})
    node = core.read_node("n1")
    assert node.spec.unschedulable is True and node.metadata.generation == 2
    namespace(core, "q")
    batch.create_namespaced_job("q", job("j"))
    kube.settle()
    wait_for(lambda: pods_of(core, "q", "j"))
    kube.settle()
    assert pods_of(core, "q", "j")[0].spec.node_name is None
    core.patch_node("n1", [{"op": "remove", "path": "/spec/unschedulable"}])
    assert wait_for(lambda: pods_of(core, "q", "j")[0].spec.node_name) == "n1"


# ---------------------------------------------------------------------------------------------------- scale

def test_scale_1000_nodes_and_5000_pods_can_be_created_and_listed():
    with FakeKube(time_scale=1.0) as k:
        for i in range(1000):
            k.add_node(f"node-{i:04d}", labels={"pool": f"pool-{i % 10}"})
        api = k.api_client()
        core, batch = client.CoreV1Api(api), client.BatchV1Api(api)
        namespace(core, "scale")
        t0 = time.perf_counter()
        for i in range(50):
            batch.create_namespaced_job("scale", job(f"scale-{i:02d}", gpus=1, runtime=3600, completions=100,
                                                     parallelism=100, indexed=True))
        assert k.settle(timeout=120)
        created = time.perf_counter() - t0

        timings = []
        for _ in range(3):  # the first list also serializes every pod once; later ones reuse that
            t0 = time.perf_counter()
            body = core.list_pod_for_all_namespaces(_preload_content=False).data
            timings.append(time.perf_counter() - t0)
        pods = json.loads(body)["items"]
        assert len(pods) == 5000
        assert sum(1 for p in pods if p["spec"].get("nodeName")) == 5000

        t0 = time.perf_counter()
        nodes = json.loads(core.list_node(_preload_content=False).data)["items"]
        node_list_s = time.perf_counter() - t0
        assert len(nodes) == 1000

        t0 = time.perf_counter()
        typed = core.list_pod_for_all_namespaces()
        typed_s = time.perf_counter() - t0
        assert len(typed.items) == 5000
        print(f"\n1000 nodes / 5000 pods: 50 Jobs created and all pods bound in {created:.2f} s; "
              f"one pod list (raw, {len(body) / 1e6:.1f} MB) {timings[0] * 1000:.0f} ms first, "
              f"{min(timings[1:]) * 1000:.0f} ms after; "
              f"node list {node_list_s * 1000:.0f} ms; pod list deserialized into models {typed_s:.2f} s")
        assert not k.errors, k.errors[0]
