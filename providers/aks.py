"""The AKS adapter of the node-pool contract: agent pools read and resized through azure-mgmt-containerservice,
each resize an ARM long-running operation followed in the background and reported once when it fails.

One scale-up costs a GET of the agent pool (a PUT must carry the whole pool, or AKS would reset the fields left
out) and the PUT; the SDK's poller thread then reads the Azure-AsyncOperation status until the operation ends,
and reads the pool once more. `get_pool` and `poll_errors` only look at whether that thread has finished.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

from azure.core import MatchConditions
from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    DecodeError,
    HttpResponseError,
    ODataV4Format,
    ServiceRequestError,
    ServiceRequestTimeoutError,
    ServiceResponseError,
    ServiceResponseTimeoutError,
)
from azure.core.pipeline import PipelineResponse
from azure.core.pipeline.policies import RetryPolicy
from azure.core.polling import LROPoller
from azure.mgmt.containerservice import ContainerServiceClient
from azure.mgmt.containerservice.models import AgentPool

from spillover.providers.contract import ErrorKind, ProviderError
from spillover.providers.nodepools import PoolSize

__all__ = ["AKSNodePools", "ControlLoopRetryPolicy", "Scope", "build_client", "classify"]

log = logging.getLogger(__name__)

T = TypeVar("T")

READ_POOL = "Microsoft.ContainerService/managedClusters/agentPools/read"
WRITE_POOL = "Microsoft.ContainerService/managedClusters/agentPools/write"
READ_OPERATION = "Microsoft.ContainerService/locations/operations/read"

# provisioning states of an agent pool while some operation runs on it
BUSY_STATES = frozenset({"creating", "updating", "scaling", "upgrading", "deleting", "starting", "stopping",
                         "migrating"})
MAX_POOL_NODES = 1000  # AKS's limit on the nodes of one agent pool

_STOCKOUT_CODES = ("AllocationFailed", "ZonalAllocationFailed", "SkuNotAvailable",
                   "OverconstrainedAllocationRequest", "OverconstrainedZonalAllocationRequest")
_QUOTA_CODES = ("QuotaExceeded", "ErrCode_InsufficientVCPUQuota", "InsufficientVCPUQuota")
_STOCKOUT_RE = re.compile(r"\b(?:%s)\b" % "|".join(_STOCKOUT_CODES), re.IGNORECASE)
_QUOTA_RE = re.compile(r"\b(?:%s)\b" % "|".join(_QUOTA_CODES), re.IGNORECASE)
# CRP's wording when a deployment would pass a cores quota, whatever error code wraps it
_QUOTA_TEXT_RE = re.compile(r"exceed\w*\s+(?:the\s+)?approved\b.*\bquota|\bquota\b.*\bexceed",
                            re.IGNORECASE | re.DOTALL)
_ACTION_RE = re.compile(r"perform action '([^']+)'")
_MAX_DETAIL = 300

_BEARER_RE = re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+")
_JWT_RE = re.compile(r"\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*")
_SECRET_PARAM_RE = re.compile(r"(?i)\b((?:access_token|token|sig|signature|client_secret|client_assertion|password)=)[^&\s'\"]+")


def redact(text: str) -> str:
    """Text with anything shaped like a bearer token, a JWT or a signed query parameter removed."""
    text = _BEARER_RE.sub(r"\1***", text)
    text = _JWT_RE.sub("***", text)
    return _SECRET_PARAM_RE.sub(r"\1***", text)


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MAX_DETAIL else text[: _MAX_DETAIL - 3] + "..."


class ControlLoopRetryPolicy(RetryPolicy):
    """azure-core's retry policy (exponential backoff, Retry-After honoured) that gives up at once when the
    service asks to wait longer than a control loop should block: the loop backs off on THROTTLED itself."""

    def __init__(self, *, retry_after_max_s: float = 15.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.retry_after_max_s = retry_after_max_s

    def is_retry(self, settings: dict[str, Any], response: PipelineResponse[Any, Any]) -> bool:
        retry_after = self.get_retry_after(response)
        if retry_after is not None and retry_after > self.retry_after_max_s:
            return False
        return super().is_retry(settings, response)


def _arm_scopes(base_url: str) -> list[str]:
    """The token scope for an ARM endpoint: the known clouds' audiences, else the endpoint itself."""
    from azure.core import AzureClouds
    from azure.mgmt.core.tools import get_arm_endpoints

    wanted = base_url.rstrip("/").lower()
    for cloud in AzureClouds:
        endpoints = get_arm_endpoints(cloud)
        if endpoints["resource_manager"].rstrip("/").lower() == wanted:
            return list(endpoints["credential_scopes"])
    return [base_url.rstrip("/") + "/.default"]


