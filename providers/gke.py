"""The GKE node-pool adapter: reads and sets the sizes of one GKE cluster's node pools through google-cloud-container,
following the setSize operations it starts on later calls and classifying every failure."""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import requests
from google.api_core import exceptions as gexc
from google.api_core.retry import Retry
from google.auth import exceptions as auth_exc
from google.cloud import container_v1

from spillover.providers.contract import ErrorKind, ProviderError
from spillover.providers.nodepools import PoolSize

__all__ = ["GKENodePools", "PERMISSIONS", "SCOPES"]

log = logging.getLogger(__name__)

SCOPES = ("https://www.googleapis.com/auth/cloud-platform",)

# GKE's API permissions table: node pools are guarded by the cluster's permissions, operations by their own.
PERMISSIONS = {
    "get_node_pool": "container.clusters.get",
    "set_node_pool_size": "container.clusters.update",
    "get_operation": "container.operations.get",
}

_MAX_DETAIL = 500
_STOCKOUT = re.compile(r"ZONE_RESOURCE_POOL_EXHAUSTED|RESOURCE_POOL_EXHAUSTED|GCE_STOCKOUT|STOCKOUT|"
                       r"does not have enough resources available", re.IGNORECASE)
_QUOTA = re.compile(r"QUOTA_EXCEEDED|quotaExceeded|\bquota\b.{0,200}?\bexceeded\b|insufficient\b.{0,40}?\bquota\b",
                    re.IGNORECASE)
# A per-minute request quota is a rate limit, whatever words it uses ("Quota exceeded for quota metric ...").
_RATE = re.compile(r"RATE_LIMIT_EXCEEDED|rateLimitExceeded|userRateLimitExceeded|rate limit|"
                   r"\bper (?:minute|second|100 seconds)\b", re.IGNORECASE)
_RATE_REASONS = {"RATE_LIMIT_EXCEEDED", "rateLimitExceeded", "userRateLimitExceeded"}
_QUOTA_REASONS = {"QUOTA_EXCEEDED", "quotaExceeded", "dailyLimitExceeded"}
_DISABLED_REASONS = {"SERVICE_DISABLED", "accessNotConfigured", "API_DISABLED"}
_BUSY = re.compile(r"incompatible operation|operation .{0,80}(?:in progress|is running|running on)", re.IGNORECASE)
_PERMISSION = re.compile(r"\b(container\.(?!googleapis\b)[a-z][A-Za-z]*\.[a-z][A-Za-z]*)\b")
_BEARER = re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+")
_SECRET_PARAM = re.compile(r"(?i)((?:access_token|token|key|signature|client_secret|refresh_token)=)[^&\s'\"]+")
_GOOGLE_TOKEN = re.compile(r"\bya29\.[A-Za-z0-9._-]+|\beyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")

# google.rpc.Code numbers, as an Operation's `error.code` carries them
_RPC = {1: "CANCELLED", 2: "UNKNOWN", 3: "INVALID_ARGUMENT", 4: "DEADLINE_EXCEEDED", 5: "NOT_FOUND",
        6: "ALREADY_EXISTS", 7: "PERMISSION_DENIED", 8: "RESOURCE_EXHAUSTED", 9: "FAILED_PRECONDITION",
        10: "ABORTED", 11: "OUT_OF_RANGE", 12: "UNIMPLEMENTED", 13: "INTERNAL", 14: "UNAVAILABLE",
        15: "DATA_LOSS", 16: "UNAUTHENTICATED"}
_RPC_KIND = {"PERMISSION_DENIED": ErrorKind.AUTH, "UNAUTHENTICATED": ErrorKind.AUTH,
             "INVALID_ARGUMENT": ErrorKind.INVALID, "FAILED_PRECONDITION": ErrorKind.INVALID,
             "NOT_FOUND": ErrorKind.INVALID, "OUT_OF_RANGE": ErrorKind.INVALID, "ALREADY_EXISTS": ErrorKind.INVALID,
             "UNIMPLEMENTED": ErrorKind.INVALID, "RESOURCE_EXHAUSTED": ErrorKind.QUOTA}

