"""Errors a user caused (bad config, bad job spec, unknown names), each rendered as one line that names the field."""

from __future__ import annotations

import difflib
import types
from collections.abc import Callable, Iterable, Mapping, Sequence
from enum import Enum
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError
from pydantic_core.core_schema import ErrorType

_MAX_SHOWN = 40  # characters of a bad value quoted back to the user
_BUILTIN_TYPES = frozenset(get_args(ErrorType))


class UserError(Exception):
    """Base of every error the user can fix; the CLI prints str() on one line and exits with `exit_code`."""

    exit_code = 2

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))


class _FieldErrors(UserError):
    """A file's problems: `.errors` holds one "field.path: message" line per problem, `.source` the file.

    `ConfigError("spillover.yaml", [...])` prefixes the line with the file; `ConfigError([...])` and
    `ConfigError("message")` are for problems found where no file name is at hand.
    """

    def __init__(self, source: str | Sequence[str], errors: Sequence[str] | None = None) -> None:
        if errors is None:
            errors = [source] if isinstance(source, str) else list(source)
            source = ""
        self.source = str(source)
        self.errors = list(errors)
        super().__init__((f"{self.source}: " if self.source else "") + "; ".join(self.errors))


class ConfigError(_FieldErrors):
    """The config file is missing, unreadable or invalid."""


class JobSpecError(_FieldErrors):
    """A job spec file is missing, unreadable or invalid."""


def unknown_name_message(what: str, name: str, known: Iterable[str], plural: str) -> str:
    """ "unknown queue 'reserch' (did you mean 'research'?); configured queues: research, prod" """
    known = list(known)
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    listed = ", ".join(known[:20]) + (f" and {len(known) - 20} more" if len(known) > 20 else "")
    return f"unknown {what} '{name}'{hint}; {plural}: {listed or 'none'}"


class _UnknownName(UserError):
    """`Unknown...Error(name, known)` builds the message from what exists; `Unknown...Error(message)` takes it as is."""

    what = "name"
    listing = "known"

    def __init__(self, name: str, known: Iterable[str] | None = None) -> None:
        self.name = name if known is not None else None
        super().__init__(name if known is None else unknown_name_message(self.what, name, known, self.listing))


class UnknownQueueError(_UnknownName):
    what, listing = "queue", "configured queues"


class UnknownClusterError(_UnknownName):
    what, listing = "cluster", "configured clusters"


class UnknownJobError(_UnknownName):
    what, listing = "job", "known jobs"


class ConflictError(UserError):
    """The request cannot be done in the object's current state (cancelling a finished job)."""


class StoreUnavailableError(UserError):
    """The store named by `store.url` cannot be opened."""

    exit_code = 3


# ---- rendering pydantic errors in the user's spelling ----


