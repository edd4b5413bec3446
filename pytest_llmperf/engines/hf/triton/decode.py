"""Hand-written Triton kernels for the batch-1 decode step of Llama-structured models.

Why: at batch 1 a decode step reads every weight once and does little else, so its time
is bytes over bandwidth plus the cost of each kernel's launch and tail. The compiled step
(`hf_graph` + Inductor) ran a 1B Llama's step as about 14 kernels a layer: the norms'
variances, the rotary embedding, the cache writes and attention as their own kernels, the
small Q/K/V and output products at half the bandwidth (BENCHMARKS.md, second pass). Here
a layer is five kernels:

1. `matvec` with the input RMS norm in its prologue: Q/K/V = W_qkv @ norm(hidden)
   (each program recomputes the norm's scale from the 2-8 KB hidden vector, in L2,
   instead of a separate variance kernel);
2. `attention`: rotary embedding of the new query and key, the key and value written to
   the cache slot, and grouped-query attention over the filled slots, in one kernel
   (or split over the cache, flash-decoding style, plus a kernel folding the splits:
   at batch 1 a 1B Llama has 8 KV heads, 8 programs for 132 SMs unless split);
3. `matvec` with the residual add in its epilogue: hidden + W_o @ attended;
4. `matvec` with the post-attention norm in its prologue and SwiGLU in its epilogue:
   silu(gate) * up from the fused gate/up matrix;
5. `matvec` with the residual add: hidden + W_down @ activation.

After the lm head (a `matvec` with the final norm), `pick_and_advance` takes the greedy
token and does the step's bookkeeping (positions, cache slot, mask) in two kernels
instead of about a dozen small ones.

Rounding follows transformers' eager arithmetic where it rounds to the model's dtype
(the norm's output, each projection's output, the rotary products, silu and the
products before residual adds), so bf16 results differ from eager by accumulation order
only. Each product's tile and attention's split are timed once per GPU and shape
(candidates timed at the first call, which is inside a graph build, so outside measured
rounds) and kept in the cache folder (`triton-tiles-<triton version>.json`), so a later
run on the same GPU does not time them again. Products under 4 MB and small caches take a
fixed tile: their launch, not their shape, sets their time.

The kernels run on CPU tensors under Triton's interpreter (TRITON_INTERPRET=1 set before
triton is imported), which is how CI checks them (tests/kernel_checks/).
"""

from __future__ import annotations

from typing import Any

import torch
import triton

from pytest_llmperf.engines.hf.llama_step import FusedLlamaStep
from pytest_llmperf.engines.hf.llama_step import supports as fusable
from pytest_llmperf.engines.hf.triton.kernels import (
    advance_kernel,
    attention_kernel,
    combine_kernel,
    matvec_kernel,
    pick_kernel,
)
from pytest_llmperf.engines.hf.triton.tuning import attention_split, product_tile

#: Rotary embeddings whose cos/sin depend on the position only (a table per graph).
_STATIC_ROPE = ("default", "llama3", "linear")
_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def supports(model: Any) -> bool:
    """Whether the batch-1 Triton step reproduces `model`'s decode step."""
    if not fusable(model):
        return False
    config = model.config
    rope = (getattr(config, "rope_parameters", None) or {}).get("rope_type", "default")
    head_dim = int(model.model.layers[0].self_attn.head_dim)
    power_of_two = head_dim >= 16 and head_dim & (head_dim - 1) == 0
    dtype = model.dtype
    norms_match = all(layer.input_layernorm.weight.dtype == dtype for layer in model.model.layers)
    # Each product's reduction length splits into power-of-two chunks (tl.arange's rule).
    reductions = (config.hidden_size, _attention_width(model), config.intermediate_size)
    chunkable = all(_chunkable(int(k)) for k in reductions)
    return rope in _STATIC_ROPE and power_of_two and norms_match and chunkable and dtype in _DTYPES


def _attention_width(model: Any) -> int:
    attention = model.model.layers[0].self_attn
    return int(model.config.num_attention_heads) * int(attention.head_dim)


def _chunkable(k: int) -> bool:
    return k % 256 == 0 or (k >= 16 and k & (k - 1) == 0)


