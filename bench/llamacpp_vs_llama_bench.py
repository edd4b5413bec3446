"""Our llamacpp engine's pp and tg beside llama.cpp's own `llama-bench` and llama-cpp-python's
raw calls, on the same GGUF files, in one run.

    scripts/build_llama_cpp_tools.sh        # once: llama-bench from the vendored llama.cpp
    .venv/bin/python bench/llamacpp_vs_llama_bench.py [--quantizations F16 Q8_0] [--rounds 5]

Three ways to measure prompt processing of 128 tokens (pp128) and generation of 128 tokens
(tg128), each on one sequence:
- llama-bench: `-p 128 -n 128 -r ROUNDS -t THREADS`, its average tokens per second
  (pp: one llama_decode of the 128 prompt tokens; tg: 128 single-token llama_decode calls,
  no sampling, no detokenizing).
- raw: llama-cpp-python's high-level `Llama.eval` in a plain loop (the same work as
  llama-bench, through Python), median of ROUNDS.
- plugin: `pytest suites/test_prefill_decode.py --engine llamacpp --model FILE.gguf`
  (pp_tok_per_s from TTFT of a 128-token prompt producing one token, sampling included;
  tg_tok_per_s = 1000 / TPOT of a 128-token generation; see
  pytest_llmperf/measure/prefill_decode.py),
  with its default threads (the CPUs it may use: keep the default --threads to compare like
  with like).
Prints a Markdown table for BENCHMARKS.md.
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

REPO = Path(__file__).resolve().parent.parent
LLAMA_BENCH = REPO / ".cache" / "llama.cpp-tools" / "build" / "bin" / "llama-bench"


def llama_bench(gguf: Path, threads: int, rounds: int) -> dict[str, float]:
    out = subprocess.run(
        [
            *(str(LLAMA_BENCH), "-m", str(gguf), "-p", "128", "-n", "128"),
            *("-t", str(threads), "-r", str(rounds), "-o", "json"),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    rows = json.loads(out.stdout)
    speeds = {}
    for row in rows:
        kind = "pp" if row["n_prompt"] and not row["n_gen"] else "tg"
        speeds[kind] = float(row["avg_ts"])
    return speeds


def raw_calls(gguf: Path, threads: int, rounds: int) -> dict[str, float]:
    from llama_cpp import Llama

    llm = Llama(str(gguf), n_ctx=512, n_batch=512, n_threads=threads, verbose=False)
    prompt = list(range(10, 138))
    pp, tg = [], []
    for _ in range(rounds + 1):  # the first is warm-up
        llm.reset()
        start = time.perf_counter()
        llm.eval(prompt)
        pp.append(128 / (time.perf_counter() - start))
        start = time.perf_counter()
        for token in range(200, 328):
            llm.eval([token])
        tg.append(128 / (time.perf_counter() - start))
    llm.close()
    return {"pp": statistics.median(pp[1:]), "tg": statistics.median(tg[1:])}


def plugin(gguf: Path) -> dict[str, float]:
    """The pp/tg suite on `gguf` (`--model FILE.gguf`); the engine's threads default to
    the CPUs this process may use, as `--threads` does here."""
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [
                *(sys.executable, "-m", "pytest", "suites/test_prefill_decode.py", "-m", "smoke"),
                *("--engine", "llamacpp", "--model", str(gguf), "-p", "no:cacheprovider", "-q"),
                *("--llmperf-results-dir", tmp),
            ],
            cwd=REPO,
            check=False,
            capture_output=True,
        )
        summary = json.loads(next(Path(tmp).glob("*/summary.json")).read_text())
    metrics = {t["test_id"].rsplit("::", 1)[1]: t["metrics"] for t in summary["tests"]}
    return {
        "pp": metrics["test_prompt_processing"]["pp_tok_per_s"],
        "tg": metrics["test_token_generation"]["tg_tok_per_s"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quantizations", nargs="+", default=["F16", "Q8_0"])
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    from pytest_llmperf.models.gguf import gguf_model

    print(
        "| GGUF | pp128 llama-bench | pp128 raw | pp128 plugin | tg128 llama-bench | "
        "tg128 raw | tg128 plugin |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for quantization in args.quantizations:
        gguf = gguf_model("tiny", quantization)
        bench = llama_bench(gguf, args.threads, args.rounds) if LLAMA_BENCH.exists() else {}
        raw = raw_calls(gguf, args.threads, args.rounds)
        ours = plugin(gguf)
        cells = [
            f"{source.get(kind, float('nan')):,.0f}"
            for kind in ("pp", "tg")
            for source in (bench, raw, ours)
        ]
        print(f"| tiny {quantization} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
