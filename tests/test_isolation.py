"""Isolated engines: a child process per engine configuration, pinned GPUs, nothing left behind.

The hf engine is cheap to start, so these tests run it isolated (`--llmperf-isolate`); the
vLLM engine, always isolated, has its own tests in test_vllm_engine.py.
"""

from __future__ import annotations

import os

import pytest

from pytest_llmperf.engines import engine_spec
from pytest_llmperf.engines.base import EngineConfig, GenerationRequest, SamplingParams
from pytest_llmperf.engines.isolated.parent import EngineDied, IsolatedEngine
from pytest_llmperf.hardware.gpus import physical_indices
from pytest_llmperf.procs.servers import group_alive
from tests.conftest import read_summary

HF = engine_spec("hf")


def test_child_runs_the_engine_and_leaves_nothing_behind() -> None:
    engine = IsolatedEngine(HF, EngineConfig.make("hf", "tiny", {"max_num_seqs": 2}))
    info = engine.start()
    pid = engine.pid
    assert pid is not None and pid != os.getpid() and group_alive(pid)
    assert info.engine == "hf" and info.device == "cpu"
    ids = engine.tokenizer.encode("hello world")
    assert ids and engine.tokenizer.decode(ids) == "hello world"
    request = GenerationRequest("a", SamplingParams.fixed_length(5), prompt="hello")
    chunks = list(engine.stream([request, request]))
    assert sum(len(c.token_ids) for c in chunks) == 10
    assert [c.finish_reason for c in chunks if c.finish_reason] == ["length", "length"]
    engine.close()
    assert not group_alive(pid)
    assert engine.released is not None and engine.released["gpus"] == []
    engine.close()  # twice is fine


def test_start_failure_names_the_cause() -> None:
    engine = IsolatedEngine(HF, EngineConfig.make("hf", "tiny", {"tensor_parallel_size": 2}))
    with pytest.raises(EngineDied, match="tensor_parallel_size=2 is not supported"):
        engine.start()
    assert engine.pid is None or not group_alive(engine.pid)


def test_killed_child_is_reported_with_its_signal() -> None:
    import signal

    engine = IsolatedEngine(HF, EngineConfig.make("hf", "tiny"), stream_timeout_s=30)
    engine.start()
    assert engine.pid is not None
    os.killpg(engine.pid, signal.SIGKILL)
    request = GenerationRequest("a", SamplingParams.fixed_length(3), prompt="hi")
    with pytest.raises(EngineDied, match="SIGKILL"):
        list(engine.stream([request]))
    assert engine.death_cause and "SIGKILL" in engine.death_cause
    engine.close()


def test_mask_maps_cuda_indices_to_physical_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert physical_indices((0, 1)) == (0, 1)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3,5")
    # The run sees three GPUs as 0, 1, 2; its GPUs 1 and 2 are the machine's 3 and 5.
    assert physical_indices((1, 2)) == (3, 5)


def test_isolate_flag_runs_hf_in_children(suite: pytest.Pytester) -> None:
    result = suite.runpytest("-m", "smoke", "--llmperf-isolate")
    result.assert_outcomes(passed=3)
    summary = read_summary(suite)
    # Two grid configurations and the default one: three children, each handed back.
    assert len(summary["engine_handovers"]) == 3
    assert all(h["waited_s"] >= 0 for h in summary["engine_handovers"])
