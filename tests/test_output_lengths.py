"""Seed 003's length scenarios: n-predict follows the dataset's answers, in the model's
tokens, and each scenario generates exactly that many tokens with its coverage recorded."""

from __future__ import annotations

import json
from pathlib import Path

from pytest_llmperf import coverage, covering_limit, reference_lengths
from pytest_llmperf.engines.base import EngineConfig
from pytest_llmperf.suite.workload import DatasetItem, load_dataset, offline_tokenizer
from tests.suite_run import REPO, run_suite

DATASET = REPO / "suites" / "data" / "longform_answers.jsonl"


def test_covering_limit_is_the_smallest_length_that_covers_the_share() -> None:
    lengths = [10, 20, 30, 40]
    assert covering_limit(lengths, 0.75) == 30
    assert covering_limit(lengths, 0.76) == 40
    assert coverage(lengths, 30) == 0.75


def test_reference_lengths_count_the_answers_in_the_model_tokens() -> None:
    tokenizer = offline_tokenizer(EngineConfig.make("hf", "tiny", {}))
    assert tokenizer is not None
    items = [
        DatasetItem("a", "x", None, 8, reference=" one two three", line=1),
        DatasetItem("b", "x", None, 8, reference=None, line=2),
    ]
    assert reference_lengths(items, tokenizer) == [len(tokenizer.encode(" one two three"))]


def test_scenarios_generate_the_covering_length_of_the_dataset(tmp_path: Path) -> None:
    run = run_suite(tmp_path, "-m", "longform", target="suites/test_output_lengths.py")
    assert run.out.returncode == 0, run.output
    tokenizer = offline_tokenizer(EngineConfig.make("hf", "tiny", {}))
    lengths = reference_lengths(load_dataset(DATASET), tokenizer)
    tests = {t["test_id"].split("[")[1].rstrip("]"): t for t in run.summary()["tests"]}
    assert sorted(tests) == ["comprehensive", "conservative", "recommended"]
    for scenario, share in (("conservative", 0.75), ("recommended", 0.9), ("comprehensive", 0.99)):
        n_predict = covering_limit(lengths, share)
        metrics = tests[scenario]["metrics"]
        assert metrics["output_coverage"] == coverage(lengths, n_predict) >= share
        assert tests[scenario]["workload"]["output_tokens"] == n_predict
        assert metrics["tg_tok_per_s"] > 0
        assert tests[scenario]["thresholds"]["passed"]
    records = [
        json.loads(line)
        for p in run.results_dir.glob("*/requests*.jsonl")
        for line in p.read_text().splitlines()
    ]
    assert {r["output_tokens"] for r in records} == {
        covering_limit(lengths, s) for s in (0.75, 0.9, 0.99)
    }
