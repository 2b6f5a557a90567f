"""A stateful GKE API (container.googleapis.com v1, REST) on 127.0.0.1: node pools, setSize operations that take
time, stockouts, quota failures, IAM denials and injected HTTP errors, for the real google-cloud-container client."""

from __future__ import annotations

import collections
import json
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from peer_http import Peer, PeerHandler

__all__ = ["GKEPeer", "PERMISSIONS"]

# What each method needs, per GKE's API permissions table (node pools are guarded by cluster permissions).
PERMISSIONS = {
    "nodePools.get": "container.clusters.get",
    "nodePools.setSize": "container.clusters.update",
    "operations.get": "container.operations.get",
}

# Enum numbers of google.container.v1 and google.rpc, for answers to clients asking `enum-encoding=int`.
_POOL_STATUS = {"STATUS_UNSPECIFIED": 0, "PROVISIONING": 1, "RUNNING": 2, "RUNNING_WITH_ERROR": 3,
                "RECONCILING": 4, "STOPPING": 5, "ERROR": 6}
_OP_STATUS = {"STATUS_UNSPECIFIED": 0, "PENDING": 1, "RUNNING": 2, "DONE": 3, "ABORTING": 4}
_OP_TYPE = {"SET_NODE_POOL_SIZE": 14}
_CONDITION_CODE = {"UNKNOWN": 0, "GCE_STOCKOUT": 1, "GCE_QUOTA_EXCEEDED": 3}
_RPC_CODE = {"OK": 0, "CANCELLED": 1, "UNKNOWN": 2, "INVALID_ARGUMENT": 3, "DEADLINE_EXCEEDED": 4, "NOT_FOUND": 5,
             "ALREADY_EXISTS": 6, "PERMISSION_DENIED": 7, "RESOURCE_EXHAUSTED": 8, "FAILED_PRECONDITION": 9,
             "ABORTED": 10, "OUT_OF_RANGE": 11, "UNIMPLEMENTED": 12, "INTERNAL": 13, "UNAVAILABLE": 14,
             "DATA_LOSS": 15, "UNAUTHENTICATED": 16}
_HTTP_STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
                409: "ABORTED", 429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 501: "UNIMPLEMENTED",
                502: "UNAVAILABLE", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}
_DEFAULT_MESSAGE = {
    400: "Invalid request.",
    401: "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other "
         "valid authentication credential.",
    404: "Not found.",
    409: "The operation was aborted.",
    500: "Internal error encountered.",
    502: "Bad gateway.",
    503: "The service is currently unavailable.",
    504: "The request timed out.",
}
_MAX_NODES_PER_ZONE = 1000  # GKE's documented limit per node pool and zone
_ERROR_INFO = "type.googleapis.com/google.rpc.ErrorInfo"

_POOL_PATH = re.compile(r"^/v1/projects/([^/]+)/locations/([^/]+)/clusters/([^/]+)/nodePools/([^/:]+)(:setSize)?$")
_OP_PATH = re.compile(r"^/v1/projects/([^/]+)/locations/([^/]+)/operations/([^/:]+)$")


def _rfc3339(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int((t % 1) * 1e6):06d}Z"


class GoogleError(Exception):
    """A failure answered as Google APIs do: {"error": {"code", "message", "status", "details"}}."""

    def __init__(self, code: int, message: str | None = None, *, status: str | None = None,
                 details: list[dict] | None = None) -> None:
        self.code = code
        self.message = message or _DEFAULT_MESSAGE.get(code, "Error.")
        self.status = status or _HTTP_STATUS.get(code, "UNKNOWN")
        self.details = details or []
        super().__init__(self.message)

    def body(self) -> dict:
        return {"error": {"code": self.code, "message": self.message, "status": self.status,
                          "details": self.details}}


