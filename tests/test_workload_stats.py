"""`llmperf workload stats`: dataset length percentiles and the covering max-new-tokens."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pytest_llmperf.cli import main
from pytest_llmperf.suite.workload_stats import coverage, covering_limit


def test_covering_limit_is_the_smallest_length_that_covers_the_share() -> None:
    lengths = list(range(1, 101))  # 1..100
    assert covering_limit(lengths, 0.9) == 90
    assert covering_limit(lengths, 1.0) == 100
    assert covering_limit(lengths, 0.005) == 1
    assert coverage(lengths, 90) == 0.9 and coverage([5, 50, 500], 50) == pytest.approx(2 / 3)


def test_stats_of_a_dataset_in_the_models_tokens(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from transformers import AutoTokenizer

    from pytest_llmperf.models.names import tiny_model_path

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_path())
    words = "the engine measures every batch and every cache"
    rows = [
        {"custom_id": f"r{i}", "prompt": "Explain the cache.", "reference": " ".join([words] * i)}
        for i in range(1, 21)
    ]
    dataset = tmp_path / "d.jsonl"
    dataset.write_text("".join(json.dumps(r) + "\n" for r in rows))
    lengths = sorted(len(tokenizer.encode(r["reference"], add_special_tokens=False)) for r in rows)
    assert main(["workload", "stats", str(dataset), "--coverage", "0.75"]) == 0
    out = capsys.readouterr().out
    assert "20 items" in out and "output tokens (20 references)" in out
    assert f"max-new-tokens covering 75% of outputs: {lengths[14]}" in out
    assert f"max {lengths[-1]}" in out


def test_a_broken_dataset_line_is_exit_2_naming_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dataset = tmp_path / "d.jsonl"
    dataset.write_text('{"custom_id": "a", "prompt": "x"}\n{"custom_id": "b", "promt": "y"}\n')
    assert main(["workload", "stats", str(dataset)]) == 2
    assert f"{dataset}: line 2: unknown field(s) promt" in capsys.readouterr().err
    assert main(["workload", "stats", str(dataset), "--coverage", "1.5"]) == 2
