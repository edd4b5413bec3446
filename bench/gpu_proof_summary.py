"""Condense run folders into the facts the GPU proofs need (used with the `device` tool).

    python bench/gpu_proof_summary.py RESULTS_DIR [RESULTS_DIR ...] > proof.json

For every test: worker and its pid, leased GPUs and the processes NVML saw on them,
throughput and telemetry; for every run: the engine hand-overs (GPU memory before an
engine started and after it stopped).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

KEYS = (
    "output_tok_per_s",
    "energy_j",
    "power_mean_w",
    "output_tok_per_j",
    "peak_gpu_mem_bytes",
    "gpu_util_mean_pct",
    "temp_max_c",
    "sm_clock_mean_mhz",
    "mem_clock_mean_mhz",
    "ttft_ms.p50",
    "tpot_ms.p50",
)


def summarize(results_dir: Path) -> list[dict[str, Any]]:
    runs = []
    for summary_path in sorted(results_dir.glob("*/summary.json")):
        summary = json.loads(summary_path.read_text())
        runs.append(
            {
                "run": str(summary_path.parent),
                "hardware": summary.get("hardware"),
                "gpus": summary.get("machine", {}).get("gpus"),
                "driver": summary.get("machine", {}).get("driver"),
                "tests": [
                    {
                        "test_id": t["test_id"],
                        "worker": t.get("worker"),
                        "worker_pid": t.get("worker_pid"),
                        "gpus": t.get("gpus"),
                        "device": t["engine_info"]["device"],
                        "dtype": t["engine_info"]["dtype"],
                        **{k: t["metrics_flat"].get(k) for k in KEYS},
                    }
                    for t in summary["tests"]
                ],
                "engine_handovers": summary.get("engine_handovers", []),
            }
        )
    return runs


if __name__ == "__main__":
    json.dump({arg: summarize(Path(arg)) for arg in sys.argv[1:]}, sys.stdout, indent=1)
