"""The hf engine's fast decode path on CUDA: a static KV cache and the whole decode step in
one CUDA graph, the step compiled by torch.compile (Inductor fuses the many small
element-wise kernels of an eager Llama layer; the graph removes their launch cost).

Why: on a GPU an eager decode step of a 1B model costs ~45 ms of Python and kernel
launches for ~0.6 ms of memory traffic; `model.generate` with a static cache still pays
~3 ms of per-step overhead. Replaying one captured graph per step, with only the host
copy of the new tokens outside it, brings the step close to the memory-bandwidth bound
(figures in BENCHMARKS.md).

Shapes are static in a graph, so batches are padded up to a bucket (powers of two) with
dummy rows, and the cache length is rounded up to a multiple of 256: one graph serves
every batch of its bucket. Building a graph (warm-up, compile, capture: tens of seconds
the first time, with coordinate-descent tuning) happens the first time a bucket is seen,
normally in a test's warm-up round; the seconds spent are reported as the test's
`graph_build_s` and are outside every measured round that did not build one.

Masks are our own 4D additive masks ([batch, 1, query, cache]), so the model's mask
helpers never branch on tensor values inside the capture: prefill lets each real token see
the real tokens up to it (a left-padding position sees only itself, which keeps it from
producing NaN keys); decode lets each row see its prompt and everything generated so far.

Greedy rows only: a batch with a sampled row (temperature > 0) takes the eager loop.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

from pytest_llmperf.engines.hf.llama_step import FusedLlamaStep, supports

if TYPE_CHECKING:
    from pytest_llmperf.engines.hf.triton.decode import TritonLlamaStep

CACHE_LENGTH_STEP = 256


def bucket(batch: int) -> int:
    """The graph batch size for `batch` rows: the next power of two."""
    return 1 << max(0, batch - 1).bit_length()


class DecodeGraph:
    """One captured decode step for a (batch, cache length) shape."""

    def __init__(
        self,
        model: Any,
        batch: int,
        length: int,
        compile_step: bool,
        fused: FusedLlamaStep | None = None,
        kernels: TritonLlamaStep | None = None,
    ) -> None:
        from transformers import StaticCache

        self.model, self.batch, self.length = model, batch, length
        self.fused = fused
        self.kernels = kernels
        device, dtype = model.device, model.dtype
        self.cache = StaticCache(config=model.config, max_cache_len=length)
        self.tokens = torch.zeros((batch, 1), dtype=torch.long, device=device)
        self.positions = torch.zeros((batch, 1), dtype=torch.long, device=device)
        self.cache_position = torch.zeros((1,), dtype=torch.long, device=device)
        self.blocked = torch.finfo(dtype).min
        self.mask = torch.full((batch, 1, 1, length), self.blocked, dtype=dtype, device=device)
        vocab = model.config.vocab_size
        self.logit_bias = torch.zeros((batch, vocab), dtype=torch.float32, device=device)
        # The Triton step is already one kernel per fused operation: nothing to compile.
        compiled = compile_step and kernels is None
        self.step = torch.compile(self._step, dynamic=False) if compiled else self._step
        self.graph: torch.cuda.CUDAGraph | None = None
        self.build_s = 0.0
        self._slots: list[torch.Tensor] = []
        self._pending: list[tuple[torch.Tensor, torch.cuda.Event]] = []
        self._next_slot = 0

    def _step(self) -> None:
        if self.kernels is not None:
            self.kernels.step(
                self.tokens,
                self.positions,
                self.mask,
                self.cache,
                self.cache_position,
                self.logit_bias,
            )
            return
        if self.fused is not None:
            logits = self.fused.logits(self.tokens, self.positions, self.mask, self.cache)
        else:
            logits = self.model(
                input_ids=self.tokens,
                position_ids=self.positions,
                cache_position=self.cache_position,
                attention_mask=self.mask,
                past_key_values=self.cache,
                use_cache=True,
            ).logits[:, -1]
        chosen = argmax_rows(logits.float() + self.logit_bias)
        self.tokens.copy_(chosen[:, None])
        self.positions.add_(1)
        self.cache_position.add_(1)
        # The next step's cache slot becomes visible (clamped on the last slot).
        slot = self.cache_position.clamp(max=self.length - 1).view(1, 1, 1, 1)
        self.mask.scatter_(3, slot.expand(self.batch, 1, 1, 1), 0.0)

    def prefill(self, prompts: Sequence[Sequence[int]], pad_id: int) -> list[int]:
        """Left-pad `prompts` (one per graph row), fill the cache, return each row's
        first token (after the logit bias)."""
        width = max(len(p) for p in prompts)
        device = self.tokens.device
        real = torch.zeros((self.batch, width), dtype=torch.bool, device=device)
        ids = torch.full((self.batch, width), pad_id, dtype=torch.long, device=device)
        for i, prompt in enumerate(prompts):
            ids[i, width - len(prompt) :] = torch.tensor(list(prompt), device=device)
            real[i, width - len(prompt) :] = True
        positions = (real.long().cumsum(-1) - 1).clamp(min=0)
        causal = torch.ones((width, width), dtype=torch.bool, device=device).tril()
        sees = causal[None] & real[:, None, :]
        sees |= torch.eye(width, dtype=torch.bool, device=device)[None]  # padding: itself
        mask = torch.full((self.batch, 1, width, self.length), self.blocked, device=device)
        mask = mask.to(self.mask.dtype)
        mask[:, 0, :, :width].masked_fill_(sees, 0.0)
        self.cache.reset()  # type: ignore[no-untyped-call]
        out = self.model(
            input_ids=ids,
            position_ids=positions,
            cache_position=torch.arange(width, device=device),
            attention_mask=mask,
            past_key_values=self.cache,
            use_cache=True,
            logits_to_keep=1,
        )
        first = (out.logits[:, -1].float() + self.logit_bias).argmax(-1)
        self.tokens.copy_(first[:, None])
        self.positions.copy_(positions[:, -1:] + 1)
        self.cache_position.fill_(width)
        self.mask.fill_(self.blocked)
        self.mask[:, 0, 0, :width].masked_fill_(real, 0.0)
        self.mask[:, 0, 0, width] = 0.0
        host: list[int] = first.tolist()
        return host

    def build(self, prompts: Sequence[Sequence[int]], pad_id: int) -> None:
        """Warm up (and compile) on a side stream, then capture one step."""
        from torch.nn.attention import SDPBackend, sdpa_kernel

        start = time.perf_counter()
        # The decode step's attention: not cuDNN's, which needs the [batch, 1, 1, cache]
        # mask expanded to every head and copied, per layer and step (on a 1B Llama at
        # batch 32 that copy and cuDNN's sm80 kernel were 42% of the step); the
        # memory-efficient kernel takes the mask broadcast. The choice is made when the
        # step is traced and compiled, here; replays keep it.
        with sdpa_kernel([SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]):
            side = torch.cuda.Stream()  # type: ignore[no-untyped-call]
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(3):
                    self.prefill(prompts, pad_id)
                    self.step()
            torch.cuda.current_stream().wait_stream(side)
            self.prefill(prompts, pad_id)
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                self.step()
            torch.cuda.synchronize()
        self.build_s = time.perf_counter() - start

    def launch(self) -> None:
        """Queue one decode step and the copy of its tokens to the host; returns at once.

        The step's inputs are the previous step's outputs, already on the device, so the
        GPU can run step k+1 while the host is still handing step k's tokens over: the
        host's per-token work (the harness's stamps and records) hides behind the GPU's.
        """
        assert self.graph is not None
        self.graph.replay()
        slot = self._slots[self._next_slot]
        slot.copy_(self.tokens[:, 0], non_blocking=True)
        done = torch.cuda.Event()  # type: ignore[no-untyped-call]
        done.record()
        self._pending.append((slot, done))
        self._next_slot = (self._next_slot + 1) % len(self._slots)

    def collect(self) -> list[int]:
        """The oldest launched step's tokens, once that step is done (a wait on its event)."""
        slot, done = self._pending.pop(0)
        done.synchronize()
        host: list[int] = slot.tolist()
        return host

    def start_decoding(self) -> None:
        """Pinned host buffers for the in-flight steps (two: one running, one read)."""
        if not self._slots:
            self._slots = [
                torch.empty((self.batch,), dtype=torch.long, pin_memory=True) for _ in range(2)
            ]
        self._pending = []
        self._next_slot = 0


