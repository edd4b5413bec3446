"""Probe: how fast can a decode step of the hf engine's model go on this GPU?

    python bench/build_random_llama.py --shape llama-3.2-1b --out /tmp/llama1b
    python bench/hf_fastpath_probe.py --model /tmp/llama1b --batch 1 32

For each batch size: 128 prompt tokens, 256 decode steps, greedy, timed with
time.perf_counter() around a device sync per step (as the engine must, to stream tokens):
- eager: DynamicCache, plain forward per step (the engine's current loop);
- graph: a StaticCache and the whole decode step (forward with a 4D additive mask, arg-max,
  in-place updates of the next input, position, cache position and mask) captured in one
  CUDA graph and replayed per step.
Prints ms per step, tok/s, and whether the graph's greedy tokens equal eager's.
"""

from __future__ import annotations

import argparse
import json
import time

import torch


def eager_decode(model, prompt, steps):
    from transformers import DynamicCache

    out = model(input_ids=prompt, past_key_values=DynamicCache(config=model.config), use_cache=True)
    past, tok = out.past_key_values, out.logits[:, -1].argmax(-1)
    tokens = [tok]
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps - 1):
        out = model(input_ids=tok[:, None], past_key_values=past, use_cache=True)
        past, tok = out.past_key_values, out.logits[:, -1].argmax(-1)
        tok.tolist()
        tokens.append(tok)
    elapsed = time.perf_counter() - start
    return torch.stack(tokens, 1), elapsed / (steps - 1)


def make_static_cache(model, batch, length):
    from transformers import StaticCache

    try:
        return StaticCache(config=model.config, max_cache_len=length)
    except TypeError:
        return StaticCache(
            config=model.config,
            max_batch_size=batch,
            max_cache_len=length,
            device=model.device,
            dtype=model.dtype,
        )


class GraphDecoder:
    def __init__(self, model, batch, length, compiled=None):
        self.model, self.batch, self.length = model, batch, length
        self.step_fn = self._step
        if compiled == "default":
            self.step_fn = torch.compile(self._step, dynamic=False)
        elif compiled:
            self.step_fn = torch.compile(self._step, dynamic=False, mode=compiled)
        dev, dtype = model.device, model.dtype
        self.cache = make_static_cache(model, batch, length)
        self.tok = torch.zeros((batch, 1), dtype=torch.long, device=dev)
        self.pos = torch.zeros((batch, 1), dtype=torch.long, device=dev)
        self.cache_pos = torch.zeros((1,), dtype=torch.long, device=dev)
        self.mask = torch.full(
            (batch, 1, 1, length), torch.finfo(dtype).min, dtype=dtype, device=dev
        )
        self.graph = None

    def _step(self):
        out = self.model(
            input_ids=self.tok,
            position_ids=self.pos,
            cache_position=self.cache_pos,
            attention_mask=self.mask,
            past_key_values=self.cache,
            use_cache=True,
        )
        nxt = out.logits[:, -1].float().argmax(-1)
        self.tok.copy_(nxt[:, None])
        self.pos.add_(1)
        self.cache_pos.add_(1)
        idx = self.cache_pos.clamp(max=self.length - 1).view(1, 1, 1, 1).expand(self.batch, 1, 1, 1)
        self.mask.scatter_(3, idx, 0.0)

    def prefill(self, prompt):
        width = prompt.shape[1]
        self.cache.reset() if hasattr(self.cache, "reset") else None
        out = self.model(
            input_ids=prompt,
            past_key_values=self.cache,
            use_cache=True,
            cache_position=torch.arange(width, device=prompt.device),
        )
        first = out.logits[:, -1].float().argmax(-1)
        self.tok.copy_(first[:, None])
        self.pos.fill_(width)
        self.cache_pos.fill_(width)
        self.mask.fill_(torch.finfo(self.mask.dtype).min)
        self.mask[..., : width + 1] = 0.0
        return first

    def capture(self, prompt):
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            for _ in range(3):
                self.prefill(prompt)
                self.step_fn()
        torch.cuda.current_stream().wait_stream(s)
        self.prefill(prompt)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.step_fn()

    def decode(self, prompt, steps):
        tokens = [self.prefill(prompt)]
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(steps - 1):
            self.graph.replay()
            tokens.append(self.tok[:, 0].clone())
            self.tok.tolist()  # the host needs each step's tokens to stream them
        elapsed = time.perf_counter() - start
        return torch.stack(tokens, 1), elapsed / (steps - 1)


VARIANTS = (
    ("graph", None),
    ("compiled_graph", "default"),
    ("autotuned_graph", "max-autotune-no-cudagraphs"),
)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    p.add_argument("--batch", type=int, nargs="+", default=[1, 32])
    p.add_argument("--prompt", type=int, default=128)
    p.add_argument("--steps", type=int, default=256)
    p.add_argument("--variants", nargs="+", default=[v for v, _ in VARIANTS])
    p.add_argument("--coordinate-descent", action="store_true")
    args = p.parse_args()
    from transformers import AutoModelForCausalLM

    if args.coordinate_descent:
        import torch._inductor.config as inductor

        inductor.coordinate_descent_tuning = True

    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.bfloat16).cuda().eval()
    weight_bytes = sum(t.numel() * t.element_size() for t in model.parameters())
    results = {"weight_bytes": weight_bytes}
    for batch in args.batch:
        prompt = torch.randint(4, 1000, (batch, args.prompt), device="cuda")
        with torch.inference_mode():
            eager_decode(model, prompt, 16)
            eager_tokens, eager_step = eager_decode(model, prompt, args.steps)
            row = {"eager_ms": eager_step * 1e3, "eager_tok_s": batch / eager_step}
            for name, compiled in VARIANTS:
                if name not in args.variants:
                    continue
                try:
                    dec = GraphDecoder(model, batch, 512, compiled=compiled)
                    t = time.perf_counter()
                    dec.capture(prompt)
                    row[f"{name}_capture_s"] = time.perf_counter() - t
                    dec.decode(prompt, args.steps)
                    g_tokens, g_step = dec.decode(prompt, args.steps)
                    row.update({f"{name}_ms": g_step * 1e3, f"{name}_tok_s": batch / g_step})
                    same = (g_tokens[:, :32] == eager_tokens[:, :32]).float().mean().item()
                    row[f"{name}_equals_eager_first32"] = same
                except Exception as exc:  # a probe: report what broke
                    row[f"{name}_error"] = f"{type(exc).__name__}: {exc}"[:800]
        results[f"batch{batch}"] = row
        print(json.dumps({batch: row}), flush=True)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
