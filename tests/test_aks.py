"""The AKS node-pool adapter through azure-mgmt-containerservice and a stateful local ARM peer over real sockets."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest

from cloud.aks_peer import AKSPeer
from spillover.providers.aks import AKSNodePools
from spillover.providers.contract import ErrorKind, ProviderError
from spillover.providers.nodepools import NodePoolAPI

T = TypeVar("T")

CLUSTER = "azure-eastus"
OP_DELAY_S = 0.05
JWT = ("eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.eyJhdWQiOiJodHRwczovL21hbmFnZW1lbnQuYXp1cmUuY29tLyIsIm9pZCI6IjEifQ"
       ".c2lnbmF0dXJlLW9mLWEtdGVzdC10b2tlbi1ub3QtcmVhbA")
POOL_LABELS = {"spillover.dev/pool": "gpu", "team": "ml"}
POOL_TAINTS = ["nvidia.com/gpu=present:NoSchedule"]


def wait_for(fn: Callable[[], T], *, timeout: float = 5.0, what: str = "condition") -> T:
    end = time.monotonic() + timeout
    last: T = fn()
    while not last and time.monotonic() < end:
        time.sleep(0.01)
        last = fn()
    if not last:
        raise AssertionError(f"timed out waiting for {what}; last saw {last!r}")
    return last


def errors_until_some(pools: AKSNodePools, timeout: float = 5.0) -> list[ProviderError]:
    return wait_for(pools.poll_errors, timeout=timeout, what="an error from poll_errors")


def puts(peer: AKSPeer) -> int:
    return peer.requests[("PUT", "pool")]


@pytest.fixture
def peer() -> Iterator[AKSPeer]:
    p = AKSPeer(operation_delay_s=OP_DELAY_S).start()
    p.add_pool("gpu", count=1, vm_size="Standard_ND96asr_v4", node_labels=POOL_LABELS, node_taints=POOL_TAINTS,
               tags={"owner": "platform"})
    p.add_pool("spot", count=0, vm_size="Standard_NC24ads_A100_v4", spot=True)
    p.add_pool("auto", count=2, vm_size="Standard_NC24ads_A100_v4", enable_auto_scaling=True, min_count=1,
               max_count=5)
    p.add_pool("system", count=1, vm_size="Standard_D4s_v5", mode="System")
    try:
        yield p
    finally:
        p.stop()
    assert not p.errors, p.errors[0]


@pytest.fixture
def make_pools(peer: AKSPeer) -> Iterator[Callable[..., AKSNodePools]]:
    made: list[AKSNodePools] = []

    def make(*, client: Any = None, cluster_name: str | None = None, **kw: Any) -> AKSNodePools:
        kw.setdefault("polling_interval_s", 0.01)
        kw.setdefault("retry_backoff_factor", 0.01)
        kw.setdefault("timeout_s", 1.0)
        pools = AKSNodePools(CLUSTER, subscription_id=peer.subscription_id, resource_group=peer.resource_group,
                             cluster_name=cluster_name or peer.cluster_name, client=client or peer.client(), **kw)
        made.append(pools)
        return pools

    yield make
    for pools in made:
        pools.close()


@pytest.fixture
def pools(make_pools: Callable[..., AKSNodePools]) -> AKSNodePools:
    return make_pools()


# ---- reading -------------------------------------------------------------------------------------------

def test_get_pool_reports_what_the_cloud_has(pools: AKSNodePools) -> None:
    assert isinstance(pools, NodePoolAPI) and pools.cloud == "azure"
    gpu = pools.get_pool("gpu")
    assert (gpu.name, gpu.desired, gpu.instance_type, gpu.status, gpu.updating) == \
        ("gpu", 1, "Standard_ND96asr_v4", "Succeeded", False)
    auto = pools.get_pool("auto")
    assert (auto.desired, auto.min_size, auto.max_size) == (2, 1, 5)
    spot = pools.get_pool("spot")
    assert (spot.desired, spot.instance_type, spot.updating) == (0, "Standard_NC24ads_A100_v4", False)


# ---- resizing ------------------------------------------------------------------------------------------

def test_set_size_grows_the_pool_once_and_keeps_its_other_settings(peer: AKSPeer, pools: AKSNodePools) -> None:
    pools.set_size("gpu", 3, "scale-gpu-1")
    # accepted, not done: the peer's count moves only when its operation ends
    assert peer.size("gpu") == 1
    during = pools.get_pool("gpu")
    assert during.updating and during.desired == 3
    pools.set_size("gpu", 3, "scale-gpu-1")  # a retry of the same request while it runs
    assert puts(peer) == 1

    wait_for(lambda: peer.size("gpu") == 3, what="the pool to reach 3 nodes")
    wait_for(lambda: not pools.get_pool("gpu").updating, what="the resize to end")
    after = pools.get_pool("gpu")
    assert (after.desired, after.status) == (3, "Succeeded")
    pools.set_size("gpu", 3, "scale-gpu-2")  # the size it already has
    assert puts(peer) == 1
    assert pools.poll_errors() == []
    assert peer.count_history("gpu") == [1, 3]
    props = peer.pool("gpu")["properties"]
    # a PUT replaces the pool: labels, taints and tags survive only because the adapter sent them back
    assert props["nodeLabels"] == POOL_LABELS and props["nodeTaints"] == POOL_TAINTS
    assert props["tags"] == {"owner": "platform"}


def test_one_scale_up_costs_a_read_a_write_and_the_operation_polls(peer: AKSPeer, pools: AKSNodePools) -> None:
    pools.set_size("gpu", 2, "scale-gpu-1")
    assert (peer.requests[("GET", "pool")], puts(peer)) == (1, 1)
    peer.settle()
    wait_for(lambda: not pools.get_pool("gpu").updating, what="the poller to finish")
    # one read by get_pool above; the poller's own final GET of the pool; the status polls
    assert peer.requests[("GET", "pool")] >= 3
    assert peer.requests[("GET", "operation")] >= 1


def test_set_size_returns_without_waiting_for_a_slow_operation(peer: AKSPeer, pools: AKSNodePools) -> None:
    peer.operation_delay_s = 30.0
    started = time.monotonic()
    pools.set_size("gpu", 4, "scale-gpu-1")
    assert time.monotonic() - started < 1.0
    assert pools.get_pool("gpu").updating and pools.poll_errors() == []
    pools.set_size("gpu", 4, "scale-gpu-1")
    with pytest.raises(ProviderError) as refused:
        pools.set_size("gpu", 2, "scale-gpu-2")  # AKS runs one operation per pool at a time
    assert refused.value.kind is ErrorKind.TRANSIENT and refused.value.pool == "gpu"
    assert "resize to 4" in refused.value.message
    assert puts(peer) == 1


def test_a_pool_busy_with_another_operation_is_transient(peer: AKSPeer, make_pools: Callable[..., AKSNodePools]
                                                         ) -> None:
    peer.operation_delay_s = 30.0
    make_pools().set_size("gpu", 4, "scale-gpu-1")
    restarted = make_pools()  # a scheduler that restarted and no longer follows that operation
    assert restarted.get_pool("gpu").updating
    with pytest.raises(ProviderError) as busy:
        restarted.set_size("gpu", 5, "scale-gpu-2")
    assert busy.value.kind is ErrorKind.TRANSIENT and busy.value.pool == "gpu"
    assert "409" in busy.value.message and "OperationNotAllowed" in busy.value.message
    assert len(peer.operations("gpu")) == 1


def test_spot_pool_resizes_with_its_priority_intact(peer: AKSPeer, pools: AKSNodePools) -> None:
    pools.set_size("spot", 2, "scale-spot-1")
    wait_for(lambda: peer.size("spot") == 2, what="the spot pool to grow")
    sent = peer.last_put["properties"] if peer.last_put else {}
    assert (sent["scaleSetPriority"], sent["spotMaxPrice"], sent["scaleSetEvictionPolicy"]) == ("Spot", -1, "Delete")


def test_shrinking_to_zero(peer: AKSPeer, pools: AKSNodePools) -> None:
    pools.set_size("gpu", 0, "scale-gpu-down")
    wait_for(lambda: peer.size("gpu") == 0, what="the pool to empty")
    assert pools.poll_errors() == []


# ---- asynchronous failures -----------------------------------------------------------------------------

QUOTA_TEXT = ("Operation could not be completed as it results in exceeding approved standardNDASv4_A100Family Cores "
              "quota. Additional details - Deployment Model: Resource Manager, Location: eastus, Current Limit: 96, "
              "Current Usage: 96, Additional Required: 288, (Minimum) New Limit Required: 384.")


@pytest.mark.parametrize(("code", "message", "wrapped", "kind"), [
    ("AllocationFailed", None, False, ErrorKind.STOCKOUT),
    ("SkuNotAvailable", None, False, ErrorKind.STOCKOUT),
    ("ZonalAllocationFailed", None, False, ErrorKind.STOCKOUT),
    ("OverconstrainedAllocationRequest", None, True, ErrorKind.STOCKOUT),
    ("AllocationFailed", None, True, ErrorKind.STOCKOUT),
    ("QuotaExceeded", None, False, ErrorKind.QUOTA),
    ("OperationNotAllowed", QUOTA_TEXT, False, ErrorKind.QUOTA),
], ids=["allocation", "sku", "zonal", "overconstrained-relayed", "allocation-relayed", "quota", "quota-not-allowed"])
def test_a_failed_resize_is_reported_once_classified(peer: AKSPeer, pools: AKSNodePools, code: str,
                                                     message: str | None, wrapped: bool, kind: ErrorKind) -> None:
    peer.allocation_failure("gpu", code, message, wrapped=wrapped)
    pools.set_size("gpu", 4, "scale-gpu-1")
    errors = errors_until_some(pools)
    assert [(e.kind, e.pool, e.cluster, e.request_id) for e in errors] == [(kind, "gpu", CLUSTER, "scale-gpu-1")]
    assert code in errors[0].message and "gpu" in errors[0].message
    assert pools.poll_errors() == []  # once
    assert peer.size("gpu") == 1
    pool = pools.get_pool("gpu")
    assert (pool.desired, pool.status, pool.updating) == (1, "Failed", False)

    peer.allocation_failure("gpu", None)  # capacity is back: asking again works
    pools.set_size("gpu", 4, "scale-gpu-2")
    wait_for(lambda: peer.size("gpu") == 4, what="the retried resize")
    assert pools.poll_errors() == []


def test_losing_arm_during_a_resize_is_reported_once(peer: AKSPeer, pools: AKSNodePools) -> None:
    peer.operation_delay_s = 30.0
    pools.set_size("gpu", 4, "scale-gpu-1")
    peer.stop()
    errors = errors_until_some(pools)
    assert [(e.kind, e.pool) for e in errors] == [(ErrorKind.UNREACHABLE, "gpu")]
    assert pools.poll_errors() == []


# ---- synchronous refusals ------------------------------------------------------------------------------

def test_quota_preflight_refusal_is_quota(peer: AKSPeer, pools: AKSNodePools) -> None:
    peer.set_quota("Standard_ND96asr_v4", 192)  # two ND96 nodes; the pool has one
    with pytest.raises(ProviderError) as refused:
        pools.set_size("gpu", 4, "scale-gpu-1")
    err = refused.value
    assert (err.kind, err.pool, err.request_id) == (ErrorKind.QUOTA, "gpu", "scale-gpu-1")
    assert "ErrCode_InsufficientVCPUQuota" in err.message and "standardNDASv4_A100Family" in err.message
    assert pools.get_pool("gpu").updating is False
    pools.set_size("gpu", 2, "scale-gpu-2")  # what the quota allows
    wait_for(lambda: peer.size("gpu") == 2, what="the allowed resize")


def test_a_sku_refused_at_once_is_a_stockout(peer: AKSPeer, pools: AKSNodePools) -> None:
    peer.fail_next(1, 400, "SkuNotAvailable", "The requested VM size for resource 'Following SKUs have failed for "
                   "Capacity Restrictions: Standard_ND96asr_v4' is currently not available in location 'eastus'.",
                   method="PUT")
    with pytest.raises(ProviderError) as refused:
        pools.set_size("gpu", 2, "scale-gpu-1")
    assert (refused.value.kind, refused.value.pool) == (ErrorKind.STOCKOUT, "gpu")
    assert "Standard_ND96asr_v4" in refused.value.message and peer.operations("gpu") == []


def test_unknown_pool_or_cluster_is_invalid(peer: AKSPeer, pools: AKSNodePools,
                                            make_pools: Callable[..., AKSNodePools]) -> None:
    with pytest.raises(ProviderError) as missing:
        pools.get_pool("a100x")
    assert (missing.value.kind, missing.value.pool) == (ErrorKind.INVALID, "a100x")
    assert "no agent pool named 'a100x'" in missing.value.message
    with pytest.raises(ProviderError) as resize_missing:
        pools.set_size("a100x", 2, "scale-x")
    assert resize_missing.value.kind is ErrorKind.INVALID and puts(peer) == 0
    with pytest.raises(ProviderError) as no_cluster:
        make_pools(cluster_name="gpu-aks-old").get_pool("gpu")
    assert no_cluster.value.kind is ErrorKind.INVALID and "gpu-aks-old does not exist" in no_cluster.value.message


def test_autoscaled_pool_is_not_resized_by_count(peer: AKSPeer, pools: AKSNodePools) -> None:
    with pytest.raises(ProviderError) as refused:
        pools.set_size("auto", 4, "scale-auto-1")
    err = refused.value
    assert (err.kind, err.pool) == (ErrorKind.INVALID, "auto")
    assert "cluster autoscaler enabled (min 1, max 5)" in err.message
    assert "--disable-cluster-autoscaler" in err.message
    assert puts(peer) == 0


@pytest.mark.parametrize(("pool", "size", "why"), [("system", 0, "System agent pool"), ("gpu", -1, "0 to 1000"),
                                                   ("gpu", 1001, "0 to 1000")])
def test_sizes_aks_cannot_take_are_invalid(peer: AKSPeer, pools: AKSNodePools, pool: str, size: int,
                                           why: str) -> None:
    with pytest.raises(ProviderError) as refused:
        pools.set_size(pool, size, "scale-bad")
    assert refused.value.kind is ErrorKind.INVALID and why in refused.value.message and puts(peer) == 0


# ---- throttling and server errors ----------------------------------------------------------------------

def test_throttling_then_success_is_retried_transparently(peer: AKSPeer, pools: AKSNodePools) -> None:
    peer.fail_next(2, 429, "TooManyRequests", "The request is being throttled.", method="GET", kind="pool")
    assert pools.get_pool("gpu").desired == 1
    assert peer.requests[("GET", "pool")] == 3

    peer.fail_next(1, 429, "TooManyRequests", "The request is being throttled.", retry_after=0.3, method="PUT")
    started = time.monotonic()
    pools.set_size("gpu", 2, "scale-gpu-1")
    assert time.monotonic() - started >= 0.3  # Retry-After honoured
    assert puts(peer) == 2
    wait_for(lambda: peer.size("gpu") == 2, what="the resize after throttling")


def test_persistent_throttling_is_throttled(peer: AKSPeer, pools: AKSNodePools) -> None:
    peer.fail_next(50, 429, "SubscriptionRequestsThrottled", "Number of read requests for subscription exceeded "
                   "the limit of '12000' for time interval '01:00:00'.", retry_after=0.01, kind="pool")
    with pytest.raises(ProviderError) as throttled:
        pools.get_pool("gpu")
    assert throttled.value.kind is ErrorKind.THROTTLED and throttled.value.pool == "gpu"
    assert "SubscriptionRequestsThrottled" in throttled.value.message
    assert peer.requests[("GET", "pool")] == 4  # the first try and three retries


def test_a_long_retry_after_is_not_waited_out(peer: AKSPeer, pools: AKSNodePools) -> None:
    peer.fail_next(5, 429, "TooManyRequests", "The request is being throttled.", retry_after=120, kind="pool")
    started = time.monotonic()
    with pytest.raises(ProviderError) as throttled:
        pools.get_pool("gpu")
    assert time.monotonic() - started < 1.0
    assert throttled.value.kind is ErrorKind.THROTTLED and "retry after 120s" in throttled.value.message
    assert peer.requests[("GET", "pool")] == 1


def test_server_errors_are_transient(peer: AKSPeer, pools: AKSNodePools) -> None:
    peer.fail_next(1, 500, "InternalServerError", "Encountered internal server error.", kind="pool")
    assert pools.get_pool("gpu").desired == 1  # one 500 is retried away
    peer.fail_next(50, 503, "ServiceUnavailable", "The service is unavailable.", method="PUT")
    with pytest.raises(ProviderError) as failed:
        pools.set_size("gpu", 3, "scale-gpu-1")
    assert (failed.value.kind, failed.value.pool) == (ErrorKind.TRANSIENT, "gpu")
    assert "503" in failed.value.message and peer.operations("gpu") == []
    assert pools.get_pool("gpu").updating is False


# ---- credentials ---------------------------------------------------------------------------------------

def test_forbidden_write_is_auth_naming_the_permission(peer: AKSPeer, pools: AKSNodePools) -> None:
    peer.deny("write")
    assert pools.get_pool("gpu").desired == 1  # reading is still allowed
    with pytest.raises(ProviderError) as denied:
        pools.set_size("gpu", 3, "scale-gpu-1")
    err = denied.value
    assert (err.kind, err.pool) == (ErrorKind.AUTH, "gpu")
    assert "Microsoft.ContainerService/managedClusters/agentPools/write" in err.message
    assert "test-token" not in str(err)


def test_forbidden_read_names_the_read_permission(peer: AKSPeer, pools: AKSNodePools) -> None:
    peer.deny("read")
    with pytest.raises(ProviderError) as denied:
        pools.get_pool("gpu")
    assert denied.value.kind is ErrorKind.AUTH
    assert "Microsoft.ContainerService/managedClusters/agentPools/read" in denied.value.message


def test_rejected_token_is_auth_and_never_shown(peer: AKSPeer, make_pools: Callable[..., AKSNodePools]) -> None:
    pools = make_pools(client=peer.client(token=JWT))  # a token ARM does not accept
    with pytest.raises(ProviderError) as rejected:
        pools.get_pool("gpu")
    err = rejected.value
    assert err.kind is ErrorKind.AUTH and "401" in err.message
    assert "Microsoft.ContainerService/managedClusters/agentPools/read" in err.message
    assert JWT not in str(err) and JWT.split(".")[2] not in str(err)


def test_a_token_echoed_by_the_service_is_redacted(peer: AKSPeer, make_pools: Callable[..., AKSNodePools]) -> None:
    peer.token = JWT
    pools = make_pools(client=peer.client(token=JWT))
    peer.fail_next(1, 403, "AuthorizationFailed", "Denied for request with Authorization: {authorization} "
                   "(token {token}).", method="GET")
    with pytest.raises(ProviderError) as denied:
        pools.get_pool("gpu")
    text = str(denied.value)
    assert denied.value.kind is ErrorKind.AUTH and "Bearer ***" in text
    for part in JWT.split("."):
        assert part not in text


# ---- reachability --------------------------------------------------------------------------------------

def test_stopped_arm_is_unreachable_quickly_and_recovers(peer: AKSPeer, pools: AKSNodePools) -> None:
    assert pools.get_pool("gpu").desired == 1  # a kept-alive connection exists now
    peer.stop()
    started = time.monotonic()
    with pytest.raises(ProviderError) as down:
        pools.get_pool("gpu")
    assert time.monotonic() - started < 2.0
    assert (down.value.kind, down.value.pool) == (ErrorKind.UNREACHABLE, "gpu")
    assert "connection refused" in down.value.message
    with pytest.raises(ProviderError) as down_write:
        pools.set_size("gpu", 2, "scale-gpu-1")
    assert down_write.value.kind is ErrorKind.UNREACHABLE
    peer.start()  # the same port again
    assert pools.get_pool("gpu").desired == 1
