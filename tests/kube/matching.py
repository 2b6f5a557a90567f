"""Label and field selectors, quantities, taints, tolerations and node affinity as the API server reads them."""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from typing import Any, Callable

__all__ = [
    "SelectorError",
    "LabelSelector",
    "FieldSelector",
    "parse_label_selector",
    "parse_field_selector",
    "parse_quantity",
    "milli",
    "tolerates",
    "untolerated_taint",
    "node_matches_affinity",
    "validate_labels",
    "validate_name",
]


class SelectorError(ValueError):
    """A selector the real API server would reject with 400 BadRequest."""


_KEY_NAME = r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
_DNS_SUBDOMAIN = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
_DNS_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_LABEL_VALUE = r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?"


def _valid_label_key(key: str) -> bool:
    prefix, slash, name = key.rpartition("/")
    if slash and (not prefix or len(prefix) > 253 or not re.fullmatch(_DNS_SUBDOMAIN, prefix)):
        return False
    return bool(name) and len(name) <= 63 and bool(re.fullmatch(_KEY_NAME, name))


def _valid_label_value(value: str) -> bool:
    return len(value) <= 63 and bool(re.fullmatch(_LABEL_VALUE, value))


def validate_labels(labels: Any, field: str) -> list[tuple[str, str]]:
    """(field, message) pairs for every invalid key or value, worded like apimachinery's validation."""
    problems: list[tuple[str, str]] = []
    if labels is None:
        return problems
    if not isinstance(labels, dict):
        return [(field, "Invalid value: must be a map of string to string")]
    for key, value in labels.items():
        if not isinstance(key, str) or not _valid_label_key(key):
            problems.append((field, f'Invalid value: "{key}": name part must consist of alphanumeric characters, '
                                    "'-', '_' or '.', and must start and end with an alphanumeric character"))
        if not isinstance(value, str) or not _valid_label_value(value):
            problems.append((field, f'Invalid value: "{value}": a valid label must be an empty string or consist of '
                                    "alphanumeric characters, '-', '_' or '.', and must start and end with an "
                                    "alphanumeric character, and be at most 63 characters"))
    return problems


def validate_name(name: str, *, label: bool) -> str | None:
    """Why `name` is not a valid object name (DNS-1123 label when `label`, else subdomain), or None."""
    if label:
        if len(name) > 63 or not re.fullmatch(_DNS_LABEL, name):
            return (f'Invalid value: "{name}": a lowercase RFC 1123 label must consist of lower case alphanumeric '
                    "characters or '-', and must start and end with an alphanumeric character, and be at most "
                    "63 characters")
        return None
    if len(name) > 253 or not re.fullmatch(_DNS_SUBDOMAIN, name):
        return (f'Invalid value: "{name}": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric '
                "characters, '-' or '.', and must start and end with an alphanumeric character")
    return None


# ---------------------------------------------------------------------------------------------- label selectors

