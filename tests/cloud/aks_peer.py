"""A stateful Azure Resource Manager peer for AKS agent pools on 127.0.0.1, reached by azure-mgmt-containerservice
over a real socket: pool GET/PUT, ARM's Azure-AsyncOperation pattern, bearer tokens, quotas and injected faults."""

from __future__ import annotations

import collections
import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from peer_http import Peer, PeerHandler

from azure.core.credentials import AccessToken, AccessTokenInfo
from azure.core.pipeline import PipelineRequest
from azure.mgmt.core.policies import ARMChallengeAuthenticationPolicy

__all__ = ["AKSPeer", "LoopbackBearerPolicy", "StaticTokenCredential", "API_VERSIONS"]

API_VERSIONS = ("2026-08-01",)  # what azure-mgmt-containerservice 41.8 sends; older SDKs send other dates
OPERATIONS_API_VERSION = "2016-03-30"  # the version AKS puts in its operation-status URLs
ARM_SCOPE = "https://management.azure.com/.default"
PROVIDER = "Microsoft.ContainerService"
VCPUS = {"Standard_ND96asr_v4": 96, "Standard_ND96amsr_A100_v4": 96, "Standard_NC24ads_A100_v4": 24,
         "Standard_NC4as_T4_v3": 4, "Standard_D4s_v5": 4, "Standard_ND96isr_H100_v5": 96}
FAMILIES = {"Standard_ND96asr_v4": "standardNDASv4_A100Family",
            "Standard_ND96amsr_A100_v4": "StandardNDAMSv4_A100Family",
            "Standard_NC24ads_A100_v4": "StandardNCADSA100v4Family",
            "Standard_NC4as_T4_v3": "standardNCASv3_T4Family", "Standard_D4s_v5": "standardDSv5Family",
            "Standard_ND96isr_H100_v5": "standardNDSH100v5Family"}
ACTIONS = {"read": f"{PROVIDER}/managedClusters/agentPools/read",
           "write": f"{PROVIDER}/managedClusters/agentPools/write",
           "operations": f"{PROVIDER}/locations/operations/read"}
# properties AKS owns: a PUT cannot set them, so they survive whatever body it carries
SERVER_OWNED = ("provisioningState", "eTag", "currentOrchestratorVersion", "nodeImageVersion", "status")
DEFAULT_MESSAGES = {
    "AllocationFailed": "Allocation failed. We do not have sufficient capacity for the requested VM size in this "
                        "region. Read more about improving likelihood of allocation success at "
                        "http://aka.ms/allocation-guidance",
    "ZonalAllocationFailed": "Allocation failed. We do not have sufficient capacity for the requested VM size in "
                             "this zone. Read more about improving likelihood of allocation success at "
                             "http://aka.ms/allocation-guidance",
    "SkuNotAvailable": "The requested VM size for resource 'Following SKUs have failed for Capacity Restrictions: "
                       "{vm_size}' is currently not available in location '{location}'. Please try another size or "
                       "deploy to a different location or different zone. See https://aka.ms/azureskunotavailable "
                       "for details.",
    "OverconstrainedAllocationRequest": "Allocation failed. VM(s) with the following constraints cannot be "
                                        "allocated, because the condition is too restrictive. Please remove some "
                                        "constraints and try again. Constraints applied are: - Networking "
                                        "Constraints (such as Accelerated Networking or IPv6) - VM Size",
    "QuotaExceeded": "Operation could not be completed as it results in exceeding approved {family} Cores quota.",
}


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


class StaticTokenCredential:
    """A TokenCredential (and SupportsTokenInfo, which newer azure-core prefers) that always gives one token."""

    def __init__(self, token: str = "test-token") -> None:
        self.token = token
        self.requests = 0

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.requests += 1
        return AccessToken(self.token, int(time.time()) + 3600 * 24 * 365)

    def get_token_info(self, *scopes: str, options: Any = None) -> AccessTokenInfo:
        self.requests += 1
        return AccessTokenInfo(self.token, int(time.time()) + 3600 * 24 * 365)

    def close(self) -> None:
        pass


class LoopbackBearerPolicy(ARMChallengeAuthenticationPolicy):
    """ARM's bearer-token policy, allowed to send its token over plain http to a loopback address only:
    azure-core refuses a non-https URL unless the request's options carry enforce_https=False."""

    def on_request(self, request: PipelineRequest) -> None:
        host = urlsplit(request.http_request.url).hostname or ""
        if host in ("127.0.0.1", "localhost", "::1"):
            request.context.options["enforce_https"] = False
        super().on_request(request)


