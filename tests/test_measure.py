"""The harness's timing, checked with an instrument engine that yields at scripted times.

This engine is a measuring instrument, not a stand-in for a real engine: its only
behaviour is to emit tokens at known moments, so we can see that we time them right.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence

import pytest

from pytest_llmperf.engines.base import (
    EngineConfig,
    EngineInfo,
    GenerationRequest,
    SamplingParams,
    StreamChunk,
)
from pytest_llmperf.measure.harness import run_round


class ScriptedEngine:
    """Yields each request's tokens at scripted offsets (seconds from the round's start)."""

    name = "scripted"

    def __init__(
        self,
        script: list[list[tuple[float, int]]],
        fail_after: int | None = None,
        leave_open: bool = False,
    ) -> None:
        self.script = script
        self.fail_after = fail_after
        self.leave_open = leave_open

    def start(self) -> EngineInfo:
        return EngineInfo("scripted", "-", "cpu", "-")

    def stream(self, requests: Sequence[GenerationRequest]) -> Iterator[StreamChunk]:
        start = time.perf_counter()
        events = sorted((t, i, k) for i, steps in enumerate(self.script) for t, k in steps)
        last = {i: steps[-1][0] for i, steps in enumerate(self.script)}
        for n, (t, index, k) in enumerate(events):
            if self.fail_after is not None and n == self.fail_after:
                raise RuntimeError("device lost")
            while time.perf_counter() - start < t:
                pass  # busy-wait: sleep() would add its own scheduling jitter
            done = t == last[index] and not (self.leave_open and index == 0)
            yield StreamChunk(index, tuple(range(k)), "length" if done else None, prompt_tokens=5)

    def close(self) -> None:
        pass


def requests(n: int) -> list[GenerationRequest]:
    return [GenerationRequest(f"r{i}", SamplingParams(), prompt="x") for i in range(n)]


def test_ttft_and_gaps_follow_the_script() -> None:
    engine = ScriptedEngine(
        [[(0.030, 1), (0.040, 1), (0.050, 1), (0.070, 1)], [(0.020, 1), (0.060, 2)]]
    )
    records, duration = run_round(engine, requests(2), 0)  # type: ignore[arg-type]
    a, b = records
    assert a.ttft_ms == pytest.approx(30, abs=5)
    assert list(a.itl_ms) == pytest.approx([10, 10, 20], abs=5)
    assert a.e2e_ms == pytest.approx(70, abs=5)
    assert a.tpot_ms == pytest.approx((70 - 30) / 3, abs=2)
    assert a.output_tokens == 4 and a.prompt_tokens == 5
    # A chunk of two tokens 40 ms after the first: two gaps of 20 ms.
    assert b.output_tokens == 3
    assert list(b.itl_ms) == pytest.approx([20, 20], abs=5)
    assert duration == pytest.approx(0.070, abs=0.01)


def test_engine_exception_fails_open_requests_only() -> None:
    engine = ScriptedEngine([[(0.001, 1)], [(0.002, 1), (0.003, 1)]], fail_after=2)
    done: list[str] = []
    records, _ = run_round(engine, requests(2), 0, on_record=lambda r: done.append(r.custom_id))  # type: ignore[arg-type]
    assert records[0].error is None and records[0].finish_reason == "length"
    assert records[1].finish_reason == "error"
    assert records[1].error == "RuntimeError: device lost"
    assert done == ["r0", "r1"]  # each record handed over as soon as it was final


def test_request_left_open_by_the_engine_is_a_failure() -> None:
    engine = ScriptedEngine([[(0.001, 1)], [(0.001, 1)]], leave_open=True)
    records, _ = run_round(engine, requests(2), 0)  # type: ignore[arg-type]
    assert records[0].finish_reason == "error"
    assert "without finishing" in (records[0].error or "")
    assert records[1].error is None


def test_engine_config_equality_decides_reuse() -> None:
    a = EngineConfig.make("hf", "tiny", {"max_num_seqs": 4, "dtype": "float32"})
    b = EngineConfig.make("hf", "tiny", {"dtype": "float32", "max_num_seqs": 4})
    assert a == b and hash(a) == hash(b)
    assert a != EngineConfig.make("hf", "tiny", {"max_num_seqs": 8})
