"""Issue 24, point 3: CPU runs that hold still, and say how they shared the cores.

Before: the hf engine had no thread setting, run.json recorded no thread environment, and
`-n 2` on a CPU run measured two tests at once on the same cores (560 against 2,160 tok/s
alone) without a word. Real runs of the hf engine on the tiny model; the effect on the
numbers is measured by `bench/threads_noise.py` (BENCHMARKS.md).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pytest_llmperf.hardware.threads import cpu_shares
from pytest_llmperf.results.runs import open_run

SUITE = """
import pytest
from pytest_llmperf import Config, Grid, SyntheticWorkload, grid_params

WORK = SyntheticWorkload(num_requests=2, input_tokens=8, output_tokens=4)
GRID = Grid.of([Config.make("one", {"n_threads": 1}), Config.make("default", {})])


@pytest.mark.parametrize("config", grid_params(GRID))
def test_threads(llmperf, config):
    llmperf.measure(config, WORK, rounds=1, warmup_rounds=0)


def test_other(llmperf):
    llmperf.measure(workload=WORK, rounds=1, warmup_rounds=0)
"""


def run(root: Path, *args: str, env: dict[str, str], cpus: set[int] | None = None) -> Any:
    """`pytest test_suite.py ARGS` in `root` with environment `env`, on `cpus`."""
    (root / "test_suite.py").write_text(SUITE)
    (root / "pytest.ini").write_text("[pytest]\n")
    return subprocess.run(
        [sys.executable, "-m", "pytest", "test_suite.py", "-p", "no:cacheprovider", *args],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None,
    )


def run_json(root: Path) -> dict[str, Any]:
    (run_dir,) = (root / "results").iterdir()
    data: dict[str, Any] = json.loads((run_dir / "run.json").read_text())
    return data


def details(root: Path) -> dict[str, dict[str, Any]]:
    return {t.key: dict(t.engine_info.details) for t in open_run("latest", root / "results").tests}


def test_run_json_records_the_threads_and_n_threads_sets_torchs(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    env["OMP_NUM_THREADS"] = "2"
    out = run(tmp_path, env=env)
    assert out.returncode == 0, out.stdout[-3000:]
    threads = run_json(tmp_path)["threads"]
    allowed = sorted(os.sched_getaffinity(0))
    assert threads["omp_num_threads"] == "2" and threads["mkl_num_threads"] is None
    assert threads["cpus_allowed"] == allowed and threads["cpus_allowed_count"] == len(allowed)
    assert threads["torch_num_threads"] in (1, 2) and threads["torch_num_interop_threads"] >= 1
    used = details(tmp_path)
    # n_threads applies while its engine is loaded; the next engine gets the process's back.
    assert used["test_suite.py::test_threads[one]"]["torch_num_threads"] == 1
    assert used["test_suite.py::test_threads[default]"]["torch_num_threads"] == 2
    assert used["test_suite.py::test_other"]["torch_num_threads"] == 2


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs 2 CPUs to split")
def test_xdist_workers_on_a_cpu_run_each_get_their_share_of_the_cores(tmp_path: Path) -> None:
    out = run(tmp_path, "-n", "2", env=dict(os.environ))
    assert out.returncode == 0, out.stdout[-3000:]
    threads = run_json(tmp_path)["threads"]
    cpus = sorted(os.sched_getaffinity(0))
    half = len(cpus) // 2
    assert threads["xdist"] == {
        "workers": 2,
        "split": True,
        "shares": {"gw0": cpus[:half], "gw1": cpus[half : 2 * half]},
    }
    for worker, share in threads["xdist"]["shares"].items():
        seen = threads["workers"][worker]
        assert seen["cpus_allowed"] == share, seen
        assert seen["omp_num_threads"] == os.environ.get("OMP_NUM_THREADS", str(half))
    for test, used in details(tmp_path).items():
        if not test.endswith("[one]"):
            assert used["cpus_allowed_count"] == half and used["torch_num_threads"] == half
    assert "note: 2 xdist workers measured side by side, each on its own share" in out.stdout


def test_workers_that_cannot_be_split_and_oversubscribed_threads_are_warned(
    tmp_path: Path,
) -> None:
    one_cpu = {min(os.sched_getaffinity(0))}
    out = run(tmp_path, "-n", "2", env={**os.environ, "OMP_NUM_THREADS": "3"}, cpus=one_cpu)
    assert out.returncode == 0, out.stdout[-3000:]
    threads = run_json(tmp_path)["threads"]
    assert threads["xdist"] == {
        "workers": 2,
        "split": False,
        "shares": {},
        "not_split": "fewer CPUs than workers",
    }
    assert (
        "warning: 2 xdist workers measured at the same time on 1 shared CPUs (fewer CPUs than "
        "workers): measured tests competed for cores"
    ) in out.stdout, out.stdout[-3000:]
    used = details(tmp_path)["test_suite.py::test_other"]  # torch caps 3 at the machine's
    assert used["cpus_allowed_count"] == 1 and used["torch_num_threads"] > 1
    assert (
        f"warning: test_suite.py::test_other: torch ran {used['torch_num_threads']} threads on 1 "
        "usable CPUs: threads that outnumber the cores slow each other"
    ) in out.stdout


def test_shares_are_equal_and_never_overlap() -> None:
    assert cpu_shares([0, 1, 2, 3, 4], 2) == [(0, 1), (2, 3)]
    assert cpu_shares([0, 1], 2) == [(0,), (1,)]
    assert cpu_shares([3], 2) is None
