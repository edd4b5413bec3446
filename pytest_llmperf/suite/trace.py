"""Trace replay: requests sent at the times a production trace recorded them.

A trace is a JSONL file, one request per line, in the Mooncake trace format (the format
AIPerf and NVIDIA Dynamo replay too):

    {"timestamp": 0, "input_length": 655, "output_length": 52, "hash_ids": [46, 47]}
    {"timestamp": 1035, "input_length": 672, "output_length": 26, "hash_ids": [46, 47, 48]}

`timestamp` is the request's arrival in milliseconds after the trace's first request
(a number at least 0; lines need not be in order: they are sent in time order, ties in
file order); `input_length` and `output_length` are whole numbers of tokens (at least 1);
`hash_ids` (optional) names the prompt's blocks of `block_size` tokens (Mooncake: 512):
two requests whose lists start with the same ids share that prefix, block for block. A
block's tokens are drawn from the workload's seed and the block's id, so a block is the
same tokens wherever it appears; the prompt is its blocks' tokens cut or extended (with
tokens of its own) to `input_length`. `session_id` (optional, a string or a whole
number) is kept in the request's `custom_id` (`trace-L<line>-s<session>`); prefix
sharing within a session is what its `hash_ids` say. Any other field is an error naming
the file and line.

Replayed (`timed`, the default) each request is sent `timestamp / 1000 / speedup`
seconds after the round starts, on a client engine (`Traits.takes_arrivals`; an engine
that runs a batch at once skips the test). With `timed=False` the trace's lengths and
shared blocks are sent all at once, on any engine.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_llmperf.engines.base import GenerationRequest, SamplingParams, Tokenizer
from pytest_llmperf.errors import where
from pytest_llmperf.suite import arguments
from pytest_llmperf.suite.arguments import dataset_path, whole
from pytest_llmperf.suite.shared_prefix import token_block
from pytest_llmperf.suite.workload import DatasetError, read_json_lines

_FIELDS = frozenset({"timestamp", "input_length", "output_length", "hash_ids", "session_id"})


@dataclass(frozen=True)
class TraceEntry:
    line: int
    timestamp_ms: float
    input_length: int
    output_length: int
    hash_ids: tuple[int, ...]
    session_id: str | None


def _count(here: str, obj: Mapping[str, Any], name: str, minimum: int) -> int:
    value = obj.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise DatasetError(f"{here}: {name!r} must be a whole number of at least {minimum}")
    return value


def parse_entry(path: Path, line: int, obj: Mapping[str, Any]) -> TraceEntry:
    here = where(path, line)
    unknown = set(obj) - _FIELDS
    if unknown:
        raise DatasetError(f"{here}: unknown trace field(s) {', '.join(sorted(unknown))}")
    stamp = obj.get("timestamp")
    if isinstance(stamp, bool) or not isinstance(stamp, (int, float)) or not 0 <= stamp < 1e15:
        raise DatasetError(f"{here}: 'timestamp' must be a number of milliseconds, at least 0")
    hash_ids = obj.get("hash_ids", [])
    if not isinstance(hash_ids, list) or not all(
        isinstance(h, int) and not isinstance(h, bool) for h in hash_ids
    ):
        raise DatasetError(f"{here}: 'hash_ids' must be a list of whole numbers")
    session = obj.get("session_id")
    if session is not None and (isinstance(session, bool) or not isinstance(session, (str, int))):
        raise DatasetError(f"{here}: 'session_id' must be a string or a whole number")
    return TraceEntry(
        line,
        float(stamp),
        _count(here, obj, "input_length", 1),
        _count(here, obj, "output_length", 1),
        tuple(hash_ids),
        None if session is None else str(session),
    )


def load_trace(path: Path, limit: int | None = None) -> list[TraceEntry]:
    """A trace's entries in time order (ties in file order); problems name file and line."""
    entries = [parse_entry(path, line, obj) for line, obj in read_json_lines(path, limit)]
    return sorted(entries, key=lambda e: e.timestamp_ms)


@dataclass(frozen=True)
class TraceWorkload:
    """The requests of a trace file (format in the module docstring), replayed on its times."""

    path: Path
    block_size: int = 512
    speedup: float = 1.0
    timed: bool = True
    limit: int | None = None
    seed: int = 0
    _entries: tuple[TraceEntry, ...] = field(init=False, repr=False, compare=False, default=())

    def __post_init__(self) -> None:
        owner = "TraceWorkload"
        object.__setattr__(self, "path", dataset_path(owner, "path", self.path))
        whole(owner, "block_size", self.block_size, 1)
        arguments.number(owner, "speedup", self.speedup, positive=True)
        if not isinstance(self.timed, bool):
            raise arguments.bad(owner, "timed", self.timed, "must be a bool")
        if self.limit is not None:
            whole(owner, "limit", self.limit, 1)
        whole(owner, "seed", self.seed)
        object.__setattr__(self, "_entries", tuple(load_trace(self.path, self.limit)))

    def entries(self) -> list[TraceEntry]:
        return list(self._entries)

    def scheduled(self) -> bool:
        """Whether the requests carry send times (a client engine is needed)."""
        return self.timed

    def build(self, tokenizer: Tokenizer) -> list[GenerationRequest]:
        blocks: dict[int, tuple[int, ...]] = {}

        def block(hash_id: int) -> tuple[int, ...]:
            if hash_id not in blocks:
                rng = random.Random(f"trace-block/{self.seed}/{hash_id}")
                blocks[hash_id] = token_block(tokenizer, self.block_size, rng)
            return blocks[hash_id]

        first = self._entries[0].timestamp_ms if self._entries else 0.0
        requests = []
        for entry in self._entries:
            ids: tuple[int, ...] = ()
            for hash_id in entry.hash_ids:
                if len(ids) >= entry.input_length:
                    break
                ids += block(hash_id)
            missing = entry.input_length - len(ids)
            if missing > 0:  # beyond its blocks: tokens of its own
                rng = random.Random(f"trace-tail/{self.seed}/{entry.line}")
                ids += token_block(tokenizer, missing, rng)
            session = f"-s{entry.session_id}" if entry.session_id is not None else ""
            offset = (entry.timestamp_ms - first) / 1000.0 / self.speedup if self.timed else 0.0
            requests.append(
                GenerationRequest(
                    custom_id=f"trace-L{entry.line}{session}",
                    prompt_token_ids=ids[: entry.input_length],
                    sampling=SamplingParams.fixed_length(entry.output_length, seed=self.seed),
                    send_offset_s=offset,
                )
            )
        return requests

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "trace",
            "path": str(self.path),
            "block_size": self.block_size,
            "speedup": self.speedup,
            "timed": self.timed,
            "limit": self.limit,
            "seed": self.seed,
        }

    def with_overrides(self, settings: Mapping[str, Any]) -> TraceWorkload:
        del settings  # a trace's lengths are the trace's
        return self