@dataclass
class _Pool:
    name: str
    machine_type: str
    node_count: int  # per zone: GKE sizes a pool in every one of its zones
    zones: tuple[str, ...]
    initial_node_count: int
    autoscaling: bool
    min_per_zone: int
    max_per_zone: int
    accelerator: tuple[str, int] | None
    status: str = "RUNNING"
    status_message: str = ""
    conditions: list[dict] = field(default_factory=list)
    stockout: bool = False
    quota_nodes: int | None = None  # per zone; growth beyond it fails as a regional GPU quota would


@dataclass
class _Operation:
    name: str
    pool: str
    node_count: int
    started: float  # time.time(), for the RFC 3339 fields
    started_mono: float
    duration: float
    done: bool = False
    ended: float | None = None
    error: dict | None = None
    conditions: list[dict] = field(default_factory=list)


@dataclass
class _Fault:
    remaining: int
    code: int
    message: str | None
    status: str | None
    reason: str | None
    kind: str | None
    permission: str | None


class _Handler(PeerHandler):
    def internal_error_body(self) -> Any:
        return GoogleError(500).body()

    def send_json(self, code: int, obj: Any, headers: dict[str, str] | None = None) -> None:
        self.send_body(code, json.dumps(obj).encode(), "application/json; charset=UTF-8", headers)


