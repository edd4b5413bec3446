"""`--llmperf-shard K/N`: one of N runners' part of a suite, for CI matrices.

The selected tests (after `-m`, `-k`) are split by engine configuration, never inside one:
each configuration's engine loads in one shard only. Configurations go, in the order the
run meets them (the collection order, the same on every runner of one checkout), each to
the shard with the fewest tests so far (ties: the lowest), so that shards are about even
and every runner computes the same split without talking to the others. Tests of another
shard are deselected, as `-k` does (`plugin.hooks`). `llmperf merge` joins the shards' run
folders.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Hashable, Sequence
from typing import TypeVar

from pytest_llmperf.errors import LLMPerfUsageError

T = TypeVar("T")

_SHARD = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


def parse_shard(text: str, source: str = "--llmperf-shard") -> tuple[int, int]:
    """`"2/3"` -> (2, 3): shard 2 of 3 (numbered from 1)."""
    found = _SHARD.match(text)
    if found is None:
        raise LLMPerfUsageError(f"{source}: {text!r} is not K/N (e.g. 1/2: the first of two)")
    k, n = int(found[1]), int(found[2])
    if not 1 <= k <= n:
        raise LLMPerfUsageError(f"{source}: {text!r}: K must be from 1 to N ({n})")
    return k, n


def split(items: Sequence[T], key: Callable[[T], Hashable], n: int) -> list[list[T]]:
    """`items` in `n` shards, whole groups of equal `key` each, in their order."""
    groups: dict[Hashable, list[T]] = {}
    for item in items:
        groups.setdefault(key(item), []).append(item)
    shards: list[list[T]] = [[] for _ in range(n)]
    for group in groups.values():
        smallest = min(range(n), key=lambda i: len(shards[i]))
        shards[smallest].extend(group)
    return shards
