"""Packing patterns: the maximal sets of replica sizes that fit together on one node (Gilmore-Gomory style).

A node profile hosts any sub-multiset of one of its maximal patterns, so "x nodes use pattern p" with
integer x describes node fit exactly for the sizes given. GPU counts per node are small, so patterns are few;
enumeration still stops at a limit, and then each size keeps at least one pattern that contains it, which
keeps the model sound (a restriction, never a relaxation).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

Size = tuple[int, ...]
Pattern = tuple[tuple[int, int], ...]  # (size index, count), count > 0


def _fits(size: Size, cap: Sequence[int]) -> bool:
    return all(s <= c for s, c in zip(size, cap))


def _max_count(size: Size, cap: Sequence[int]) -> int:
    n = math.inf
    for s, c in zip(size, cap):
        if s > 0:
            n = min(n, c // s)
    return int(n) if n != math.inf else 0


def maximal_patterns(cap: Size, sizes: Sequence[Size], limit: int = 200, steps: int = 20000) -> list[Pattern]:
    """Maximal multisets of `sizes` (none all-zero) whose sum fits in `cap`, at most about `limit` of them."""
    return list(_maximal_patterns(tuple(cap), tuple(tuple(s) for s in sizes), limit, steps))


# Node profiles and job sizes repeat from one solve to the next (a replay solves thousands of times).
@functools.lru_cache(maxsize=4096)
def _maximal_patterns(cap: Size, sizes: tuple[Size, ...], limit: int, steps: int) -> tuple[Pattern, ...]:
    return tuple(_enumerate(cap, sizes, limit, steps))


def _enumerate(cap: Size, sizes: Sequence[Size], limit: int, steps: int) -> list[Pattern]:
    idx = [i for i, s in enumerate(sizes) if _fits(s, cap) and any(s)]
    # Largest first, so the search meets full nodes early.
    idx.sort(key=lambda i: tuple(-x for x in sizes[i]))
    out: list[Pattern] = []
    counts: list[int] = [0] * len(idx)
    budget = [steps]

    def rec(pos: int, rem: list[int]) -> None:
        if len(out) >= limit or budget[0] <= 0:
            return
        budget[0] -= 1
        if pos == len(idx):
            if any(_fits(sizes[i], rem) for i in idx):
                return  # something still fits: not maximal
            out.append(tuple((idx[k], c) for k, c in enumerate(counts) if c > 0))
            return
        s = sizes[idx[pos]]
        for c in range(_max_count(s, rem), -1, -1):
            counts[pos] = c
            rec(pos + 1, [r - c * x for r, x in zip(rem, s)])
        counts[pos] = 0

    rec(0, list(cap))
    covered = {i for p in out for i, _ in p}
    for i in idx:
        if i not in covered:
            out.append(_fill_from(i, cap, sizes, idx))
    return out


def _fill_from(first: int, cap: Size, sizes: Sequence[Size], idx: Sequence[int]) -> Pattern:
    """A pattern led by as many of `first` as fit, then filled greedily with the others."""
    rem = list(cap)
    got: dict[int, int] = {}
    for i in [first, *idx]:
        n = _max_count(sizes[i], rem)
        if n > 0:
            got[i] = got.get(i, 0) + n
            rem = [r - n * x for r, x in zip(rem, sizes[i])]
    return tuple(sorted(got.items()))


def dominating(patterns: Sequence[Pattern], need: dict[int, int]) -> int | None:
    """Index of the first pattern that holds every size in `need` as often, or None."""
    for k, p in enumerate(patterns):
        have = dict(p)
        if all(have.get(i, 0) >= n for i, n in need.items()):
            return k
    return None
