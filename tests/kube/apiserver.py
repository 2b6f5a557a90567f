"""A stateful Kubernetes API server on 127.0.0.1 that the official client talks to: real paths, list/watch, errors."""

from __future__ import annotations

import base64
import binascii
import collections
import json
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from peer_http import Peer, PeerHandler, PeerServer

from .controller import Controller
from .matching import SelectorError, parse_field_selector, parse_label_selector
from .objects import (
    admit_pod,
    check_crd,
    check_deployment,
    check_job,
    check_metadata,
    check_pod_spec,
    check_service,
    crd_resources,
    default_crd,
    default_deployment,
    default_job,
    default_namespace,
    default_node,
    default_pod_spec,
    default_secret,
    default_service,
    node_object,
    random_suffix,
    strip_server_fields,
)
from .store import APP_RESOURCES, RESOURCES, Expired, Store, clone, now_rfc3339
from .patches import _json_patch, _merge_patch
from .status import ApiError, _bad_request, _details, _invalid, _qualified, not_found
from .strategic import PatchError, strategic_merge

__all__ = ["FakeKube", "ApiError"]

VERSION = {
    "major": "1", "minor": "31", "gitVersion": "v1.31.0", "gitCommit": "0" * 40, "gitTreeState": "clean",
    "buildDate": "2024-08-13T07:28:49Z", "goVersion": "go1.22.5", "compiler": "gc", "platform": "linux/amd64",
}
_VERBS = ["create", "delete", "get", "list", "patch", "watch"]  # every resource here; PUT (update) is not served


def _pb_field(number: int, payload: bytes) -> bytes:
    """One length-delimited protobuf field (strings and messages alike); lengths here stay under 128."""
    return bytes([number << 3 | 2, len(payload)]) + payload


# gnostic's openapi_v2.Document with swagger (1), info (2: title 1, version 2), and empty paths (8) and
# definitions (9).
_OPENAPI_V2_PB = (_pb_field(1, b"2.0")
                  + _pb_field(2, _pb_field(1, b"Kubernetes") + _pb_field(2, VERSION["gitVersion"].encode()))
                  + _pb_field(8, b"") + _pb_field(9, b""))


_SERVER_TOKEN = object()


# Kinds whose names must be DNS-1123 labels (the rest take subdomains), and the checks each runs on create.
_LABEL_NAMED = {"namespaces", "jobs", "services"}
_CHECKS = {"jobs": check_job, "deployments": check_deployment, "services": check_service,
           "customresourcedefinitions": check_crd}


# ---------------------------------------------------------------------------------------------------- HTTP

class _Handler(PeerHandler):
    def internal_error_body(self) -> Any:
        return ApiError(500, "InternalError", "internal error in the fake API server").status()


class _Route:
    def __init__(self, resource: str | None, namespace: str | None = None, name: str | None = None,
                 special: str | None = None):
        self.resource, self.namespace, self.name, self.special = resource, namespace, name, special


def _route(path: str, resources: dict[str, dict] | None = None) -> _Route | None:
    """Which resource (and namespace, name) a path names, or the discovery document it asks for."""
    resources = resources if resources is not None else RESOURCES
    parts = [unquote(p) for p in path.strip("/").split("/")] if path.strip("/") else []
    n = len(parts)
    if n == 1 and parts[0] in ("version", "api", "apis", "healthz", "livez", "readyz"):
        return _Route(None, special=parts[0])
    if parts[:2] in (["openapi", "v2"], ["openapi", "v3"]):
        return _Route(None, special="/".join(parts))
    if parts[:2] == ["api", "v1"]:
        group_version, rest = "v1", parts[2:]
    elif parts[:1] == ["apis"] and n >= 2:
        if not any(info["group"] == parts[1] for info in resources.values()):
            return None
        if n == 2:
            return _Route(None, special=f"apis/{parts[1]}")
        group_version, rest = f"{parts[1]}/{parts[2]}", parts[3:]
    else:
        return None
    served = {r: info for r, info in resources.items() if info["apiVersion"] == group_version}
    if not served:
        return None
    if not rest:
        return _Route(None, special="api/v1" if group_version == "v1" else f"apis/{group_version}")
    if len(rest) >= 2 and rest[-1] == "status" and (rest[-3] if len(rest) >= 3 else None) in served:
        rest = rest[:-1]  # GET on the status subresource returns the whole object, as the real one does
    if rest[0] == "namespaces" and len(rest) >= 3:
        ns, resource, name = rest[1], rest[2], rest[3] if len(rest) == 4 else None
        if resource in served and served[resource]["namespaced"] and len(rest) <= 4:
            return _Route(resource, ns, name)
        return None
    resource = rest[0]
    if resource not in served or len(rest) > 2:
        return None
    if served[resource]["namespaced"] and len(rest) == 2:
        return None  # a namespaced object is only reachable under its namespace
    return _Route(resource, None, rest[1] if len(rest) == 2 else None)


