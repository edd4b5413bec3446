"""Each batch-1 decode kernel of `triton_decode` alone, on a model shape's tensors (random,
bf16): time (triton's do_bench: median, L2 flushed between runs), bytes read and written,
and the bandwidth that makes, next to the card's peak from NVML.

    python bench/triton_kernels.py [--shape llama-3.2-1b] [--slot 383 --length 512]

One JSON line per kernel, the sum over one decode step (layers x per-layer kernels + the
lm head), then every candidate tile's time for each product tuned in this run (a product
whose tile was saved by an earlier run on this GPU is not re-timed).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import torch
from triton.testing import do_bench

from pytest_llmperf.engines.hf.triton import decode as triton_decode
from pytest_llmperf.engines.hf.triton import tuning
from pytest_llmperf.measure.bandwidth import peak_bandwidth

SHAPES = {
    "llama-3.2-1b": {
        "hidden": 2048,
        "heads": 32,
        "kv_heads": 8,
        "dim": 64,
        "intermediate": 8192,
        "vocab": 128256,
        "layers": 16,
    },
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shape", default="llama-3.2-1b", choices=sorted(SHAPES))
    parser.add_argument("--length", type=int, default=512, help="cache slots")
    parser.add_argument("--slot", type=int, default=383, help="this step's slot (128 + 255)")
    args = parser.parse_args()
    s = SHAPES[args.shape]
    torch.manual_seed(0)
    dtype, device = torch.bfloat16, "cuda"

    def randn(*shape: int) -> torch.Tensor:
        return (torch.randn(*shape, device=device) / 8).to(dtype)

    hidden, heads, kv, dim = s["hidden"], s["heads"], s["kv_heads"], s["dim"]
    width = (heads + 2 * kv) * dim
    x, norm = randn(1, hidden), randn(hidden)
    attended, activated = randn(1, heads * dim), randn(1, s["intermediate"])
    normed = {"norm": norm, "eps": 1e-5}
    # name: (input, weight rows, matvec's keywords)
    products: dict[str, tuple[torch.Tensor, int, dict[str, Any]]] = {
        "qkv (norm)": (x, width, normed),
        "o (residual)": (attended, hidden, {"residual": x}),
        "gate_up (norm, swiglu)": (x, 2 * s["intermediate"], {**normed, "swiglu": True}),
        "down (residual)": (activated, hidden, {"residual": x}),
        "lm_head (norm)": (x, s["vocab"], normed),
    }
    peak = peak_bandwidth([torch.cuda.current_device()]) or float("nan")
    step_us = 0.0
    for name, (vector, rows, keywords) in products.items():
        weight = randn(rows, vector.shape[1])

        def product(
            vector: torch.Tensor = vector,
            weight: torch.Tensor = weight,
            keywords: dict[str, Any] = keywords,
        ) -> torch.Tensor:
            return triton_decode.matvec(vector, weight, **keywords)

        product()  # tunes
        us = do_bench(product, warmup=25, rep=200) * 1e3
        moved = weight.numel() * weight.element_size()
        times = 1 if name.startswith("lm_head") else s["layers"]
        step_us += us * times
        print(json.dumps(_row(name, us, moved, peak, times)), flush=True)

    qkv = randn(1, width)
    keys, values = randn(1, kv, args.length, dim), randn(1, kv, args.length, dim)
    cos, sin = randn(args.length, dim), randn(args.length, dim)
    positions = torch.tensor([[args.slot]], device=device)
    slot = torch.tensor([args.slot], device=device)
    mask = torch.zeros(1, 1, 1, args.length, dtype=dtype, device=device)
    filled = torch.zeros((), dtype=torch.long, device=device)

    def attend() -> torch.Tensor:
        return triton_decode.attention(
            qkv, cos, sin, positions, slot, keys, values, filled, mask, dim**-0.5, heads
        )

    attend()
    us = do_bench(attend, warmup=25, rep=200) * 1e3
    moved = 2 * kv * (args.slot + 1) * dim * keys.element_size()
    step_us += us * s["layers"]
    print(json.dumps(_row("attention", us, moved, peak, s["layers"])), flush=True)
    print(json.dumps({"kernels_per_step_us": round(step_us, 1)}), flush=True)
    for key, timings in tuning.TIMINGS.items():
        ranked = sorted(timings.items(), key=lambda item: item[1])
        print(
            json.dumps({"tuned": key, "us_by_tile": [[*t, round(ms * 1e3, 2)] for t, ms in ranked]})
        )


def _row(name: str, us: float, moved: int, peak: float, times: int) -> dict[str, object]:
    rate = moved / (us * 1e-6)
    return {
        "kernel": name,
        "us": round(us, 2),
        "bytes": moved,
        "tb_per_s": round(rate / 1e12, 3),
        "of_peak": round(rate / peak, 3),
        "per_step": times,
    }


if __name__ == "__main__":
    main()
