"""A measuring instrument: an engine whose speed in each round is scripted.

Not an engine we claim to support: it exists to test the gate itself (verdicts, rounds until
decided, baselines), whose behaviour depends on how fast each round is. Round k of a
measurement runs at `rate * speeds[k % len(speeds)]` tokens per second: every token of every
request is produced after a sleep of 1 / that rate, requests one after another. Its
tokenizer is a word tokenizer (a word per token), so workloads build exact-length prompts.

Set `LLMPERF_SPEEDS` to a comma-separated list of factors (default 1) and `LLMPERF_RATE` to
the base tokens per second (default 2000); the setting `speed` (default 1) multiplies the rate
of one configuration (an A/B test's two sides, `llmperf.compare`). Installed in a pytester project with
`install_instrument(pytester)`, which registers it under the entry point `scripted`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import ClassVar

import pytest

from pytest_llmperf.engines.base import (
    EngineConfig,
    EngineInfo,
    GenerationRequest,
    StreamChunk,
    Tokenizer,
)
from pytest_llmperf.engines.spec import EngineSpec, Setting, Traits

SPEC = EngineSpec(
    name="scripted",
    target="scripted_engine:ScriptedEngine",
    doc="an instrument whose speed per round is scripted (tests of the gate only)",
    traits=Traits(uses_gpus=False),
    settings=(Setting("speed", (int, float), 1.0, "a factor on the rate", above=0, maximum=100),),
)


class WordTokenizer:
    """A word per token, ids handed out as words are first seen."""

    def __init__(self) -> None:
        self._ids: dict[str, int] = {}
        self._words: list[str] = []

    def encode(self, text: str) -> list[int]:
        ids = []
        for word in text.split():
            if word not in self._ids:
                self._ids[word] = len(self._words)
                self._words.append(word)
            ids.append(self._ids[word])
        return ids

    def decode(self, token_ids: Sequence[int]) -> str:
        return " ".join(self._words[i] for i in token_ids)


class ScriptedEngine:
    name: ClassVar[str] = "scripted"
    spec: ClassVar[EngineSpec] = SPEC

    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        self._tokenizer = WordTokenizer()
        self._round = 0
        speeds = os.environ.get("LLMPERF_SPEEDS", "1")
        self._speeds = [float(s) for s in speeds.split(",")]
        self._rate = float(os.environ.get("LLMPERF_RATE", "2000")) * config.setting("speed", 1.0)

    def start(self) -> EngineInfo:
        return EngineInfo("scripted", self.config.model, "cpu", "none", {"speeds": self._speeds})

    @property
    def tokenizer(self) -> Tokenizer:
        return self._tokenizer

    def stream(self, requests: Sequence[GenerationRequest]) -> Iterator[StreamChunk]:
        gap = 1 / (self._rate * self._speeds[self._round % len(self._speeds)])
        self._round += 1
        for index, request in enumerate(requests):
            prompt = self._tokenizer.encode(request.prompt or "")
            tokens = request.sampling.max_tokens
            for k in range(tokens):
                time.sleep(gap)
                last = k == tokens - 1
                yield StreamChunk(
                    index,
                    (k % 7,),
                    finish_reason="length" if last else None,
                    prompt_tokens=len(prompt) if k == 0 else None,
                )

    def close(self) -> None:
        pass


def install_instrument(pytester: pytest.Pytester) -> None:
    """The instrument as a third-party engine of a pytester project (`--engine scripted`)."""
    source = Path(__file__).read_text(encoding="utf-8")
    pytester.makepyfile(scripted_engine=source)
    dist = pytester.path / "scripted_engine-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: scripted-engine\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[pytest_llmperf.engines]\nscripted = scripted_engine:SPEC\n"
    )
    pytester.syspathinsert()