_UPDATING = {"PROVISIONING", "RECONCILING", "STOPPING"}
_FAULTY = {"ERROR", "RUNNING_WITH_ERROR"}


class _OperationGone(ProviderError):
    """GKE no longer knows an operation (it keeps finished ones for a limited time)."""


@dataclass
class _Resize:
    """The last size asked for through this adapter, and the operation carrying it while it runs."""

    desired: int  # nodes in the whole pool (GKE's own count is per zone)
    request_id: str
    operation: str  # the operation's short name, as setSize returned it
    done: bool = False


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MAX_DETAIL else text[: _MAX_DETAIL - 3] + "..."


@dataclass(frozen=True)
class _ApiError:
    """What a Google API error response says: HTTP code, canonical status, message, reasons, IAM metadata."""

    code: int
    status: str
    message: str
    reasons: frozenset[str]
    metadata: dict[str, str]

    @classmethod
    def of(cls, exc: gexc.GoogleAPICallError) -> _ApiError:
        code = int(exc.code or 0)
        status, message = "", ""
        response = getattr(exc, "response", None)
        if response is not None:
            try:
                body = response.json()
            except (ValueError, AttributeError):
                body = None
            error = body.get("error") if isinstance(body, dict) else None
            if isinstance(error, dict):
                status = str(error.get("status") or "")
                message = str(error.get("message") or "")
        if not message:
            # the library prefixes "GET <url>: "; the API's own words are what explain the failure
            message = re.sub(r"^[A-Z]+ \S+: ", "", str(exc.message or ""))
        reasons = {str(exc.reason)} if exc.reason else set()
        for item in exc.errors or ():
            if isinstance(item, dict) and item.get("reason"):
                reasons.add(str(item["reason"]))
        metadata = exc.metadata if isinstance(exc.metadata, dict) else {}
        if not status and exc.grpc_status_code is not None:
            status = exc.grpc_status_code.name
        return cls(code, status, message, frozenset(reasons), {str(k): str(v) for k, v in metadata.items()})

    def kind(self) -> ErrorKind:
        """The kind alone, as the retry predicate and the classifier both need it."""
        text = self.message
        if _STOCKOUT.search(text):
            return ErrorKind.STOCKOUT
        if self.code == 429 or (self.code == 403 and self.reasons & _RATE_REASONS):
            if self.reasons & _RATE_REASONS or _RATE.search(text) or not (
                    self.reasons & _QUOTA_REASONS or _QUOTA.search(text)):
                return ErrorKind.THROTTLED
            return ErrorKind.QUOTA
        if self.reasons & _QUOTA_REASONS or _QUOTA.search(text):
            return ErrorKind.QUOTA
        if self.code in (401, 403):
            return ErrorKind.AUTH
        if self.code in (400, 412) and (self.status == "FAILED_PRECONDITION" and _BUSY.search(text)):
            return ErrorKind.TRANSIENT  # another operation holds the cluster; it ends on its own
        if self.code == 409 or self.code >= 500:
            return ErrorKind.TRANSIENT
        return ErrorKind.INVALID

    def retryable(self) -> bool:
        kind = self.kind()
        return kind is ErrorKind.THROTTLED or (kind is ErrorKind.TRANSIENT and self.code >= 500)


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, gexc.GoogleAPICallError) and _ApiError.of(exc).retryable()


def _transport_reason(exc: BaseException, timeout_s: float) -> str:
    """One phrase for a connection failure, without the URL and object reprs that requests puts in messages."""
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return "connection timed out"
    if isinstance(exc, requests.exceptions.Timeout):
        return f"no answer within {timeout_s:g}s"
    if isinstance(exc, requests.exceptions.SSLError):
        return "TLS handshake failed"
    text = str(exc)
    if "Connection refused" in text or "ConnectionRefusedError" in text:
        return "connection refused"
    if "NameResolutionError" in text or "Name or service not known" in text or "getaddrinfo" in text:
        return "host name does not resolve"
    if isinstance(exc, requests.exceptions.ConnectionError):
        return "connection failed"
    return type(exc).__name__


