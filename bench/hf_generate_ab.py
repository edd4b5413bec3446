"""transformers' own `generate` timed by a plain script against the plugin's `hf` engine
(static cache, compiled), in turns on the same GPU: what the plugin adds to generate.

    python bench/build_random_llama.py --shape llama-3.2-1b --out /tmp/llama1b
    python bench/hf_generate_ab.py --model /tmp/llama1b --batch 1 32 [--blocks 5] [--json OUT]

(`--device cpu --model tiny` runs it anywhere, uncompiled: a check of the script itself.)

Per batch size, `batch` prompts of 128 tokens, exactly 256 new tokens each, greedy, bf16,
sdpa:
- plain: `model.generate(input_ids, attention_mask, max_new_tokens=256, min_new_tokens=256,
  do_sample=False, cache_implementation="static")` on the main thread, as a script runs it
  (transformers compiles the decode forward itself), wall time around the call with a device
  sync after it;
- plugin: the `hf` engine (`cache_implementation: static, compile: true`) driven by the
  harness's `run_round`, what a test's round is: generate on the engine's thread, each
  step's tokens streamed, every chunk stamped and recorded; the round's wall time.
Each arm has its own copy of the model and warms up (compiles) first: two calls each. Then
`--blocks` blocks of A B B A (plain, plugin, plugin, plain), so drift hits both arms alike.
Prints per arm the output tok/s of every call, its median, min and max, and the ratio
plugin / plain of the medians and of each block's means (the goal: at least 0.90).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from pytest_llmperf.engines.base import EngineConfig, GenerationRequest, SamplingParams
from pytest_llmperf.engines.hf.engine import HFEngine
from pytest_llmperf.measure.harness import run_round

PROMPT = tuple(range(10, 138))  # 128 token ids every vocabulary has
NEW = 256


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def plain_arm(model_path: str, batch: int, device: str) -> Any:
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    from pytest_llmperf.models.names import resolve_model

    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    model = AutoModelForCausalLM.from_pretrained(
        resolve_model(model_path), dtype=torch.bfloat16, attn_implementation="sdpa"
    )
    model = model.to(device).eval()
    ids = torch.tensor([PROMPT] * batch, device=device)
    mask = torch.ones_like(ids)

    def call() -> float:
        start = time.perf_counter()
        out = model.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=NEW,
            min_new_tokens=NEW,
            do_sample=False,
            cache_implementation="static",
        )
        sync(device)
        wall = time.perf_counter() - start
        assert out.shape == (batch, len(PROMPT) + NEW)
        return wall

    return call, model


def plugin_arm(model_path: str, batch: int, device: str) -> Any:
    settings = {
        "dtype": "bfloat16",
        "attn_implementation": "sdpa",
        "cache_implementation": "static",
        "compile": True,
        "max_num_seqs": batch,
    }
    gpus = [0] if device == "cuda" else []
    engine = HFEngine(EngineConfig.make("hf", model_path, settings, gpus))
    info = engine.start()
    assert info.details["compiled"] is (device == "cuda"), info.details
    requests = [
        GenerationRequest(str(i), SamplingParams.fixed_length(NEW), prompt_token_ids=PROMPT)
        for i in range(batch)
    ]
    rounds = [0]

    def call() -> float:
        records, wall = run_round(engine, requests, rounds[0])
        rounds[0] += 1
        assert all(r.error is None and r.output_tokens == NEW for r in records), records[:1]
        return wall

    return call, engine


def spread(values: list[float], digits: int = 1) -> dict[str, Any]:
    return {
        "median": round(statistics.median(values), digits),
        "min": round(min(values), digits),
        "max": round(max(values), digits),
        "samples": [round(v, digits) for v in values],
    }


def measure(model_path: str, batch: int, blocks: int, device: str) -> dict[str, Any]:
    started = time.perf_counter()
    plain, model = plain_arm(model_path, batch, device)
    plugin, engine = plugin_arm(model_path, batch, device)
    try:
        warm = {"plain_s": [plain(), plain()], "plugin_s": [plugin(), plugin()]}
        walls: dict[str, list[float]] = {"plain": [], "plugin": []}
        ratios = []
        for _ in range(blocks):
            a1, b1, b2, a2 = plain(), plugin(), plugin(), plain()
            walls["plain"] += [a1, a2]
            walls["plugin"] += [b1, b2]
            ratios.append((a1 + a2) / (b1 + b2))  # tok/s ratio plugin / plain
    finally:
        engine.close()
        del model
        if device == "cuda":
            torch.cuda.empty_cache()
    tokens = batch * NEW
    rates = {arm: [tokens / w for w in ws] for arm, ws in walls.items()}
    return {
        "batch": batch,
        "plain_tok_per_s": spread(rates["plain"]),
        "plugin_tok_per_s": spread(rates["plugin"]),
        "ratio_of_medians": round(
            statistics.median(rates["plugin"]) / statistics.median(rates["plain"]), 3
        ),
        "block_ratios": spread(ratios, 3),
        "warmup_s": {k: [round(v, 1) for v in vs] for k, vs in warm.items()},
        "seconds": round(time.perf_counter() - started, 1),
        "device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--blocks", type=int, default=5, help="A B B A blocks per batch size")
    parser.add_argument("--json", type=Path, help="also write the results here (JSON lines)")
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    args = parser.parse_args()
    for batch in args.batch:
        row = measure(args.model, batch, args.blocks, args.device)
        line = json.dumps(row)
        print(line, flush=True)
        if args.json:
            with args.json.open("a") as out:
                out.write(line + "\n")


if __name__ == "__main__":
    main()
