"""Seed 001's evaluation against an HTTP server: token-id requests that the server answers
as it answers text, and the suite's four rows with samples/s and speedups."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_llmperf import GenerationTask
from pytest_llmperf.engines.base import EngineConfig, StreamChunk
from pytest_llmperf.engines.openai.engine import OpenAIEngine
from pytest_llmperf.results.runs import open_run
from tests.suite_run import REPO, run_suite

SUMS = REPO / "suites" / "data" / "sums_generation.jsonl"
ROWS = ("original_batch8", "first_improvement_batch64", "all_optimizations", "hf_baseline")


def test_repeat_asks_every_item_again_under_its_own_id() -> None:
    once = GenerationTask.load(SUMS, max_tokens=4)
    task = GenerationTask.load(SUMS, max_tokens=4, repeat=4)
    ids = [item.id for item in task.items]
    assert len(ids) == 4 * len(once.items) == len(set(ids))
    assert ids[len(once.items)] == f"{once.items[0].id}#2"
    assert task.items[-1].reference == once.items[-1].reference
    with pytest.raises(ValueError, match=r"GenerationTask\.load: repeat=0: must be at least 1"):
        GenerationTask.load(SUMS, repeat=0)


def _answers(url: str, tokenized: bool) -> dict[int, tuple[int | None, str]]:
    """Prompt tokens (the server's usage count) and text of each sum's answer."""
    settings = {"base_url": url, "tokenized_requests": tokenized, "max_concurrency": 8}
    engine = OpenAIEngine(EngineConfig.make("openai", "tiny", settings))
    engine.start()
    try:
        requests = GenerationTask.load(SUMS, max_tokens=4).build(engine.tokenizer)[:20]
        chunks: list[StreamChunk] = list(engine.stream(requests))
    finally:
        engine.close()
    assert all(c.error is None for c in chunks)
    prompt_tokens = {c.index: c.prompt_tokens for c in chunks if c.prompt_tokens is not None}
    text = {c.index: c.text or "" for c in chunks if c.text}
    assert len(prompt_tokens) == 20
    return {i: (prompt_tokens[i], text.get(i, "")) for i in range(20)}


def test_tokenized_requests_are_answered_as_the_same_text_is(trained_vllm_server: str) -> None:
    """The ids the client makes are the ids the server makes of the text: same prompt
    token counts in the server's usage reports, same greedy answers."""
    as_text = _answers(trained_vllm_server, tokenized=False)
    as_ids = _answers(trained_vllm_server, tokenized=True)
    assert as_ids == as_text
    assert all(count and count > 2 for count, _ in as_text.values())


def test_seed001_rows_report_samples_per_s_and_speedup(
    trained_vllm_server: str, tmp_path: Path
) -> None:
    run = run_suite(
        tmp_path,
        "--engine",
        "openai",
        "--base-url",
        trained_vllm_server,
        "-m",
        "not longform",  # the rows; their A/B steps are the next test's
        target="suites/test_http_eval.py",
    )
    assert run.out.returncode == 0, run.output
    tests = {t["threshold_key"].split("@")[1]: t for t in run.summary()["tests"]}
    assert list(tests) == list(ROWS)
    assert [tests[row]["engine"] for row in ROWS] == ["openai"] * 3 + ["hf"]
    base_rate = tests["original_batch8"]["metrics"]["requests_per_s"]
    for row in ROWS:
        metrics = tests[row]["metrics"]
        assert metrics["requests"] == 3 * 400 and metrics["failures"] == 0
        assert metrics["exact_match"] >= 0.9
        assert metrics["speedup"] == pytest.approx(metrics["requests_per_s"] / base_rate)
        # The bounds of thresholds/cpu/{openai,hf}.yaml were checked for every row.
        checked = {c["metric"] for c in tests[row]["thresholds"]["checked"]}
        assert {"exact_match", "requests_per_s"} <= checked, tests[row]["thresholds"]
        assert tests[row]["thresholds"]["passed"]
    assert tests["original_batch8"]["metrics"]["speedup"] == 1.0


def test_seed001_suite_says_it_needs_an_http_engine(tmp_path: Path) -> None:
    run = run_suite(tmp_path, "--engine", "hf", "-rs", target="suites/test_http_eval.py")
    assert run.out.returncode == 0, run.output
    # The rows, and the two A/B steps (which need one server: --engine openai).
    assert "3 skipped" in run.output
    assert "run with --engine vllm-server or openai" in run.output
    assert "A/B steps on one server: run with --engine openai --base-url URL" in run.output


def test_seed001_steps_are_a_b_tests_on_one_server(
    trained_vllm_server: str, tmp_path: Path
) -> None:
    run = run_suite(
        tmp_path,
        "-m",
        "longform",
        "--engine",
        "openai",
        "--base-url",
        trained_vllm_server,
        target="suites/test_http_eval.py",
    )
    assert run.out.returncode == 0, run.output
    tests = {t.key.split("::")[-1]: t for t in open_run("latest", run.results_dir).tests}
    assert sorted(tests) == [
        "test_eval_step[batch64_to_concurrency4]",
        "test_eval_step[batch8_to_64]",
    ]
    batch = tests["test_eval_step[batch8_to_64]"]
    assert batch.ab is not None and batch.ab["order"] == "ABBABA"
    assert batch.ab["a"]["config"] == "original_batch8"
    assert batch.ab["b"]["config"] == "first_improvement_batch64"
    assert batch.ab["b"]["engine_config"]["settings"]["prompts_per_request"] == 64
    # Eight times the samples a request: faster, in samples/s as in output tok/s.
    assert (batch.metric("ratio.requests_per_s") or 0) > 1.2
    assert (batch.metric("speedup") or 0) > 1.2
    concurrent = tests["test_eval_step[batch64_to_concurrency4]"]
    assert concurrent.ab is not None
    assert concurrent.ab["b"]["engine_config"]["settings"]["max_concurrency"] == 4
    assert len(concurrent.samples_of("speedup")) == 3
