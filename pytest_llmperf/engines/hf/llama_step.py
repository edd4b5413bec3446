"""One decode step of a Llama-structured model with fused projections, for `hf_graph`.

Why: at batch 1 a decode step is a chain of matrix-vector products, each launched as its
own kernel, and the small ones (a 1B Llama's K and V projections are 2 MB each) run far
below the memory bandwidth; their launch and tail costs, not their bytes, set the step's
time. Fusing Q, K and V into one matrix and gate and up into another, as vLLM does,
removes three of the seven products per layer.

The fused matrices hold the weights once: the model's own `q_proj.weight` (and the others)
become views into them, so transformers' forward (prefill, the eager loop) reads the same
memory and nothing is copied. Everything else is the model's own modules (embedding,
norms, rotary embedding, cache, lm head), called in the order `LlamaModel.forward` calls
them; attention is `grouped_attention`'s (as reductions when compiled).
Models this step does not know (biases, other activations, other layer structures) keep
transformers' forward: `supports` decides.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from pytest_llmperf.engines.hf.grouped_attention import (
    grouped_sdpa_attention,
    reduction_decode_attention,
)

_FAMILIES = ("llama",)


def supports(model: Any) -> bool:
    """Whether `model` has the layer structure `FusedLlamaStep` reproduces."""
    config = model.config
    if getattr(config, "model_type", None) not in _FAMILIES:
        return False
    if getattr(config, "attention_bias", False) or getattr(config, "mlp_bias", False):
        return False
    return getattr(config, "hidden_act", None) == "silu"


def _fuse(*linears: torch.nn.Linear) -> torch.Tensor:
    """One matrix with the linears' weights stacked; each linear's weight becomes a view
    into it (the old tensors are freed)."""
    fused = torch.cat([linear.weight.detach() for linear in linears])
    start = 0
    for linear in linears:
        rows = linear.weight.shape[0]
        linear.weight = torch.nn.Parameter(fused[start : start + rows], requires_grad=False)
        start += rows
    return fused


class FusedLlamaStep:
    """The decode step (one new token per row) over the model's fused weights; attention
    as reductions when `for_compile` (a step that will be compiled), else grouped SDPA."""

    def __init__(self, model: Any, for_compile: bool = False) -> None:
        from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

        self.model = model
        self.for_compile = for_compile
        self._rotate = apply_rotary_pos_emb
        config = model.config
        self.heads = int(config.num_attention_heads)
        self.kv_heads = int(config.num_key_value_heads)
        layers = model.model.layers
        self.head_dim = int(layers[0].self_attn.head_dim)
        self.widths = [self.heads * self.head_dim, *[self.kv_heads * self.head_dim] * 2]
        with torch.no_grad():
            self.qkv = [
                _fuse(layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj)
                for layer in layers
            ]
            self.gate_up = [_fuse(layer.mlp.gate_proj, layer.mlp.up_proj) for layer in layers]

    def logits(
        self, tokens: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor, cache: Any
    ) -> torch.Tensor:
        """Logits [batch, vocab] of the next token after `tokens` [batch, 1], written to
        `cache` (a transformers cache) at each row's next slot; `mask` is additive
        [batch, 1, 1, cache length]."""
        inner = self.model.model
        batch = tokens.shape[0]
        hidden = inner.embed_tokens(tokens)
        cos, sin = inner.rotary_emb(hidden, position_ids=positions)
        for index, layer in enumerate(inner.layers):
            attention = layer.self_attn
            projected = F.linear(layer.input_layernorm(hidden), self.qkv[index])
            q, k, v = torch.split(projected, self.widths, dim=-1)
            q = q.view(batch, 1, self.heads, self.head_dim).transpose(1, 2)
            k = k.view(batch, 1, self.kv_heads, self.head_dim).transpose(1, 2)
            v = v.view(batch, 1, self.kv_heads, self.head_dim).transpose(1, 2)
            q, k = self._rotate(q, k, cos, sin)
            keys, values = cache.update(k, v, index)
            if self.for_compile:
                attended = reduction_decode_attention(q, keys, values, mask, attention.scaling)
            else:
                attended, _ = grouped_sdpa_attention(
                    attention, q, keys, values, mask, scaling=attention.scaling
                )
            hidden = hidden + attention.o_proj(attended.reshape(batch, 1, -1))
            gate, up = F.linear(layer.post_attention_layernorm(hidden), self.gate_up[index]).chunk(
                2, dim=-1
            )
            hidden = hidden + layer.mlp.down_proj(F.silu(gate) * up)
        out: torch.Tensor = self.model.lm_head(inner.norm(hidden)[:, -1])
        return out
