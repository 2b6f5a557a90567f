"""The object store behind the fake API server: one lock, one resourceVersion counter, a bounded event history."""

from __future__ import annotations

import json
import marshal
import threading
import time
import uuid
from collections import OrderedDict, deque
from datetime import datetime, timezone
from typing import Callable, NamedTuple

# resource -> what the API calls it; "group" is "" for core.
RESOURCES: dict[str, dict] = {
    "namespaces": {"kind": "Namespace", "apiVersion": "v1", "group": "", "namespaced": False, "singular": "namespace",
                   "shortNames": ["ns"]},
    "nodes": {"kind": "Node", "apiVersion": "v1", "group": "", "namespaced": False, "singular": "node",
              "shortNames": ["no"]},
    "pods": {"kind": "Pod", "apiVersion": "v1", "group": "", "namespaced": True, "singular": "pod",
             "shortNames": ["po"]},
    "jobs": {"kind": "Job", "apiVersion": "batch/v1", "group": "batch", "namespaced": True, "singular": "job"},
}


def _kind(kind: str, api_version: str, namespaced: bool, short: tuple[str, ...] = ()) -> dict:
    group = api_version.rpartition("/")[0]
    return {"kind": kind, "apiVersion": api_version, "group": group, "namespaced": namespaced,
            "singular": kind.lower(), "shortNames": list(short)}


# What an application's manifests use (`kubectl apply -k` of a service), served when a FakeKube is started with
# app_kinds=True; the default server keeps to what Spillover's provider touches, as its discovery tests expect.
APP_RESOURCES: dict[str, dict] = {
    "configmaps": _kind("ConfigMap", "v1", True, ("cm",)),
    "secrets": _kind("Secret", "v1", True),
    "services": _kind("Service", "v1", True, ("svc",)),
    "serviceaccounts": _kind("ServiceAccount", "v1", True, ("sa",)),
    "deployments": _kind("Deployment", "apps/v1", True, ("deploy",)),
    "roles": _kind("Role", "rbac.authorization.k8s.io/v1", True),
    "rolebindings": _kind("RoleBinding", "rbac.authorization.k8s.io/v1", True),
    "clusterroles": _kind("ClusterRole", "rbac.authorization.k8s.io/v1", False),
    "clusterrolebindings": _kind("ClusterRoleBinding", "rbac.authorization.k8s.io/v1", False),
    "poddisruptionbudgets": _kind("PodDisruptionBudget", "policy/v1", True, ("pdb",)),
    "customresourcedefinitions": _kind("CustomResourceDefinition", "apiextensions.k8s.io/v1", False,
                                       ("crd", "crds")),
}

Key = tuple[str, str]  # (namespace or "", name)


_last_stamp: tuple[int, str] = (0, "")


def now_rfc3339() -> str:
    # metav1.Time serializes with one-second resolution; matching it keeps clients honest about precision.
    global _last_stamp
    second = int(time.time())
    if _last_stamp[0] != second:
        _last_stamp = (second, datetime.fromtimestamp(second, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))
    return _last_stamp[1]


def clone(obj):
    # Stored objects are never mutated in place (readers serialize them outside the lock), so every change
    # starts from a copy. They hold only JSON types, for which marshal is the fastest deep copy.
    return marshal.loads(marshal.dumps(obj))


class Event(NamedTuple):
    rv: int
    resource: str
    type: str  # ADDED, MODIFIED, DELETED
    obj: dict
    prev: dict | None  # the object before a MODIFIED, so selector watches can turn it into ADDED/DELETED


class Expired(Exception):
    """The requested resourceVersion is older than the retained history."""

    def __init__(self, requested: int, oldest: int):
        super().__init__(f"too old resource version: {requested} ({oldest})")


