"""The GKE node-pool adapter against a stateful local GKE API, through the real google-cloud-container client."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest
from google.cloud import container_v1
from google.oauth2.credentials import Credentials

from spillover.providers.contract import ErrorKind, ProviderError
from spillover.providers.gke import GKENodePools
from spillover.providers.nodepools import NodePoolAPI
from cloud.gke_peer import GKEPeer

TOKEN = "ya29.test-token-0123456789"
ZONES = ("us-central1-a", "us-central1-b")


def client_for(peer: GKEPeer, token: str = TOKEN) -> container_v1.ClusterManagerClient:
    # a static bearer token: the REST session sends it as is, and a 401 cannot be refreshed away
    return container_v1.ClusterManagerClient(credentials=Credentials(token=token), transport="rest",
                                             client_options={"api_endpoint": peer.endpoint})


def adapter_for(peer: GKEPeer, token: str = TOKEN, **kwargs) -> GKENodePools:
    options = dict(timeout_s=2.0, retry_deadline_s=0.5, retry_initial_s=0.02, retry_max_s=0.1)
    options.update(kwargs)
    return GKENodePools("gcp-burst", project=peer.project, location=peer.location, cluster_name=peer.cluster,
                        client=client_for(peer, token), **options)


def wait_until(check: Callable[[], bool], timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)


def raised(call: Callable[[], object]) -> ProviderError:
    with pytest.raises(ProviderError) as info:
        call()
    assert TOKEN not in str(info.value) and TOKEN not in info.value.message
    return info.value


@pytest.fixture
def peer() -> Iterator[GKEPeer]:
    p = GKEPeer(operation_s=0.05, require_token=TOKEN).start()
    p.add_pool("a100", machine_type="a2-highgpu-8g", size=0, min_size=0, max_size=8)
    p.add_pool("h100", machine_type="a3-highgpu-8g", size=2, zones=ZONES)
    yield p
    p.stop()
    assert p.errors == []


@pytest.fixture
def gke(peer: GKEPeer) -> Iterator[GKENodePools]:
    adapter = adapter_for(peer)
    yield adapter
    adapter.close()


def setsize_calls(peer: GKEPeer) -> int:
    return peer.requests[("POST", "nodePools.setSize")]


def test_get_pool_reports_what_gke_has(gke: GKENodePools) -> None:
    assert isinstance(gke, NodePoolAPI) and gke.cloud == "gcp"
    pool = gke.get_pool("a100")
    assert (pool.name, pool.desired, pool.min_size, pool.max_size) == ("a100", None, 0, 8)
    assert (pool.instance_type, pool.status, pool.updating) == ("a2-highgpu-8g", "RUNNING", False)
    regional = gke.get_pool("h100")
    assert (regional.instance_type, regional.min_size, regional.max_size) == ("a3-highgpu-8g", None, None)


def test_set_size_grows_the_pool_when_its_operation_completes(peer: GKEPeer, gke: GKENodePools) -> None:
    peer.operation_s = 0.3
    gke.set_size("a100", 3, "req-1")
    assert setsize_calls(peer) == 1
    assert peer.size("a100") == 0  # accepted, not done
    running = gke.get_pool("a100")
    assert running.desired == 3 and running.updating and running.status == "RECONCILING"
    gke.set_size("a100", 3, "req-1")  # a retry after a timeout, or the same decision next cycle
    assert setsize_calls(peer) == 1
    wait_until(lambda: peer.size("a100") == 3)
    done = gke.get_pool("a100")
    assert done.desired == 3 and not done.updating and done.status == "RUNNING"
    gke.set_size("a100", 3, "req-2")
    assert setsize_calls(peer) == 1
    assert gke.poll_errors() == []
    # the round's cost: one setSize, and one read of its operation per pool read until it is seen done
    assert peer.requests[("GET", "operations.get")] == 2
    ops = peer.operations()
    assert [(o["operationType"], o["status"]) for o in ops] == [("SET_NODE_POOL_SIZE", "DONE")]
    assert ops[0]["targetLink"].endswith("/clusters/burst-gpu/nodePools/a100")


def test_shrinking_to_zero_and_regional_pools_are_sized_per_zone(peer: GKEPeer, gke: GKENodePools) -> None:
    gke.set_size("h100", 6, "grow")
    wait_until(lambda: gke.poll_errors() == [] and not gke.get_pool("h100").updating)
    assert peer.size("h100") == 6  # 3 in each of the two zones
    gke.set_size("h100", 0, "drain")  # proto3 JSON leaves a zero nodeCount out of the body
    wait_until(lambda: peer.size("h100") == 0)
    before = setsize_calls(peer)
    err = raised(lambda: gke.set_size("h100", 3, "odd"))
    assert err.kind is ErrorKind.INVALID and err.pool == "h100" and "2 zones" in err.message
    err = raised(lambda: gke.set_size("a100", 9, "too-many"))
    assert err.kind is ErrorKind.INVALID and "autoscaling limits" in err.message
    assert setsize_calls(peer) == before


def test_a_stockout_comes_back_once_from_poll_errors(peer: GKEPeer, gke: GKENodePools) -> None:
    peer.stockout("a100")
    gke.set_size("a100", 4, "grow-a100")
    wait_until(lambda: all(o["status"] == "DONE" for o in peer.operations()))
    errors = gke.poll_errors()
    assert len(errors) == 1
    e = errors[0]
    assert (e.kind, e.pool, e.cluster, e.request_id) == (ErrorKind.STOCKOUT, "a100", "gcp-burst", "grow-a100")
    assert "ZONE_RESOURCE_POOL_EXHAUSTED" in e.message
    assert gke.poll_errors() == []
    assert peer.size("a100") == 0
    assert gke.get_pool("a100").desired is None  # the request failed: GKE did not take it
    peer.stockout("a100", False)
    gke.set_size("a100", 4, "grow-a100-again")  # the same size may be asked again after a failure
    assert setsize_calls(peer) == 2
    wait_until(lambda: peer.size("a100") == 4)
    assert gke.poll_errors() == []


def test_an_operation_gke_no_longer_knows_leaves_the_size_unknown(peer: GKEPeer, gke: GKENodePools) -> None:
    peer.operation_s = 5.0
    gke.set_size("a100", 2, "grow")
    peer.forget_operations()
    pool = gke.get_pool("a100")
    assert pool.desired is None and not pool.updating
    assert gke.poll_errors() == []
    gke.set_size("a100", 2, "grow")  # nothing vouches for the size any more, so it is asked again
    assert setsize_calls(peer) == 2


def test_a_quota_failure_is_quota(peer: GKEPeer, gke: GKENodePools) -> None:
    peer.quota("a100", 2)
    gke.set_size("a100", 6, "grow")
    wait_until(lambda: all(o["status"] == "DONE" for o in peer.operations()))
    (e,) = gke.poll_errors()
    assert e.kind is ErrorKind.QUOTA and e.pool == "a100" and "NVIDIA_A100_GPUS" in e.message


def test_a_pool_in_error_status_is_reported_once(peer: GKEPeer, gke: GKENodePools) -> None:
    peer.set_status("a100", "ERROR", "Google Compute Engine: The zone 'projects/spillover-test/zones/us-central1-a' "
                                     "does not have enough resources available to fulfill the request.")
    assert gke.get_pool("a100").status == "ERROR"
    (e,) = gke.poll_errors()
    assert e.kind is ErrorKind.STOCKOUT and e.pool == "a100"
    gke.get_pool("a100")
    assert gke.poll_errors() == []


def test_a_429_then_success_is_retried_transparently(peer: GKEPeer) -> None:
    peer.fail_next(2, 429, kind="nodePools.get")
    gke = adapter_for(peer, retry_deadline_s=10.0)  # three round trips fit, even on a loaded machine
    try:
        assert gke.get_pool("a100").status == "RUNNING"
    finally:
        gke.close()
    assert peer.requests[("GET", "nodePools.get")] == 3


def test_persistent_429_is_throttled_after_backoff(peer: GKEPeer, gke: GKENodePools) -> None:
    peer.fail_next(1000, 429)  # GKE's words: "Quota exceeded for quota metric ... per minute"
    started = time.monotonic()
    err = raised(lambda: gke.set_size("a100", 2, "req"))
    assert err.kind is ErrorKind.THROTTLED and err.pool == "a100"
    assert time.monotonic() - started < 2.0
    assert peer.requests[("GET", "nodePools.get")] > 1


def test_500_is_transient_after_retries(peer: GKEPeer, gke: GKENodePools) -> None:
    gke.get_pool("a100")
    peer.fail_next(1000, 500, kind="nodePools.setSize")
    err = raised(lambda: gke.set_size("a100", 2, "req"))
    assert err.kind is ErrorKind.TRANSIENT and err.request_id == "req"
    assert setsize_calls(peer) > 1
    assert peer.size("a100") == 0


def test_403_is_auth_naming_the_permission_without_the_token(peer: GKEPeer, gke: GKENodePools) -> None:
    peer.deny("container.clusters.update")
    assert gke.get_pool("a100").status == "RUNNING"
    err = raised(lambda: gke.set_size("a100", 2, "req"))
    assert err.kind is ErrorKind.AUTH and "container.clusters.update" in err.message
    assert setsize_calls(peer) == 1  # not retried: it will not get better by itself
    peer.allow("container.clusters.update")
    peer.operation_s = 0  # done by the time it is next read
    gke.set_size("a100", 2, "req")
    # a denial that does not say which permission: the adapter names what the call needs
    peer.fail_next(1, 403, "The caller does not have permission", reason="ACCESS_DENIED", kind="operations.get")
    (e,) = gke.poll_errors()
    assert e.kind is ErrorKind.AUTH and e.pool == "a100" and "container.operations.get" in e.message
    assert TOKEN not in e.message
    assert gke.poll_errors() == []  # the next poll could read it
    assert peer.size("a100") == 2


@pytest.mark.parametrize("status, message, reason, kind", [
    (429, "Insufficient regional quota to satisfy request: resource \"NVIDIA_A100_GPUS\": request requires "
          "'16.0' and is short '8.0'.", "QUOTA_EXCEEDED", ErrorKind.QUOTA),
    (403, "Quota 'NVIDIA_A100_GPUS' exceeded.  Limit: 0.0 in region us-central1.", "QUOTA_EXCEEDED", ErrorKind.QUOTA),
    (403, "User Rate Limit Exceeded", "rateLimitExceeded", ErrorKind.THROTTLED),
    (403, "Kubernetes Engine API has not been used in project 123 before or it is disabled.", "SERVICE_DISABLED",
     ErrorKind.AUTH),
    (400, "The zone 'projects/spillover-test/zones/us-central1-a' does not have enough resources available to "
          "fulfill the request.", None, ErrorKind.STOCKOUT),
    (400, "Invalid value for field 'nodeCount'.", None, ErrorKind.INVALID),
    (503, None, None, ErrorKind.TRANSIENT),
])
def test_refusals_at_once_are_classified(peer: GKEPeer, status: int, message: str | None, reason: str | None,
                                         kind: ErrorKind) -> None:
    adapter = adapter_for(peer, retry_deadline_s=0.2)
    try:
        adapter.get_pool("a100")
        peer.fail_next(100, status, message, reason=reason, kind="nodePools.setSize")
        err = raised(lambda: adapter.set_size("a100", 2, "req"))
        assert (err.kind, err.pool, err.request_id) == (kind, "a100", "req")
        assert peer.size("a100") == 0
    finally:
        adapter.close()


def test_a_rejected_token_is_auth_and_never_shown(peer: GKEPeer) -> None:
    wrong = "ya29.revoked-token-abcdef"
    adapter = adapter_for(peer, token=wrong)
    try:
        err = raised(lambda: adapter.get_pool("a100"))
        assert err.kind is ErrorKind.AUTH and "container.clusters.get" in err.message
        assert wrong not in err.message
    finally:
        adapter.close()


def test_unknown_pool_is_invalid_naming_it(gke: GKENodePools) -> None:
    err = raised(lambda: gke.get_pool("v100-nope"))
    assert err.kind is ErrorKind.INVALID and err.pool == "v100-nope" and "v100-nope" in err.message


def test_one_operation_at_a_time_is_transient(peer: GKEPeer, gke: GKENodePools) -> None:
    peer.operation_s = 5.0
    gke.set_size("a100", 2, "first")
    calls = setsize_calls(peer)
    err = raised(lambda: gke.set_size("a100", 4, "second"))
    assert err.kind is ErrorKind.TRANSIENT and setsize_calls(peer) == calls
    # after a restart the adapter remembers nothing; GKE itself refuses the overlapping operation
    restarted = adapter_for(peer)
    try:
        err = raised(lambda: restarted.set_size("h100", 4, "third"))
        assert err.kind is ErrorKind.TRANSIENT and "incompatible operation" in err.message
    finally:
        restarted.close()
    peer.finish_operations()
    peer.operation_s = 0.05
    gke.set_size("a100", 4, "second")
    wait_until(lambda: peer.size("a100") == 4)


def test_a_stopped_api_is_unreachable_quickly(peer: GKEPeer, gke: GKENodePools) -> None:
    gke.get_pool("a100")
    peer.stop()
    started = time.monotonic()
    err = raised(lambda: gke.get_pool("a100"))
    assert err.kind is ErrorKind.UNREACHABLE and "connection refused" in err.message
    assert time.monotonic() - started < 1.0


def test_default_client_uses_adc_and_the_endpoint(peer: GKEPeer, monkeypatch: pytest.MonkeyPatch) -> None:
    import google.auth

    asked: list[object] = []

    def default(scopes=None, **kwargs):
        asked.append(scopes)
        return Credentials(token=TOKEN), peer.project

    monkeypatch.setattr(google.auth, "default", default)
    adapter = GKENodePools("gcp-burst", project=peer.project, location=peer.location, cluster_name=peer.cluster,
                           endpoint=peer.endpoint, timeout_s=2.0)
    try:
        assert adapter.get_pool("h100").status == "RUNNING"
        assert asked == [["https://www.googleapis.com/auth/cloud-platform"]]
    finally:
        adapter.close()


def test_an_api_that_never_answers_is_unreachable_after_the_timeout(peer: GKEPeer) -> None:
    import socket

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # accepts connections (the kernel's backlog) and never says a word
    port = silent.getsockname()[1]
    client = container_v1.ClusterManagerClient(credentials=Credentials(token=TOKEN), transport="rest",
                                               client_options={"api_endpoint": f"http://127.0.0.1:{port}"})
    adapter = GKENodePools("gcp-burst", project=peer.project, location=peer.location, cluster_name=peer.cluster,
                           client=client, timeout_s=0.3, retry_deadline_s=0.5)
    try:
        started = time.monotonic()
        err = raised(lambda: adapter.get_pool("a100"))
        assert err.kind is ErrorKind.UNREACHABLE and "no answer within 0.3s" in err.message
        assert time.monotonic() - started < 1.5
    finally:
        adapter.close()
        silent.close()
