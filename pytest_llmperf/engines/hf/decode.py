"""The hf-fast engine's decode loop: left-padded batches, a KV cache, one token per step.

Our own loop, not `model.generate` (that is the `hf` engine's, `hf.generate`): it hands
each step's tokens back on the calling thread (a generator) as soon as they reach the
host, and on CUDA runs greedy batches through a captured decode graph (`hf.graph`). Torch
work runs inside `torch.inference_mode()` one step at a time, never across a `yield`, so
the grad mode does not leak into the caller.

Imported only by `pytest_llmperf.engines.hf.fast`, which the registry imports lazily.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch

from pytest_llmperf.engines.base import SamplingParams, StreamChunk
from pytest_llmperf.engines.hf.graph import DecodeGraph, GraphCache, padded
from pytest_llmperf.engines.hf.rows import Row, advance


def decode_batch(
    model: Any,
    rows: Sequence[Row],
    *,
    pad_id: int,
    eos_ids: Sequence[int],
    decode: Callable[[Sequence[int]], str],
    graphs: GraphCache | None = None,
) -> Iterator[StreamChunk]:
    """Run `rows` as one batch to the end, yielding chunks after each step.

    Every row ends with exactly one chunk whose `finish_reason` is set; `row.finished`
    is set before that chunk is yielded, so a caller that catches an exception from
    this generator knows which rows still need an error chunk. With `graphs` (CUDA) a
    greedy batch runs through a captured decode graph (`hf_graph`).
    """
    if graphs is not None and all(row.sampling.temperature == 0 for row in rows):
        yield from _graph_decode(graphs, rows, pad_id, eos_ids, decode)
        return
    device = model.device
    for row in rows:
        if row.sampling.temperature > 0:
            row.generator = torch.Generator(device=device).manual_seed(row.seed)
    step = _Stepper(model, rows, pad_id=pad_id, eos_ids=eos_ids)
    tokens = step.prefill()
    while True:
        for row, token in zip(rows, tokens, strict=True):
            if row.finished:
                continue
            yield advance(row, token, eos_ids, decode)
        if all(row.finished for row in rows):
            return
        tokens = step.next()


def _graph_decode(
    graphs: GraphCache,
    rows: Sequence[Row],
    pad_id: int,
    eos_ids: Sequence[int],
    decode: Callable[[Sequence[int]], str],
) -> Iterator[StreamChunk]:
    """Decode through a captured graph, one step always in flight ahead of the host.

    Step k+1 is queued before step k's tokens are handed over, so the GPU never waits
    for the harness. Its EOS bias is set for the row lengths it will see (each unfinished
    row grows by one token a step); a row that ends at step k has step k+1 computed for
    nothing, which is ignored.
    """
    prompts = [row.prompt_ids for row in rows]
    longest = max(len(p) for p in prompts) + max(row.sampling.max_tokens for row in rows)
    with torch.inference_mode():
        graph = graphs.get(prompts, longest, pad_id)
        held = _hold_eos(graph, rows, eos_ids, None, ahead=0)
        tokens = graph.prefill(padded(prompts, graph.batch), pad_id)
        graph.start_decoding()
        held = _hold_eos(graph, rows, eos_ids, held, ahead=1)
        graph.launch()
    while True:
        for row, token in zip(rows, tokens, strict=False):
            if not row.finished:
                yield advance(row, token, eos_ids, decode)
        if all(row.finished for row in rows):
            # The step launched ahead runs on unread; the next batch's work queues behind
            # it on the same stream, so nothing waits for it here.
            return
        with torch.inference_mode():
            # Queue the step after the one in flight, then wait for the one in flight.
            # The new step makes each row's (len(output) + 2)-th token: len(output) + 1
            # tokens precede it.
            held = _hold_eos(graph, rows, eos_ids, held, ahead=1)
            graph.launch()
            tokens = graph.collect()


def _hold_eos(
    graph: DecodeGraph,
    rows: Sequence[Row],
    eos_ids: Sequence[int],
    before: list[bool] | None,
    ahead: int,
) -> list[bool]:
    """Block EOS (logit bias -inf) for rows that must go on, at the step that follows
    `len(row.output) + ahead` tokens; copy the bias only on a change.

    The bias is read when the queued step runs, after every step queued before it, so
    a change must not race a step in flight: the copy is queued on the same stream."""
    held = [
        not row.finished
        and (row.sampling.ignore_eos or len(row.output) + ahead < row.sampling.min_tokens)
        for row in rows
    ]
    if held != before and eos_ids:
        bias = torch.zeros(graph.logit_bias.shape, dtype=torch.float32)
        for i, hold in enumerate(held):
            if hold:
                bias[i, list(eos_ids)] = float("-inf")
        graph.logit_bias.copy_(bias.to(graph.logit_bias.device, non_blocking=False))
    return held


class _Stepper:
    """The tensors of one batch: prefill once, then one decode step per call."""

    def __init__(
        self, model: Any, rows: Sequence[Row], *, pad_id: int, eos_ids: Sequence[int]
    ) -> None:
        self.model = model
        self.rows = rows
        self.pad_id = pad_id
        self.eos_ids = list(eos_ids)
        self.device = model.device
        self.past: Any = None
        self.attention_mask = torch.empty(0)
        self.next_position = torch.empty(0)
        self.last_tokens = torch.empty(0, dtype=torch.long)
        self.masked_rows: list[int] = []  # rows whose EOS logits are masked, and their index
        self.mask_index = (torch.empty(0, dtype=torch.long), torch.empty(0, dtype=torch.long))

    @torch.inference_mode()
    def prefill(self) -> list[int]:
        from transformers import DynamicCache

        width = max(len(row.prompt_ids) for row in self.rows)
        ids = [[self.pad_id] * (width - len(r.prompt_ids)) + r.prompt_ids for r in self.rows]
        mask = [[0] * (width - len(r.prompt_ids)) + [1] * len(r.prompt_ids) for r in self.rows]
        input_ids = torch.tensor(ids, dtype=torch.long, device=self.device)
        self.attention_mask = torch.tensor(mask, dtype=torch.long, device=self.device)
        # Left padding shifts real tokens right; positions must still start at 0.
        positions = (self.attention_mask.cumsum(-1) - 1).clamp(min=0)
        out = self.model(
            input_ids=input_ids,
            attention_mask=self.attention_mask,
            position_ids=positions,
            past_key_values=DynamicCache(config=self.model.config),
            use_cache=True,
            logits_to_keep=1,
        )
        self.past = out.past_key_values
        self.next_position = positions[:, -1:] + 1
        return self._choose(out.logits[:, -1, :])

    @torch.inference_mode()
    def next(self) -> list[int]:
        batch = len(self.rows)
        ones = torch.ones((batch, 1), dtype=torch.long, device=self.device)
        self.attention_mask = torch.cat([self.attention_mask, ones], dim=-1)
        out = self.model(
            input_ids=self.last_tokens[:, None],
            attention_mask=self.attention_mask,
            position_ids=self.next_position,
            past_key_values=self.past,
            use_cache=True,
        )
        self.past = out.past_key_values
        self.next_position = self.next_position + 1
        return self._choose(out.logits[:, -1, :])

    def _choose(self, logits: torch.Tensor) -> list[int]:
        """Pick each row's next token and move them to the host (a device sync)."""
        logits = logits.float()
        masked = [i for i, r in enumerate(self.rows) if not r.finished and not r.eos_allowed()]
        if masked and self.eos_ids:
            if masked != self.masked_rows:  # index tensors change rarely: copy them only then
                self.masked_rows = masked
                self.mask_index = (
                    torch.tensor(masked, device=self.device)[:, None],
                    torch.tensor(self.eos_ids, device=self.device)[None, :],
                )
            logits[self.mask_index] = float("-inf")
        tokens = logits.argmax(dim=-1)
        for i, row in enumerate(self.rows):
            if not row.finished and row.generator is not None:
                tokens[i] = sample(logits[i], row.sampling, row.generator)
        self.last_tokens = tokens
        host: list[int] = tokens.tolist()
        return host


def sample(
    logits: torch.Tensor,
    params: SamplingParams,
    generator: torch.Generator,
) -> torch.Tensor:
    """One token from a row of logits with temperature, then top-k, then top-p."""
    logits = logits / params.temperature
    if 0 < params.top_k < logits.shape[-1]:
        kth = torch.topk(logits, params.top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if params.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True)
        probs = torch.softmax(sorted_logits, dim=-1)
        # Drop a token when the tokens before it already cover top_p; the first stays.
        drop = (torch.cumsum(probs, dim=-1) - probs) > params.top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.empty_like(logits).scatter_(-1, order, sorted_logits)
    probs = torch.softmax(logits, dim=-1)
    return torch.multinomial(probs, 1, generator=generator)[0]