def pick_and_advance(
    logits: torch.Tensor,
    bias: torch.Tensor,
    tokens: torch.Tensor,
    positions: torch.Tensor,
    slot: torch.Tensor,
    mask: torch.Tensor,
) -> None:
    """What `DecodeGraph._step` does after the logits, in two kernels: `tokens` [rows, 1]
    = argmax of `logits` [rows, vocab] + `bias` (float32; ties to the first index), then
    `positions` [rows, 1] and `slot` [1] + 1 and the next slot of the additive `mask`
    [rows, 1, 1, length] opened (0)."""
    rows, vocab = logits.shape
    length = mask.shape[-1]
    # Blocks of at least 16 lanes (and rows in pairs): no one-element tl.arange.
    width = max(16, triton.next_power_of_2(triton.cdiv(vocab, 64)))
    pieces = triton.cdiv(vocab, width)
    best = torch.empty((rows, pieces), dtype=torch.float32, device=logits.device)
    where = torch.empty((rows, pieces), dtype=torch.long, device=logits.device)
    pick_kernel[(rows, pieces)](logits, bias, best, where, vocab, WIDTH=width, num_warps=4)
    advance_kernel[(1,)](
        best, where, tokens, positions, slot, mask, length,
        ROWS=rows, ROWS_BLOCK=max(2, triton.next_power_of_2(rows)),
        PIECES=pieces, PIECES_BLOCK=max(2, triton.next_power_of_2(pieces)),
    )  # fmt: skip


def matvec(
    x: torch.Tensor,
    weight: torch.Tensor,
    *,
    norm: torch.Tensor | None = None,
    eps: float = 0.0,
    residual: torch.Tensor | None = None,
    swiglu: bool = False,
) -> torch.Tensor:
    """`weight @ x[row]` for each row of x [rows, K]; `norm`: RMS-norm x first (weight,
    eps); `swiglu`: weight is [gate; up] and the result is silu(gate) * up; `residual`:
    add it ([rows, N]) to the result. Returns [rows, N] in x's dtype."""
    rows, k = x.shape
    n = weight.shape[0] // 2 if swiglu else weight.shape[0]
    if weight.shape[1] != k or not (x.is_contiguous() and weight.is_contiguous()):
        raise ValueError(f"matvec: x {tuple(x.shape)} and weight {tuple(weight.shape)}")
    out = torch.empty((rows, n), dtype=x.dtype, device=x.device)
    chosen = (("norm", norm is not None), ("swiglu", swiglu), ("residual", residual is not None))
    flags = "+".join(name for name, on in chosen if on) or "plain"

    def launch(tile: tuple[int, int, int], compile_only: bool = False) -> None:
        block_n, block_k, warps = tile
        grid = (triton.cdiv(n, block_n), rows)
        args = (
            x,
            norm if norm is not None else x,
            weight,
            residual if residual is not None else x,
            out,
            n,
            eps,
        )
        options = {
            "K": k,
            "NORM": norm is not None,
            "SWIGLU": swiglu,
            "RESIDUAL": residual is not None,
            "BLOCK_N": block_n,
            "BLOCK_K": min(block_k, k),
            "num_warps": warps,
        }
        if compile_only:
            matvec_kernel.warmup(*args, grid=grid, **options)
        else:
            matvec_kernel[grid](*args, **options)

    launch(product_tile(launch, x, weight, flags, n, k))
    return out


