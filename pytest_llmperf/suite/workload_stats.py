"""`llmperf workload stats DATASET`: how long a dataset's prompts and answers are.

Choosing a benchmark's prompt length and max-new-tokens from the data (as seed 003 does
by hand: "2048 tokens covers ~90% of outputs"): input lengths are the prompts in the
model's tokens (chat messages through its chat template, as the engines send them),
output lengths the `reference` answers in the same tokens. Printed: percentiles of
both, the max-new-tokens that covers a chosen share of the outputs (the smallest
length at least that share of references fit in), and the share that common limits
cover.

A test that chooses its output length from the data reports the share it covers:

    output_coverage   share of the dataset's reference answers whose length in tokens is
                      at most the run's max-new-tokens (`coverage(lengths, limit)`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_llmperf.engines.base import Tokenizer
from pytest_llmperf.errors import LLMPerfUsageError
from pytest_llmperf.measure.metrics import percentile
from pytest_llmperf.models.tokenizer import HFTokenizer, transformers_tokenizer
from pytest_llmperf.suite.workload import DatasetError, DatasetItem, load_dataset

REPORTED_PERCENTILES = (50, 75, 90, 95, 99)
COMMON_LIMITS = (128, 256, 512, 1024, 2048, 4096, 8192)


@dataclass(frozen=True)
class LengthStats:
    count: int
    mean: float
    percentiles: dict[int, float]
    max: int

    @classmethod
    def of(cls, lengths: Sequence[int]) -> LengthStats:
        ordered = sorted(lengths)
        return cls(
            count=len(ordered),
            mean=sum(ordered) / len(ordered),
            percentiles={q: percentile(ordered, q) for q in REPORTED_PERCENTILES},
            max=ordered[-1],
        )


def covering_limit(lengths: Sequence[int], share: float) -> int:
    """The smallest max-new-tokens that at least `share` of the outputs fit in."""
    ordered = sorted(lengths)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


def coverage(lengths: Sequence[int], limit: int) -> float:
    return sum(1 for n in lengths if n <= limit) / len(lengths)


def reference_lengths(items: Sequence[DatasetItem], tokenizer: Tokenizer) -> list[int]:
    """The items' reference answers in the model's tokens (the harness's `Tokenizer`, whose
    `encode` adds no special tokens); items without one are left out."""
    return [len(tokenizer.encode(item.reference)) for item in items if item.reference is not None]


def _input_length(tokenizer: Any, item: DatasetItem) -> int:
    if item.messages is not None:
        ids = tokenizer.apply_chat_template(
            [dict(m) for m in item.messages], add_generation_prompt=True, tokenize=True
        )
        # transformers 5 returns a BatchEncoding here, 4 a list of ids.
        return len(ids["input_ids"] if hasattr(ids, "keys") else ids)
    return len(tokenizer.encode(item.prompt or "", add_special_tokens=False))


def stats_lines(dataset: Path, model: str = "tiny", share: float = 0.9) -> list[str]:
    if not 0 < share <= 1:
        raise LLMPerfUsageError(f"--coverage: must be in (0, 1], got {share}")
    try:
        items = load_dataset(dataset)
    except DatasetError as exc:
        raise LLMPerfUsageError(str(exc)) from None
    tokenizer = transformers_tokenizer(model)  # chat templates need transformers'
    inputs = [_input_length(tokenizer, item) for item in items]
    outputs = reference_lengths(items, HFTokenizer(tokenizer))
    lines = [f"{dataset}: {len(items)} items; tokens of {model}"]
    lines += _table("input tokens", LengthStats.of(inputs))
    if not outputs:
        lines.append("output tokens: no item has a reference, so output lengths are unknown")
        return lines
    lines += _table(f"output tokens ({len(outputs)} references)", LengthStats.of(outputs))
    lines.append(
        f"max-new-tokens covering {share:.0%} of outputs: {covering_limit(outputs, share)}"
    )
    shares = ", ".join(f"{limit}: {coverage(outputs, limit):.0%}" for limit in COMMON_LIMITS)
    lines.append(f"share of outputs within common limits: {shares}")
    return lines


def _table(label: str, stats: LengthStats) -> list[str]:
    cells = [f"mean {stats.mean:.1f}"]
    cells += [f"p{q} {value:.0f}" for q, value in stats.percentiles.items()]
    cells.append(f"max {stats.max}")
    return [f"{label}: " + "  ".join(cells)]