def build_client(subscription_id: str, *, credential: Any, base_url: str | None = None, timeout_s: float = 30.0,
                 retry_total: int = 3, retry_backoff_factor: float = 0.8, retry_backoff_max: float = 8.0,
                 retry_after_max_s: float = 15.0, **client_kwargs: Any) -> ContainerServiceClient:
    """A ContainerServiceClient whose retries and timeouts suit a control loop (ARM's defaults retry ten times
    and wait up to five minutes for an answer)."""
    retry = ControlLoopRetryPolicy(retry_total=retry_total, retry_connect=min(retry_total, 1),
                                   retry_read=min(retry_total, 1), retry_status=retry_total,
                                   retry_backoff_factor=retry_backoff_factor, retry_backoff_max=retry_backoff_max,
                                   retry_after_max_s=retry_after_max_s)
    if base_url and "credential_scopes" not in client_kwargs and "authentication_policy" not in client_kwargs:
        client_kwargs["credential_scopes"] = _arm_scopes(base_url)
    client_kwargs.setdefault("connection_timeout", timeout_s)
    client_kwargs.setdefault("read_timeout", timeout_s)
    return ContainerServiceClient(credential, subscription_id, base_url=base_url, retry_policy=retry,
                                  **client_kwargs)


@dataclass
class _Resize:
    """A resize this adapter started and has not yet seen finish."""

    pool: str
    target: int
    previous: int | None
    request_id: str
    poller: LROPoller[AgentPool]
    started: float