def attention(
    qkv: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    positions: torch.Tensor,
    slot: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    filled: torch.Tensor,
    mask: torch.Tensor,
    scaling: float,
    heads: int,
    split: tuple[int, int] | None = None,
) -> torch.Tensor:
    """Decode attention for rows of `qkv` [rows, (heads + 2 kv_heads) * dim]: rotary
    embedding from `cos`/`sin` tables [length, dim] at each row's `positions` [rows, 1],
    the new key and value written to cache `keys`/`values` [rows, kv_heads, length, dim]
    at `slot` (a 1-element tensor; `filled`, the cache's counter, set to slot + 1),
    attention over slots 0..slot with the additive `mask` [rows, 1, 1, length].
    `split`: (cache splits, slots per loop step), else tuned (see `tuning.attention_split`).
    Returns [rows, heads * dim]."""
    rows = qkv.shape[0]
    _, kv_heads, length, dim = keys.shape
    for name, tensor in (("keys", keys), ("values", values), ("mask", mask), ("qkv", qkv)):
        if not tensor.is_contiguous():
            raise ValueError(f"attention: {name} must be contiguous")
    group = heads // kv_heads
    group_block = max(16, triton.next_power_of_2(group))
    out = torch.empty((rows, heads * dim), dtype=qkv.dtype, device=qkv.device)

    def launch(
        chosen: tuple[int, int, int],
        at: torch.Tensor = slot,
        counter: torch.Tensor = filled,
        compile_only: bool = False,
    ) -> None:
        splits, block, warps = chosen
        shape = (rows, kv_heads, splits, group_block)
        best = torch.empty(shape, dtype=torch.float32, device=qkv.device)
        total = torch.empty_like(best)
        partial = torch.empty((*shape, dim), dtype=torch.float32, device=qkv.device)
        constants = {
            "HEADS": heads,
            "KV_HEADS": kv_heads,
            "GROUP": group,
            "GROUP_BLOCK": group_block,
            "DIM": dim,
            "SPLITS": splits,
        }
        args = (
            qkv, cos, sin, positions, at, keys, values, counter, mask, out,
            partial, best, total, scaling, length, triton.cdiv(length, splits),
        )  # fmt: skip
        combine_args = (out, partial, best, total)
        if compile_only:
            grid = (rows, kv_heads, splits)
            attention_kernel.warmup(*args, grid=grid, BLOCK=block, num_warps=warps, **constants)
            if splits > 1:
                combine_kernel.warmup(*combine_args, grid=(rows, kv_heads), **constants)
            return
        attention_kernel[(rows, kv_heads, splits)](*args, BLOCK=block, num_warps=warps, **constants)
        if splits > 1:
            combine_kernel[(rows, kv_heads)](*combine_args, **constants)

    launch((*split, 4) if split is not None else attention_split(launch, qkv, keys, heads))
    return out


class TritonLlamaStep:
    """The decode step of `fused`'s model through the kernels above, for one graph's
    cache length (the rotary table covers its positions)."""

    def __init__(self, fused: FusedLlamaStep, length: int) -> None:
        self.fused = fused
        model = fused.model
        inner = model.model
        self.heads = fused.heads
        with torch.no_grad():
            probe = inner.embed_tokens.weight[:1][None]
            cos, sin = inner.rotary_emb(
                probe, position_ids=torch.arange(length, device=probe.device)[None]
            )
        self.cos, self.sin = cos[0].contiguous(), sin[0].contiguous()
        self._filled = torch.zeros((), dtype=torch.long, device=probe.device)

    def step(
        self,
        tokens: torch.Tensor,
        positions: torch.Tensor,
        mask: torch.Tensor,
        cache: Any,
        slot: torch.Tensor,
        bias: torch.Tensor,
    ) -> None:
        """One greedy decode step in place: `DecodeGraph._step`'s contract (next tokens,
        positions, slot and mask updated; the cache written)."""
        logits = self.logits(tokens, positions, mask, cache, slot)
        pick_and_advance(logits, bias, tokens, positions, slot, mask)

    def logits(
        self,
        tokens: torch.Tensor,
        positions: torch.Tensor,
        mask: torch.Tensor,
        cache: Any,
        slot: torch.Tensor,
    ) -> torch.Tensor:
        """Logits [rows, vocab] after `tokens` [rows, 1] at `positions` [rows, 1], the new
        keys and values written to `cache` (a transformers StaticCache, filled by a
        prefill) at `slot`."""
        inner = self.fused.model.model
        rows = tokens.shape[0]
        hidden = inner.embed_tokens(tokens).view(rows, -1)
        for index, layer in enumerate(inner.layers):
            attention_module = layer.self_attn
            stored = cache.layers[index]
            # transformers' StaticLayer counts its filled slots; older caches do not.
            filled = getattr(stored, "cumulative_length", None)
            qkv = matvec(
                hidden,
                self.fused.qkv[index],
                norm=layer.input_layernorm.weight,
                eps=layer.input_layernorm.variance_epsilon,
            )
            attended = attention(
                qkv,
                self.cos,
                self.sin,
                positions,
                slot,
                stored.keys,
                stored.values,
                filled if isinstance(filled, torch.Tensor) else self._filled,
                mask,
                attention_module.scaling,
                self.heads,
            )
            hidden = matvec(attended, attention_module.o_proj.weight, residual=hidden)
            activated = matvec(
                hidden,
                self.fused.gate_up[index],
                norm=layer.post_attention_layernorm.weight,
                eps=layer.post_attention_layernorm.variance_epsilon,
                swiglu=True,
            )
            hidden = matvec(activated, layer.mlp.down_proj.weight, residual=hidden)
        return matvec(
            hidden,
            self.fused.model.lm_head.weight,
            norm=inner.norm.weight,
            eps=inner.norm.variance_epsilon,
        )
