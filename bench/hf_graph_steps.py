"""Where a decode step's time goes on the hf-fast engine's CUDA-graph path: the engine's stream
consumed directly vs through the harness's round, and the host's own time per step.

    python bench/hf_graph_steps.py --model /tmp/llama1b --batch 1 32 [--profile DIR]

Per batch size: one request per row, 128 prompt + 256 fixed new tokens; two warm-up
streams (graph build), then three of each kind. Prints ms per step (wall of the stream /
256) and the host's busy time per step (time not spent waiting on the GPU's event).
With --profile, one more stream runs under torch.profiler and DIR/kernels-b<batch>.txt
gets its GPU kernels by total time (kernels inside the CUDA graph's replays included).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from pytest_llmperf.engines.base import EngineConfig, GenerationRequest, SamplingParams
from pytest_llmperf.engines.hf.fast import HFFastEngine
from pytest_llmperf.measure.harness import run_round


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--profile", type=Path, help="write kernel tables here")
    parser.add_argument("--settings", default="{}", help="extra hf-fast settings, JSON")
    parser.add_argument(
        "--no-coordinate-descent",
        action="store_true",
        help="compile without Inductor's coordinate-descent tuning (GEMVs stay cuBLAS calls)",
    )
    parser.add_argument(
        "--inductor", nargs="*", default=[], help="Inductor config NAME=JSON_VALUE to try"
    )
    args = parser.parse_args()
    import pytest_llmperf.engines.hf.graph as hf_graph

    waited = [0.0]
    collect = hf_graph.DecodeGraph.collect

    def timed_collect(self: hf_graph.DecodeGraph) -> list[int]:
        start = time.perf_counter()
        out = collect(self)
        waited[0] += time.perf_counter() - start
        return out

    hf_graph.DecodeGraph.collect = timed_collect  # type: ignore[method-assign]
    if args.no_coordinate_descent:
        hf_graph._tune_inductor = lambda: None
    for assignment in args.inductor:
        import torch._inductor.config as inductor

        name, value = assignment.split("=", 1)
        setattr(inductor, name, json.loads(value))
    for batch in args.batch:
        engine = HFFastEngine(
            EngineConfig.make(
                "hf-fast", args.model, {"max_num_seqs": batch, **json.loads(args.settings)}, [0]
            )
        )
        engine.start()
        ids = tuple(range(10, 138))
        requests = [
            GenerationRequest(str(i), SamplingParams.fixed_length(256), prompt_token_ids=ids)
            for i in range(batch)
        ]
        for _ in range(2):
            list(engine.stream(requests))
        row: dict[str, float] = {}
        for kind in ("direct", "harness"):
            walls, busy = [], []
            for index in range(3):
                waited[0] = 0.0
                start = time.perf_counter()
                if kind == "direct":
                    list(engine.stream(requests))
                else:
                    run_round(engine, requests, index)
                wall = time.perf_counter() - start
                walls.append(wall / 256 * 1000)
                busy.append((wall - waited[0]) / 256 * 1000)
            row[f"{kind}_ms_per_step"] = min(walls)
            row[f"{kind}_host_busy_ms_per_step"] = min(busy)
        print(json.dumps({"batch": batch, **row}), flush=True)
        if "pytest_llmperf.engines.hf.triton.decode" in sys.modules:
            tiles = sys.modules["pytest_llmperf.engines.hf.triton.decode"].tuned_tiles()
            print(json.dumps({"triton_tiles": tiles}), flush=True)
        if args.profile:
            profile_stream(engine, requests, args.profile / f"kernels-b{batch}.txt")
        engine.close()


def profile_stream(engine: HFFastEngine, requests: list[Any], out: Path) -> None:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        list(engine.stream(requests))
    out.parent.mkdir(parents=True, exist_ok=True)
    table = prof.key_averages().table(
        sort_by="cuda_time_total", row_limit=30, max_name_column_width=90
    )
    out.write_text(table)


if __name__ == "__main__":
    main()