@dataclass(frozen=True)
class _Requirement:
    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "!"
    values: tuple[str, ...] = ()

    def matches(self, labels: dict[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key)
        if self.op == "=":
            return present and value == self.values[0]
        if self.op == "!=":
            return not present or value != self.values[0]
        if self.op == "in":
            return present and value in self.values
        if self.op == "notin":
            return not present or value not in self.values
        if self.op == "exists":
            return present
        return not present


class LabelSelector:
    def __init__(self, requirements: list[_Requirement]):
        self.requirements = requirements

    def __bool__(self) -> bool:
        return bool(self.requirements)

    def matches(self, labels: dict[str, str] | None) -> bool:
        labels = labels or {}
        return all(r.matches(labels) for r in self.requirements)


def _split_top_level(text: str) -> list[str]:
    # Commas inside "in (a,b)" belong to the set, not to the list of requirements.
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise SelectorError(f"unable to parse requirement: unbalanced ')' in {text!r}")
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    if depth:
        raise SelectorError(f"unable to parse requirement: unbalanced '(' in {text!r}")
    parts.append(text[start:])
    return parts


def _check_key(key: str, whole: str) -> str:
    if not _valid_label_key(key):
        raise SelectorError(f"unable to parse requirement: invalid label key {key!r} in {whole!r}")
    return key


def _check_value(value: str, whole: str) -> str:
    if not _valid_label_value(value):
        raise SelectorError(f"unable to parse requirement: invalid label value {value!r} in {whole!r}")
    return value


def parse_label_selector(text: str | None) -> LabelSelector:
    if text is None or not text.strip():
        return LabelSelector([])
    requirements = []
    for raw in _split_top_level(text):
        part = raw.strip()
        if not part:
            raise SelectorError(f"unable to parse requirement: empty requirement in {text!r}")
        m = re.fullmatch(r"(\S+?)\s+(in|notin)\s*\((.*)\)", part)
        if m:
            values = tuple(_check_value(v.strip(), text) for v in m.group(3).split(","))
            requirements.append(_Requirement(_check_key(m.group(1), text), m.group(2), values))
            continue
        m = re.fullmatch(r"(.+?)\s*(==|!=|=)\s*(.*)", part)
        if m:
            op = "!=" if m.group(2) == "!=" else "="
            requirements.append(_Requirement(_check_key(m.group(1).strip(), text), op,
                                             (_check_value(m.group(3).strip(), text),)))
            continue
        if part.startswith("!"):
            requirements.append(_Requirement(_check_key(part[1:].strip(), text), "!"))
            continue
        requirements.append(_Requirement(_check_key(part, text), "exists"))
    return LabelSelector(requirements)


# ---------------------------------------------------------------------------------------------- field selectors

def _dig(obj: dict, path: str) -> Any:
    cur: Any = obj
    for part in path.split("."):
        if not isinstance(cur, dict):
            return None
        cur = cur.get(part)
    return cur


def _field_string(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


# The fields each resource's REST storage registers; anything else gets 400 like the real server.
FIELD_GETTERS: dict[str, dict[str, Callable[[dict], str]]] = {
    "pods": {
        name: (lambda path: lambda o: _field_string(_dig(o, path)))(name)
        for name in ("metadata.name", "metadata.namespace", "spec.nodeName", "spec.restartPolicy",
                     "spec.schedulerName", "spec.serviceAccountName", "spec.hostNetwork", "status.phase",
                     "status.podIP", "status.nominatedNodeName")
    },
    "nodes": {
        "metadata.name": lambda o: _field_string(_dig(o, "metadata.name")),
        "spec.unschedulable": lambda o: _field_string(bool(_dig(o, "spec.unschedulable"))),
    },
    "jobs": {
        "metadata.name": lambda o: _field_string(_dig(o, "metadata.name")),
        "metadata.namespace": lambda o: _field_string(_dig(o, "metadata.namespace")),
        "status.successful": lambda o: _field_string(_dig(o, "status.succeeded") or 0),
    },
    "namespaces": {
        "metadata.name": lambda o: _field_string(_dig(o, "metadata.name")),
        "status.phase": lambda o: _field_string(_dig(o, "status.phase")),
    },
}

# What every other resource's storage registers.
_METADATA_FIELDS = {
    "metadata.name": lambda o: _field_string(_dig(o, "metadata.name")),
    "metadata.namespace": lambda o: _field_string(_dig(o, "metadata.namespace")),
}


class FieldSelector:
    def __init__(self, terms: list[tuple[Callable[[dict], str], bool, str]]):
        self.terms = terms

    def __bool__(self) -> bool:
        return bool(self.terms)

    def matches(self, obj: dict) -> bool:
        return all((get(obj) == value) == equal for get, equal, value in self.terms)


def parse_field_selector(text: str | None, resource: str) -> FieldSelector:
    if text is None or not text.strip():
        return FieldSelector([])
    getters = FIELD_GETTERS.get(resource, _METADATA_FIELDS)
    terms = []
    for raw in text.split(","):
        part = raw.strip()
        m = re.fullmatch(r"([^=!]+?)\s*(==|!=|=)\s*(.*)", part)
        if not m:
            raise SelectorError(f"invalid selector: '{text}'; can't understand '{part}'")
        field = m.group(1).strip()
        if field not in getters:
            raise SelectorError(f'"{field}" is not a known field selector: only "'
                                + '", "'.join(sorted(getters)) + '"')
        terms.append((getters[field], m.group(2) != "!=", m.group(3).strip()))
    return FieldSelector(terms)


# ---------------------------------------------------------------------------------------------- quantities

_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {"n": Fraction(1, 10**9), "u": Fraction(1, 10**6), "m": Fraction(1, 1000), "": 1, "k": 10**3,
            "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18}
_QUANTITY = re.compile(r"([+-]?(?:\d+\.?\d*|\.\d+))((?:[eE][+-]?\d+)|Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE])?")


def parse_quantity(value: Any) -> Fraction:
    """A Kubernetes quantity ("500m", "16", "64Gi", "1e3") as an exact number."""
    if isinstance(value, bool):
        raise ValueError(f"not a quantity: {value!r}")
    if isinstance(value, (int, float)):
        return Fraction(value)
    m = _QUANTITY.fullmatch(str(value).strip())
    if not m:
        raise ValueError(f"not a quantity: {value!r}")
    number, suffix = Fraction(m.group(1)), m.group(2) or ""
    if suffix in _BINARY:
        return number * _BINARY[suffix]
    if suffix in _DECIMAL:
        return number * _DECIMAL[suffix]
    return number * Fraction(10) ** int(suffix[1:])


def milli(value: Any) -> int:
    """A quantity in thousandths, rounded up the way the scheduler rounds requests (so "0.5" CPU is 500)."""
    if isinstance(value, str):
        return _milli_str(value)
    q = parse_quantity(value) * 1000
    return -((-q.numerator) // q.denominator)


@lru_cache(maxsize=4096)
def _milli_str(value: str) -> int:
    # Every pod of a Job repeats the same few quantity strings.
    q = parse_quantity(value) * 1000
    return -((-q.numerator) // q.denominator)


# ---------------------------------------------------------------------------------------------- taints, affinity

def tolerates(toleration: dict, taint: dict) -> bool:
    effect = toleration.get("effect") or ""
    if effect and effect != taint.get("effect"):
        return False
    operator = toleration.get("operator") or "Equal"
    key = toleration.get("key") or ""
    if operator == "Exists":
        return not key or key == taint.get("key")
    return key == taint.get("key") and (toleration.get("value") or "") == (taint.get("value") or "")


def untolerated_taint(taints: list[dict], tolerations: list[dict]) -> dict | None:
    """The first NoSchedule/NoExecute taint no toleration covers (PreferNoSchedule never blocks)."""
    for taint in taints or ():
        if taint.get("effect") not in ("NoSchedule", "NoExecute"):
            continue
        if not any(tolerates(t, taint) for t in tolerations or ()):
            return taint
    return None


def _expression_matches(expr: dict, values: dict[str, str]) -> bool:
    key, op, wanted = expr.get("key"), expr.get("operator"), expr.get("values") or []
    present = key in values
    if op == "In":
        return present and values[key] in wanted
    if op == "NotIn":
        return not present or values[key] not in wanted
    if op == "Exists":
        return present
    if op == "DoesNotExist":
        return not present
    if op in ("Gt", "Lt") and present and wanted:
        try:
            have, bound = int(values[key]), int(wanted[0])
        except ValueError:
            return False
        return have > bound if op == "Gt" else have < bound
    return False


def node_matches_affinity(node: dict, pod_spec: dict) -> bool:
    """nodeSelector and requiredDuringSchedulingIgnoredDuringExecution, as the NodeAffinity filter applies them."""
    labels = node.get("metadata", {}).get("labels") or {}
    for key, value in (pod_spec.get("nodeSelector") or {}).items():
        if labels.get(key) != value:
            return False
    required = (((pod_spec.get("affinity") or {}).get("nodeAffinity") or {})
                .get("requiredDuringSchedulingIgnoredDuringExecution"))
    if not required:
        return True
    fields = {"metadata.name": node.get("metadata", {}).get("name", "")}
    for term in required.get("nodeSelectorTerms") or []:
        exprs, field_exprs = term.get("matchExpressions") or [], term.get("matchFields") or []
        if not exprs and not field_exprs:
            continue  # an empty term matches nothing
        if all(_expression_matches(e, labels) for e in exprs) and all(
                _expression_matches(e, fields) for e in field_exprs):
            return True
    return False