class Store:
    def __init__(self, history: int, resources: dict[str, dict] | None = None):
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        self.rv = 0
        # This server's own table: custom resources registered by a CRD appear here and nowhere else.
        self.resources: dict[str, dict] = {r: dict(info) for r, info in (resources or RESOURCES).items()}
        self.objects: dict[str, dict[Key, dict]] = {r: {} for r in self.resources}
        self.by_uid: dict[str, tuple[str, Key]] = {}
        self.history: deque[Event] = deque(maxlen=max(1, history))
        # Watches from any resourceVersion below this cannot be served any more.
        self.compacted_rv = 0
        self.snapshots: OrderedDict[str, tuple[int, list[dict]]] = OrderedDict()
        # Serialized form of each stored object, valid while the stored dict is the very same one (identity):
        # big lists are then mostly a join of cached bytes.
        self.encoded: dict[tuple[str, Key], tuple[dict, bytes]] = {}
        self.on_write: Callable[[str, str, dict], None] | None = None

    # -- writes: every one bumps the counter and leaves exactly one event, so event rvs are contiguous ----------

    def _emit(self, resource: str, type_: str, obj: dict, prev: dict | None) -> None:
        if len(self.history) == self.history.maxlen:
            self.compacted_rv = max(self.compacted_rv, self.history[0].rv)
        self.history.append(Event(self.rv, resource, type_, obj, prev))
        self.changed.notify_all()
        if self.on_write is not None:
            self.on_write(resource, type_, obj)

    def create(self, resource: str, obj: dict) -> dict:
        """Store a new object (the caller checked the name is free); fills uid, timestamps and versions."""
        info = self.resources[resource]
        meta = obj.setdefault("metadata", {})
        obj["apiVersion"], obj["kind"] = info["apiVersion"], info["kind"]
        self.rv += 1
        meta["uid"] = meta.get("uid") or str(uuid.uuid4())
        meta["creationTimestamp"] = now_rfc3339()
        meta["resourceVersion"] = str(self.rv)
        meta["generation"] = 1
        key = (meta.get("namespace", ""), meta["name"])
        self.objects[resource][key] = obj
        self.by_uid[meta["uid"]] = (resource, key)
        self._emit(resource, "ADDED", obj, None)
        return obj

    def mutate(self, resource: str, key: Key, change: Callable[[dict], None], *,
               spec_change: bool = False) -> dict | None:
        """Apply `change` to a copy and store it; no write (and no event) when nothing changed."""
        old = self.objects[resource].get(key)
        if old is None:
            return None
        new = clone(old)
        change(new)
        if new == old:
            return old
        self.rv += 1
        new["metadata"]["resourceVersion"] = str(self.rv)
        if spec_change and new.get("spec") != old.get("spec"):
            new["metadata"]["generation"] = old["metadata"].get("generation", 1) + 1
        self.objects[resource][key] = new
        self._emit(resource, "MODIFIED", new, old)
        return new

    def delete(self, resource: str, key: Key) -> dict | None:
        old = self.objects[resource].pop(key, None)
        if old is None:
            return None
        self.by_uid.pop(old["metadata"]["uid"], None)
        self.encoded.pop((resource, key), None)
        self.rv += 1
        final = dict(old)
        final["metadata"] = dict(old["metadata"], resourceVersion=str(self.rv))
        self._emit(resource, "DELETED", final, None)
        return final

    def register(self, resource: str, info: dict) -> None:
        """Serve a new resource (a custom resource whose CRD was created); its objects start empty."""
        self.resources[resource] = dict(info)
        self.objects.setdefault(resource, {})

    def unregister(self, resource: str) -> None:
        """Stop serving a custom resource; its objects go with it, as they do when a CRD is deleted."""
        for key in list(self.objects.get(resource, {})):
            self.delete(resource, key)
        self.resources.pop(resource, None)
        self.objects.pop(resource, None)

    # -- reads --------------------------------------------------------------------------------------------------

    def get(self, resource: str, key: Key) -> dict | None:
        return self.objects[resource].get(key)

    def by_uid_get(self, uid: str) -> dict | None:
        ref = self.by_uid.get(uid)
        return self.objects[ref[0]].get(ref[1]) if ref else None

    def encode(self, resource: str, obj: dict) -> bytes:
        """JSON for a stored object; safe without the lock because stored objects are never mutated."""
        meta = obj["metadata"]
        key = (resource, (meta.get("namespace", ""), meta["name"]))
        hit = self.encoded.get(key)
        if hit is not None and hit[0] is obj:
            return hit[1]
        data = json.dumps(obj, separators=(",", ":")).encode()
        if self.objects[resource].get(key[1]) is obj:
            self.encoded[key] = (obj, data)
        return data

    def events_after(self, rv: int) -> list[Event]:
        if rv < self.compacted_rv:
            raise Expired(rv, self.compacted_rv + 1)
        if not self.history or rv >= self.history[-1].rv:
            return []
        start = rv + 1 - self.history[0].rv
        if start <= 0:
            return list(self.history)
        return [self.history[i] for i in range(start, len(self.history))]

    def compact(self) -> None:
        self.history.clear()
        self.compacted_rv = self.rv
        self.snapshots.clear()
        self.changed.notify_all()

    # -- consistent pages for limit/continue ----------------------------------------------------------------------

    def save_snapshot(self, items: list[dict]) -> str:
        token = uuid.uuid4().hex
        self.snapshots[token] = (self.rv, items)
        while len(self.snapshots) > 64:
            self.snapshots.popitem(last=False)
        return token
