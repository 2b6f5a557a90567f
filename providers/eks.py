"""EKS managed node groups as Spillover's node pools, through boto3: `describe_nodegroup` to read a pool,
`update_nodegroup_config(scalingConfig=...)` to size it, and the node group's health issues for what failed.

EKS accepts a new desired size at once and launches instances through the node group's Auto Scaling group; an
instance that cannot launch (no capacity of that type in the zone, an EC2 limit) shows up as a health issue on
the node group, which `poll_errors()` returns once, classified.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    NoRegionError,
    PartialCredentialsError,
    ProfileNotFound,
    ReadTimeoutError,
)

from spillover.providers.contract import ErrorKind, ProviderError
from spillover.providers.nodepools import PoolSize

log = logging.getLogger(__name__)

# The IAM action each call needs, named in an AUTH error so ops know what to grant.
PERMISSION = {"describe_nodegroup": "eks:DescribeNodegroup", "update_nodegroup_config": "eks:UpdateNodegroupConfig"}
THROTTLING = {"ThrottlingException", "TooManyRequestsException", "RequestLimitExceeded", "Throttling",
              "SlowDown", "RequestThrottled"}
DENIED = {"AccessDeniedException", "AccessDenied", "UnauthorizedOperation", "UnauthorizedException"}
BAD_CREDENTIALS = {"UnrecognizedClientException", "InvalidClientTokenId", "ExpiredTokenException", "ExpiredToken",
                   "InvalidSignatureException", "SignatureDoesNotMatch", "IncompleteSignature"}
# A node group's health issue codes, and the message fragments of AsgInstanceLaunchFailures, by what they mean.
STOCKOUT_MARKS = ("InsufficientInstanceCapacity", "InsufficientCapacity", "UnfulfillableCapacity",
                  "insufficient capacity", "do not have sufficient")
QUOTA_MARKS = ("InstanceLimitExceeded", "VcpuLimitExceeded", "MaxSpotInstanceCountExceeded", "LimitExceeded",
               "InsufficientFreeAddresses")
AUTH_ISSUES = {"AccessDenied", "IamInstanceProfileNotFound", "IamNodeRoleNotFound", "IamLimitExceeded"}
UPDATING = {"CREATING", "UPDATING"}
# describe_nodegroup answers younger than this are reused by set_size within the same cycle.
FRESH_S = 5.0


class EKSNodePools:
    """The managed node groups of one EKS cluster (see the module docstring)."""

    cloud = "aws"

    def __init__(self, cluster: str, *, cluster_name: str, region: str, profile: str | None = None,
                 endpoint_url: str | None = None, client: Any | None = None, timeout_s: float = 20.0,
                 max_attempts: int = 4) -> None:
        self.cluster = cluster
        self.cluster_name = cluster_name
        if client is None:
            # standard retry mode: exponential backoff with jitter on throttling and 5xx, a bounded number of times
            config = Config(retries={"mode": "standard", "total_max_attempts": max_attempts}, connect_timeout=timeout_s,
                            read_timeout=timeout_s, user_agent_extra="spillover")
            try:
                session = boto3.session.Session(profile_name=profile, region_name=region)
                client = session.client("eks", endpoint_url=endpoint_url, config=config)
            except (ProfileNotFound, NoRegionError, BotoCoreError) as e:
                raise ProviderError(ErrorKind.AUTH, f"cannot set up AWS credentials: {e}", cluster=cluster) from None
        self._eks = client
        self._lock = threading.Lock()
        self._errors: list[ProviderError] = []
        self._issues_seen: dict[str, set[tuple[str, str]]] = {}  # pool -> health issues already reported
        self._last: dict[str, tuple[float, PoolSize]] = {}

    # ---- NodePoolAPI -------------------------------------------------------------------------

    def get_pool(self, pool: str) -> PoolSize:
        ng = self._call("describe_nodegroup", pool, clusterName=self.cluster_name, nodegroupName=pool)["nodegroup"]
        scaling = ng.get("scalingConfig") or {}
        size = PoolSize(name=pool, desired=_int(scaling.get("desiredSize")), min_size=_int(scaling.get("minSize")),
                        max_size=_int(scaling.get("maxSize")), instance_type=next(iter(ng.get("instanceTypes") or ()),
                                                                                   None),
                        status=str(ng.get("status") or ""), updating=ng.get("status") in UPDATING)
        self._note_health(pool, (ng.get("health") or {}).get("issues") or ())
        with self._lock:
            self._last[pool] = (time.monotonic(), size)
        return size

    def set_size(self, pool: str, desired: int, request_id: str) -> None:
        with self._lock:
            seen = self._last.get(pool)
        size = seen[1] if seen and time.monotonic() - seen[0] < FRESH_S else self.get_pool(pool)
        if size.desired == desired:
            return
        if size.max_size is not None and desired > size.max_size or size.min_size is not None and desired < size.min_size:
            raise ProviderError(ErrorKind.INVALID, f"node group {pool} allows {size.min_size}..{size.max_size} nodes "
                                f"in EKS, not {desired}; widen its scaling config (minSize/maxSize) or set the pool's "
                                "min_nodes/max_nodes within it", cluster=self.cluster, pool=pool,
                                request_id=request_id)
        self._call("update_nodegroup_config", pool, clusterName=self.cluster_name, nodegroupName=pool,
                   scalingConfig={"desiredSize": desired}, clientRequestToken=_token(request_id),
                   request_id=request_id)
        with self._lock:
            self._last.pop(pool, None)
        log.info("%s: EKS node group %s asked for %d node(s) (request %s)", self.cluster, pool, desired, request_id)

    def poll_errors(self) -> list[ProviderError]:
        with self._lock:
            errors, self._errors = self._errors, []
        return errors

    def close(self) -> None:
        self._eks.close()

    # ---- internals ---------------------------------------------------------------------------

    def _note_health(self, pool: str, issues: Any) -> None:
        """Each health issue once while it lasts; one that clears and comes back is reported again."""
        current = {(str(i.get("code") or ""), str(i.get("message") or "")) for i in issues}
        with self._lock:
            new = current - self._issues_seen.get(pool, set())
            self._issues_seen[pool] = current
            for code, message in sorted(new):
                self._errors.append(ProviderError(_issue_kind(code, message), f"node group {pool}: {code}: {message}",
                                                  cluster=self.cluster, pool=pool))

    def _call(self, op: str, pool: str, *, request_id: str | None = None, **kwargs: Any) -> Any:
        try:
            return getattr(self._eks, op)(**kwargs)
        except ClientError as e:
            raise self._client_error(e, op, pool, request_id) from None
        except (EndpointConnectionError, ConnectTimeoutError, ReadTimeoutError, ConnectionClosedError) as e:
            raise ProviderError(ErrorKind.UNREACHABLE, f"EKS API did not answer {op}: {type(e).__name__}",
                                cluster=self.cluster, pool=pool, request_id=request_id) from None
        except (NoCredentialsError, PartialCredentialsError) as e:
            raise ProviderError(ErrorKind.AUTH, f"no usable AWS credentials for {op} ({e}); set a profile, "
                                "environment credentials or an IRSA role", cluster=self.cluster, pool=pool,
                                request_id=request_id) from None
        except BotoCoreError as e:
            raise ProviderError(ErrorKind.TRANSIENT, f"EKS {op} failed: {type(e).__name__}", cluster=self.cluster,
                                pool=pool, request_id=request_id) from None

    def _client_error(self, e: ClientError, op: str, pool: str, request_id: str | None) -> ProviderError:
        err = e.response.get("Error") or {}
        code = str(err.get("Code") or "")
        message = str(err.get("Message") or "")
        status = int((e.response.get("ResponseMetadata") or {}).get("HTTPStatusCode") or 0)
        if code in THROTTLING or status == 429:
            kind, text = ErrorKind.THROTTLED, f"EKS throttled {op} ({code or status}) after retries"
        elif code in DENIED or status == 403 and code not in BAD_CREDENTIALS:
            kind, text = ErrorKind.AUTH, f"not allowed to {op} on node group {pool}: grant {PERMISSION[op]} ({code})"
        elif code in BAD_CREDENTIALS or status == 401:
            kind, text = ErrorKind.AUTH, f"AWS rejected the credentials for {op} ({code}); check the profile or role"
        elif code == "ResourceNotFoundException" or status == 404:
            kind, text = ErrorKind.INVALID, (f"no node group {pool} in EKS cluster {self.cluster_name}: {message}")
        elif code == "ResourceLimitExceededException":
            kind, text = ErrorKind.QUOTA, f"EKS limit reached for {op}: {message}"
        elif code == "ResourceInUseException":
            # another update of the node group is still in progress; the same request goes again next cycle
            kind, text = ErrorKind.TRANSIENT, f"node group {pool} is busy with another update: {message}"
        elif status >= 500 or code in ("ServerException", "ServiceUnavailableException", "InternalFailure"):
            kind, text = ErrorKind.TRANSIENT, f"EKS {op} failed with {code or status}: {message}"
        else:
            kind, text = ErrorKind.INVALID, f"EKS refused {op} ({code or status}): {message}"
        return ProviderError(kind, text, cluster=self.cluster, pool=pool, request_id=request_id)


def _issue_kind(code: str, message: str) -> ErrorKind:
    text = f"{code} {message}"
    if any(m.lower() in text.lower() for m in STOCKOUT_MARKS):
        return ErrorKind.STOCKOUT
    if any(m in text for m in QUOTA_MARKS):
        return ErrorKind.QUOTA
    if code in AUTH_ISSUES:
        return ErrorKind.AUTH
    if code.startswith("Ec2"):
        return ErrorKind.INVALID  # a launch template, subnet or security group that is not right
    return ErrorKind.TRANSIENT


def _token(request_id: str) -> str:
    """EKS's idempotency token for a request: the same request id always gives the same token."""
    return "spillover-" + hashlib.sha256(request_id.encode()).hexdigest()[:32]


def _int(value: Any) -> int | None:
    return int(value) if value is not None else None
