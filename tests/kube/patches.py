"""JSON merge patch and JSON patch, as the API server applies them."""

from __future__ import annotations

from typing import Any

from .status import ApiError, _bad_request
from .store import clone


def _merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 merge patch (strategic merge is treated the same: lists are replaced, not merged by key)."""
    if not isinstance(patch, dict):
        return clone(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _merge_patch(result.get(key), value)
    return result


def _json_patch(doc: Any, ops: list) -> Any:
    doc = clone(doc)
    for op in ops:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise _bad_request("json patch: every operation needs 'op' and 'path'")
        parts = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
        if not parts:
            raise _bad_request("json patch: the root cannot be patched")
        parent = doc
        try:
            for p in parts[:-1]:
                parent = parent[int(p)] if isinstance(parent, list) else parent[p]
        except (KeyError, IndexError, ValueError, TypeError):
            raise ApiError(422, "Invalid", f"json patch: path {op['path']} does not exist") from None
        last, kind = parts[-1], op["op"]
        try:
            if kind == "test":
                have = parent[int(last)] if isinstance(parent, list) else parent[last]
                if have != op.get("value"):
                    raise ApiError(422, "Invalid", f"json patch: test failed at {op['path']}")
            elif kind in ("add", "replace"):
                if isinstance(parent, list):
                    if last == "-":
                        parent.append(op.get("value"))
                    elif kind == "add":
                        parent.insert(int(last), op.get("value"))
                    else:
                        parent[int(last)] = op.get("value")
                else:
                    if kind == "replace" and last not in parent:
                        raise KeyError(last)
                    parent[last] = op.get("value")
            elif kind == "remove":
                if isinstance(parent, list):
                    del parent[int(last)]
                else:
                    del parent[last]
            else:
                raise ApiError(422, "Invalid", f"json patch: unsupported operation {kind!r}")
        except (KeyError, IndexError, ValueError, TypeError):
            raise ApiError(422, "Invalid", f"json patch: path {op['path']} does not exist") from None
    return doc
