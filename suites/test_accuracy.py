"""Accuracy tier: the model must still know what it knew, measured beside its speed.

pytest suites/ -m accuracy                          # "tiny-trained" on hf: one-digit sums
pytest suites/ -m accuracy --engine vllm            # the same questions through vLLM
pytest suites/ -m accuracy --engine vllm-server     # through vLLM's OpenAI server
pytest suites/ -m accuracy --engine openai --base-url http://127.0.0.1:8000

With the built-in model (`--model tiny`, the default) these tests use "tiny-trained",
tiny's configuration trained on the hundred one-digit sums the datasets ask
(`pytest_llmperf.models.tiny_trained`); with `--model PATH` they ask that model. Through
`--engine openai` they ask what the server serves: start it on the directory that
`python -m pytest_llmperf.tinymodel tiny-trained` prints. Multiple choice needs an engine
that scores log-likelihoods (hf, vllm, and servers that echo prompt log-probabilities,
as vLLM's does); on others it is skipped with the reason. Bounds are in
`thresholds/<hardware>/<engine>.yaml` beside the speed bounds.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_llmperf import ChoiceTask, GenerationTask

DATA = Path(__file__).parent / "data"


def _model(llmperf):
    if llmperf.session.settings.model != "tiny" or llmperf.engine_config().engine == "openai":
        return None  # the model asked for, or the one the server serves
    return "tiny-trained"


@pytest.mark.accuracy
def test_sums_multiple_choice(llmperf):
    """Four choices per question, scored by log-likelihood in batched forward passes."""
    result = llmperf.evaluate_choices(
        ChoiceTask.load(DATA / "sums_choice.jsonl"), model=_model(llmperf)
    )
    assert result.metrics.extra["accuracy"] is not None


@pytest.mark.accuracy
def test_sums_generation(llmperf):
    """Greedy answers, stopped at a new line, against the references: exact match and F1."""
    task = GenerationTask.load(DATA / "sums_generation.jsonl", max_tokens=4)
    result = llmperf.measure(
        workload=task, rounds=1, warmup_rounds=1, model=_model(llmperf), score=task.score
    )
    assert result.metrics.failures == 0