class GraphCache:
    """The graphs an engine has built, by shape; `build_s` sums the time spent building.

    With `fuse_projections`, Llama-structured models decode through `FusedLlamaStep`
    (their projection weights fused in place, once, here); with `triton_kernels` too,
    their batch-1 graphs run `triton_decode`'s kernels instead of the compiled step."""

    def __init__(
        self,
        model: Any,
        compile_step: bool,
        fuse_projections: bool = True,
        triton_kernels: bool = True,
    ) -> None:
        self.model = model
        self.compile_step = compile_step
        self.fused = (
            FusedLlamaStep(model, for_compile=compile_step)
            if fuse_projections and supports(model)
            else None
        )
        self.triton_kernels = triton_kernels and self.fused is not None and _triton_fits(model)
        self.graphs: dict[tuple[int, int], DecodeGraph] = {}
        self.build_s = 0.0

    def get(self, prompts: Sequence[Sequence[int]], longest: int, pad_id: int) -> DecodeGraph:
        """The graph for these rows (`longest`: prompt width + most new tokens)."""
        batch = bucket(len(prompts))
        length = -(-(longest + 1) // CACHE_LENGTH_STEP) * CACHE_LENGTH_STEP
        key = (batch, length)
        graph = self.graphs.get(key)
        if graph is None:
            start = time.perf_counter()
            with warnings.catch_warnings():
                # torch's compiler imports modules that announce their own deprecations
                # (torch.jit.script_method): not the user's to act on, and under
                # `-W error` they would fail every build.
                # Inductor also turns advice (a UserWarning about TF32 for float32 models)
                # into an error under `-W error`: advice, not a fault of the run.
                warnings.simplefilter("ignore", DeprecationWarning)
                warnings.simplefilter("ignore", FutureWarning)
                warnings.simplefilter("ignore", UserWarning)
                if self.compile_step:
                    _tune_inductor()
                kernels = None
                if batch == 1 and self.triton_kernels and self.fused is not None:
                    from pytest_llmperf.engines.hf.triton.decode import TritonLlamaStep

                    kernels = TritonLlamaStep(self.fused, length)
                graph = DecodeGraph(
                    self.model, batch, length, self.compile_step, self.fused, kernels
                )
                graph.build(padded(prompts, batch), pad_id)
            self.graphs[key] = graph
            self.build_s += time.perf_counter() - start
        return graph

    def clear(self) -> None:
        self.graphs.clear()


def argmax_rows(scores: torch.Tensor, chunks: int = 64) -> torch.Tensor:
    """`scores.argmax(-1)` for [rows, vocab] in two stages: the greatest of each of `chunks`
    slices, then the greatest slice. Why: compiled, a one-row arg-max over a 128k
    vocabulary runs as one thread block (39 us of a 1.3 ms step on an H100 at batch 1);
    in slices it spreads over the SMs. Ties go to the first index, as argmax's do."""
    rows, vocab = scores.shape
    width = -(-vocab // chunks)
    spread = torch.nn.functional.pad(scores, (0, chunks * width - vocab), value=-float("inf"))
    best_in_slice, where_in_slice = spread.view(rows, chunks, width).max(-1)
    best_slice = best_in_slice.argmax(-1, keepdim=True)
    return (best_slice * width + where_in_slice.gather(-1, best_slice)).squeeze(-1)


def _triton_fits(model: Any) -> bool:
    """Whether triton is importable and `triton_decode` reproduces `model`'s step."""
    try:
        from pytest_llmperf.engines.hf.triton import decode as triton_decode
    except ImportError:  # a CUDA build of torch without triton
        return False
    return triton_decode.supports(model)


def padded(prompts: Sequence[Sequence[int]], batch: int) -> list[Sequence[int]]:
    """`prompts` and dummy one-token rows up to `batch` rows."""
    return [*prompts, *([[prompts[0][-1]]] * (batch - len(prompts)))]


def _tune_inductor() -> None:
    import torch._inductor.config as inductor

    # Tunes each generated kernel's launch parameters (gpt-fast's setting): on a 1B Llama
    # on an H100 it took a step from 1.54 to 1.25 ms at batch 1 (bench/hf_fastpath_probe.py).
    inductor.coordinate_descent_tuning = True
