"""Accuracy beyond hf: vLLM's prompt log-probabilities, a vLLM server's echo, and servers
that cannot score.

The reference is the hf engine's scoring (float32), itself checked against one-at-a-time
scoring in test_accuracy.py; vLLM runs in float32 here too, so the three agree to float
error, not just in which choice wins.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pytest_llmperf.engines import engine_spec
from pytest_llmperf.engines.base import (
    EngineConfig,
    ScoreRequest,
    ScoreResult,
    ScoringUnsupported,
)
from pytest_llmperf.engines.isolated.parent import IsolatedEngine
from pytest_llmperf.engines.openai.engine import OpenAIEngine
from pytest_llmperf.suite.accuracy import ChoiceTask
from tests.instrument_server import InstrumentServer, Script
from tests.suite_run import REPO, run_suite
from tests.test_accuracy import check_accuracy_suite

#: Summed over a continuation of one or two tokens; kernels differ (vLLM's CPU attention,
#: torch's SDPA): in float32 the largest difference measured was 6e-6 (in bfloat16, 0.07).
#: 1e-3 is still far below the gaps between choices (several nats for the trained model).
TOLERANCE = 1e-3


def requests() -> list[ScoreRequest]:
    task = ChoiceTask.load(REPO / "suites" / "data" / "sums_choice.jsonl")
    # Rows of different lengths, and one continuation of two tokens.
    return [
        *task.requests()[:40],
        ScoreRequest("5 + 5 = 10\n3 + 4 =", " 7"),
        ScoreRequest("9 + 9 =", " 18"),
    ]


@pytest.fixture(scope="module")
def hf_scores() -> list[ScoreResult]:
    from pytest_llmperf.engines.hf.engine import HFEngine

    engine = HFEngine(EngineConfig.make("hf", "tiny-trained", {}))
    engine.start()
    try:
        return engine.score(requests())
    finally:
        engine.close()


def assert_same_scores(got: list[ScoreResult], want: list[ScoreResult]) -> None:
    assert [g.tokens for g in got] == [w.tokens for w in want]
    assert max(abs(g.logprob - w.logprob) for g, w in zip(got, want, strict=True)) < TOLERANCE
    assert [g.greedy for g in got] == [w.greedy for w in want]
    assert any(w.greedy for w in want) and not all(w.greedy for w in want)  # both kinds seen


def test_vllm_prompt_logprobs_equal_hf_scores(hf_scores: list[ScoreResult]) -> None:
    config = EngineConfig.make("vllm", "tiny-trained", {"dtype": "float32", "max_model_len": 256})
    engine = IsolatedEngine(engine_spec("vllm"), config)
    engine.start()
    try:
        assert_same_scores(engine.score(requests()), hf_scores)
    finally:
        engine.close()


def test_vllm_server_echo_scores_equal_hf_scores(
    trained_vllm_server: str, hf_scores: list[ScoreResult]
) -> None:
    engine = OpenAIEngine(EngineConfig.make("openai", "tiny", {"base_url": trained_vllm_server}))
    engine.start()
    try:
        assert_same_scores(engine.score(requests()), hf_scores)
    finally:
        engine.close()


def test_accuracy_suite_through_openai_against_the_vllm_server(
    trained_vllm_server: str, tmp_path: Path
) -> None:
    run = run_suite(
        tmp_path, "-m", "accuracy", "--engine", "openai", "--base-url", trained_vllm_server
    )
    check_accuracy_suite(run, "openai")


def test_accuracy_suite_on_vllm(tmp_path: Path) -> None:
    check_accuracy_suite(run_suite(tmp_path, "-m", "accuracy", "--engine", "vllm"), "vllm")


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        ("refuse", "refused an echo+logprobs request: HTTP 400"),
        ("ignore", "carries no `logprobs.token_logprobs`"),
    ],
)
def test_a_server_that_cannot_score_raises_scoring_unsupported(answer: str, reason: str) -> None:
    with InstrumentServer(Script(echo=answer)) as server:
        engine = OpenAIEngine(EngineConfig.make("openai", "tiny", {"base_url": server.base_url}))
        engine.start()
        try:
            with pytest.raises(ScoringUnsupported, match=re.escape(reason)):
                engine.score(requests()[:4])
        finally:
            engine.close()
        sent = server.requests[0]
        assert sent["echo"] is True and sent["logprobs"] == 1
        assert isinstance(sent["prompt"], list) and all(isinstance(t, int) for t in sent["prompt"])


def test_multiple_choice_is_skipped_with_the_reason_on_such_a_server(tmp_path: Path) -> None:
    with InstrumentServer(Script(echo="refuse")) as server:
        run = run_suite(
            tmp_path,
            "-m",
            "accuracy",
            "-k",
            "multiple_choice",
            "-rs",
            "--engine",
            "openai",
            "--base-url",
            server.base_url,
        )
    assert run.out.returncode == 0, run.output
    assert "1 skipped" in run.out.stdout
    assert "cannot score here: the server refused an echo+logprobs request" in run.out.stdout