def _operation_failure(op: container_v1.Operation) -> tuple[str, str] | None:
    """The canonical code and text of a finished operation's failure, or None if it succeeded."""
    texts: list[str] = []
    code = ""
    if op.error and (op.error.code or op.error.message):
        code = _RPC.get(op.error.code, "UNKNOWN")
        texts.append(op.error.message)
    if op.status_message and op.status_message not in texts:
        texts.append(op.status_message)
    for cond in op.nodepool_conditions:
        if cond.message and cond.message not in texts:
            texts.append(cond.message)
        if cond.code == container_v1.StatusCondition.Code.GCE_STOCKOUT:
            texts.append("GCE_STOCKOUT")
        elif cond.code == container_v1.StatusCondition.Code.GCE_QUOTA_EXCEEDED:
            texts.append("GCE_QUOTA_EXCEEDED")
    if not texts:
        return None
    return code or "UNKNOWN", " ".join(texts)


def _text_kind(code: str, text: str, default: ErrorKind) -> ErrorKind:
    """The kind of a failure GKE reports in words (an operation's error, a node pool's statusMessage)."""
    if _STOCKOUT.search(text):
        return ErrorKind.STOCKOUT
    if _QUOTA.search(text):
        return ErrorKind.QUOTA
    return _RPC_KIND.get(code, default)