# ---------------------------------------------------------------------------------------------------- errors

class ArmError(Exception):
    """A failure answered with ARM's error body {"error": {"code", "message"}} and an HTTP status."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None,
                 details: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = headers or {}
        self.details = details

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details:
            error["details"] = self.details
        return {"error": error}


@dataclass
class _Fault:
    remaining: int
    status: int
    code: str
    message: str
    retry_after: float | None
    method: str | None
    kind: str | None


@dataclass
class _Operation:
    id: str
    pool: str
    target: int
    previous: int | None
    verb: str  # Creating or Updating
    started: float
    done_at: float
    start_time: str
    status: str = "InProgress"
    end_time: str | None = None
    error: dict[str, Any] | None = None

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.id, "status": self.status, "startTime": self.start_time}
        if self.end_time:
            out["endTime"] = self.end_time
        if self.error:
            out["error"] = self.error
        return out


@dataclass
class _Pool:
    name: str
    properties: dict[str, Any]
    count_history: list[int] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------------- HTTP

class _Handler(PeerHandler):
    def internal_error_body(self) -> Any:
        return ArmError(500, "InternalServerError", "internal error in the ARM peer").body()

    def send_json(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
        # ARM tags every answer with request ids, as the SDK's logging expects
        extra = {"x-ms-request-id": str(uuid.uuid4()), "x-ms-correlation-request-id": str(uuid.uuid4())}
        self.send_body(status, json.dumps(obj, separators=(",", ":")).encode(), "application/json; charset=utf-8",
                       {**extra, **(headers or {})})


class AKSPeer(Peer):
    """One AKS cluster's agent pools as ARM serves them.

    A PUT that changes a pool answers at once with provisioningState Updating and an Azure-AsyncOperation URL;
    the operation ends `operation_delay_s` later (evaluated whenever anyone looks), when the pool takes its new
    count and provisioningState Succeeded, or, for an injected allocation failure, Failed with the count
    unchanged. Like AKS, it runs one operation per pool at a time (409 for another) and rejects a manual count
    on an autoscaled pool.
    """

    handler = _Handler
    thread_name = "aks-peer"

    def __init__(self, *, subscription_id: str = "6d2f9a4e-1c3b-4f5a-9e8d-7b6a5c4d3e2f",
                 resource_group: str = "spillover-gpu", cluster_name: str = "gpu-aks", location: str = "eastus",
                 token: str = "test-token", operation_delay_s: float = 0.2,
                 api_versions: tuple[str, ...] = API_VERSIONS, host: str = "127.0.0.1", port: int = 0) -> None:
        self.subscription_id = subscription_id
        self.resource_group = resource_group
        self.cluster_name = cluster_name
        self.location = location
        self.token = token
        self.operation_delay_s = operation_delay_s
        self.api_versions = api_versions
        self._lock = threading.RLock()
        self._init_server(host, port, self._lock)
        self._pools: dict[str, _Pool] = {}
        self._operations: dict[str, _Operation] = {}
        self._faults: list[_Fault] = []
        self._allocation: dict[str, tuple[str, str | None, bool]] = {}
        self._quota: dict[str, int] = {}  # VM family -> regional cores limit
        self._denied: set[str] = set()
        self._errors: list[str] = []
        self.requests: collections.Counter[tuple[str, str]] = collections.Counter()
        self.last_put: dict[str, Any] | None = None

    @property
    def errors(self) -> list[str]:
        """Tracebacks from request handlers; a test should see none."""
        with self._lock:
            return list(self._errors)

    def _record_error(self, text: str) -> None:
        with self._lock:
            self._errors.append(text)

    # ------------------------------------------------------------------------------------------------ clients

    def credential(self, token: str | None = None) -> StaticTokenCredential:
        return StaticTokenCredential(self.token if token is None else token)

    def client(self, *, token: str | None = None, **kwargs: Any) -> Any:
        """A ContainerServiceClient for this peer, built the way the product builds its own (build_client),
        with a static token and an authentication policy that may use http on loopback."""
        from spillover.providers.aks import build_client

        credential = self.credential(token)
        kwargs.setdefault("retry_backoff_factor", 0.01)
        kwargs.setdefault("timeout_s", 2.0)
        return build_client(self.subscription_id, credential=credential, base_url=self.url,
                            authentication_policy=LoopbackBearerPolicy(credential, ARM_SCOPE), **kwargs)

    # ------------------------------------------------------------------------------------------------ state

    def add_pool(self, name: str, *, count: int = 0, vm_size: str = "Standard_ND96asr_v4", mode: str = "User",
                 enable_auto_scaling: bool = False, min_count: int | None = None, max_count: int | None = None,
                 spot: bool = False, node_labels: dict[str, str] | None = None,
                 node_taints: list[str] | None = None, **properties: Any) -> None:
        props: dict[str, Any] = {
            "count": count, "vmSize": vm_size, "osDiskSizeGB": 128, "osDiskType": "Managed",
            "kubeletDiskType": "OS", "maxPods": 30, "type": "VirtualMachineScaleSets", "mode": mode,
            "orchestratorVersion": "1.31.2", "currentOrchestratorVersion": "1.31.2", "enableAutoScaling":
            enable_auto_scaling, "provisioningState": "Succeeded", "powerState": {"code": "Running"},
            "osType": "Linux", "osSKU": "Ubuntu", "nodeImageVersion": "AKSUbuntu-2204gen2containerd-202501.12.0",
            "enableNodePublicIP": False, "enableFIPS": False, "upgradeSettings": {"maxSurge": "10%"},
            "nodeLabels": dict(node_labels or {}), "nodeTaints": list(node_taints or []),
            "scaleSetPriority": "Spot" if spot else "Regular", "eTag": str(uuid.uuid4()),
        }
        if enable_auto_scaling:
            props["minCount"], props["maxCount"] = min_count, max_count
        if spot:
            props.update(scaleSetEvictionPolicy="Delete", spotMaxPrice=-1)
            props["nodeLabels"]["kubernetes.azure.com/scalesetpriority"] = "spot"
            props["nodeTaints"].append("kubernetes.azure.com/scalesetpriority=spot:NoSchedule")
        props.update(properties)
        with self._lock:
            if name.lower() in self._pools:
                raise ValueError(f"agent pool {name!r} exists")
            self._pools[name.lower()] = _Pool(name, props, [count])

    def size(self, pool: str) -> int:
        """The pool's node count now (what a node helper should create Kubernetes nodes for)."""
        with self._lock:
            self._advance()
            return int(self._get_pool(pool).properties["count"])

    def pool(self, pool: str) -> dict[str, Any]:
        """The pool as a GET answers it now."""
        with self._lock:
            self._advance()
            return json.loads(json.dumps(self._pool_json(self._get_pool(pool))))

    def count_history(self, pool: str) -> list[int]:
        with self._lock:
            self._advance()
            return list(self._get_pool(pool).count_history)

    def operations(self, pool: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            self._advance()
            return [dict(o.body(), pool=o.pool, target=o.target) for o in self._operations.values()
                    if pool is None or o.pool.lower() == pool.lower()]

    def settle(self, timeout: float = 5.0) -> None:
        """Wait until every operation has ended."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            with self._lock:
                self._advance()
                if all(o.status != "InProgress" for o in self._operations.values()):
                    return
            time.sleep(0.01)
        raise AssertionError("operations still in progress")

    # ------------------------------------------------------------------------------------------------ faults

    def fail_next(self, n: int, status: int, code: str, message: str, retry_after: float | None = None, *,
                  method: str | None = None, kind: str | None = None) -> None:
        """The next `n` requests (of `method` and `kind` — "pool", "pools" or "operation" — when given) are
        answered `status` with an ARM error body. `{authorization}` or `{token}` in the message is replaced by
        what the request carried, as a careless proxy echoing headers would."""
        with self._lock:
            self._faults.append(_Fault(n, status, code, message, retry_after, method and method.upper(), kind))

    def allocation_failure(self, pool: str, code: str | None = "AllocationFailed", message: str | None = None,
                           *, wrapped: bool = False) -> None:
        """From now on, operations that grow `pool` end Failed with `code` and leave the count unchanged
        (`code=None` ends the shortage). `wrapped`: the way AKS often relays it, as the details of a
        ReconcileVMSSAgentPoolFailed error quoting the compute error."""
        with self._lock:
            if code is None:
                self._allocation.pop(pool.lower(), None)
            else:
                self._allocation[pool.lower()] = (code, message, wrapped)

    def set_quota(self, vm_size: str, cores: int | None) -> None:
        """A regional cores quota for the VM family of `vm_size`: a PUT that would need more is refused at once
        (ErrCode_InsufficientVCPUQuota), as AKS's preflight check does."""
        family = FAMILIES.get(vm_size, f"{vm_size}Family")
        with self._lock:
            if cores is None:
                self._quota.pop(family, None)
            else:
                self._quota[family] = cores

    def deny(self, what: str) -> None:
        """Answer 403 AuthorizationFailed to requests needing this action: "read", "write" or "operations"."""
        with self._lock:
            self._denied.add(what)

    def allow(self, what: str) -> None:
        with self._lock:
            self._denied.discard(what)

    # ------------------------------------------------------------------------------------------------ internals

    def _get_pool(self, name: str) -> _Pool:
        try:
            return self._pools[name.lower()]
        except KeyError:
            raise KeyError(f"no agent pool {name!r}") from None

    def _pool_id(self, name: str) -> str:
        return (f"/subscriptions/{self.subscription_id}/resourcegroups/{self.resource_group}/providers/{PROVIDER}"
                f"/managedClusters/{self.cluster_name}/agentPools/{name}")

    def _pool_json(self, pool: _Pool) -> dict[str, Any]:
        return {"id": self._pool_id(pool.name), "name": pool.name, "type": f"{PROVIDER}/managedClusters/agentPools",
                "properties": json.loads(json.dumps(pool.properties))}

    def _advance(self) -> None:
        """End the operations whose time has come (called under the lock by everything that looks)."""
        now = time.monotonic()
        for op in self._operations.values():
            if op.status != "InProgress" or op.done_at > now:
                continue
            pool = self._pools.get(op.pool.lower())
            if pool is None:
                continue
            props = pool.properties
            failure = self._allocation.get(op.pool.lower())
            growing = op.target > int(props.get("count") or 0) or op.verb == "Creating"
            op.end_time = _now()
            if failure is not None and growing:
                code, message, wrapped = failure
                vm_size = props.get("vmSize", "")
                text = (message or DEFAULT_MESSAGES.get(code, f"{code} while allocating {vm_size}")).format(
                    vm_size=vm_size, location=self.location, family=FAMILIES.get(vm_size, f"{vm_size}Family"))
                error: dict[str, Any] = {"code": code, "message": text}
                if wrapped:
                    error = {"code": "ReconcileVMSSAgentPoolFailed",
                             "message": f"Code=\"{code}\" Message=\"{text}\"", "details": [dict(error)]}
                op.status, op.error = "Failed", error
                props["provisioningState"] = "Failed"
                props["status"] = {"provisioningError": error}
            else:
                op.status = "Succeeded"
                props["count"] = op.target
                props["provisioningState"] = "Succeeded"
                props.pop("status", None)
                pool.count_history.append(op.target)
            props["eTag"] = str(uuid.uuid4())

    def _handle(self, h: _Handler) -> None:
        url = urlsplit(h.path)
        query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        length = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(length) if length else b""
        parts = [unquote(p) for p in url.path.strip("/").split("/")]
        kind, route = self._route(parts)
        method = h.command.upper()
        with self._lock:
            self.requests[(method, kind)] += 1
            self._advance()
            try:
                code, body, headers = self._serve(method, kind, route, query, raw, h.headers)
            except ArmError as e:
                code, body, headers = e.status, e.body(), e.headers
        h.send_json(code, body, headers)

    @staticmethod
    def _route(parts: list[str]) -> tuple[str, dict[str, str]]:
        low = [p.lower() for p in parts]
        n = len(parts)
        if n >= 8 and low[0] == "subscriptions" and low[2] == "resourcegroups" and low[4] == "providers" \
                and low[5] == PROVIDER.lower() and low[6] == "managedclusters":
            route = {"subscription": parts[1], "resource_group": parts[3], "cluster": parts[7]}
            if n == 10 and low[8] == "agentpools":
                return "pool", dict(route, pool=parts[9])
            if n == 9 and low[8] == "agentpools":
                return "pools", route
        if n == 8 and low[0] == "subscriptions" and low[2] == "providers" and low[3] == PROVIDER.lower() \
                and low[4] == "locations" and low[6] == "operations":
            return "operation", {"subscription": parts[1], "location": parts[5], "operation": parts[7]}
        return "unknown", {}

    def _serve(self, method: str, kind: str, route: dict[str, str], query: dict[str, str], raw: bytes,
               headers: Any) -> tuple[int, Any, dict[str, str]]:
        authorization = headers.get("Authorization") or ""
        if not authorization.startswith("Bearer "):
            raise ArmError(401, "AuthenticationFailed", "Authentication failed. The 'Authorization' header is "
                           "missing.", {"WWW-Authenticate": 'Bearer authorization_uri="https://login.microsoftonline.'
                                        'com/common", error="invalid_token", error_description="The authentication '
                                        'failed because of missing \'Authorization\' header."'})
        if authorization != f"Bearer {self.token}":
            raise ArmError(401, "InvalidAuthenticationToken", "The access token is invalid.",
                           {"WWW-Authenticate": 'Bearer authorization_uri="https://login.microsoftonline.com/common",'
                                                ' error="invalid_token", error_description="The access token is '
                                                'invalid."'})
        if kind == "unknown" or (kind == "operation" and method != "GET") or (kind == "pools" and method != "GET"):
            raise ArmError(404, "NotFound", "The requested resource does not exist.")
        wanted = OPERATIONS_API_VERSION if kind == "operation" else None
        version = query.get("api-version")
        if not version:
            raise ArmError(400, "MissingApiVersionParameter", "The api-version query parameter (?api-version=) "
                           "is required for all requests.")
        allowed = (wanted,) if wanted else self.api_versions
        if version not in allowed:
            raise ArmError(400, "InvalidApiVersionParameter", f"The api-version '{version}' is invalid. The "
                           f"supported versions are '{','.join(allowed)}'.")
        self._check_faults(method, kind, authorization)
        action = "operations" if kind == "operation" else ("write" if method == "PUT" else "read")
        if action in self._denied:
            scope = (f"/subscriptions/{route['subscription']}/resourceGroups/{route.get('resource_group', '')}"
                     f"/providers/{PROVIDER}/managedClusters/{route.get('cluster', '')}"
                     + (f"/agentPools/{route['pool']}" if "pool" in route else ""))
            raise ArmError(403, "AuthorizationFailed", "The client 'spillover-scheduler' with object id "
                           "'0b7e3c55-8d1a-4c1e-9a53-2f6f0c1d9e41' does not have authorization to perform action "
                           f"'{ACTIONS[action]}' over scope '{scope}' or the scope is invalid. If access was "
                           "recently granted, please refresh your credentials.")
        if route["subscription"].lower() != self.subscription_id.lower():
            raise ArmError(404, "SubscriptionNotFound", f"The subscription '{route['subscription']}' could not "
                           "be found.")
        if kind == "operation":
            op = self._operations.get(route["operation"])
            if op is None:
                raise ArmError(404, "NotFound", f"Operation {route['operation']} not found.")
            return 200, op.body(), {}
        if route["resource_group"].lower() != self.resource_group.lower():
            raise ArmError(404, "ResourceGroupNotFound", f"Resource group '{route['resource_group']}' could not "
                           "be found.")
        if route["cluster"].lower() != self.cluster_name.lower():
            raise ArmError(404, "ResourceNotFound", f"The Resource '{PROVIDER}/managedClusters/{route['cluster']}' "
                           f"under resource group '{route['resource_group']}' was not found. For more details "
                           "please go to https://aka.ms/ARMResourceNotFoundFix")
        if kind == "pools":
            return 200, {"value": [self._pool_json(p) for p in self._pools.values()]}, {}
        name = route["pool"]
        existing = self._pools.get(name.lower())
        if method == "GET":
            if existing is None:
                raise self._pool_missing(name)
            return 200, self._pool_json(existing), {}
        if method == "PUT":
            return self._put(name, existing, raw, headers)
        raise ArmError(405, "MethodNotAllowed", f"The requested method {method} is not allowed here.")

    def _pool_missing(self, name: str) -> ArmError:
        return ArmError(404, "NotFound", f"The Resource '{PROVIDER}/managedClusters/{self.cluster_name}/agentPools/"
                        f"{name}' under resource group '{self.resource_group}' was not found.")

    def _check_faults(self, method: str, kind: str, authorization: str) -> None:
        for fault in self._faults:
            if fault.remaining <= 0 or (fault.method and fault.method != method) or (fault.kind and fault.kind != kind):
                continue
            fault.remaining -= 1
            self._faults = [f for f in self._faults if f.remaining > 0]
            message = fault.message.replace("{authorization}", authorization).replace(
                "{token}", authorization.removeprefix("Bearer "))
            headers = {"Retry-After": f"{fault.retry_after:g}"} if fault.retry_after is not None else None
            raise ArmError(fault.status, fault.code, message, headers)

    def _put(self, name: str, existing: _Pool | None, raw: bytes, headers: Any) -> tuple[int, Any, dict[str, str]]:
        try:
            body = json.loads(raw or b"null")
        except ValueError:
            raise ArmError(400, "InvalidRequestContent", "The request content was invalid and could not be "
                           "deserialized.") from None
        if not isinstance(body, dict) or not isinstance(body.get("properties"), dict):
            raise ArmError(400, "InvalidRequestContent", "The request content must carry 'properties'.")
        self.last_put = json.loads(json.dumps(body))
        props = body["properties"]
        count = props.get("count")
        if not isinstance(count, int) or isinstance(count, bool) or not 0 <= count <= 1000:
            raise ArmError(400, "InvalidParameter", f"The value of parameter agentPoolProfile.count is invalid: "
                           f"{count!r}. It must be between 0 and 1000.")
        vm_size = props.get("vmSize")
        if existing is not None:
            current = existing.properties
            if_match = headers.get("If-Match")
            if if_match and if_match.strip('"') != current["eTag"]:
                raise ArmError(412, "PreconditionFailed", f"Operation is not allowed since the provided If-Match "
                               f"header '{if_match}' does not match the current eTag '{current['eTag']}'.")
            busy = next((o for o in self._operations.values()
                         if o.pool.lower() == name.lower() and o.status == "InProgress"), None)
            if busy is not None:
                raise ArmError(409, "OperationNotAllowed", f"Operation is not allowed because there's an in "
                               f"progress update agent pool operation on agent pool '{existing.name}' started at "
                               f"{busy.start_time}. Please wait for it to finish before starting a new operation.")
            if vm_size != current["vmSize"]:
                raise ArmError(400, "PropertyChangeNotAllowed", "Changing property 'vmSize' is not allowed.")
            if props.get("enableAutoScaling") and current.get("enableAutoScaling") and count != current["count"]:
                raise ArmError(400, "OperationNotAllowed", "Cannot scale cluster autoscaler enabled node pool.")
        elif not vm_size:
            raise ArmError(400, "InvalidParameter", "The value of parameter agentPoolProfile.vmSize is required.")
        self._check_quota(name, str(vm_size), count, existing)
        verb = "Updating" if existing is not None else "Creating"
        if existing is None:
            existing = _Pool(name, {"count": 0, "currentOrchestratorVersion": props.get("orchestratorVersion")
                                    or "1.31.2", "nodeImageVersion": "AKSUbuntu-2204gen2containerd-202501.12.0"}, [0])
            self._pools[name.lower()] = existing
        # a PUT replaces every property it may set; the count changes when the operation ends
        kept = {k: existing.properties[k] for k in (*SERVER_OWNED, "count") if k in existing.properties}
        existing.properties = {**{k: v for k, v in props.items() if k not in SERVER_OWNED}, **kept}
        existing.properties["provisioningState"] = verb
        existing.properties["eTag"] = str(uuid.uuid4())
        op_id = str(uuid.uuid4())
        now = time.monotonic()
        self._operations[op_id] = _Operation(op_id, existing.name, count, kept.get("count"), verb, now,
                                             now + self.operation_delay_s, _now())
        location = (f"{self.url}/subscriptions/{self.subscription_id}/providers/{PROVIDER}/locations/"
                    f"{self.location}/operations/{op_id}?api-version={OPERATIONS_API_VERSION}")
        status = 201 if verb == "Creating" else 200
        return status, self._pool_json(existing), {"Azure-AsyncOperation": location}

    def _check_quota(self, name: str, vm_size: str, count: int, existing: _Pool | None) -> None:
        family = FAMILIES.get(vm_size, f"{vm_size}Family")
        limit = self._quota.get(family)
        if limit is None:
            return
        per_node = VCPUS.get(vm_size, 8)
        used = sum(int(p.properties.get("count") or 0) * VCPUS.get(p.properties.get("vmSize", ""), 8)
                   for p in self._pools.values() if FAMILIES.get(p.properties.get("vmSize", "")) == family
                   and p.name.lower() != name.lower())
        current = int(existing.properties.get("count") or 0) if existing is not None else 0
        extra = (count - current) * per_node
        if extra > 0 and used + count * per_node > limit:
            remaining = max(0, limit - used - current * per_node)
            raise ArmError(400, "ErrCode_InsufficientVCPUQuota", f"Insufficient vcpu quota requested {extra}, "
                           f"remaining {remaining} for family {family} for region {self.location}.")
