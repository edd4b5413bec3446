"""Decode attention for grouped-query models without copying the KV cache.

transformers' "sdpa" attention repeats every key/value head for its group of query heads
(`repeat_kv`, a real copy) whenever an attention mask is passed, and a static cache
always passes one. On a decode step that copy reads and writes the whole cache, per layer:
on a 1B Llama (32 query heads, 8 KV heads) at batch 32 with a 512-slot cache it moves
about four times the cache's bytes a step, more than the weights.

With one query token per row, the query heads of a group can stand in for query
*positions* instead: query [batch, kv_heads * group, 1, dim] viewed as
[batch, kv_heads, group, dim] attends the un-repeated [batch, kv_heads, cache, dim] keys,
and the row's [batch, 1, 1, cache] mask broadcasts over both. Same arithmetic, no copy.
Prefill (more than one query token), models without grouping and dropout keep
transformers' own sdpa path.

`reduction_decode_attention` is the compiled decode step's choice instead. SDPA's
memory-efficient kernel gives each (row, KV head) one thread block that walks the whole
cache: at batch 1 a 1B Llama's 8 KV heads occupy 8 of an H100's 132 SMs, and attention
took 28% of the step (FlexAttention's decode kernel, tried next, 21%, plus the block mask
it builds each step). Written as element-wise products and sums, attention becomes a few
Inductor reductions over every (row, head, slot) at once, reading each key and value
once, with the mask add and the softmax fused in.
"""

from __future__ import annotations

from typing import Any

import torch

NAME = "llmperf_grouped_sdpa"


def grouped_sdpa_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """An attention function with transformers' interface (see module docstring)."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    batch, heads, query_length, dim = query.shape
    kv_heads = key.shape[1]
    if query_length != 1 or kv_heads == heads or dropout or kwargs.get("position_bias") is not None:
        out: tuple[torch.Tensor, None] = sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
        return out
    # Query head h belongs to KV head h // group (repeat_kv's order), so the heads axis
    # splits into (kv_heads, group).
    grouped = query.reshape(batch, kv_heads, heads // kv_heads, dim)
    attended = torch.nn.functional.scaled_dot_product_attention(
        grouped, key, value, attn_mask=attention_mask, scale=scaling
    )
    # transformers expects [batch, query_length, heads, dim].
    return attended.reshape(batch, 1, heads, dim), None


def register() -> str:
    """Make the function available as `attn_implementation=NAME` (idempotent); its masks
    are sdpa's."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(NAME, grouped_sdpa_attention)
    AttentionMaskInterface.register(NAME, sdpa_mask)
    return NAME


def reduction_decode_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    mask: torch.Tensor,
    scaling: float,
) -> torch.Tensor:
    """Decode attention as products and sums: query [batch, heads, 1, dim], key and value
    [batch, kv_heads, cache, dim], `mask` additive [batch, 1, 1, cache]; returns
    [batch, 1, heads, dim]. Accumulates in float32, as SDPA's kernels do. Meant for
    torch.compile (eager, it materialises the products)."""
    batch, heads, _, dim = query.shape
    kv_heads = key.shape[1]
    grouped = query.reshape(batch, kv_heads, heads // kv_heads, 1, dim).float()
    # [batch, kv_heads, group, cache]: each query head against its group's keys.
    scores = (grouped * key[:, :, None].float()).sum(-1) * scaling + mask.float()
    weights = scores.softmax(-1)
    attended = (weights[..., None] * value[:, :, None].float()).sum(-2)
    return attended.to(query.dtype).reshape(batch, 1, heads, dim)