class AKSNodePools:
    """The agent pools of one AKS cluster (see the module docstring and `providers/nodepools.py`).

    A client passed in keeps its own pipeline; this adapter still bounds every call's retries and timeouts,
    but only a client from `build_client` also stops waiting on a long Retry-After.
    """

    cloud = "azure"

    def __init__(self, cluster: str, *, subscription_id: str, resource_group: str, cluster_name: str,
                 client: ContainerServiceClient | None = None, base_url: str | None = None,
                 timeout_s: float = 30.0, retry_total: int = 3, retry_backoff_factor: float = 0.8,
                 retry_backoff_max: float = 8.0, retry_after_max_s: float = 15.0,
                 polling_interval_s: float = 15.0) -> None:
        self.cluster = cluster
        self.subscription_id = subscription_id
        self.resource_group = resource_group
        self.cluster_name = cluster_name
        self._polling_interval_s = polling_interval_s
        self._scope = Scope(cluster, resource_group, cluster_name, _endpoint_name(base_url))
        self._credential: Any = None
        if client is None:
            from azure.identity import DefaultAzureCredential

            self._credential = DefaultAzureCredential()
            client = build_client(subscription_id, credential=self._credential, base_url=base_url,
                                  timeout_s=timeout_s, retry_total=retry_total,
                                  retry_backoff_factor=retry_backoff_factor, retry_backoff_max=retry_backoff_max,
                                  retry_after_max_s=retry_after_max_s)
        self._client = client
        # per-call settings: azure-core's RetryPolicy and transport read these from each call's options
        self._call_options: dict[str, Any] = {
            "retry_total": retry_total, "retry_connect": min(retry_total, 1), "retry_read": min(retry_total, 1),
            "retry_status": retry_total, "retry_backoff_factor": retry_backoff_factor,
            "retry_backoff_max": retry_backoff_max, "connection_timeout": timeout_s, "read_timeout": timeout_s,
        }
        self._lock = threading.Lock()
        self._resizes: dict[str, _Resize] = {}
        self._errors: list[ProviderError] = []

    # ---- the contract --------------------------------------------------------------------------

    def get_pool(self, pool: str) -> PoolSize:
        self._harvest()
        ap = self._read(pool)
        with self._lock:
            resize = self._resizes.get(pool)
        state = _text(ap.provisioning_state)
        ours = resize is not None and not resize.poller.done()
        count = _int(ap.count)
        # AKS reports the goal count while it converges; a cloud that shows the old count until the operation
        # ends must not make a resize of ours look as if it were not asked for
        desired = resize.target if ours and resize is not None else count
        return PoolSize(name=pool, desired=desired, min_size=_int(ap.min_count), max_size=_int(ap.max_count),
                        instance_type=_text(ap.vm_size) or None, status=state,
                        updating=ours or state.lower() in BUSY_STATES)

    def set_size(self, pool: str, desired: int, request_id: str) -> None:
        action = f"resize agent pool {pool} to {desired}"
        if desired < 0 or desired > MAX_POOL_NODES:
            raise self._invalid(f"{action}: an AKS agent pool holds 0 to {MAX_POOL_NODES} nodes", pool,
                                request_id)
        self._harvest()
        with self._lock:
            resize = self._resizes.get(pool)
        if resize is not None:
            if resize.target == desired:
                log.debug("%s: %s already under way (request %s)", self.cluster, action, resize.request_id)
                return
            raise ProviderError(
                ErrorKind.TRANSIENT, f"{action}: its resize to {resize.target} (request {resize.request_id}) is "
                "still running and AKS runs one operation per agent pool at a time; ask again when it ends",
                cluster=self.cluster, pool=pool, at=time.time(), request_id=request_id)
        ap = self._read(pool, request_id=request_id)
        if ap.enable_auto_scaling:
            raise self._invalid(
                f"{action}: agent pool {pool} of {self._scope.where} has the cluster autoscaler enabled (min "
                f"{ap.min_count}, max {ap.max_count}) and AKS refuses a manual node count on it; disable the "
                f"autoscaler on that pool (az aks nodepool update -g {self.resource_group} --cluster-name "
                f"{self.cluster_name} -n {pool} --disable-cluster-autoscaler) for Spillover to size it, or "
                "remove the pool from Spillover's configuration", pool, request_id)
        if _int(ap.count) == desired:
            return
        if desired == 0 and _text(ap.mode).lower() == "system":
            raise self._invalid(f"{action}: {pool} is a System agent pool, which AKS keeps at one node or more",
                                pool, request_id)
        previous = _int(ap.count)
        ap.count = desired
        kwargs: dict[str, Any] = dict(self._call_options, polling_interval=self._polling_interval_s)
        if ap.e_tag:
            # a change made by someone else between our read and this write is refused, not overwritten
            kwargs.update(etag=ap.e_tag, match_condition=MatchConditions.IfNotModified)
        poller = self._call(action, WRITE_POOL, pool, request_id, lambda: self._client.agent_pools
                            .begin_create_or_update(self.resource_group, self.cluster_name, pool, ap, **kwargs))
        with self._lock:
            self._resizes[pool] = _Resize(pool, desired, previous, request_id, poller, time.time())
        log.info("%s: AKS accepted resize of agent pool %s from %s to %d nodes (request %s)", self.cluster, pool,
                 previous, desired, request_id)

    def poll_errors(self) -> list[ProviderError]:
        self._harvest()
        with self._lock:
            errors, self._errors = self._errors, []
        return errors

    def close(self) -> None:
        self._client.close()
        if self._credential is not None:
            self._credential.close()

    def __enter__(self) -> AKSNodePools:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # ---- helpers -------------------------------------------------------------------------------

    def _read(self, pool: str, *, request_id: str | None = None) -> AgentPool:
        return self._call(f"read agent pool {pool}", READ_POOL, pool, request_id, lambda: self._client.agent_pools
                          .get(self.resource_group, self.cluster_name, pool, **self._call_options))

    def _call(self, action: str, permission: str, pool: str, request_id: str | None, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except Exception as e:  # noqa: BLE001 - classified; the cause stays out of the message
            err = classify(e, action=action, permission=permission, scope=self._scope, pool=pool,
                           request_id=request_id)
            log.warning("%s", err)
            raise err from None

    def _harvest(self) -> None:
        """Move the resizes whose poller has finished out of the in-flight set, queueing their failures."""
        with self._lock:
            finished = [r for r in self._resizes.values() if r.poller.done()]
            for r in finished:
                del self._resizes[r.pool]
        for r in finished:
            try:
                r.poller.result(timeout=0)
            except Exception as e:  # noqa: BLE001 - reported through poll_errors
                err = classify(e, action=f"resize agent pool {r.pool} from {r.previous} to {r.target}",
                               permission=f"{READ_OPERATION} (and {READ_POOL})", scope=self._scope,
                               pool=r.pool, request_id=r.request_id, asynchronous=True)
                log.warning("%s", err)
                with self._lock:
                    self._errors.append(err)
            else:
                log.info("%s: agent pool %s resized to %d nodes (request %s, %.0fs)", self.cluster, r.pool,
                         r.target, r.request_id, time.time() - r.started)

    def _invalid(self, message: str, pool: str, request_id: str | None) -> ProviderError:
        return ProviderError(ErrorKind.INVALID, message, cluster=self.cluster, pool=pool, at=time.time(),
                             request_id=request_id)


def _text(value: Any) -> str:
    """A model field as the service spelled it (the SDK turns known values into str enums)."""
    return str(getattr(value, "value", value) or "")


def _int(value: Any) -> int | None:
    return int(value) if value is not None else None


def _endpoint_name(base_url: str | None) -> str:
    if not base_url:
        return "Azure Resource Manager"
    parts = urlsplit(base_url)
    return f"{parts.scheme}://{parts.hostname}{':%d' % parts.port if parts.port else ''}" if parts.hostname \
        else "Azure Resource Manager"


# ---- classification ---------------------------------------------------------------------------------------

def _error_entries(error: ODataV4Format | None) -> list[tuple[str, str]]:
    """(code, message) of an ARM error, its details and its inner error, outermost first."""
    out: list[tuple[str, str]] = []
    pending: list[Any] = [error] if error is not None else []
    while pending:
        item = pending.pop(0)
        if isinstance(item, ODataV4Format):
            out.append((str(item.code or ""), str(item.message or "")))
            pending.extend(item.details or ())
            if item.innererror:
                pending.append(item.innererror)
        elif isinstance(item, dict):
            code, message = item.get("code"), item.get("message")
            out.append((code if isinstance(code, str) else "", message if isinstance(message, str) else ""))
            pending.extend(d for d in item.get("details") or () if isinstance(d, dict))
    return out


def _find(entries: list[tuple[str, str]], pattern: re.Pattern[str]) -> tuple[str, str] | None:
    """The code matching `pattern` and the message that goes with it: an entry's own code first, else a code
    quoted in a message (AKS often relays the compute error as text: Code="AllocationFailed" ...)."""
    for code, message in entries:
        if code and pattern.fullmatch(code):
            return code, message
    for _, message in entries:
        found = pattern.search(message)
        if found:
            return found.group(0), message
    return None


def _transport_reason(exc: AzureError, timeout_hint: str) -> str:
    if isinstance(exc, (ServiceRequestTimeoutError, ServiceResponseTimeoutError)):
        return f"no answer {timeout_hint}"
    text = f"{exc} {exc.inner_exception or ''}".lower()
    if "refused" in text:
        return "connection refused"
    if "timed out" in text or "timeout" in text:
        return f"no answer {timeout_hint}"
    if "name or service not known" in text or "nodename nor servname" in text or "getaddrinfo" in text \
            or "name resolution" in text:
        return "host name does not resolve"
    if "ssl" in text or "certificate" in text:
        return "TLS handshake failed"
    if isinstance(exc, ServiceResponseError):
        return "connection lost before an answer"
    return "cannot connect"


@dataclass(frozen=True)
class Scope:
    """Where a call went, for messages: Spillover's cluster name and the AKS cluster's coordinates."""

    cluster: str
    resource_group: str
    cluster_name: str
    endpoint: str = "Azure Resource Manager"

    @property
    def where(self) -> str:
        return f"AKS cluster {self.resource_group}/{self.cluster_name}"


def classify(exc: BaseException, *, action: str, permission: str, scope: Scope, pool: str | None,
             request_id: str | None = None, asynchronous: bool = False) -> ProviderError:
    """Map a failure of `action` (which needs `permission`) to a ProviderError the loop can act on.
    `asynchronous`: the failure ended a long-running operation, so a 2xx status is the operation's own."""
    where, endpoint = scope.where, scope.endpoint

    # a poller that failed to read the operation's status, rather than reading that it failed
    lost = asynchronous and not (isinstance(exc, HttpResponseError) and exc.status_code is not None
                                 and int(exc.status_code) < 300)

    def err(kind: ErrorKind, detail: str) -> ProviderError:
        if lost:
            detail += "; the operation is no longer followed and AKS may still finish it: get_pool shows the pool"
        return ProviderError(kind, redact(f"{action}: {detail}"), cluster=scope.cluster, pool=pool,
                             at=time.time(), request_id=request_id)

    if isinstance(exc, ProviderError):
        return exc
    if isinstance(exc, HttpResponseError) and exc.status_code is not None:
        status = int(exc.status_code)
        entries = _error_entries(exc.error)
        codes = [c for c, _ in entries if c]
        texts = [m for _, m in entries if m]
        top = codes[0] if codes else str(exc.reason or "")

        def head(code: str) -> str:
            relayed = f" (relayed as {top})" if top and code != top else ""
            if asynchronous and status < 300:
                return f"the operation failed with {code or 'no error code'}{relayed}"
            return f"HTTP {status} {code}{relayed}".rstrip()

        def said(message: str | None = None) -> str:
            return _short(message or (texts[0] if texts else str(exc.reason or "no detail")))

        stockout = _find(entries, _STOCKOUT_RE)
        if stockout:
            return err(ErrorKind.STOCKOUT, f"{head(stockout[0])}: Azure has no capacity for this VM size there "
                       f"now: {said(stockout[1])}")
        quota = _find(entries, _QUOTA_RE) or next(
            ((c, m) for c, m in entries if (c == "OperationNotAllowed" and "quota" in m.lower())
             or _QUOTA_TEXT_RE.search(m)), None)
        if quota:
            return err(ErrorKind.QUOTA, f"{head(quota[0])}: a subscription quota stops it (request an increase "
                       f"for the VM family in that region): {said(quota[1])}")
        if asynchronous and status < 300:
            return err(ErrorKind.TRANSIENT, f"{head(top)}: {said()}")
        if status == 401 or isinstance(exc, ClientAuthenticationError):
            return err(ErrorKind.AUTH, f"{head(top)}: Azure rejected the credentials (expired, or for another "
                       f"tenant); the identity in use needs {permission} on {where}: {said()}")
        if status == 403:
            named = _ACTION_RE.search(" ".join(texts))
            missing = named.group(1) if named else permission
            return err(ErrorKind.AUTH, f"{head(top)}: the identity lacks permission {missing} on {where} (grant a role "
                       f"that has it, e.g. Azure Kubernetes Service Contributor): {said()}")
        if status == 429:
            retry_after = exc.response.headers.get("Retry-After") if exc.response is not None else None
            hint = f" (Azure asks to retry after {retry_after}s)" if retry_after else ""
            return err(ErrorKind.THROTTLED, f"{head(top)}: ARM is throttling the subscription{hint}: {said()}")
        if status == 404:
            lowered = [c.lower() for c in codes]
            cluster_gone = re.compile(rf"managedClusters/{re.escape(scope.cluster_name)}'", re.IGNORECASE)
            if "resourcegroupnotfound" in lowered:
                what = f"resource group {scope.resource_group} does not exist"
            elif "subscriptionnotfound" in lowered or "invalidsubscriptionid" in lowered:
                what = "the subscription does not exist or the identity cannot see it"
            elif any(cluster_gone.search(t) for t in texts):
                what = f"{where} does not exist"
            else:
                what = f"{where} has no agent pool named {pool!r}"
            return err(ErrorKind.INVALID, f"{head(top)}: {what}; check the pool and cluster names in the "
                       f"configuration: {said()}")
        if status in (408, 409, 412):
            why = {409: "another operation holds the pool or cluster", 412: "the pool changed since it was read",
                   408: "ARM timed out"}[status]
            return err(ErrorKind.TRANSIENT, f"{head(top)}: {why}; ask again shortly: {said()}")
        if status >= 500:
            return err(ErrorKind.TRANSIENT, f"{head(top)}: {said()}")
        return err(ErrorKind.INVALID, f"{head(top)}: {said()}")
    if isinstance(exc, ClientAuthenticationError):
        return err(ErrorKind.AUTH, f"no Azure credential could be obtained (the identity needs {permission} on "
                   f"{where}): {_short(str(exc))}")
    if isinstance(exc, (ServiceRequestError, ServiceResponseError)):
        if "non-TLS" in str(exc) or "non-https" in str(exc):
            return err(ErrorKind.INVALID, f"{endpoint} is not an https URL; Azure credentials are only sent over "
                       "TLS")
        return err(ErrorKind.UNREACHABLE, f"cannot reach {endpoint}: {_transport_reason(exc, 'before the timeout')}")
    if isinstance(exc, DecodeError):
        return err(ErrorKind.TRANSIENT, f"malformed answer from {endpoint}")
    if isinstance(exc, HttpResponseError):  # no response at all, e.g. a poller with nothing to poll
        return err(ErrorKind.TRANSIENT, _short(str(exc)))
    if isinstance(exc, AzureError):
        return err(ErrorKind.TRANSIENT, f"{type(exc).__name__}: {_short(str(exc))}")
    if isinstance(exc, (OSError, TimeoutError)):
        return err(ErrorKind.UNREACHABLE, f"cannot reach {endpoint}: {type(exc).__name__}")
    return err(ErrorKind.TRANSIENT, f"{type(exc).__name__}: {_short(str(exc))}")
