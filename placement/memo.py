"""A few values kept by the identity of the object each was built from, for work a solve repeats on the same input."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def kept(cache: dict[int, tuple[Any, T]], source: Any, build: Callable[[Any], T], most: int) -> T:
    """`build(source)`, or what was built from this very object lately; at most `most` kept, the oldest dropped
    first. The source is kept with its value, so its id cannot be reused while the entry lives."""
    hit = cache.get(id(source))
    if hit is not None and hit[0] is source:
        return hit[1]
    value = build(source)
    while len(cache) >= most:
        cache.pop(next(iter(cache)), None)
    cache[id(source)] = (source, value)
    return value