class GKEPeer(Peer):
    """One GKE cluster's node-pool API, answering the documented v1 REST paths.

    A setSize starts an Operation that is PENDING in the answer, RUNNING until `operation_s` seconds have
    passed, then DONE: only then does the pool take the new size (or, growing a stocked-out pool, fail with
    the error GKE reports and keep its size). As on GKE, one operation at a time runs per cluster, sizes are
    per zone, and node pools are guarded by the cluster's IAM permissions.
    """

    handler = _Handler
    thread_name = "gke-peer"

    def __init__(self, *, project: str = "spillover-test", location: str = "us-central1",
                 cluster: str = "burst-gpu", host: str = "127.0.0.1", port: int = 0, operation_s: float = 0.05,
                 require_token: str | None = None) -> None:
        self.project, self.location, self.cluster = project, location, cluster
        self._init_server(host, port)
        self.operation_s = operation_s
        self.require_token = require_token
        self._lock = threading.RLock()
        self._pools: dict[str, _Pool] = {}
        self._operations: dict[str, _Operation] = {}
        self._faults: list[_Fault] = []
        self._denied: set[str] = set()
        self._errors: list[str] = []
        self.requests: collections.Counter[tuple[str, str]] = collections.Counter()

    @property
    def endpoint(self) -> str:
        """The value for client_options={"api_endpoint": ...}."""
        return f"http://{self.host}:{self._port}"

    @property
    def cluster_path(self) -> str:
        return f"projects/{self.project}/locations/{self.location}/clusters/{self.cluster}"

    @property
    def errors(self) -> list[str]:
        """Tracebacks of requests the peer failed to handle; a test should see none."""
        with self._lock:
            return list(self._errors)

    def _record_error(self, text: str) -> None:
        with self._lock:
            self._errors.append(text)

    # ------------------------------------------------------------------------------------------------ state

    def add_pool(self, name: str, *, machine_type: str = "a2-highgpu-8g", size: int = 0,
                 zones: tuple[str, ...] | None = None, min_size: int | None = None, max_size: int | None = None,
                 accelerator: tuple[str, int] | None = ("nvidia-tesla-a100", 8)) -> None:
        """A RUNNING pool of `size` nodes in all (spread evenly over `zones`). `min_size`/`max_size`, when
        given, enable the cluster autoscaler with those bounds for the whole pool."""
        zones = tuple(zones or (f"{self.location}-a",))
        if size % len(zones):
            raise ValueError("a GKE pool has the same number of nodes in each of its zones")
        per_zone = size // len(zones)
        autoscaling = min_size is not None or max_size is not None
        with self._lock:
            self._pools[name] = _Pool(
                name=name, machine_type=machine_type, node_count=per_zone, zones=zones,
                initial_node_count=per_zone, autoscaling=autoscaling,
                min_per_zone=(min_size or 0) // len(zones), max_per_zone=(max_size or 0) // len(zones),
                accelerator=accelerator)

    def size(self, pool: str) -> int:
        """Nodes the pool has now, over all its zones (a finished operation's size, not a requested one)."""
        with self._lock:
            self._advance_locked()
            p = self._pools[pool]
            return p.node_count * len(p.zones)

    def resize(self, pool: str, size: int) -> None:
        """Change the size behind the API's back, as the cluster autoscaler or another operator would."""
        with self._lock:
            p = self._pools[pool]
            p.node_count = size // len(p.zones)

    def set_status(self, pool: str, status: str, message: str = "", conditions: list[dict] | None = None) -> None:
        """Put the pool in a status (ERROR, RUNNING_WITH_ERROR, PROVISIONING...) with GKE's statusMessage."""
        if status not in _POOL_STATUS:
            raise ValueError(f"unknown NodePool status {status}")
        with self._lock:
            p = self._pools[pool]
            p.status, p.status_message, p.conditions = status, message, list(conditions or [])

    def stockout(self, pool: str, on: bool = True) -> None:
        """While on, operations growing this pool finish DONE with the zone-exhausted error; the size stays."""
        with self._lock:
            self._pools[pool].stockout = on

    def quota(self, pool: str, max_size: int | None) -> None:
        """Growth of the pool beyond `max_size` nodes fails with a Compute Engine GPU quota error."""
        with self._lock:
            p = self._pools[pool]
            p.quota_nodes = None if max_size is None else max_size // len(p.zones)

    def fail_next(self, n: int, status: int, message: str | None = None, *, reason: str | None = None,
                  kind: str | None = None, grpc_status: str | None = None, permission: str | None = None) -> None:
        """The next `n` requests (of one kind: "nodePools.get", "nodePools.setSize", "operations.get"; any when
        None) fail with HTTP `status`. A 403 names the permission the request needed, as IAM does; a 429 is a
        per-minute rate limit unless `reason` says otherwise."""
        if kind is not None and kind not in PERMISSIONS:
            raise ValueError(f"unknown request kind {kind}")
        with self._lock:
            self._faults.append(_Fault(n, status, message, grpc_status, reason, kind, permission))

    def deny(self, permission: str) -> None:
        """Requests that need this IAM permission answer 403 PERMISSION_DENIED until `allow`."""
        with self._lock:
            self._denied.add(permission)

    def allow(self, permission: str) -> None:
        with self._lock:
            self._denied.discard(permission)

    def operations(self) -> list[dict]:
        """Every operation so far, as the API shows it (names, not integers, for enums)."""
        with self._lock:
            self._advance_locked()
            return [self._operation_json(op, numeric=False) for op in self._operations.values()]

    def finish_operations(self) -> None:
        """Complete every running operation now."""
        with self._lock:
            for op in self._operations.values():
                op.duration = 0.0
            self._advance_locked()

    def forget_operations(self) -> None:
        """Complete every operation and drop it, as GKE drops old operations: reading one then answers 404."""
        with self._lock:
            self.finish_operations()
            self._operations.clear()

    def _advance_locked(self) -> None:
        now = time.monotonic()
        for op in self._operations.values():
            if not op.done and now - op.started_mono >= op.duration:
                self._complete_locked(op)

    def _complete_locked(self, op: _Operation) -> None:
        op.done = True
        op.ended = time.time()
        pool = self._pools.get(op.pool)
        if pool is None:
            return
        pool.status = "RUNNING" if pool.status == "RECONCILING" else pool.status
        growing = op.node_count > pool.node_count
        if growing and pool.stockout:
            zone = pool.zones[0]
            text = (f"Try a different location, or try again later. Google Compute Engine: Not all instances "
                    f"running in IGM after 9m58.11s. Expected {op.node_count}, running {pool.node_count}, "
                    f"transitioning 0. Current errors: [ZONE_RESOURCE_POOL_EXHAUSTED]: Instance "
                    f"'gke-{self.cluster}-{pool.name}-1a2b3c4d-x7k2' creation failed: The zone "
                    f"'projects/{self.project}/zones/{zone}' does not have enough resources available to "
                    f"fulfill the request. Try a different zone, or try again later.")
            op.error = {"code": _RPC_CODE["RESOURCE_EXHAUSTED"], "message": text, "details": []}
            op.conditions = [{"code": "GCE_STOCKOUT", "message": text, "canonicalCode": "RESOURCE_EXHAUSTED"}]
            return
        if growing and pool.quota_nodes is not None and op.node_count > pool.quota_nodes:
            gpus = (pool.accelerator[1] if pool.accelerator else 1) * pool.quota_nodes * len(pool.zones)
            text = (f"Google Compute Engine: Not all instances running in IGM after 1m2.5s. Expected "
                    f"{op.node_count}, running {pool.quota_nodes}, transitioning 0. Current errors: "
                    f"[QUOTA_EXCEEDED]: Instance 'gke-{self.cluster}-{pool.name}-1a2b3c4d-q9w8' creation failed: "
                    f"Quota 'NVIDIA_A100_GPUS' exceeded.  Limit: {float(gpus)} in region {self.location}.")
            pool.node_count = pool.quota_nodes
            op.error = {"code": _RPC_CODE["RESOURCE_EXHAUSTED"], "message": text, "details": []}
            op.conditions = [{"code": "GCE_QUOTA_EXCEEDED", "message": text,
                              "canonicalCode": "RESOURCE_EXHAUSTED"}]
            return
        pool.node_count = op.node_count

    # ------------------------------------------------------------------------------------------------ JSON

    def _pool_json(self, p: _Pool, numeric: bool) -> dict:
        base = f"https://container.googleapis.com/v1/{self.cluster_path}/nodePools/{p.name}"
        config: dict[str, Any] = {"machineType": p.machine_type, "diskSizeGb": 100, "diskType": "pd-balanced",
                                  "imageType": "COS_CONTAINERD",
                                  "oauthScopes": ["https://www.googleapis.com/auth/cloud-platform"]}
        if p.accelerator:
            # int64 fields are strings in proto3 JSON
            config["accelerators"] = [{"acceleratorType": p.accelerator[0], "acceleratorCount": str(p.accelerator[1])}]
        out: dict[str, Any] = {
            "name": p.name,
            "config": config,
            "initialNodeCount": p.initial_node_count,
            "locations": list(p.zones),
            "selfLink": base,
            "version": "1.30.5-gke.1014001",
            "instanceGroupUrls": [
                f"https://www.googleapis.com/compute/v1/projects/{self.project}/zones/{z}/instanceGroupManagers/"
                f"gke-{self.cluster}-{p.name}-1a2b3c4d-grp" for z in p.zones],
            "status": _POOL_STATUS[p.status] if numeric else p.status,
            "management": {"autoUpgrade": True, "autoRepair": True},
            "podIpv4CidrSize": 24,
            "etag": uuid.uuid5(uuid.NAMESPACE_URL, f"{base}/{p.node_count}/{p.status}").hex,
        }
        if p.status_message:
            out["statusMessage"] = p.status_message
        if p.conditions:
            out["conditions"] = [self._condition_json(c, numeric) for c in p.conditions]
        if p.autoscaling:
            out["autoscaling"] = {"enabled": True, "minNodeCount": p.min_per_zone, "maxNodeCount": p.max_per_zone,
                                  "locationPolicy": _location_policy(numeric)}
        return out

    @staticmethod
    def _condition_json(c: dict, numeric: bool) -> dict:
        out = dict(c)
        if numeric:
            if isinstance(out.get("code"), str):
                out["code"] = _CONDITION_CODE.get(out["code"], 0)
            if isinstance(out.get("canonicalCode"), str):
                out["canonicalCode"] = _RPC_CODE.get(out["canonicalCode"], 2)
        return out

    def _operation_json(self, op: _Operation, numeric: bool) -> dict:
        status = "DONE" if op.done else "RUNNING"
        return self._operation_fields(op, status, numeric)

    def _operation_fields(self, op: _Operation, status: str, numeric: bool) -> dict:
        out: dict[str, Any] = {
            "name": op.name,
            "zone": self.location,
            "operationType": _OP_TYPE["SET_NODE_POOL_SIZE"] if numeric else "SET_NODE_POOL_SIZE",
            "status": _OP_STATUS[status] if numeric else status,
            "selfLink": f"https://container.googleapis.com/v1/projects/{self.project}/locations/{self.location}/"
                        f"operations/{op.name}",
            "targetLink": f"https://container.googleapis.com/v1/{self.cluster_path}/nodePools/{op.pool}",
            "location": self.location,
            "startTime": _rfc3339(op.started),
        }
        if op.done and op.ended is not None:
            out["endTime"] = _rfc3339(op.ended)
        if op.error:
            out["error"] = dict(op.error)
            out["statusMessage"] = op.error["message"]  # the deprecated field GKE still fills
        if op.conditions:
            out["nodepoolConditions"] = [self._condition_json(c, numeric) for c in op.conditions]
        return out

    # ------------------------------------------------------------------------------------------------ HTTP

    def _handle(self, h: _Handler) -> None:
        url = urlsplit(h.path)
        path = unquote(url.path)
        query = parse_qs(url.query, keep_blank_values=True)
        # the client library asks for `$alt=json;enum-encoding=int`, and Google APIs then answer enums as numbers
        numeric = any("enum-encoding=int" in v for v in query.get("$alt", []))
        length = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(length) if length else b""
        kind, match = self._route(h.command, path)
        with self._lock:
            self.requests[(h.command, kind)] += 1
        try:
            if self.require_token is not None:
                auth = h.headers.get("Authorization")
                if not auth:
                    raise GoogleError(401, details=[{"@type": _ERROR_INFO, "reason": "CREDENTIALS_MISSING",
                                                     "domain": "googleapis.com"}])
                if auth != f"Bearer {self.require_token}":
                    raise GoogleError(401, details=[{"@type": _ERROR_INFO, "reason": "ACCESS_TOKEN_EXPIRED",
                                                     "domain": "googleapis.com"}])
            if match is None:
                raise GoogleError(404, f"The requested URL {path} was not found on this server.")
            with self._lock:
                self._advance_locked()
                self._check_faults(kind, match)
                code, body = self._serve(kind, match, raw, numeric)
            h.send_json(code, body)
        except GoogleError as e:
            h.send_json(e.code, e.body())

    @staticmethod
    def _route(method: str, path: str) -> tuple[str, re.Match[str] | None]:
        m = _POOL_PATH.match(path)
        if m:
            if m.group(5) and method == "POST":
                return "nodePools.setSize", m
            if not m.group(5) and method == "GET":
                return "nodePools.get", m
            return "unknown", None
        m = _OP_PATH.match(path)
        if m and method == "GET":
            return "operations.get", m
        return "unknown", None

    def _resource(self, kind: str, m: re.Match[str]) -> str:
        if kind == "operations.get":
            return f"projects/{m.group(1)}/locations/{m.group(2)}/operations/{m.group(3)}"
        return f"projects/{m.group(1)}/locations/{m.group(2)}/clusters/{m.group(3)}"

    def _check_faults(self, kind: str, m: re.Match[str]) -> None:
        needed = PERMISSIONS[kind]
        resource = self._resource(kind, m)
        if needed in self._denied:
            raise _permission_denied(needed, resource)
        for fault in self._faults:
            if fault.remaining > 0 and (fault.kind is None or fault.kind == kind):
                fault.remaining -= 1
                self._faults = [f for f in self._faults if f.remaining > 0]
                raise self._fault_error(fault, needed, resource)

    def _fault_error(self, f: _Fault, needed: str, resource: str) -> GoogleError:
        if f.code == 403 and (f.reason in (None, "IAM_PERMISSION_DENIED")):
            err = _permission_denied(f.permission or needed, resource)
            if f.message:
                err.message = f.message
            return err
        if f.code == 429:
            reason = f.reason or "RATE_LIMIT_EXCEEDED"
            message = f.message or (
                "Quota exceeded for quota metric 'Requests' and limit 'Requests per minute' of service "
                f"'container.googleapis.com' for consumer 'project_number:{_project_number(self.project)}'.")
            return GoogleError(429, message, status=f.status, details=[{
                "@type": _ERROR_INFO, "reason": reason, "domain": "googleapis.com",
                "metadata": {"service": "container.googleapis.com", "quota_limit": "RequestsPerMinutePerProject",
                             "quota_metric": "container.googleapis.com/requests",
                             "consumer": f"projects/{_project_number(self.project)}"}}])
        details = [{"@type": _ERROR_INFO, "reason": f.reason, "domain": "container.googleapis.com"}] if f.reason else []
        return GoogleError(f.code, f.message, status=f.status, details=details)

    def _serve(self, kind: str, m: re.Match[str], raw: bytes, numeric: bool) -> tuple[int, Any]:
        if kind == "operations.get":
            project, location, name = m.group(1), m.group(2), m.group(3)
            op = self._operations.get(name)
            if op is None or (project, location) != (self.project, self.location):
                raise GoogleError(404, f"Not found: projects/{project}/locations/{location}/operations/{name}.")
            return 200, self._operation_json(op, numeric)
        project, location, cluster, pool_name = m.group(1), m.group(2), m.group(3), m.group(4)
        if (project, location, cluster) != (self.project, self.location, self.cluster):
            raise GoogleError(404, f"Not found: projects/{project}/locations/{location}/clusters/{cluster}.")
        pool = self._pools.get(pool_name)
        if pool is None:
            raise GoogleError(404, f"Not found: {self.cluster_path}/nodePools/{pool_name}.")
        if kind == "nodePools.get":
            return 200, self._pool_json(pool, numeric)
        return 200, self._set_size(pool, raw, numeric)

    def _set_size(self, pool: _Pool, raw: bytes, numeric: bool) -> dict:
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            raise GoogleError(400, "Invalid JSON payload received.") from None
        if not isinstance(body, dict):
            raise GoogleError(400, "Invalid JSON payload received. Expected an object.")
        # proto3 JSON leaves out fields at their default, so a request for 0 nodes carries no nodeCount
        count = body.get("nodeCount", 0)
        if isinstance(count, str) and count.lstrip("-").isdigit():
            count = int(count)
        if not isinstance(count, int) or isinstance(count, bool):
            raise GoogleError(400, f"Invalid value at 'node_count' (TYPE_INT32), {json.dumps(count)}")
        if count < 0 or count > _MAX_NODES_PER_ZONE:
            raise GoogleError(400, f"Node count must be between 0 and {_MAX_NODES_PER_ZONE}; got {count}.")
        running = next((op for op in self._operations.values() if not op.done), None)
        if running is not None:
            raise GoogleError(400, f"Cluster is running incompatible operation {running.name}.",
                              status="FAILED_PRECONDITION")
        now = time.time()
        op = _Operation(name=f"operation-{int(now * 1000)}-{uuid.uuid4().hex[:8]}", pool=pool.name,
                        node_count=count, started=now, started_mono=time.monotonic(),
                        duration=max(0.0, self.operation_s))
        self._operations[op.name] = op
        if pool.status == "RUNNING":
            pool.status = "RECONCILING"
        # even a zero-length operation is PENDING in the answer that creates it, as on GKE
        return self._operation_fields(op, "PENDING", numeric)


def _permission_denied(permission: str, resource: str) -> GoogleError:
    return GoogleError(403, f'Required "{permission}" permission(s) for "{resource}".', details=[{
        "@type": _ERROR_INFO, "reason": "IAM_PERMISSION_DENIED", "domain": "container.googleapis.com",
        "metadata": {"permission": permission, "resource": resource}}])


def _project_number(project: str) -> int:
    return int(uuid.uuid5(uuid.NAMESPACE_DNS, project).int % 10**12)


def _location_policy(numeric: bool) -> Any:
    return 1 if numeric else "BALANCED"
