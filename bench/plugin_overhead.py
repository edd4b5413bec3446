"""What the plugin costs: N identical tiny-model tests through pytest-llmperf beside the same
engine calls in a plain loop, in one run; and how long collecting a 1,000-point grid takes.

    .venv/bin/python bench/plugin_overhead.py [--tests 50] [--engine hf]

Overhead per test = ((wall time of a pytest run of N tests) - (the same run with 1 test)
- (N - 1 of the same engine calls in a plain loop)) / (N - 1): everything the plugin and
pytest add per test, start-up and engine loading cancelled out. Each test measures one round
of one request (8 prompt + 8 output tokens), no warm-up, so the engine's part is small and
the plugin's shows: starting the test, building the workload, timing, records on disk
(JSONL), pytest-benchmark, thresholds and the summary line.

Collection: a module parametrized with a 10 x 10 x 10 product grid
(`Grid.product`), `pytest --collect-only -q`; pytest's own "collected in" time.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

SUITE = """
import pytest
from pytest_llmperf import SyntheticWorkload

@pytest.mark.parametrize("n", range({tests}))
def test_small(llmperf, n):
    llmperf.measure(workload=SyntheticWorkload(num_requests=1, input_tokens=8,
                                               output_tokens=8), rounds=1, warmup_rounds=0)
"""

GRID = """
import pytest
from pytest_llmperf import Grid, SyntheticWorkload, grid_params

GRID = Grid.product({"max_num_seqs": list(range(1, 11)), "max_model_len": [256 * k for k in
                     range(1, 11)], "max_new_tokens": list(range(8, 18))})

@pytest.mark.parametrize("config", grid_params(GRID))
def test_point(llmperf, config):
    pass
"""


def plain_loop(engine_name: str, tests: int) -> float:
    """The N engine calls alone: one request of 8 + 8 tokens each, timed as a whole."""
    from pytest_llmperf.engines import load_engine_class
    from pytest_llmperf.engines.base import EngineConfig
    from pytest_llmperf.measure.harness import run_round
    from pytest_llmperf.suite.workload import SyntheticWorkload

    engine = load_engine_class(engine_name)(EngineConfig.make(engine_name, "tiny", {}))
    engine.start()
    try:
        requests = SyntheticWorkload(num_requests=1, input_tokens=8, output_tokens=8).build(
            engine.tokenizer
        )
        run_round(engine, requests, 0)  # the plugin's run also loads the engine first
        start = time.perf_counter()
        for index in range(tests):
            run_round(engine, requests, index)
        return time.perf_counter() - start
    finally:
        engine.close()


def plugin_wall(engine_name: str, tests: int) -> float:
    """Wall time of a whole pytest run of `tests` such tests (start-up, engine load,
    collection, every test, the summary and result files)."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "test_overhead.py").write_text(textwrap.dedent(SUITE.format(tests=tests)))
        (folder / "pytest.ini").write_text("[pytest]\n")
        start = time.perf_counter()
        subprocess.run(
            [
                *(sys.executable, "-m", "pytest", str(folder), "-q", "-p", "no:cacheprovider"),
                *("--engine", engine_name, "--llmperf-results-dir", str(folder / "results")),
            ],
            cwd=folder,
            check=True,
            capture_output=True,
        )
        return time.perf_counter() - start


def collect_grid() -> tuple[float, float]:
    """(pytest's "collected in" seconds, the whole `--collect-only` command's wall time)."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "test_grid.py").write_text(textwrap.dedent(GRID))
        (folder / "pytest.ini").write_text("[pytest]\n")
        start = time.perf_counter()
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                str(folder),
                "--collect-only",
                "-q",
                "-p",
                "no:cacheprovider",
            ],
            cwd=folder,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        wall = time.perf_counter() - start
    found = re.search(r"(\d+) tests? collected in ([0-9.]+)s", out)
    if not found or int(found.group(1)) != 1000:
        raise SystemExit(f"unexpected collection output:\n{out[-500:]}")
    return float(found.group(2)), wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tests", type=int, default=50)
    parser.add_argument("--engine", default="hf")
    args = parser.parse_args()
    one = plugin_wall(args.engine, 1)
    many = plugin_wall(args.engine, args.tests)
    counted = args.tests - 1
    span = many - one
    plain = plain_loop(args.engine, counted)
    per_test_ms = (span - plain) / counted * 1000
    print(
        f"plugin: {args.tests} tests {many:.2f} s, 1 test {one:.2f} s: "
        f"{span / counted * 1000:.1f} ms per added test"
    )
    print(f"plain loop: the same engine call {plain / counted * 1000:.1f} ms each")
    print(f"overhead per test: {per_test_ms:.1f} ms ({per_test_ms / 5000:.2%} of a 5 s test)")
    collected, wall = collect_grid()
    print(f"collecting a 1,000-point grid: {collected:.2f} s ({wall:.2f} s for the whole command)")


if __name__ == "__main__":
    main()
