"""`triton_decode`'s kernels compute what transformers computes.

Run by tests/test_triton_decode.py in a child pytest: on a CUDA GPU the kernels are
compiled; without one the child runs with TRITON_INTERPRET=1 (set before triton is
imported, which is why this is a separate run) and the same kernels execute on CPU
tensors. Not collected by the main run (not named test_*.py).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from pytest_llmperf.engines.hf import llama_step
from pytest_llmperf.engines.hf.graph import DecodeGraph, argmax_rows
from pytest_llmperf.engines.hf.grouped_attention import reduction_decode_attention
from pytest_llmperf.engines.hf.triton import decode as triton_decode

sys.path.insert(0, str(Path(__file__).parents[1]))
from test_decode_step import random_llama

DEVICE = (
    "cuda" if torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1" else "cpu"
)


def assert_close(got: torch.Tensor, expected: torch.Tensor) -> None:
    """float32: to accumulation order. bf16: the kernels round where transformers rounds,
    but a sum in another order can round an intermediate (a gate, a norm's output) one
    bf16 step (1/128 relative) the other way; downstream that is a few hundredths of the
    result's scale, more than 1/128 of values that happen to be near zero."""
    if got.dtype == torch.float32:
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    else:
        scale = expected.abs().max().item()
        torch.testing.assert_close(got, expected, rtol=2e-2, atol=2e-2 * scale)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """LlamaRMSNorm's arithmetic."""
    wide = x.float()
    wide = wide * torch.rsqrt(wide.pow(2).mean(-1, keepdim=True) + eps)
    return weight * wide.to(x.dtype)


def randn(*shape: int, dtype: torch.dtype) -> torch.Tensor:
    return torch.randn(*shape, device=DEVICE).to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("kind", ["plain", "norm", "residual", "swiglu"])
def test_matvec(kind: str, dtype: torch.dtype) -> None:
    """Two rows, 98 columns (a partial last block), 512-long reductions (two chunks)."""
    torch.manual_seed(0)
    x, norm = randn(2, 512, dtype=dtype), randn(512, dtype=dtype)
    residual = randn(2, 98, dtype=dtype)
    weight = randn(2 * 98 if kind == "swiglu" else 98, 512, dtype=dtype) / 16
    if kind == "plain":
        got = triton_decode.matvec(x, weight)
        expected = F.linear(x, weight)
    elif kind == "norm":
        got = triton_decode.matvec(x, weight, norm=norm, eps=1e-5)
        expected = F.linear(rms_norm(x, norm, 1e-5), weight)
    elif kind == "residual":
        got = triton_decode.matvec(x, weight, residual=residual)
        expected = residual + F.linear(x, weight)
    else:
        got = triton_decode.matvec(x, weight, norm=norm, eps=1e-5, swiglu=True)
        gate, up = F.linear(rms_norm(x, norm, 1e-5), weight).chunk(2, dim=-1)
        expected = F.silu(gate) * up
    assert got.shape == expected.shape and got.dtype == dtype
    assert_close(got, expected)


@pytest.mark.parametrize("split", [(1, 64), (4, 32), (16, 32)], ids=["whole", "4x40", "16x10"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("kv_heads", [2, 8])
def test_attention(kv_heads: int, dtype: torch.dtype, split: tuple[int, int]) -> None:
    """Rotary, cache write and masked attention against transformers' rotary and the
    reduction attention. Slot 130 of 160: in one piece, three 64-slot loop steps; in 4
    splits of 40 slots, the slot in the last; in 16 splits of 10, two splits past the slot
    (empty). Row 1 is left-padded (its first 5 slots masked) and six positions behind."""
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding, apply_rotary_pos_emb

    torch.manual_seed(1)
    heads, dim, length, slot = 8, 32, 160, 130
    config = LlamaConfig(num_attention_heads=heads, hidden_size=heads * dim, head_dim=dim)
    rotary = LlamaRotaryEmbedding(config).to(DEVICE)
    cos, sin = rotary(randn(1, dtype=dtype), position_ids=torch.arange(length, device=DEVICE)[None])
    keys, values = (
        randn(2, kv_heads, length, dim, dtype=dtype),
        randn(2, kv_heads, length, dim, dtype=dtype),
    )
    qkv = randn(2, (heads + 2 * kv_heads) * dim, dtype=dtype)
    positions = torch.tensor([[slot], [slot - 6]], device=DEVICE)
    mask = torch.zeros(2, 1, 1, length, dtype=dtype, device=DEVICE)
    mask[..., slot + 1 :] = torch.finfo(dtype).min
    mask[1, ..., :5] = torch.finfo(dtype).min
    filled = torch.zeros((), dtype=torch.long, device=DEVICE)

    q, k, v = qkv.split([heads * dim, kv_heads * dim, kv_heads * dim], dim=-1)
    q = q.view(2, 1, heads, dim).transpose(1, 2)
    k = k.view(2, 1, kv_heads, dim).transpose(1, 2)
    v = v.view(2, 1, kv_heads, dim).transpose(1, 2)
    row_cos, row_sin = cos[0, positions[:, 0]][:, None], sin[0, positions[:, 0]][:, None]
    q, k = apply_rotary_pos_emb(q, k, row_cos, row_sin)
    expected_keys, expected_values = keys.clone(), values.clone()
    expected_keys[:, :, slot], expected_values[:, :, slot] = k[:, :, 0], v[:, :, 0]
    expected = reduction_decode_attention(q, expected_keys, expected_values, mask, dim**-0.5)

    got = triton_decode.attention(
        qkv, cos[0].contiguous(), sin[0].contiguous(), positions,
        torch.tensor([slot], device=DEVICE), keys, values, filled, mask, dim**-0.5, heads, split,
    )  # fmt: skip
    assert got.shape == (2, heads * dim)
    torch.testing.assert_close(values, expected_values, rtol=0, atol=0)
    # Keys to a rounding step: on an H100 about a quarter of the new keys' elements came out
    # one step (float32 and bf16 alike) from transformers' separate multiplies and add (a
    # multiply-add contracted into one FMA is the likely cause; not established), and the
    # interpreter truncates float32 to bf16 where a GPU rounds to nearest.
    assert_close(keys, expected_keys)
    assert filled.item() == slot + 1
    assert_close(got, expected.reshape(2, -1))


@pytest.mark.parametrize("rows", [1, 3])
def test_pick_and_advance(rows: int) -> None:
    """The greedy pick and bookkeeping against `DecodeGraph._step`'s: a tie (first index
    wins), a bias that decides, and the slot reaching the cache's end (the last slot stays
    the visible one)."""
    torch.manual_seed(2)
    vocab, length = 1000, 40
    logits = randn(rows, vocab, dtype=torch.bfloat16)
    logits[0, 5] = logits[0, 900] = 50.0
    bias = torch.zeros(rows, vocab, device=DEVICE)
    bias[-1, 7] = 1000.0
    bias[-1, 5] = -float("inf")
    mask = torch.full((rows, 1, 1, length), torch.finfo(torch.bfloat16).min, device=DEVICE)
    mask = mask.to(torch.bfloat16)
    mask[..., :3] = 0.0
    state = [torch.zeros(rows, 1, dtype=torch.long, device=DEVICE),
             torch.arange(10, 10 + rows, device=DEVICE)[:, None],
             torch.tensor([length - 2], device=DEVICE), mask]  # fmt: skip
    expected = [t.clone() for t in state]
    for _ in range(2):
        triton_decode.pick_and_advance(logits, bias, *state)
        tokens, positions, slot, opened = expected
        tokens.copy_(argmax_rows(logits.float() + bias)[:, None])
        positions.add_(1)
        slot.add_(1)
        opened.scatter_(3, slot.clamp(max=length - 1).view(1, 1, 1, 1).expand(rows, 1, 1, 1), 0.0)
    # Row 0: the tie; the last row (row 0 too when alone): the bias.
    assert state[0][0].item() == (5 if rows > 1 else 7) and state[0][-1].item() == 7
    for got, want in zip(state, expected, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert state[2].item() == length
    assert (state[3][..., -1] == 0).all() and (state[3][..., 3:-1] != 0).all()


def decode(
    kv_heads: int, kernels: bool, steps: int, dtype: torch.dtype = torch.float32
) -> tuple[list[int], list[list[int]], torch.Tensor]:
    """Greedy steps of the graph path's step function (no graph) on two left-padded
    prompts; also the first step's logits."""
    model = random_llama(kv_heads).to(DEVICE, dtype)
    fused = llama_step.FusedLlamaStep(model)
    step = triton_decode.TritonLlamaStep(fused, 32) if kernels else None
    graph = DecodeGraph(model, batch=2, length=32, compile_step=False, fused=fused, kernels=step)
    with torch.no_grad():
        first = graph.prefill([[5, 6, 7], [3, 4, 5, 6, 8]], pad_id=0)
        if step is not None:
            logits = step.logits(
                graph.tokens, graph.positions, graph.mask, graph.cache, graph.cache_position
            )
        else:
            logits = fused.logits(graph.tokens, graph.positions, graph.mask, graph.cache)
        graph.prefill([[5, 6, 7], [3, 4, 5, 6, 8]], pad_id=0)
        tokens = []
        for _ in range(steps):
            graph.step()
            tokens.append(graph.tokens[:, 0].tolist())
    return first, tokens, logits


@pytest.mark.parametrize("kv_heads", [1, 4])
def test_the_kernel_step_decodes_what_transformers_decodes(kv_heads: int) -> None:
    """The whole step (float32) against the fused step in transformers' arithmetic:
    the first step's logits, and the same tokens for 8 steps."""
    first, tokens, logits = decode(kv_heads, kernels=False, steps=8)
    first_k, tokens_k, logits_k = decode(kv_heads, kernels=True, steps=8)
    torch.testing.assert_close(logits_k, logits, rtol=1e-4, atol=1e-4)
    assert (first_k, tokens_k) == (first, tokens)
    assert len({t for row in tokens for t in row}) > 2


def test_the_kernel_step_in_bfloat16() -> None:
    """bf16 (the benchmarks' dtype): the first step's logits to bf16's rounding of the
    layers' intermediates (tokens may part where two logits are within a rounding step)."""
    _, _, logits = decode(4, kernels=False, steps=0, dtype=torch.bfloat16)
    _, _, logits_k = decode(4, kernels=True, steps=0, dtype=torch.bfloat16)
    assert logits_k.dtype == torch.bfloat16
    assert_close(logits_k, logits.to(torch.bfloat16))
