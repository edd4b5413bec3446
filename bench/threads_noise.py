"""CPU runs beside other work: the hf smoke test's tok/s alone and beside a busy neighbour,
with torch's default threads (before issue 24) and with what the plugin now offers (the hf
engine's `n_threads`; xdist workers each on their own share of the cores).

    python bench/threads_noise.py [--cpus 0,1] [--repeats 5]

Everything runs pinned to `--cpus` (taskset), as on a 2-core CI machine. The measured test is
the smoke suite's `test_decode_throughput[batch8]` shape (16 requests, 64 prompt tokens, exactly
32 output tokens, 3 rounds after 1 warm-up) on the built-in tiny model. Scenarios:

    alone                 one pytest, torch's default threads (one per CPU)
    neighbour, default    beside a busy neighbour (a Python loop on one core, as another
                          job's process), default threads: threads outnumber the cores
    neighbour, n_threads  the same, with the grid's `n_threads: <cpus - 1>`
    two at once, default  two pytest processes measuring at once, default threads (what two
                          xdist workers did before: every worker had every core)
    -n 2 (split)          `pytest -n 2` on two tests: the plugin gives each worker its share

Prints one line per scenario: the median output tok/s, min-max and the relative spread, over
`--repeats` runs (for the two-process scenarios, every test's number counts).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TEST = """
import pytest
from pytest_llmperf import SyntheticWorkload, grid_params


@pytest.mark.parametrize("config", grid_params("grid.yaml"))
def test_decode(llmperf, config):
    llmperf.measure(config, SyntheticWorkload(num_requests=16, input_tokens=64, output_tokens=32),
                    rounds=3, warmup_rounds=1)


@pytest.mark.parametrize("config", grid_params("grid.yaml"))
def test_decode_again(llmperf, config):
    llmperf.measure(config, SyntheticWorkload(num_requests=16, input_tokens=64, output_tokens=32),
                    rounds=3, warmup_rounds=1)
"""

GRID = """
schema: 1
configs:
  default: {{max_num_seqs: 8, max_model_len: 512}}
  threads: {{max_num_seqs: 8, max_model_len: 512, n_threads: {threads}}}
"""

NEIGHBOUR = "while True: sum(range(10000))"


def pytest_argv(cpus: str, results: Path, *args: str) -> list[str]:
    return [
        "taskset", "-c", cpus, sys.executable, "-m", "pytest", "test_bench.py", "-q",
        "-p", "no:cacheprovider", "--gpus=cpu", "--llmperf-thresholds-dir=none",
        f"--llmperf-results-dir={results}", *args,
    ]  # fmt: skip


def tok_per_s(results: Path) -> list[float]:
    """Every test's output tok/s of the newest run under `results`."""
    newest = max(results.iterdir(), key=lambda p: p.name)
    summary = json.loads((newest / "summary.json").read_text())
    return [float(t["metrics_flat"]["output_tok_per_s"]) for t in summary["tests"]]


def run(cwd: Path, argvs: list[list[str]], neighbour: str | None) -> None:
    busy = None
    if neighbour is not None:
        busy = subprocess.Popen(["taskset", "-c", neighbour, sys.executable, "-c", NEIGHBOUR])
        time.sleep(0.5)
    try:
        procs = [subprocess.Popen(a, cwd=cwd, stdout=subprocess.PIPE, text=True) for a in argvs]
        for proc in procs:
            out, _ = proc.communicate(timeout=600)
            if proc.returncode != 0:
                raise SystemExit(out[-3000:])
    finally:
        if busy is not None:
            busy.kill()
            busy.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpus", default="0,1")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    cpus = args.cpus.split(",")
    with tempfile.TemporaryDirectory(prefix="llmperf-threads-") as tmp:
        cwd = Path(tmp)
        (cwd / "test_bench.py").write_text(TEST)
        (cwd / "grid.yaml").write_text(GRID.format(threads=max(1, len(cpus) - 1)))
        one = "test_bench.py::test_decode"
        scenarios = {
            "alone": ([["-k", "test_decode[default]"]], None),
            "neighbour, default": ([["-k", "test_decode[default]"]], cpus[-1]),
            "neighbour, n_threads": ([["-k", "test_decode[threads]"]], cpus[-1]),
            "two at once, default": ([["-k", "test_decode[default]"]] * 2, None),
            "-n 2 (split)": ([["-n", "2", "-k", "default"]], None),
        }
        print(f"CPUs {args.cpus}; {args.repeats} runs per scenario; {one}", flush=True)
        for name, (arg_sets, neighbour) in scenarios.items():
            values: list[float] = []
            for i in range(args.repeats):
                dirs = [cwd / f"results-{name}-{i}-{j}".replace(" ", "_").replace(",", "")
                        for j in range(len(arg_sets))]  # fmt: skip
                argvs = [pytest_argv(args.cpus, d, *a) for d, a in zip(dirs, arg_sets, strict=True)]
                run(cwd, argvs, neighbour)
                for d in dirs:
                    values += tok_per_s(d)
            median = statistics.median(values)
            spread = (max(values) - min(values)) / median
            print(
                f"{name:22s} median {median:8.1f} tok/s  min {min(values):8.1f}  "
                f"max {max(values):8.1f}  spread {spread:6.1%}  (n={len(values)})",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    os.environ.pop("OMP_NUM_THREADS", None)  # torch's defaults are what "before" measures
    sys.exit(main())