class GKENodePools:
    """The node pools of one GKE cluster (NodePoolAPI). See `providers/nodepools.py` for the guarantees.

    GKE's NodePool carries no size, so `desired` is the size last asked for through this adapter (None until
    then); the pool's own status, autoscaling bounds and machine type are reported as GKE gives them. GKE
    sizes a pool per zone: sizes here are for the whole pool and are divided by its number of zones.
    """

    cloud = "gcp"

    def __init__(self, cluster: str, *, project: str, location: str, cluster_name: str,
                 client: container_v1.ClusterManagerClient | None = None, endpoint: str | None = None,
                 timeout_s: float = 30.0, retry_deadline_s: float = 4.0, retry_initial_s: float = 0.2,
                 retry_max_s: float = 2.0, clock: Callable[[], float] = time.time) -> None:
        self.cluster = cluster
        self.project, self.location, self.cluster_name = project, location, cluster_name
        self._timeout_s = timeout_s
        self._retry_deadline_s = retry_deadline_s
        self._retry_initial_s = retry_initial_s
        self._retry_max_s = retry_max_s
        self._clock = clock
        self._lock = threading.RLock()
        self._resizes: dict[str, _Resize] = {}
        self._zones: dict[str, int] = {}
        self._bounds: dict[str, tuple[int | None, int | None]] = {}
        self._faults_seen: dict[str, tuple[str, str]] = {}  # pool -> the (status, message) already reported
        self._poll_failures: dict[str, ErrorKind] = {}  # pool -> kind of a follow-up failure already reported
        self._pending: list[ProviderError] = []
        self._client = client if client is not None else self._default_client(endpoint)

    def _default_client(self, endpoint: str | None) -> container_v1.ClusterManagerClient:
        import google.auth  # the standard chain: GOOGLE_APPLICATION_CREDENTIALS, gcloud, workload identity

        try:
            credentials, _ = google.auth.default(scopes=list(SCOPES))
        except auth_exc.GoogleAuthError as e:
            raise ProviderError(ErrorKind.AUTH, self._redact(_short(f"no Google credentials: {e}")),
                                cluster=self.cluster) from None
        options = {"api_endpoint": endpoint} if endpoint else None
        return container_v1.ClusterManagerClient(credentials=credentials, transport="rest", client_options=options)

    # ------------------------------------------------------------------------------------------------ paths

    @property
    def cluster_path(self) -> str:
        return f"projects/{self.project}/locations/{self.location}/clusters/{self.cluster_name}"

    def _pool_path(self, pool: str) -> str:
        return f"{self.cluster_path}/nodePools/{pool}"

    def _operation_path(self, operation: str) -> str:
        return f"projects/{self.project}/locations/{self.location}/operations/{operation}"

    # ------------------------------------------------------------------------------------------------ NodePoolAPI

    def get_pool(self, pool: str) -> PoolSize:
        with self._lock:
            np = self._call("get_node_pool", {"name": self._pool_path(pool)}, pool=pool,
                            action=f"read node pool {pool}")
            zones = max(1, len(np.locations))
            self._zones[pool] = zones
            low, high = self._autoscaling_bounds(np, zones)
            self._bounds[pool] = (low, high)
            status = container_v1.NodePool.Status(np.status).name
            resize = self._resizes.get(pool)
            if resize is not None and not resize.done:
                self._follow_quietly(pool, resize)
                resize = self._resizes.get(pool)
            self._note_pool_fault(pool, np, status)
            return PoolSize(
                name=pool,
                desired=resize.desired if resize is not None else None,
                min_size=low,
                max_size=high,
                instance_type=np.config.machine_type or None,
                status=status,
                updating=status in _UPDATING or (resize is not None and not resize.done),
            )

    def set_size(self, pool: str, desired: int, request_id: str) -> None:
        with self._lock:
            if desired < 0:
                raise self._error(ErrorKind.INVALID, f"resize node pool {pool}: {desired} nodes is not a size",
                                  pool, request_id)
            resize = self._resizes.get(pool)
            if resize is not None and resize.desired == desired:
                return  # asked already: in flight, or done
            if resize is not None and not resize.done:
                self._follow(pool, resize)  # it may have finished since: then the pool is free again
                resize = self._resizes.get(pool)
            if resize is not None and not resize.done:
                raise self._error(ErrorKind.TRANSIENT,
                                  f"resize node pool {pool} to {desired}: operation {resize.operation} resizing it "
                                  f"to {resize.desired} is still running; GKE runs one operation at a time",
                                  pool, request_id)
            if pool not in self._zones:
                try:
                    self.get_pool(pool)  # the zone count and bounds turn a pool size into GKE's per-zone count
                except ProviderError as e:
                    e.request_id = e.request_id or request_id
                    raise
            zones = self._zones[pool]
            low, high = self._bounds.get(pool, (None, None))
            if (low is not None and desired < low) or (high is not None and desired > high):
                raise self._error(ErrorKind.INVALID,
                                  f"resize node pool {pool}: {desired} nodes is outside its autoscaling limits "
                                  f"[{low if low is not None else 0}, {high if high is not None else '-'}]",
                                  pool, request_id)
            if desired % zones:
                raise self._error(ErrorKind.INVALID,
                                  f"resize node pool {pool}: {desired} nodes cannot be spread evenly over its "
                                  f"{zones} zones (GKE sizes each zone alike)", pool, request_id)
            op = self._call("set_node_pool_size", {"name": self._pool_path(pool), "node_count": desired // zones},
                            pool=pool, request_id=request_id, action=f"resize node pool {pool} to {desired}")
            resize = _Resize(desired=desired, request_id=request_id, operation=op.name)
            self._resizes[pool] = resize
            log.info("GKE %s: node pool %s resizing to %d (%s, request %s)", self.cluster, pool, desired,
                     op.name, request_id)
            if op.status == container_v1.Operation.Status.DONE:
                self._finish(pool, resize, op)

    def poll_errors(self) -> list[ProviderError]:
        with self._lock:
            for pool, resize in list(self._resizes.items()):
                if not resize.done:
                    self._follow_quietly(pool, resize)
            out, self._pending = self._pending, []
            return out

    def close(self) -> None:
        try:
            self._client.transport.close()
        except Exception as e:  # closing must not fail a shutdown
            log.debug("GKE %s: closing the client failed: %s", self.cluster, type(e).__name__)

    # ------------------------------------------------------------------------------------------------ operations

    def _follow(self, pool: str, resize: _Resize) -> None:
        """Read the operation once; when it has finished, settle it. Raises ProviderError."""
        try:
            op = self._call("get_operation", {"name": self._operation_path(resize.operation)}, pool=pool,
                            request_id=resize.request_id, action=f"follow operation {resize.operation} on {pool}",
                            missing="operation")
        except _OperationGone:
            # the outcome is unknown, and so is the size: the next set_size asks again
            log.warning("GKE %s: operation %s on %s is gone; its outcome is unknown", self.cluster,
                        resize.operation, pool)
            self._resizes.pop(pool, None)
            return
        self._poll_failures.pop(pool, None)
        if op.status == container_v1.Operation.Status.DONE:
            self._finish(pool, resize, op)

    def _follow_quietly(self, pool: str, resize: _Resize) -> None:
        """Follow the operation; a failure to read it is queued for poll_errors, once per kind until it clears."""
        try:
            self._follow(pool, resize)
        except ProviderError as e:
            if self._poll_failures.get(pool) is not e.kind:
                self._poll_failures[pool] = e.kind
                self._pending.append(e)

    def _finish(self, pool: str, resize: _Resize, op: container_v1.Operation) -> None:
        resize.done = True
        failure = _operation_failure(op)
        if failure is None:
            log.info("GKE %s: node pool %s resized to %d (%s)", self.cluster, pool, resize.desired, op.name)
            return
        code, text = failure
        # the size stays what it was, so the same size may (and should) be asked for again
        self._resizes.pop(pool, None)
        kind = _text_kind(code, text, ErrorKind.TRANSIENT)
        self._pending.append(self._error(
            kind, f"resize node pool {pool} to {resize.desired} failed (operation {op.name}, {code}): {text}",
            pool, resize.request_id))

    # ------------------------------------------------------------------------------------------------ pool state

    @staticmethod
    def _autoscaling_bounds(np: container_v1.NodePool, zones: int) -> tuple[int | None, int | None]:
        a = np.autoscaling
        if not a.enabled:
            return None, None
        if a.total_min_node_count or a.total_max_node_count:
            return a.total_min_node_count, a.total_max_node_count or None
        # min/max_node_count are per zone
        return a.min_node_count * zones, (a.max_node_count * zones) or None

    def _note_pool_fault(self, pool: str, np: container_v1.NodePool, status: str) -> None:
        if status not in _FAULTY:
            self._faults_seen.pop(pool, None)
            return
        texts = [np.status_message] if np.status_message else []
        texts += [c.message for c in np.conditions if c.message and c.message not in texts]
        key = (status, " ".join(texts))
        if self._faults_seen.get(pool) == key:
            return
        self._faults_seen[pool] = key
        text = key[1] or "no statusMessage"
        self._pending.append(self._error(_text_kind("", text, ErrorKind.TRANSIENT),
                                         f"node pool {pool} is in status {status}: {text}", pool, None))

    # ------------------------------------------------------------------------------------------------ calls

    def _retry(self) -> Retry:
        # exponential backoff with full jitter, and a deadline a control-loop cycle can afford
        return Retry(predicate=_retryable, initial=self._retry_initial_s, maximum=self._retry_max_s,
                     multiplier=2.0, timeout=self._retry_deadline_s)

    def _call(self, method: str, request: dict[str, Any], *, pool: str, action: str,
              request_id: str | None = None, missing: str = "pool") -> Any:
        try:
            return getattr(self._client, method)(request=request, retry=self._retry(), timeout=self._timeout_s)
        except Exception as exc:
            raise self._classify(exc, method=method, action=action, pool=pool, request_id=request_id,
                                 missing=missing) from None

    def _error(self, kind: ErrorKind, message: str, pool: str | None, request_id: str | None) -> ProviderError:
        return ProviderError(kind, self._redact(_short(message)), cluster=self.cluster, pool=pool,
                             at=self._clock(), request_id=request_id)

    def _classify(self, exc: BaseException, *, method: str, action: str, pool: str, request_id: str | None,
                  missing: str) -> ProviderError:
        permission = PERMISSIONS[method]
        retried = ""
        if isinstance(exc, gexc.RetryError):
            retried = f" (still failing after {self._retry_deadline_s:g}s of retries)"
            if exc.cause is None:
                return self._error(ErrorKind.TRANSIENT, f"{action}: gave up{retried}", pool, request_id)
            exc = exc.cause

        def err(kind: ErrorKind, detail: str) -> ProviderError:
            return self._error(kind, f"{action}: {detail}{retried}", pool, request_id)

        if isinstance(exc, ProviderError):
            return exc
        if isinstance(exc, gexc.GoogleAPICallError):
            api = _ApiError.of(exc)
            kind = api.kind()
            head = f"HTTP {api.code} {api.status}".rstrip()
            if kind is ErrorKind.AUTH and api.reasons & _DISABLED_REASONS:
                return err(kind, f"{head}: the Kubernetes Engine API is not enabled for the project: {api.message}")
            if kind is ErrorKind.AUTH:
                named = api.metadata.get("permission") or next(iter(_PERMISSION.findall(api.message)), "")
                needs = named or permission
                if api.code == 401:
                    return err(kind, f"{head}: credentials rejected: {api.message} (the call needs IAM "
                                     f"permission {needs} on {self.cluster_path})")
                return err(kind, f"{head}: missing IAM permission {needs}: {api.message}")
            if api.code == 404 and kind is ErrorKind.INVALID:
                if missing == "operation":
                    gone = err(kind, f"{head}: operation not found: {api.message}")
                    return _OperationGone(gone.kind, gone.message, cluster=gone.cluster, pool=gone.pool,
                                          at=gone.at, request_id=gone.request_id)
                return err(kind, f"{head}: node pool {pool} not found in GKE cluster {self.cluster_path}: "
                                 f"{api.message}")
            return err(kind, f"{head}: {api.message}")
        if isinstance(exc, requests.exceptions.RequestException):
            return err(ErrorKind.UNREACHABLE, f"cannot reach the GKE API: {_transport_reason(exc, self._timeout_s)}")
        if isinstance(exc, (auth_exc.TransportError, auth_exc.TimeoutError)):
            return err(ErrorKind.UNREACHABLE, f"cannot reach the token endpoint: {type(exc).__name__}")
        if isinstance(exc, auth_exc.GoogleAuthError):
            # a 401 makes the session refresh the credentials; one that cannot be refreshed ends here
            return err(ErrorKind.AUTH, f"credentials refused or not refreshable ({type(exc).__name__}: {exc}); "
                                       f"the call needs IAM permission {permission} on {self.cluster_path}")
        if isinstance(exc, OSError):
            return err(ErrorKind.UNREACHABLE, f"cannot reach the GKE API: {type(exc).__name__}")
        if isinstance(exc, ValueError):
            return err(ErrorKind.TRANSIENT, f"malformed answer from the GKE API: {type(exc).__name__}")
        return err(ErrorKind.TRANSIENT, f"{type(exc).__name__}: {exc}")

    # ------------------------------------------------------------------------------------------------ secrets

    def _redact(self, text: str) -> str:
        client = getattr(self, "_client", None)
        # the transport keeps the credentials the session signs requests with; their token must never leak
        credentials = getattr(getattr(client, "transport", None), "_credentials", None)
        token = getattr(credentials, "token", None)
        if isinstance(token, str) and len(token) >= 4:
            text = text.replace(token, "***")
        text = _BEARER.sub(r"\1***", text)
        text = _GOOGLE_TOKEN.sub("***", text)
        return _SECRET_PARAM.sub(r"\1***", text)