def _encode_continue(token: str, offset: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"s": token, "o": offset}).encode()).decode()


def _decode_continue(value: str) -> tuple[str, int]:
    try:
        data = json.loads(base64.urlsafe_b64decode(value.encode()))
        return str(data["s"]), int(data["o"])
    except (binascii.Error, ValueError, KeyError, TypeError):
        raise _bad_request("continue key is not valid: incorrect encoded start resourceVersion") from None


class FakeKube(Peer):
    """A cluster you can point the official `kubernetes` client at.

    Objects live in memory under one lock; one resourceVersion counter orders every write, and a bounded
    history of events serves watches. A controller thread schedules pods onto nodes, runs them for the time
    their `spillover/estimated-runtime-s` annotation says (times `time_scale`), and drives Jobs.
    """

    handler = _Handler
    thread_name = "fake-kube"

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, time_scale: float = 1.0, history: int = 2000,
                 token: str | None = "test-token", watch_timeout: float = 30.0, app_kinds: bool = False):
        """`app_kinds`: also serve what a service's manifests use (apps/v1 Deployments, Services, ConfigMaps,
        Secrets, ServiceAccounts, RBAC, PodDisruptionBudgets, CRDs and the custom resources they define), so
        that `kubectl apply` can install one. Note that kubectl sends a kubeconfig's credentials only over
        TLS: against this plain-HTTP server it needs `token=None`."""
        self.time_scale = time_scale
        self.token = token
        self.watch_timeout = watch_timeout
        self._store = Store(history, {**RESOURCES, **APP_RESOURCES} if app_kinds else RESOURCES)
        self._cluster_ips = 0
        self._lock = self._store.lock
        self._init_server(host, port, self._lock)
        self._controller = Controller(self._store, time_scale)
        self._node_ips = 0
        self._forbidden: set[tuple[str, str]] = set()
        self._injected: list[list] = []  # [verb, resource, code, remaining]
        self.requests: collections.Counter = collections.Counter()
        self.verbs: collections.Counter = collections.Counter()
        with self._lock:
            for ns in ("default", "kube-system", "kube-public", "kube-node-lease"):
                self._add_namespace_locked(ns, None)

    # ------------------------------------------------------------------------------------------------ lifecycle

    def _started(self) -> None:
        self._controller.start()

    def _closing(self, httpd: PeerServer) -> None:
        with self._lock:  # watches waiting on the store must see the server go
            httpd.closed = True
            self._store.changed.notify_all()

    def close(self) -> None:
        """Stop the API and the controller for good; `stop()` alone keeps the cluster running its pods."""
        self.stop()
        self._controller.close()

    def settle(self, timeout: float = 5.0) -> bool:
        """Block until the controller has caught up with every change so far (not with timers still running)."""
        return self._controller.settle(timeout)

    @property
    def errors(self) -> list[str]:
        """Tracebacks from the controller thread and request handlers; a test should see none."""
        with self._lock:
            return list(self._controller.errors)

    def _record_error(self, text: str) -> None:
        with self._lock:
            self._controller.errors.append(text)

    @property
    def resource_version(self) -> int:
        with self._lock:
            return self._store.rv

    # ------------------------------------------------------------------------------------------------ clients

    def api_client(self, *, token: Any = _SERVER_TOKEN):
        """An ApiClient for this server; `token=None` (or another string) to test authentication."""
        import kubernetes  # only here, so that the server itself needs nothing but the stdlib

        token = self.token if token is _SERVER_TOKEN else token
        cfg = kubernetes.client.Configuration(host=self.url,
                                              api_key={"authorization": f"Bearer {token}"} if token else {})
        return kubernetes.client.ApiClient(cfg)

    def write_kubeconfig(self, path, context: str) -> Path:
        path = Path(path)
        data: dict = {}
        if path.exists() and path.read_text().strip():
            text = path.read_text()
            try:
                data = json.loads(text)
            except ValueError:
                import yaml  # a kubeconfig someone else wrote; the kubernetes client depends on PyYAML anyway

                data = yaml.safe_load(text) or {}
        data.setdefault("apiVersion", "v1")
        data.setdefault("kind", "Config")
        data.setdefault("preferences", {})

        def upsert(section: str, entry: dict) -> None:
            items = [e for e in data.get(section) or [] if e.get("name") != entry["name"]]
            items.append(entry)
            data[section] = items

        upsert("clusters", {"name": context, "cluster": {"server": self.url}})
        upsert("users", {"name": context, "user": {"token": self.token} if self.token else {}})
        upsert("contexts", {"name": context, "context": {"cluster": context, "user": context}})
        data["current-context"] = context
        path.parent.mkdir(parents=True, exist_ok=True)
        # JSON is YAML, so every kubeconfig reader accepts it.
        path.write_text(json.dumps(data, indent=2) + "\n")
        return path

    # ------------------------------------------------------------------------------------------------ test controls

    def add_node(self, name: str, *, gpus: int = 8, gpu_product: str = "A100", cpu: Any = 96, memory_gib: Any = 1024,
                 labels: dict | None = None, taints: Any = None, ready: bool = True,
                 unschedulable: bool = False) -> None:
        with self._lock:
            if self._store.get("nodes", ("", name)) is not None:
                raise ValueError(f"node {name!r} exists")
            node = node_object(name, gpus=gpus, gpu_product=gpu_product, cpu=cpu, memory_gib=memory_gib,
                               labels=labels, taints=taints, ready=ready, unschedulable=unschedulable,
                               ip=self._next_node_ip(), ts=now_rfc3339())
            self._store.create("nodes", node)

    def remove_node(self, name: str) -> None:
        with self._lock:
            if self._store.delete("nodes", ("", name)) is None:
                raise KeyError(name)
            self._controller.node_lost(name, removed=True)

    def set_node_ready(self, name: str, ready: bool) -> None:
        with self._lock:
            self._controller.set_node_ready(name, ready)

    def cordon(self, name: str, unschedulable: bool = True) -> None:
        with self._lock:
            if self._store.get("nodes", ("", name)) is None:
                raise KeyError(name)

            def change(n: dict) -> None:
                if unschedulable:
                    n["spec"]["unschedulable"] = True
                else:
                    n["spec"].pop("unschedulable", None)

            self._store.mutate("nodes", ("", name), change, spec_change=True)

    def add_namespace(self, name: str, labels: dict | None = None) -> None:
        with self._lock:
            if self._store.get("namespaces", ("", name)) is not None:
                raise ValueError(f"namespace {name!r} exists")
            self._add_namespace_locked(name, labels)

    def objects(self, kind: str, namespace: str | None = None) -> list[dict]:
        if kind not in self._store.resources:
            raise ValueError(f"unknown kind {kind!r}; one of {sorted(self._store.resources)}")
        with self._lock:
            items = [o for k, o in sorted(self._store.objects[kind].items()) if namespace is None or k[0] == namespace]
            return clone(items)

    def delete_pod(self, namespace: str, name: str) -> None:
        with self._lock:
            if self._controller.delete_pod((namespace, name)) is None:
                raise KeyError(f"{namespace}/{name}")

    def fail_pod(self, namespace: str, name: str, *, reason: str = "Error", message: str = "container failed",
                 exit_code: int = 1) -> None:
        """The pod's containers exit with `exit_code` now (an OOM, a crash)."""
        with self._lock:
            if self._store.get("pods", (namespace, name)) is None:
                raise KeyError(f"{namespace}/{name}")
            self._controller.fail_pod((namespace, name), reason=reason, message=message, code=exit_code)

    def compact(self) -> None:
        with self._lock:
            self._store.compact()

    def forbid(self, verb: str, resource: str) -> None:
        """Answer this verb on this resource with 403, as RBAC would without the permission."""
        with self._lock:
            self._forbidden.add((verb, resource))

    def allow(self, verb: str, resource: str) -> None:
        with self._lock:
            self._forbidden.discard((verb, resource))

    def inject_error(self, verb: str, resource: str, *, code: int = 500, times: int = 1) -> None:
        """The next `times` requests for verb on resource fail with `code` (500, 429 with Retry-After, 503...)."""
        with self._lock:
            self._injected.append([verb, resource, code, times])

    # ------------------------------------------------------------------------------------------------ internals

    def _next_cluster_ip(self) -> str:
        self._cluster_ips += 1
        return f"10.96.{(self._cluster_ips >> 8) & 255}.{self._cluster_ips & 255}"

    def _next_node_ip(self) -> str:
        self._node_ips += 1
        return f"10.0.{(self._node_ips >> 8) & 255}.{self._node_ips & 255}"

    def _add_namespace_locked(self, name: str, labels: dict | None) -> dict:
        ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": dict(labels or {})}}
        default_namespace(ns)
        return self._store.create("namespaces", ns)

    def _handle(self, h: _Handler) -> None:
        method = h.command
        url = urlsplit(h.path)
        query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        length = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(length) if length else b""
        with self._lock:
            route = _route(url.path, self._store.resources)
        resource = route.resource if route else None
        watching = method == "GET" and query.get("watch", "").lower() in ("true", "1")
        verb = self._verb(method, route, watching)
        with self._lock:
            self.requests[(method, resource or ("discovery" if route else "unknown"))] += 1
            if resource:
                self.verbs[(verb, resource)] += 1
        try:
            if self.token and h.headers.get("Authorization") != f"Bearer {self.token}":
                raise ApiError(401, "Unauthorized", "Unauthorized")
            if route is None:
                raise ApiError(404, "NotFound", "the server could not find the requested resource",
                               {"causes": [{"reason": "UnexpectedServerResponse", "message": "404 page not found"}]})
            if route.special:
                return self._discovery(h, route.special)
            self._check_faults(verb, route)
            if watching and route.name is None:
                return self._watch(h, route, query)
            code, body = self._serve(method, route, query, raw, h.headers.get("Content-Type") or "")
            if isinstance(body, bytes):
                h.send_body(code, body)
            else:
                h.send_json(code, body)
        except ApiError as e:
            h.send_json(e.code, e.status(), e.headers)

    @staticmethod
    def _verb(method: str, route: _Route | None, watching: bool) -> str:
        if method == "GET":
            return "watch" if watching else ("get" if route and route.name else "list")
        return {"POST": "create", "DELETE": "delete", "PATCH": "patch", "PUT": "update"}.get(method, method.lower())

    def _check_faults(self, verb: str, route: _Route) -> None:
        resource = route.resource
        with self._lock:
            if (verb, resource) in self._forbidden:
                info = self._store.resources[resource]
                group = info["group"]
                scope = f'in the namespace "{route.namespace}"' if route.namespace else "at the cluster scope"
                target = (f'{_qualified(resource, info)} "{route.name}"' if route.name
                          else _qualified(resource, info))
                raise ApiError(403, "Forbidden",
                               f'{target} is forbidden: User "system:serviceaccount:spillover-system:spillover" '
                               f'cannot {verb} resource "{resource}" in API group "{group}" {scope}',
                               _details(resource, route.name, info))
            for entry in self._injected:
                if entry[0] == verb and entry[1] == resource and entry[3] > 0:
                    entry[3] -= 1
                    code = entry[2]
                    self._injected = [e for e in self._injected if e[3] > 0]
                    reason = {429: "TooManyRequests", 503: "ServiceUnavailable", 504: "Timeout",
                              409: "Conflict"}.get(code, "InternalError")
                    headers = {"Retry-After": "1"} if code == 429 else None
                    raise ApiError(code, reason, f"injected failure for {verb} {resource}",
                                   {"retryAfterSeconds": 1} if code == 429 else None, headers)

    def _discovery(self, h: _Handler, what: str) -> None:
        if what in ("healthz", "livez", "readyz"):
            return h.send_body(200, b"ok", "text/plain; charset=utf-8")
        if what == "version":
            return h.send_json(200, VERSION)
        if what == "openapi/v2":
            # An empty schema: kubectl's client-side validation then skips every kind and its three-way patches
            # fall back to the types compiled into it, which is all this server needs. kubectl asks for (and
            # parses only) protobuf here; without a schema at all it refuses to apply unless --validate=false.
            if "protobuf" in (h.headers.get("Accept") or ""):
                return h.send_body(200, _OPENAPI_V2_PB,
                                   "application/com.github.proto-openapi.spec.v2.v1.0+protobuf")
            return h.send_json(200, {"swagger": "2.0", "paths": {}, "definitions": {},
                                     "info": {"title": "Kubernetes", "version": VERSION["gitVersion"]}})
        if what.startswith("openapi/"):
            # No OpenAPI v3: kubectl 1.27+ asks for it first and falls back to v2 on a 404, as against old servers.
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if what == "api":
            return h.send_json(200, {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [
                {"clientCIDR": "0.0.0.0/0", "serverAddress": f"{self.host}:{self._port}"}]})
        with self._lock:
            table = {r: dict(info) for r, info in self._store.resources.items()}
        groups: dict[str, dict] = {}
        for info in table.values():
            if info["group"] and info["group"] not in groups:
                version = info["apiVersion"].split("/", 1)[1]
                gv = {"groupVersion": info["apiVersion"], "version": version}
                groups[info["group"]] = {"name": info["group"], "versions": [gv], "preferredVersion": gv}
        if what == "apis":
            return h.send_json(200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": list(groups.values())})
        if what.startswith("apis/") and what.count("/") == 1:  # apis/GROUP
            return h.send_json(200, {"kind": "APIGroup", "apiVersion": "v1", **groups[what.split("/")[1]]})
        group_version = "v1" if what == "api/v1" else what.split("/", 1)[1]
        resources = []
        for r, info in table.items():
            if info["apiVersion"] != group_version:
                continue
            entry = {"name": r, "singularName": info["singular"], "namespaced": info["namespaced"],
                     "kind": info["kind"], "verbs": _VERBS}
            if info.get("shortNames"):
                entry["shortNames"] = info["shortNames"]
            if info.get("categories"):
                entry["categories"] = info["categories"]
            resources.append(entry)
        return h.send_json(200, {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version,
                                 "resources": resources})

    def _serve(self, method: str, route: _Route, query: dict, raw: bytes, content_type: str) -> tuple[int, Any]:
        resource, ns, name = route.resource, route.namespace, route.name
        info = self._info(resource)
        namespaced = info["namespaced"]
        if name is None:
            if method == "GET":
                return 200, self._list(resource, ns, query)
            if method == "POST" and (ns is not None or not namespaced):
                return 201, self._create(resource, ns, self._json_body(raw))
        else:
            if method == "GET":
                with self._lock:
                    obj = self._store.get(resource, (ns or "", name))
                if obj is None:
                    raise not_found(resource, name, info)
                return 200, obj
            if method == "DELETE":
                return 200, self._delete(resource, ns, name, query, self._json_body(raw, allow_empty=True))
            if method == "PATCH":
                return 200, self._patch(resource, ns, name, self._json_body(raw), content_type)
        raise ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource",
                       {"causes": [{"reason": "UnexpectedServerResponse", "message": "405: Method Not Allowed"}]})

    def _info(self, resource: str) -> dict:
        with self._lock:
            info = self._store.resources.get(resource)
        if info is None:  # a custom resource whose CRD went away after the request was routed
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        return info

    @staticmethod
    def _json_body(raw: bytes, allow_empty: bool = False) -> Any:
        if not raw.strip():
            if allow_empty:
                return {}
            raise _bad_request("the request body is empty")
        try:
            return json.loads(raw)
        except ValueError as e:
            raise _bad_request(f"couldn't get version/kind; json parse error: {e}") from None

    def _selectors(self, resource: str, query: dict):
        try:
            return (parse_label_selector(query.get("labelSelector")),
                    parse_field_selector(query.get("fieldSelector"), resource))
        except SelectorError as e:
            raise _bad_request(str(e)) from None

    # -- list -------------------------------------------------------------------------------------------------

    def _list(self, resource: str, ns: str | None, query: dict) -> bytes:
        lsel, fsel = self._selectors(resource, query)
        try:
            limit = int(query.get("limit") or 0)
        except ValueError:
            raise _bad_request(f"invalid limit {query.get('limit')!r}") from None
        cont = query.get("continue")
        meta: dict = {}
        with self._lock:
            if cont:
                token, offset = _decode_continue(cont)
                snap = self._store.snapshots.get(token)
                if snap is None:
                    raise ApiError(410, "Expired", "The provided continue parameter is too old to display a "
                                   "consistent list result. You can start a new list without the continue "
                                   "parameter.")
                rv, items = snap
                items = items[offset:]
            else:
                rv_param = query.get("resourceVersion")
                if rv_param not in (None, "", "0"):
                    try:
                        wanted = int(rv_param)
                    except ValueError:
                        raise _bad_request(f"invalid resource version: {rv_param}") from None
                    if wanted > self._store.rv:
                        raise ApiError(504, "Timeout", f"Too large resource version: {wanted}, current: "
                                       f"{self._store.rv}", {"causes": [{"reason": "ResourceVersionTooLarge",
                                                                         "message": "Too large resource version"}],
                                                             "retryAfterSeconds": 1})
                    exact = query.get("resourceVersionMatch") == "Exact"
                    if wanted < self._store.compacted_rv or (exact and wanted != self._store.rv):
                        raise ApiError(410, "Expired", f"too old resource version: {wanted} "
                                       f"({max(self._store.compacted_rv, wanted) + 1})")
                rv = self._store.rv
                objs = self._store.objects[resource]
                keys = sorted(objs)
                items = [objs[k] for k in keys
                         if (ns is None or k[0] == ns)
                         and (not lsel or lsel.matches(objs[k]["metadata"].get("labels")))
                         and (not fsel or fsel.matches(objs[k]))]
                offset = 0
                token = None
            if limit and len(items) > limit:
                if not cont:
                    token = self._store.save_snapshot(items)
                    offset = 0
                meta["continue"] = _encode_continue(token, offset + limit)
                meta["remainingItemCount"] = len(items) - limit
                items = items[:limit]
        meta["resourceVersion"] = str(rv)
        info = self._info(resource)
        head = json.dumps({"kind": info["kind"] + "List", "apiVersion": info["apiVersion"], "metadata": meta},
                          separators=(",", ":")).encode()
        encode = self._store.encode
        return head[:-1] + b',"items":[' + b",".join(encode(resource, o) for o in items) + b"]}"

    # -- watch ------------------------------------------------------------------------------------------------

    def _watch(self, h: _Handler, route: _Route, query: dict) -> None:
        resource, ns = route.resource, route.namespace
        lsel, fsel = self._selectors(resource, query)
        try:
            timeout = float(query["timeoutSeconds"]) if query.get("timeoutSeconds") else self.watch_timeout
        except ValueError:
            raise _bad_request(f"invalid timeoutSeconds {query.get('timeoutSeconds')!r}") from None
        deadline = time.monotonic() + timeout
        server = h.server
        store = self._store

        def matches(obj: dict | None) -> bool:
            if obj is None:
                return False
            if ns is not None and obj["metadata"].get("namespace") != ns:
                return False
            return (not lsel or lsel.matches(obj["metadata"].get("labels"))) and (not fsel or fsel.matches(obj))

        rv_param = query.get("resourceVersion")
        with self._lock:
            expired: Expired | None = None
            if rv_param in (None, "", "0"):
                # No version: the current state as ADDED events first, then changes (as the real server does).
                objs = store.objects[resource]
                initial = [("ADDED", objs[k]) for k in sorted(objs) if matches(objs[k])]
                last = store.rv
            else:
                try:
                    last = int(rv_param)
                except ValueError:
                    raise _bad_request(f"invalid resource version: {rv_param}") from None
                initial = []
                if last < store.compacted_rv:
                    expired = Expired(last, store.compacted_rv + 1)

        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Transfer-Encoding", "chunked")
        h.end_headers()

        def send(lines: list[bytes]) -> None:
            if lines:
                data = b"".join(lines)
                h.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                h.wfile.flush()

        def line(type_: str, obj: dict) -> bytes:
            return b'{"type":"' + type_.encode() + b'","object":' + store.encode(resource, obj) + b"}\n"

        def gone(e: Expired) -> bytes:
            status = ApiError(410, "Expired", str(e)).status()
            return json.dumps({"type": "ERROR", "object": status}, separators=(",", ":")).encode() + b"\n"

        send([line(t, o) for t, o in initial])
        if expired is not None:
            send([gone(expired)])
        else:
            while True:
                with self._lock:
                    while store.rv <= last and not server.closed:
                        left = deadline - time.monotonic()
                        if left <= 0:
                            break
                        store.changed.wait(left)
                    if server.closed:
                        h.close_connection = True
                        return
                    if store.rv <= last:
                        break
                    try:
                        events = store.events_after(last)
                    except Expired as e:
                        # The watcher fell behind the retained history: real servers end it with 410 too.
                        send([gone(e)])
                        break
                    last = store.rv
                out = []
                for ev in events:
                    if ev.resource != resource:
                        continue
                    now_in, type_ = matches(ev.obj), ev.type
                    if type_ == "MODIFIED":
                        was_in = matches(ev.prev)
                        if now_in and not was_in:
                            type_ = "ADDED"
                        elif was_in and not now_in:
                            type_, now_in = "DELETED", True
                    if now_in:
                        out.append(line(type_, ev.obj))
                send(out)
                if time.monotonic() >= deadline:
                    break
        h.wfile.write(b"0\r\n\r\n")
        h.wfile.flush()

    # -- create -----------------------------------------------------------------------------------------------

    def _create(self, resource: str, ns: str | None, obj: Any) -> dict:
        info = self._info(resource)
        if not isinstance(obj, dict):
            raise _bad_request("the body must be a JSON object")
        if obj.get("kind") not in (None, info["kind"]) or obj.get("apiVersion") not in (None, info["apiVersion"]):
            raise _bad_request(f"the API version in the data ({obj.get('apiVersion')}) does not match the expected "
                               f"API version ({info['apiVersion']}) or the kind ({obj.get('kind')}) is not "
                               f"{info['kind']}")
        obj = clone(obj)
        strip_server_fields(obj)
        meta = obj["metadata"]
        if info["namespaced"]:
            if meta.get("namespace") not in (None, "", ns):
                raise _bad_request("the namespace of the provided object does not match the namespace sent on "
                                   "the request")
            meta["namespace"] = ns
        else:
            meta.pop("namespace", None)
        with self._lock:
            if not meta.get("name") and meta.get("generateName"):
                name = meta["generateName"] + random_suffix()
                while (ns or "", name) in self._store.objects[resource]:
                    name = meta["generateName"] + random_suffix()
                meta["name"] = name
            name = meta.get("name") or ""
            problems = check_metadata(obj, label_name=resource in _LABEL_NAMED)
            problems += _CHECKS[resource](obj) if resource in _CHECKS else []
            if resource == "pods":
                problems += check_pod_spec(obj.get("spec"), "spec")
            if problems:
                raise _invalid(resource, name, problems, info)
            if info["namespaced"] and self._store.get("namespaces", ("", ns)) is None:
                raise not_found("namespaces", ns)
            if self._store.get(resource, (ns or "", name)) is not None:
                raise ApiError(409, "AlreadyExists", f'{_qualified(resource, info)} "{name}" already exists',
                               _details(resource, name, info))
            if resource == "jobs":
                meta["uid"] = str(uuid.uuid4())
                default_job(obj)
            elif resource == "pods":
                default_pod_spec(obj["spec"])
                admit_pod(obj)
            elif resource == "namespaces":
                default_namespace(obj)
            elif resource == "nodes":
                default_node(obj, self._next_node_ip(), now_rfc3339())
            elif resource == "deployments":
                default_deployment(obj)
            elif resource == "services":
                default_service(obj, self._next_cluster_ip())
            elif resource == "secrets":
                default_secret(obj)
            elif resource == "customresourcedefinitions":
                self._register_crd(obj)
            return self._store.create(resource, obj)

    def _register_crd(self, crd: dict) -> None:
        served = crd_resources(crd)
        for plural, info in served.items():
            have = self._store.resources.get(plural)
            if have is not None:
                # Custom resources are keyed by plural here, so one may not shadow another kind's plural.
                raise _invalid("customresourcedefinitions", crd["metadata"]["name"],
                               [("spec.names.plural", f'Invalid value: "{plural}": already served as '
                                                      f'{have["kind"]} in {have["apiVersion"]}')],
                               self._store.resources["customresourcedefinitions"])
        default_crd(crd, now_rfc3339())
        for plural, info in served.items():
            self._store.register(plural, info)

    # -- delete -----------------------------------------------------------------------------------------------

    def _delete(self, resource: str, ns: str | None, name: str, query: dict, options: Any) -> dict:
        options = options if isinstance(options, dict) else {}
        policy = query.get("propagationPolicy") or options.get("propagationPolicy")
        orphan = query.get("orphanDependents", options.get("orphanDependents"))
        if policy is None and orphan is not None:
            policy = "Orphan" if str(orphan).lower() == "true" else "Background"
        if policy not in (None, "Orphan", "Background", "Foreground"):
            raise ApiError(422, "Invalid", f'DeleteOptions.meta.k8s.io "" is invalid: propagationPolicy: '
                           f'Unsupported value: "{policy}": supported values: "Foreground", "Background", "Orphan"')
        key = (ns or "", name)
        info = self._info(resource)
        with self._lock:
            obj = self._store.get(resource, key)
            if obj is None:
                raise not_found(resource, name, info)
            pre = options.get("preconditions") or {}
            if pre.get("uid") and pre["uid"] != obj["metadata"]["uid"]:
                raise ApiError(409, "Conflict", f"Precondition failed: UID in precondition: {pre['uid']}, UID in "
                               f"object meta: {obj['metadata']['uid']}", _details(resource, name, info))
            if pre.get("resourceVersion") and pre["resourceVersion"] != obj["metadata"]["resourceVersion"]:
                raise ApiError(409, "Conflict", "Precondition failed: ResourceVersion in precondition: "
                               f"{pre['resourceVersion']}, ResourceVersion in object meta: "
                               f"{obj['metadata']['resourceVersion']}", _details(resource, name, info))
            if resource == "pods":
                return self._controller.delete_pod(key)
            if resource == "jobs":
                # batch/v1 Jobs orphan their pods unless told otherwise: the REST default kubectl hides.
                policy = policy or "Orphan"
                marked = self._controller.delete_job(key, policy)
                if policy != "Background":
                    return marked
            elif resource == "nodes":
                self._store.delete("nodes", key)
                self._controller.node_lost(name, removed=True)
            elif resource == "namespaces":
                if name in ("default", "kube-system", "kube-public"):
                    raise ApiError(403, "Forbidden", f'namespaces "{name}" is forbidden: this namespace may not be '
                                   "deleted", _details("namespaces", name))
                for k in [k for k in self._store.objects["jobs"] if k[0] == name]:
                    self._controller.delete_job(k, "Foreground", now=True)
                for k in [k for k in self._store.objects["pods"] if k[0] == name]:
                    self._controller.delete_pod(k)
                for other, other_info in list(self._store.resources.items()):
                    if other_info["namespaced"] and other not in ("pods", "jobs"):
                        for k in [k for k in self._store.objects[other] if k[0] == name]:
                            self._store.delete(other, k)
                self._store.delete("namespaces", key)
            elif resource == "customresourcedefinitions":
                for plural in crd_resources(obj):
                    if self._store.resources.get(plural, {}).get("custom"):
                        self._store.unregister(plural)
                self._store.delete(resource, key)
            else:
                self._store.delete(resource, key)
        details = _details(resource, name, info)
        details["uid"] = obj["metadata"]["uid"]
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details}

    # -- patch ------------------------------------------------------------------------------------------------

    def _patch(self, resource: str, ns: str | None, name: str, patch: Any, content_type: str) -> dict:
        key = (ns or "", name)
        info = self._info(resource)
        with self._lock:
            old = self._store.get(resource, key)
            if old is None:
                raise not_found(resource, name, info)
            if "json-patch" in content_type:
                if not isinstance(patch, list):
                    raise _bad_request("json: cannot unmarshal object into Go value of type jsonpatch.Patch")
                new = _json_patch(old, patch)
            elif "strategic-merge-patch" in content_type and resource in APP_RESOURCES:
                # The kinds kubectl applies get the real strategic merge (lists merged by key, directives);
                # Spillover's own pods, nodes and Jobs keep the merge-patch treatment their tests pin down.
                if not isinstance(patch, dict):
                    raise _bad_request("the patch must be a JSON object")
                try:
                    new = strategic_merge(old, patch)
                except PatchError as e:
                    raise ApiError(422, "Invalid", str(e)) from None
            elif "strategic-merge-patch" in content_type and info.get("custom"):
                raise ApiError(415, "UnsupportedMediaType", "the body of the request was in an unknown format - "
                               "accepted media types include: application/json-patch+json, "
                               "application/merge-patch+json, application/apply-patch+yaml")
            elif "merge-patch" in content_type:
                if not isinstance(patch, dict):
                    raise _bad_request("the patch must be a JSON object")
                new = _merge_patch(old, patch)
            else:
                raise ApiError(415, "UnsupportedMediaType", "the body of the request was in an unknown format - "
                               "accepted media types include: application/json-patch+json, "
                               "application/merge-patch+json, application/strategic-merge-patch+json")
            for field in ("name", "namespace", "uid", "creationTimestamp", "resourceVersion", "generation"):
                if field in old["metadata"]:
                    new.setdefault("metadata", {})[field] = old["metadata"][field]
            new["kind"], new["apiVersion"] = old["kind"], old["apiVersion"]
            if "status" in old:
                new["status"] = old["status"]  # status is a subresource: the main resource ignores changes to it
            problems = check_metadata(new, label_name=resource in _LABEL_NAMED)
            if resource in _CHECKS and resource not in ("jobs", "customresourcedefinitions"):
                problems += _CHECKS[resource](new)
            if resource == "deployments" and (new.get("spec") or {}).get("selector") != old["spec"].get("selector"):
                problems.append(("spec.selector", f"Invalid value: {(new.get('spec') or {}).get('selector')}: "
                                                  "field is immutable"))
            if problems:
                raise _invalid(resource, name, problems, info)
            if resource == "secrets":
                default_secret(new)

            def replace(obj: dict) -> None:
                obj.clear()
                obj.update(clone(new))

            return self._store.mutate(resource, key, replace, spec_change=True)
