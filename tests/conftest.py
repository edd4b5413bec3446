"""Shared helpers for the plugin's own tests: they drive pytest as users do (pytester)."""

from __future__ import annotations

import json
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pytest_llmperf.measure.metrics import ENTRY_POINT_GROUP, installed_metric_specs
from pytest_llmperf.models.names import trained_model_path
from pytest_llmperf.results.runs import find_runs
from tests.cpu_vllm_server import cpu_vllm_server
from tests.suite_run import make_project, run_project


def pytest_configure(config: pytest.Config) -> None:
    # CI has 45 minutes on 2 cores: its log names the slowest tests, so that the time a
    # change adds is seen where it lands (`--durations N` on the command line wins).
    if config.option.durations is None:
        config.option.durations = 40


# A benchmark test module as a user would write it, small enough for seconds on a CPU.
SUITE = textwrap.dedent(
    """
    import pytest
    from pytest_llmperf import Grid, SyntheticWorkload, grid_params

    GRID = Grid.product({"max_num_seqs": [1, 4]}, base={"max_model_len": 256})

    @pytest.mark.smoke
    @pytest.mark.parametrize("config", grid_params(GRID))
    def test_decode(llmperf, config):
        result = llmperf.measure(
            config, SyntheticWorkload(num_requests=4, input_tokens=16, output_tokens=8),
            rounds=3, warmup_rounds=1,
        )
        assert result.metrics.requests == 12

    @pytest.mark.smoke
    def test_latency(llmperf):
        llmperf.measure(workload=SyntheticWorkload(num_requests=1, input_tokens=8,
                                                   output_tokens=8), rounds=5)
    """
)


@pytest.fixture
def suite(pytester: pytest.Pytester) -> pytest.Pytester:
    """A pytester folder holding the small suite above."""
    pytester.makepyfile(test_suite=SUITE)
    return pytester


@pytest.fixture
def installed_metrics(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[[str], None]]:
    """Install a package that adds metrics, as pip would leave it (a module and its
    dist-info with an entry point in `pytest_llmperf.metrics`): call it with the module's
    source after `from pytest_llmperf.measure.metrics import MetricSpec`; its `SPECS` are
    the entry point's."""

    def install(source: str) -> None:
        folder = tmp_path / "site"
        dist = folder / "my_metrics-1.0.dist-info"
        dist.mkdir(parents=True)
        (folder / "my_metrics.py").write_text(
            "from pytest_llmperf.measure.metrics import MetricSpec\n" + source + "\n"
        )
        (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: my-metrics\nVersion: 1.0\n")
        (dist / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\nmine = my_metrics:SPECS\n")
        monkeypatch.delitem(sys.modules, "my_metrics", raising=False)
        monkeypatch.syspath_prepend(folder)
        installed_metric_specs.cache_clear()  # read once per process; read it again

    yield install
    installed_metric_specs.cache_clear()


def only_run(pytester: pytest.Pytester) -> Path:
    """The single run folder under results/."""
    runs = [p for p in (pytester.path / "results").iterdir() if p.is_dir()]
    assert len(runs) == 1, runs
    return runs[0]


def read_summary(pytester: pytest.Pytester) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((only_run(pytester) / "summary.json").read_text())
    return data


@pytest.fixture(scope="session")
def trained_vllm_server() -> Iterator[str]:
    """vLLM's OpenAI server (CPU build) on tiny-trained, float32, on loopback: started once
    per session (about 50 s) for every test that asks a real server about the sums."""
    with cpu_vllm_server(trained_model_path(), max_model_len=256, dtype="float32") as url:
        yield url


@pytest.fixture(scope="session")
def real_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two real runs of the small suite above, one after the other, made once per session:
    run folders as the plugin writes them, whose numbers differ by this machine's own noise
    (a series of runs copies them; about 20 s each)."""
    root = make_project(tmp_path_factory.mktemp("real_runs"), SUITE)
    for _ in range(2):
        out = run_project(root)
        assert out.returncode == 0, out.stdout[-3000:]
    first, second = (run.path for run in find_runs(root / "results"))  # in the order they ran
    return first, second


# Bounds for the small suite: met by any run (test_decode), and one no run meets (test_latency).
GATED_THRESHOLDS = textwrap.dedent(
    """
    schema: 1
    tests:
      "test_suite.py::test_decode*":
        output_tok_per_s: {min: 0.001}
        ttft_ms.p90: {max: 1000000}
      "test_suite.py::test_latency":
        e2e_ms.p90: {max: 0.001}
    """
)


@pytest.fixture(scope="session")
def gated_run(real_runs: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real run of the small suite judged every way the gate judges: against thresholds
    (bounds met, and one that test_latency misses), against the first real run as its
    baseline (`--llmperf-compare`), with rounds until decided (`--llmperf-rounds auto`, at
    most 5); its exports written with its summary. test_latency fails, so pytest exits 1."""
    root = make_project(tmp_path_factory.mktemp("gated"), SUITE)
    (root / "thresholds" / "cpu").mkdir(parents=True)
    (root / "thresholds" / "cpu" / "hf.yaml").write_text(GATED_THRESHOLDS)
    out = run_project(
        root,
        "--llmperf-compare",
        str(real_runs[0]),
        "--llmperf-rounds",
        "auto",
        "--llmperf-max-rounds",
        "5",
    )
    assert out.returncode == 1, out.stdout[-3000:]
    (run_dir,) = (root / "results").iterdir()
    tests = json.loads((run_dir / "summary.json").read_text())["tests"]
    assert len(tests) == 3 and all(t["baseline"] and t["stop"] for t in tests), out.stdout
    return run_dir


@pytest.fixture(scope="session")
def shard_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    """The small suite run as two shards (`--llmperf-shard`; made once per session), judged
    against thresholds (test_latency misses its bound): the project's folder and the two
    runs, shard 1 first."""
    root = make_project(tmp_path_factory.mktemp("shards"), SUITE)
    (root / "thresholds" / "cpu").mkdir(parents=True)
    (root / "thresholds" / "cpu" / "hf.yaml").write_text(GATED_THRESHOLDS)
    for k in (1, 2):
        out = run_project(root, f"--llmperf-shard={k}/2", "-m", "smoke")
        assert out.returncode in (0, 1), out.stdout[-3000:] + out.stderr[-2000:]
        assert "deselected" in out.stdout.splitlines()[-1], out.stdout[-2000:]
    return root, [run.path for run in find_runs(root / "results")]
