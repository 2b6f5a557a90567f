"""Parsing and printing of the units users write: Kubernetes CPU and memory quantities, and durations."""

from __future__ import annotations

import math
import re
from decimal import Decimal, InvalidOperation

GIB = 2**30

# Kubernetes resource.Quantity grammar: a signed decimal number followed by a binary suffix (Ki..Ei),
# a decimal suffix (n, u, m, k, M, G, T, P, E) or a decimal exponent (e3, E-2).
_QUANTITY = re.compile(
    r"^(?P<number>[+-]?(?:\d+(?:\.\d*)?|\.\d+))"
    r"(?:(?P<binary>Ki|Mi|Gi|Ti|Pi|Ei)|(?P<decimal>[numkMGTPE])|[eE](?P<exponent>[+-]?\d+))?$"
)
_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {"n": -9, "u": -6, "m": -3, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}

_DURATION_UNITS = {"d": 86400, "h": 3600, "m": 60, "s": 1}
_SECONDS = re.compile(r"^\d+(?:\.\d+)?$")
_DURATION = re.compile(r"^(?:(?P<d>\d+(?:\.\d+)?)d)?(?:(?P<h>\d+(?:\.\d+)?)h)?(?:(?P<m>\d+(?:\.\d+)?)m)?(?:(?P<s>\d+(?:\.\d+)?)s)?$")

# A bare number of bytes this small is almost always a forgotten unit ("memory: 64" meant 64Gi).
_MIN_BARE_BYTES = 2**20


def _number(value: object, what: str) -> float | None:
    """The value as a float if it is a plain number; None if it is a string to parse."""
    if isinstance(value, bool):
        raise ValueError(f"expected {what} (got {str(value).lower()})")
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise ValueError(f"expected {what} (got {value})")
        return float(value)
    if isinstance(value, str):
        return None
    raise ValueError(f"expected {what} (got a {type(value).__name__})")


def parse_quantity(text: str) -> Decimal:
    """A Kubernetes quantity string in base units: "500m" -> 0.5, "64Gi" -> 68719476736, "1e3" -> 1000."""
    match = _QUANTITY.match(text.strip())
    if not match:
        raise ValueError(f"not a Kubernetes quantity: {text!r}")
    try:
        number = Decimal(match["number"])
    except InvalidOperation as exc:  # the regex admits only decimals; kept as a guard
        raise ValueError(f"not a Kubernetes quantity: {text!r}") from exc
    if match["binary"]:
        return number * _BINARY[match["binary"]]
    if match["decimal"]:
        return number.scaleb(_DECIMAL[match["decimal"]])
    if match["exponent"]:
        return number.scaleb(int(match["exponent"]))
    return number


def parse_cpu(value: str | int | float) -> float:
    """CPU cores from a number or a quantity: 16 -> 16.0, "500m" -> 0.5, "2" -> 2.0."""
    what = 'CPU cores like 16, 0.5 or "500m"'
    number = _number(value, what)
    if number is not None:
        return number
    try:
        return float(parse_quantity(str(value)))
    except ValueError:
        raise ValueError(f"expected {what} (got {value!r})") from None


def parse_memory_gib(value: str | int | float) -> float:
    """GiB from a quantity ("64Gi" -> 64.0, "512Mi" -> 0.5, "1G" -> 0.93) or a number of bytes.

    A bare number is bytes, as in Kubernetes; one below 1 MiB is refused as a likely missing unit.
    """
    what = 'memory like "128Gi", "512Mi" or "1Ti"'
    number = _number(value, what)
    bare = number is not None
    if number is None:
        text = str(value).strip()
        try:
            number = float(parse_quantity(text))
        except ValueError:
            raise ValueError(f"expected {what} (got {value!r})") from None
        suffix = _QUANTITY.match(text)
        bare = not (suffix["binary"] or suffix["decimal"] or suffix["exponent"])
    if bare and 0 < number < _MIN_BARE_BYTES:
        raise ValueError(f'a bare number is bytes; write {value}Gi for {value} GiB (expected {what})')
    return number / GIB


def parse_duration_s(value: str | int | float) -> float:
    """Seconds from a duration ("2h30m" -> 9000, "90m", "45s", "1d", "1.5h") or a number of seconds."""
    what = "a duration like 90m, 2h30m or seconds"
    number = _number(value, what)
    if number is not None:
        if number < 0:
            raise ValueError(f"expected {what} (got {value})")
        return number
    text = str(value).strip().lower()
    if _SECONDS.match(text):
        return float(text)
    match = _DURATION.match(text)
    if not text or not match:
        raise ValueError(f"expected {what} (got {value!r})")
    return float(sum(Decimal(match[unit]) * seconds for unit, seconds in _DURATION_UNITS.items() if match[unit]))


def _plain(number: float) -> str:
    """The shortest text without an exponent that reads back as exactly this float: 128.0 -> "128", 1e-05 -> "0.00001"."""
    return str(int(number)) if number.is_integer() else format(Decimal(repr(number)), "f")


def format_cpu(cores: float) -> str | float | int:
    """CPU cores as written in a spec: whole cores as a number, fractions in millicores when exact."""
    cores = float(cores)
    if cores.is_integer():
        return int(cores)
    millis = cores * 1000
    if millis.is_integer() and float(Decimal(int(millis)).scaleb(-3)) == cores:
        return f"{int(millis)}m"
    return cores


def format_memory_gib(gib: float) -> str:
    """GiB as a quantity that parses back to the same value: 128.0 -> "128Gi", 0.5 -> "512Mi"."""
    mib = gib * 1024
    if not gib.is_integer() and mib.is_integer() and mib / 1024 == gib:
        return f"{int(mib)}Mi"
    return f"{_plain(gib)}Gi"


def format_duration(seconds: float) -> str:
    """Seconds as a duration: 9000 -> "2h30m", 45 -> "45s", 90061 -> "1d1h1m1s"; fractions stay in seconds."""
    seconds = float(seconds)
    if not seconds.is_integer() or seconds <= 0:
        return f"{_plain(seconds)}s"
    rest = int(seconds)
    parts = []
    for unit, size in _DURATION_UNITS.items():
        count, rest = divmod(rest, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)