def describe_value(value: Any) -> str:
    """A bad value as the user wrote it in YAML, shortened: 'abc', 4.5, true, null, a mapping."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, Enum):
        value = value.value
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str):
        return repr(value if len(value) <= _MAX_SHOWN else value[: _MAX_SHOWN - 1] + "…")
    text = str(value)
    return text if len(text) <= _MAX_SHOWN else text[: _MAX_SHOWN - 1] + "…"


def custom_error(loc: tuple[str | int, ...], message: str, value: Any) -> InitErrorDetails:
    """An error detail at `loc` (relative to the model being validated) carrying a ready message."""
    return InitErrorDetails(
        type=PydanticCustomError("spillover", "{message}", {"message": message}), loc=loc, input=value
    )


def validate_with_extra_errors(
    handler: Callable[[Any], Any], data: Any, extra: list[InitErrorDetails], title: str
) -> Any:
    """Run a wrap validator's `handler` and report `extra` errors together with its own, so checks that
    look across fields (duplicate names) show up in the same report as per-field errors."""
    if not extra:
        return handler(data)
    try:
        handler(data)
    except ValidationError as exc:
        raise ValidationError.from_exception_data(title, [*_as_details(exc), *extra]) from None
    raise ValidationError.from_exception_data(title, extra)


def _as_details(exc: ValidationError) -> list[InitErrorDetails]:
    """The errors of `exc` in the form `from_exception_data` takes back; custom ones keep their message."""
    details: list[Any] = []
    for err in exc.errors():
        if err["type"] in _BUILTIN_TYPES:
            details.append(err)
        else:
            message = err["msg"].replace("{", "{{").replace("}", "}}")
            kind = PydanticCustomError(err["type"], message, None)
            details.append(InitErrorDetails(type=kind, loc=err["loc"], input=err["input"]))
    return details


def _unwrap(tp: Any) -> Any:
    """The type under Annotated[...] and Optional[...]."""
    while True:
        origin = get_origin(tp)
        if origin is Annotated:
            tp = get_args(tp)[0]
        elif origin in (Union, types.UnionType):
            members = [a for a in get_args(tp) if a is not type(None)]
            if len(members) != 1:
                return tp
            tp = members[0]
        else:
            return tp


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _keys(model: type[BaseModel]) -> list[str]:
    return [field.alias or name for name, field in model.model_fields.items()]


def _field(model: type[BaseModel], key: str) -> Any:
    for name, field in model.model_fields.items():
        if key in (name, field.alias):
            return field.annotation
    return None


def _tags(model: type[BaseModel], key: str | None = None) -> set[str]:
    """The values a discriminated-union member answers to: those of its Literal field `key` (any when None)."""
    tags: set[str] = set()
    for name, field in model.model_fields.items():
        if key is not None and key not in (name, field.alias):
            continue
        if get_origin(_unwrap(field.annotation)) is Literal:
            tags |= {a.value if isinstance(a, Enum) else a for a in get_args(_unwrap(field.annotation))}
    return tags


def _union_members(tp: Any) -> list[type[BaseModel]]:
    if get_origin(tp) in (Union, types.UnionType):
        return [a for a in get_args(tp) if _is_model(_unwrap(a))]
    return []


def _walk(model: type[BaseModel] | None, loc: Sequence[str | int]) -> tuple[list[str], Any]:
    """Render `loc` as path segments, dropping discriminated-union tags, and return the type it ends in."""
    parts: list[str] = []
    tp: Any = model
    for seg in loc:
        tp = _unwrap(tp)
        members = _union_members(tp)
        if members and isinstance(seg, str):
            tagged = [m for m in members if seg in _tags(_unwrap(m))]
            if tagged:  # pydantic names the union member it tried; the user never wrote that
                tp = tagged[0]
                continue
        parts.append(f"[{seg}]" if isinstance(seg, int) else str(seg))
        if _is_model(tp) and isinstance(seg, str):
            tp = _field(tp, seg)
        elif get_origin(tp) in (list, tuple, set, frozenset) and isinstance(seg, int):
            tp = get_args(tp)[0] if get_args(tp) else None
        elif get_origin(tp) is dict and isinstance(seg, str):
            tp = get_args(tp)[1] if get_args(tp) else None
        else:
            tp = None
    return parts, _unwrap(tp)


def _join(parts: Sequence[str]) -> str:
    path = ""
    for part in parts:
        path += part if part.startswith("[") or not path else f".{part}"
    return path


def _message(err: Mapping[str, Any], parent: Any, here: Any) -> tuple[str, str]:
    """(extra path suffix, message) for one pydantic error."""
    kind, ctx, value = err["type"], err.get("ctx", {}), err.get("input")
    got = f" (got {describe_value(value)})"
    if kind == "missing":
        return "", "required"
    if kind == "extra_forbidden":
        key = str(err["loc"][-1]) if err["loc"] else ""
        if _is_model(parent):
            valid = _keys(parent)
            close = difflib.get_close_matches(key, valid, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            return "", f"unknown key{hint}; valid keys: {', '.join(valid)}"
        return "", "unknown key"
    bounds = {
        "greater_than_equal": ("must be at least", "ge"),
        "greater_than": ("must be greater than", "gt"),
        "less_than_equal": ("must be at most", "le"),
        "less_than": ("must be less than", "lt"),
    }
    if kind in bounds:
        text, key = bounds[kind]
        return "", f"{text} {describe_value(ctx.get(key))}{got}"
    if kind in ("int_parsing", "int_type", "int_from_float"):
        return "", f"must be a whole number{got}"
    if kind in ("float_parsing", "float_type", "finite_number"):
        return "", f"must be a number{got}"
    if kind in ("bool_parsing", "bool_type"):
        return "", f"must be true or false{got}"
    if kind == "string_type":
        hint = "; put it in quotes" if isinstance(value, int | float | bool) else ""
        return "", f"must be a string{got}{hint}"
    if kind == "string_too_short":
        if ctx.get("min_length") == 1:
            return "", "must not be empty"
        return "", f"must be at least {ctx.get('min_length')} characters{got}"
    if kind == "string_too_long":
        return "", f"must be at most {ctx.get('max_length')} characters (got {len(value)})"
    if kind in ("too_short", "too_long"):
        limit = ctx.get("min_length") if kind == "too_short" else ctx.get("max_length")
        least = "at least" if kind == "too_short" else "at most"
        items = ("character" if isinstance(value, str) else "item") + ("" if limit == 1 else "s")
        if isinstance(value, str):
            return "", f"must be {least} {limit} {items} (got {len(value)})"
        return "", f"must have {least} {limit} {items} (got {ctx.get('actual_length')})"
    if kind in ("list_type", "tuple_type", "set_type"):
        return "", f"must be a list{got}"
    if kind in ("dict_type", "model_type", "model_attributes_type", "mapping_type"):
        return "", f"must be a mapping{got}"
    if kind in ("literal_error", "enum"):
        return "", f"must be one of {ctx.get('expected')}{got}"
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        key = str(ctx.get("discriminator", "")).strip("'")
        tags = [t for m in _union_members(here) for t in sorted(_tags(_unwrap(m), key))]
        expected = ", ".join(f"'{t}'" for t in tags) or ctx.get("expected_tags", "?")
        if kind == "union_tag_not_found":
            return key, f"required; one of {expected}"
        return key, f"must be one of {expected} (got {describe_value(ctx.get('tag'))})"
    if kind in ("value_error", "assertion_error"):
        msg = str(err["msg"])
        for prefix in ("Value error, ", "Assertion failed, "):
            msg = msg.removeprefix(prefix)
        return "", msg
    return "", str(err["msg"])


def format_validation_error(
    exc: ValidationError,
    prefix: str = "",
    aliases: Mapping[str, str] | None = None,
    model: type[BaseModel] | None = None,
) -> list[str]:
    """One "path: message" line per error of `exc`, in the user's spelling.

    Paths use the YAML keys (pydantic reports aliases when input was validated by alias) with list
    indices in brackets: `clusters[1].pools[0].instance_type`. `prefix` goes before every path.
    `aliases` renames the first path segment (a model field) to where the user wrote it, e.g.
    {"gpus": "spec.template.spec.containers[0].resources.limits.nvidia.com/gpu"}. Given the validated
    `model`, union tags that pydantic inserts are dropped and unknown keys list the valid ones.
    """
    lines = []
    for err in exc.errors(include_url=False):
        loc = tuple(err["loc"])
        parts, here = _walk(model, loc)
        _, parent = _walk(model, loc[:-1]) if loc else ([], None)
        if loc and aliases and str(loc[0]) in aliases and not isinstance(loc[0], int):
            parts[0] = aliases[str(loc[0])]
        extra, message = _message(err, parent, here)
        if extra:
            parts.append(extra)
        path = prefix + _join(parts) if parts else prefix.rstrip(".")
        line = f"{path}: {message}" if path else message
        if line not in lines:
            lines.append(line)
    return lines
