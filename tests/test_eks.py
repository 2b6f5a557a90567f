"""The EKS node-group adapter through boto3 against moto in server mode on 127.0.0.1 (behind a fault proxy)."""

from __future__ import annotations

import logging
import time

import pytest

from cloud.eks_peer import ENV, REGION, EKSPeer
from spillover.providers.contract import ErrorKind, ProviderError
from spillover.providers.eks import EKSNodePools


@pytest.fixture
def eks(monkeypatch):
    for k, v in ENV.items():
        monkeypatch.setenv(k, v)
    peer = EKSPeer()
    peer.add_nodegroup("p4d", max_size=4)
    yield peer
    peer.close()


def adapter(peer: EKSPeer, **kw) -> EKSNodePools:
    return EKSNodePools("aws-use1", cluster_name=peer.cluster_name, region=REGION, endpoint_url=peer.url,
                        timeout_s=2, **kw)


def test_reads_and_sets_a_node_groups_size_and_a_repeat_changes_nothing(eks):
    pools = adapter(eks)
    size = pools.get_pool("p4d")
    assert (size.desired, size.min_size, size.max_size, size.instance_type) == (0, 0, 4, "p4d.24xlarge")
    pools.set_size("p4d", 3, "scale:aws-use1/p4d:3:1")
    assert eks.size("p4d") == 3
    updates = eks.proxy.count("/update-config")
    pools.set_size("p4d", 3, "scale:aws-use1/p4d:3:1")  # a retry after a timeout, or after a restart
    assert eks.proxy.count("/update-config") == updates
    assert pools.get_pool("p4d").desired == 3
    pools.set_size("p4d", 0, "scale:aws-use1/p4d:0:2")
    assert eks.size("p4d") == 0


def test_a_size_outside_the_node_groups_scaling_config_is_refused_before_asking(eks):
    pools = adapter(eks)
    with pytest.raises(ProviderError) as e:
        pools.set_size("p4d", 5, "r1")
    assert e.value.kind == ErrorKind.INVALID and "maxSize" in e.value.message and e.value.pool == "p4d"
    assert eks.size("p4d") == 0


def test_instances_that_cannot_launch_come_back_once_as_a_stockout(eks):
    pools = adapter(eks)
    pools.set_size("p4d", 2, "r1")
    eks.launch_failures("p4d")
    pools.get_pool("p4d")
    [err] = pools.poll_errors()
    assert (err.kind, err.pool) == (ErrorKind.STOCKOUT, "p4d")
    assert "InsufficientInstanceCapacity" in err.message
    pools.get_pool("p4d")
    assert pools.poll_errors() == []  # still failing: said once
    eks.launch_failures("p4d", on=False)
    pools.get_pool("p4d")
    eks.launch_failures("p4d", code="AsgInstanceLaunchFailures",
                        message="You have requested more vCPU capacity than your current vCPU limit of 96 allows "
                                "(VcpuLimitExceeded)")
    pools.get_pool("p4d")
    assert [e.kind for e in pools.poll_errors()] == [ErrorKind.QUOTA]


def test_throttling_is_retried_with_backoff_then_reported(eks):
    pools = adapter(eks, max_attempts=3)
    throttle = {"message": "Rate exceeded"}
    headers = {"x-amzn-ErrorType": "ThrottlingException", "Content-Type": "application/json"}
    eks.proxy.fail_next(2, 429, throttle, headers, match="GET")
    assert pools.get_pool("p4d").desired == 0  # two throttled answers, then the real one
    eks.proxy.fail_next(3, 429, throttle, headers, match="GET")
    with pytest.raises(ProviderError) as e:
        pools.get_pool("p4d")
    assert e.value.kind == ErrorKind.THROTTLED


def test_server_errors_are_transient(eks):
    pools = adapter(eks, max_attempts=2)
    eks.proxy.fail_next(2, 500, {"message": "internal"}, {"x-amzn-ErrorType": "ServerException"}, match="GET")
    with pytest.raises(ProviderError) as e:
        pools.get_pool("p4d")
    assert e.value.kind == ErrorKind.TRANSIENT


def test_a_denied_call_names_the_permission_and_never_shows_the_credentials(eks, caplog):
    caplog.set_level(logging.DEBUG, logger="providers")
    pools = adapter(eks, max_attempts=1)
    eks.proxy.fail_next(1, 403, {"message": "User: arn:aws:iam::123456789012:user/ops is not authorized to perform: "
                                 "eks:UpdateNodegroupConfig"},
                        {"x-amzn-ErrorType": "AccessDeniedException"}, match="POST")
    with pytest.raises(ProviderError) as e:
        pools.set_size("p4d", 1, "r1")
    assert e.value.kind == ErrorKind.AUTH and "eks:UpdateNodegroupConfig" in e.value.message
    assert "testing" not in str(e.value) and "testing" not in caplog.text


def test_an_unknown_node_group_is_invalid_and_names_it(eks):
    with pytest.raises(ProviderError) as e:
        adapter(eks).get_pool("missing")
    assert e.value.kind == ErrorKind.INVALID and "missing" in e.value.message


def test_an_endpoint_that_is_down_is_unreachable_quickly(eks):
    pools = adapter(eks, max_attempts=1)
    eks.proxy.close()
    start = time.monotonic()
    with pytest.raises(ProviderError) as e:
        pools.get_pool("p4d")
    assert e.value.kind == ErrorKind.UNREACHABLE
    assert time.monotonic() - start < 5
