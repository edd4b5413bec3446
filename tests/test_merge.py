"""Shards and merge: `--llmperf-shard K/N` runs part of a suite, `llmperf merge` joins the
parts' runs into one, as a CI matrix of runners does."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from pytest_llmperf.cli import main
from pytest_llmperf.results.runs import read_run
from pytest_llmperf.suite.shard import parse_shard, split


def test_shards_keep_each_configuration_whole_and_are_about_even() -> None:
    items = ["a1", "a2", "a3", "b1", "c1", "c2", "d1"]
    shards = split(items, lambda item: item[0], 2)
    assert shards == [["a1", "a2", "a3", "d1"], ["b1", "c1", "c2"]]
    assert sorted(item for shard in shards for item in shard) == sorted(items)
    assert split(items, lambda item: item[0], 5)[4] == []  # more shards than configurations
    assert parse_shard(" 2/3 ") == (2, 3)
    for bad in ("0/2", "3/2", "1", "a/b", "1/0"):
        with pytest.raises(pytest.UsageError, match=r"--llmperf-shard: '.*'"):
            parse_shard(bad)


def test_merged_shards_are_one_run_of_the_whole_suite(
    shard_runs: tuple[Path, list[Path]],
    real_runs: tuple[Path, Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    root, (first, second) = shard_runs
    parts = [read_run(first), read_run(second)]
    assert [p.summary["settings"]["shard"] for p in parts] == [[1, 2], [2, 2]]
    assert all(p.tests for p in parts)  # each shard measured something
    out = root / "merged"
    assert main(["merge", str(first), str(second), "-o", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    merged = read_run(out)
    whole = read_run(real_runs[0])  # a single run of the same suite
    assert sorted(t.test_id for t in merged.tests) == sorted(t.test_id for t in whole.tests)
    # Verdicts as each shard judged them: test_latency missed its bound, test_decode met its.
    judged = {t.test_id: t for p in parts for t in p.tests}
    for test in merged.tests:
        assert test.thresholds == judged[test.test_id].thresholds
        assert test.metrics_flat == judged[test.test_id].metrics_flat
    verdicts = {t.test_id.split("::")[1]: t.thresholds.passed for t in merged.tests}
    assert verdicts == {
        "test_decode[batch1]": True,
        "test_decode[batch4]": True,
        "test_latency": False,
    }
    assert merged.summary["outcomes"]["test_suite.py::test_latency"] == "failed"
    assert [m["run_id"] for m in merged.summary["merged_from"]] == [first.name, second.name]
    requests = (out / "requests.jsonl").read_text().splitlines()
    assert len(requests) == sum(1 for p in parts for _ in p.requests())
    assert (out / "github-benchmark" / "bigger_is_better.json").exists()
    # `llmperf compare` reads the merged run as any other.
    assert main(["compare", str(real_runs[0]), str(out), "--all"]) in (0, 1)
    assert "test_latency" in capsys.readouterr().out


def test_merge_refuses_a_test_measured_twice(
    shard_runs: tuple[Path, list[Path]], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    _, (first, _) = shard_runs
    again = tmp_path / "again"
    shutil.copytree(first, again)
    summary = json.loads((again / "summary.json").read_text())
    summary["run_id"] = "again"
    (again / "summary.json").write_text(json.dumps(summary))
    assert main(["merge", str(first), str(again), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "measured in more than one run, nothing written" in err
    assert f"(in {first.name} and again)" in err
    assert not (tmp_path / "out").exists()
