"""Strategic merge patch as the API server applies it to built-in kinds: lists of objects merged by their key."""

from __future__ import annotations

from typing import Any

from .store import clone

# patchMergeKey of the list fields kubectl's three-way patches touch, by field name. A list not named here is
# atomic (replaced whole), as rules, subjects, args, envFrom and tolerations are in the real types.
_MERGE_KEYS = {
    "containers": "name", "initContainers": "name", "ephemeralContainers": "name", "volumes": "name",
    "env": "name", "volumeMounts": "mountPath", "volumeDevices": "devicePath", "imagePullSecrets": "name",
    "hostAliases": "ip", "topologySpreadConstraints": "topologyKey", "ownerReferences": "uid",
    "conditions": "type", "resourceClaims": "name", "secrets": "name",
}
# Lists of scalars whose strategy is merge (a union), not replace.
_MERGED_SCALARS = {"finalizers"}
_CONTAINER_LISTS = {"containers", "initContainers", "ephemeralContainers"}


class PatchError(ValueError):
    """A patch the server cannot apply (the API answers it with 422, or 400 for a malformed one)."""


def _merge_key(field: str, parent: str | None) -> str | None:
    if field == "ports":
        # a container's ports merge by containerPort, a Service's by port
        return "containerPort" if parent in _CONTAINER_LISTS else "port"
    return _MERGE_KEYS.get(field)


def strategic_merge(target: Any, patch: Any, field: str | None = None, parent: str | None = None) -> Any:
    """`target` with `patch` applied; neither is changed."""
    if not isinstance(patch, dict):
        return clone(patch)
    directive = patch.get("$patch")
    if directive == "replace":
        return {k: clone(v) for k, v in patch.items() if k != "$patch"}
    if directive == "delete":
        return None
    if directive not in (None, "merge"):
        raise PatchError(f"unknown patch type: {directive}")
    result = clone(target) if isinstance(target, dict) else {}
    orders: dict[str, list] = {}
    retain = patch.get("$retainKeys")
    for key, value in patch.items():
        if key in ("$patch", "$retainKeys"):
            continue
        if key.startswith("$setElementOrder/"):
            orders[key.split("/", 1)[1]] = value if isinstance(value, list) else []
            continue
        if key.startswith("$deleteFromPrimitiveList/"):
            name = key.split("/", 1)[1]
            if isinstance(result.get(name), list) and isinstance(value, list):
                result[name] = [v for v in result[name] if v not in value]
            continue
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict):
            merged = strategic_merge(result.get(key), value, key, field)
            if merged is None:
                result.pop(key, None)
            else:
                result[key] = merged
        elif isinstance(value, list):
            result[key] = _merge_list(result.get(key), value, key, field)
        else:
            result[key] = value
    for name, order in orders.items():
        if isinstance(result.get(name), list):
            result[name] = _ordered(result[name], order, _merge_key(name, field))
    if isinstance(retain, list):
        result = {k: v for k, v in result.items() if k in retain}
    return result


def _merge_list(current: Any, patch: list, field: str, parent: str | None) -> list:
    current = current if isinstance(current, list) else []
    key = _merge_key(field, parent)
    if any(isinstance(p, dict) and p.get("$patch") == "replace" for p in patch):
        return [clone(p) for p in patch if not (isinstance(p, dict) and p.get("$patch") == "replace")]
    if key is None or not all(isinstance(p, dict) for p in patch):
        if field in _MERGED_SCALARS:
            return list(current) + [clone(p) for p in patch if p not in current]
        return [clone(p) for p in patch if not (isinstance(p, dict) and p.get("$patch") == "delete")]
    out = [clone(item) for item in current]
    for item in patch:
        if key not in item:
            raise PatchError(f"map: {item} does not contain declared merge key: {key}")
        at = next((i for i, have in enumerate(out) if isinstance(have, dict) and have.get(key) == item[key]), None)
        if item.get("$patch") == "delete":
            if at is not None:
                del out[at]
            continue
        if at is None:
            out.append(strategic_merge({}, item, field, parent))
        else:
            out[at] = strategic_merge(out[at], item, field, parent)
    return out


def _ordered(items: list, order: list, key: str | None) -> list:
    """Items in the order `$setElementOrder` gives; ones it does not name keep their place at the end."""
    if key is None:
        rank = {repr(v): i for i, v in enumerate(order)}
        return sorted(items, key=lambda v: rank.get(repr(v), len(rank)))
    rank = {o.get(key): i for i, o in enumerate(order) if isinstance(o, dict)}
    return sorted(items, key=lambda v: rank.get(v.get(key) if isinstance(v, dict) else None, len(rank)))
