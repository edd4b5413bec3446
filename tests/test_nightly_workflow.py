"""The nightly GPU workflow: a valid workflow file whose commands exist here and work, run
in dry-run form on this CPU machine (the GPU run itself needs the self-hosted runner), with
a window of kept nights that `llmperf trend` judges the newest against."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from fnmatch import fnmatch
from pathlib import Path

import pytest
import yaml

from pytest_llmperf.measure.stats import fewest_runs
from tests.suite_run import REPO

WORKFLOW = REPO / ".github" / "workflows" / "nightly-gpu.yml"
MATRIX = REPO / ".github" / "workflows" / "nightly-gpu-matrix.yml"
SCRIPT = REPO / "scripts" / "nightly.sh"


def test_the_workflow_file_is_a_scheduled_job_on_a_gpu_runner() -> None:
    data = yaml.safe_load(WORKFLOW.read_text())
    triggers = data.get("on", data.get(True))  # YAML 1.1 reads a bare `on` as true
    assert triggers["schedule"][0]["cron"] and "workflow_dispatch" in triggers
    (job,) = data["jobs"].values()
    assert {"self-hosted", "gpu"} <= set(job["runs-on"])
    steps = job["steps"]
    assert all(("uses" in s) != ("run" in s) for s in steps)  # each step does one thing
    assert all("@v" in s["uses"] for s in steps if "uses" in s)  # actions pinned to a version
    commands = [s["run"] for s in steps if "run" in s]
    assert "scripts/nightly.sh" in commands
    # Results are uploaded even when the night is red; only a green night is kept.
    upload = next(s for s in steps if s.get("uses", "").startswith("actions/upload-artifact"))
    assert upload["if"] == "always()"
    by_name = {s.get("name"): s for s in steps}
    assert by_name["Keep this night"]["run"] == "scripts/nightly.sh --keep"
    for name in ("Keep this night", "Save the kept nights"):
        assert by_name[name]["if"] == "success()"
    # The kept nights live in the Actions cache, under one folder, restored by prefix; a run
    # by hand can start them afresh (to accept a change of speed).
    restore, save = by_name["Restore the kept nights"], by_name["Save the kept nights"]
    assert restore["uses"].startswith("actions/cache/restore@")
    assert save["uses"].startswith("actions/cache/save@")
    history = job["env"]["LLMPERF_NIGHTLY_HISTORY"]
    assert restore["with"]["path"] == save["with"]["path"] == history
    assert restore["with"]["restore-keys"] == "llmperf-history-"
    assert save["with"]["key"].startswith("llmperf-history-${{ github.run_id }}")
    assert "restart_history" in restore["if"]
    assert triggers["workflow_dispatch"]["inputs"]["restart_history"]["type"] == "boolean"
    # Enough nights for steps, with tonight; the judgement's window within them.
    keep, window = (
        int(job["env"]["LLMPERF_NIGHTLY_KEEP"]),
        int(job["env"]["LLMPERF_NIGHTLY_WINDOW"]),
    )
    assert keep + 1 >= fewest_runs() and 2 <= window <= keep


def _nights(source: Path, folder: Path, factors: list[float]) -> list[Path]:
    """Copies of a real run as kept nights a day apart, output tok/s times each factor
    (measured in three quiet rounds; the other metrics as values)."""
    nights = []
    for index, factor in enumerate(factors):
        run_id = f"20990101-{index:02d}0000-night{index:02d}"
        copy = folder / run_id
        shutil.copytree(source, copy)
        summary = json.loads((copy / "summary.json").read_text())
        summary["run_id"], summary["started_at"] = run_id, f"2099-01-{index + 1:02d}T02:00:00+0000"
        for test in summary["tests"]:
            test["metrics_flat"]["output_tok_per_s"] *= factor
            # Three quiet rounds (1% apart) around it: the real run's own rounds would not
            # follow the factor, and their spread on this shared machine is no night's.
            level = test["metrics_flat"]["output_tok_per_s"]
            test["samples"] = {"output_tok_per_s": [level * f for f in (0.99, 1.0, 1.01)]}
        (copy / "summary.json").write_text(json.dumps(summary))
        nights.append(copy)
    return nights


def _nightly(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {
        **os.environ,
        "LLMPERF_NIGHTLY_RESULTS": str(tmp_path / "nightly"),
        "LLMPERF_NIGHTLY_HISTORY": str(tmp_path / "history"),
        "LLMPERF_NIGHTLY_MARKERS": "smoke",
        **env,
    }
    return subprocess.run(
        [str(SCRIPT), *args],
        cwd=REPO,
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


@pytest.mark.parametrize(
    ("newest", "status"), [(1.01, 0), (0.5, 1)], ids=["steady", "newest-night-regressed"]
)
def test_the_nightly_script_runs_in_dry_run_form_against_the_kept_nights(
    real_runs: tuple[Path, Path], tmp_path: Path, newest: float, status: int
) -> None:
    """Six kept nights (a dry run writes no run of its own): the newest is judged against the
    five before it, and a night at half speed turns the job red."""
    nights = _nights(real_runs[0], tmp_path / "history", [1.0, 0.98, 1.02, 1.0, 0.99, newest])
    assert os.access(SCRIPT, os.X_OK)
    run = _nightly(tmp_path, "--dry-run")
    out = run.stdout
    assert run.returncode == status, out[-3000:] + run.stderr[-2000:]
    assert f"comparing with the baseline in {nights[-1]} (the newest of 6 kept night(s))" in out
    (tally,) = [line for line in out.splitlines() if re.fullmatch(r"=+ .* in [\d.]+s =+", line)]
    assert "dry run:" in out and "skipped" in tally and "passed" not in tally  # none measured
    assert "nightly: trend over 6 runs; the newest against up to 7 before it" in out
    assert f"newest run {nights[-1].name} against up to 7 runs before it" in out
    # Judged against the five nights before it, and against the first three (a creep).
    regressed = [line for line in out.splitlines() if "REGRESSED" in line]
    assert len(regressed) == 6 * status and all("output_tok_per_s" in r for r in regressed)
    assert (f"{3 * status} metric(s) regressed since the start" in out) == bool(status)
    assert not (tmp_path / "nightly").exists()  # a dry run measures and writes nothing


def test_a_green_night_is_kept_and_the_oldest_beyond_the_count_dropped(
    real_runs: tuple[Path, Path], tmp_path: Path
) -> None:
    kept = _nights(real_runs[0], tmp_path / "history", [1.0, 1.0, 1.0])
    (tonight,) = _nights(real_runs[1], tmp_path / "nightly", [1.0])
    shutil.move(tonight, tmp_path / "nightly" / "20990102-000000-tonight")
    (tmp_path / "nightly" / "report.html").write_text("<html></html>")  # not a night
    run = _nightly(tmp_path, "--keep", LLMPERF_NIGHTLY_KEEP="3")
    assert run.returncode == 0, run.stderr
    left = sorted(p.name for p in (tmp_path / "history").iterdir())
    assert left == [kept[1].name, kept[2].name, "20990102-000000-tonight"]
    assert "nightly: kept 20990102-000000-tonight; 3 night(s) in" in run.stdout
    shutil.rmtree(tmp_path / "nightly")
    nothing = _nightly(tmp_path, "--keep")
    assert nothing.returncode == 1 and "no run in" in nothing.stderr


@pytest.mark.parametrize(
    ("args", "env", "words"),
    [
        (
            ["--wet"],
            {},
            "usage: scripts/nightly.sh [--dry-run] [--shard K/N | --merge DIR] | --keep",
        ),
        (["--keep"], {"LLMPERF_NIGHTLY_KEEP": "two"}, "nightly: not a count: 'two'"),
    ],
)
def test_bad_arguments_are_exit_2(
    tmp_path: Path, args: list[str], env: dict[str, str], words: str
) -> None:
    bad = _nightly(tmp_path, *args, **env)
    assert bad.returncode == 2 and words in bad.stderr


def test_the_matrix_workflow_runs_shards_on_gpu_runners_then_merges_them() -> None:
    jobs = yaml.safe_load(MATRIX.read_text())["jobs"]
    shard, merge = jobs["shard"], jobs["merge"]
    assert {"self-hosted", "gpu"} <= set(shard["runs-on"])
    matrix = shard["strategy"]["matrix"]
    (count,) = matrix["shards"]
    assert matrix["shard"] == list(range(1, count + 1)) and count >= 2
    assert shard["strategy"]["fail-fast"] is False  # every shard measures, whatever one did
    steps = {s.get("name"): s for s in shard["steps"]}
    assert steps["Run this shard of the suites"]["run"] == (
        "scripts/nightly.sh --shard ${{ matrix.shard }}/${{ matrix.shards }}"
    )
    upload = steps["Upload this shard's run"]
    assert upload["if"] == "always()" and upload["with"]["path"] == "results/nightly"
    # The merge job runs whatever the shards did, on every shard's upload.
    assert merge["needs"] == "shard" and merge["if"] == "always()"
    steps = {s.get("name"): s for s in merge["steps"]}
    download = steps["Download the shards' runs"]["with"]
    for k in matrix["shard"]:
        name = upload["with"]["name"].replace("${{ matrix.shard }}", str(k))
        assert fnmatch(name, download["pattern"])
    assert download["merge-multiple"] is True
    assert steps["Merge the shards, judge tonight against the kept nights"]["run"] == (
        f"scripts/nightly.sh --merge {download['path']}"
    )
    # Kept only when every shard and the merged night were green; red when a shard was.
    for name in ("Keep this night", "Save the kept nights"):
        assert steps[name]["if"] == "success() && needs.shard.result == 'success'"
    assert steps["Red when a shard was"]["if"] == "needs.shard.result != 'success'"
    assert all("@v" in s["uses"] for job in jobs.values() for s in job["steps"] if "uses" in s)


def test_the_nightly_script_merges_the_shards_and_judges_the_night(
    shard_runs: tuple[Path, list[Path]], real_runs: tuple[Path, Path], tmp_path: Path
) -> None:
    _nights(real_runs[0], tmp_path / "history", [1.0, 1.0])
    for run in shard_runs[1]:
        shutil.copytree(run, tmp_path / "shards" / run.name)
    run = _nightly(tmp_path, "--merge", str(tmp_path / "shards"))
    out = run.stdout
    assert run.returncode in (0, 1), out[-3000:] + run.stderr[-2000:]  # 1: the trend's noise
    assert "error" not in run.stderr, run.stderr
    assert "test(s) of 2 runs" in out
    (tonight,) = [p for p in (tmp_path / "nightly").iterdir() if p.is_dir()]
    assert tonight.name.endswith("-merged")
    assert len(json.loads((tonight / "summary.json").read_text())["tests"]) == 3
    assert "nightly: trend over 3 runs" in out
    assert (tmp_path / "nightly" / "report.html").exists()


def test_a_shard_of_the_nightly_runs_only_its_part(tmp_path: Path) -> None:
    run = _nightly(tmp_path, "--dry-run", "--shard", "2/2")
    out = run.stdout
    assert run.returncode == 0, out[-3000:] + run.stderr[-2000:]
    (tally,) = [line for line in out.splitlines() if re.fullmatch(r"=+ .* in [\d.]+s =+", line)]
    assert "deselected" in tally and "skipped" in tally
    assert "trend" not in out  # the merge job judges the night
