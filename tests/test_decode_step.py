"""The pieces of the hf engine's fast decode step compute what transformers computes:
grouped-query decode attention (`engines/grouped_attention.py`, no repeated KV heads) and
the fused-projection Llama step (`engines/llama_step.py`). Both run on the CPU here; the
CUDA graph around them is tested on a GPU in test_hf_graph.py."""

from __future__ import annotations

import pytest
import torch

from pytest_llmperf.engines.hf import grouped_attention, llama_step
from pytest_llmperf.engines.hf.graph import DecodeGraph, argmax_rows


class Layer(torch.nn.Module):
    num_key_value_groups = 4
    is_causal = True


def test_a_decode_step_equals_sdpa_with_repeated_heads() -> None:
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    torch.manual_seed(0)
    query = torch.randn(3, 8, 1, 16)
    key, value = torch.randn(3, 2, 10, 16), torch.randn(3, 2, 10, 16)
    mask = torch.zeros(3, 1, 1, 10)
    mask[0, ..., 7:] = torch.finfo(torch.float32).min  # row 0 has filled 7 slots
    mask[2, ..., :4] = torch.finfo(torch.float32).min  # row 2 was left-padded
    expected, _ = sdpa_attention_forward(Layer(), query, key, value, mask, scaling=0.25)
    got, weights = grouped_attention.grouped_sdpa_attention(
        Layer(), query, key, value, mask, scaling=0.25
    )
    assert weights is None
    assert got.shape == expected.shape == (3, 1, 8, 16)
    torch.testing.assert_close(got, expected)
    # The mask mattered: without it the rows differ.
    unmasked, _ = grouped_attention.grouped_sdpa_attention(Layer(), query, key, value, None)
    assert not torch.allclose(unmasked, expected)


@pytest.mark.parametrize("kv_heads", [2, 8])
def test_reduction_decode_attention_equals_grouped_sdpa(kv_heads: int) -> None:
    """The compiled step's attention (run here uncompiled, same arithmetic) against
    grouped SDPA, masks included."""
    torch.manual_seed(1)
    query = torch.randn(3, 8, 1, 16)
    key, value = torch.randn(3, kv_heads, 10, 16), torch.randn(3, kv_heads, 10, 16)
    mask = torch.zeros(3, 1, 1, 10)
    mask[0, ..., 7:] = torch.finfo(torch.float32).min
    mask[2, ..., :4] = torch.finfo(torch.float32).min
    layer = Layer()
    layer.num_key_value_groups = 8 // kv_heads
    expected, _ = grouped_attention.grouped_sdpa_attention(
        layer, query, key, value, mask, scaling=0.25
    )
    got = grouped_attention.reduction_decode_attention(query, key, value, mask, 0.25)
    assert got.shape == (3, 1, 8, 16)
    torch.testing.assert_close(got, expected)


def random_llama(kv_heads: int, **extra: object) -> torch.nn.Module:
    """A random-weight float32 Llama, 2 layers of 4 query heads (same seed, same weights);
    `extra` overrides or adds configuration."""
    from transformers import LlamaConfig, LlamaForCausalLM

    shape: dict[str, object] = {
        "vocab_size": 128,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": kv_heads,
        "max_position_embeddings": 64,
        "pad_token_id": 0,
        "eos_token_id": 1,
        "bos_token_id": 2,
    }
    config = LlamaConfig(**{**shape, **extra})
    torch.manual_seed(0)
    return LlamaForCausalLM(config).eval()


@pytest.mark.parametrize("kv_heads", [1, 2])
def test_a_gqa_model_generates_the_same_logits(kv_heads: int) -> None:
    """A random-weight Llama with grouped KV heads, a static cache and left padding:
    prefill takes sdpa's path, decode steps the grouped one; logits agree at every step."""
    prompts = torch.tensor([[0, 0, 5, 6, 7], [3, 4, 5, 6, 8]])
    attention_mask = (prompts != 0).long()
    logits = {}
    for implementation in ("sdpa", grouped_attention.register()):
        model = random_llama(kv_heads)
        model.set_attn_implementation(implementation)
        with torch.no_grad():
            out = model.generate(
                prompts,
                attention_mask=attention_mask,
                max_new_tokens=6,
                min_new_tokens=6,
                do_sample=False,
                cache_implementation="static",
                output_logits=True,
                return_dict_in_generate=True,
            )
        logits[implementation] = torch.stack(out.logits)
    plain, grouped = logits.values()
    assert plain.shape == (6, 2, 128)
    torch.testing.assert_close(grouped, plain)


def decode(model: torch.nn.Module, fused: bool, steps: int) -> tuple[list[int], list[list[int]]]:
    """First tokens and `steps` greedy decode steps of the graph path's step function
    (no CUDA graph: the step itself), on two left-padded prompts."""
    fused_step = llama_step.FusedLlamaStep(model) if fused else None
    graph = DecodeGraph(model, batch=2, length=32, compile_step=False, fused=fused_step)
    with torch.no_grad():
        first = graph.prefill([[5, 6, 7], [3, 4, 5, 6, 8]], pad_id=0)
        tokens = []
        for _ in range(steps):
            graph.step()
            tokens.append(graph.tokens[:, 0].tolist())
    return first, tokens


@pytest.mark.parametrize("kv_heads", [1, 4])
def test_the_fused_step_decodes_what_transformers_decodes(kv_heads: int) -> None:
    """Fused Q/K/V and gate/up (grouped and plain attention) against transformers'
    forward in the same static cache and masks: same tokens for 12 steps."""
    plain = decode(random_llama(kv_heads), fused=False, steps=12)
    fused = decode(random_llama(kv_heads), fused=True, steps=12)
    assert fused == plain
    # The random model's tokens are not one repeated token (the comparison has content).
    assert len({t for row in plain[1] for t in row}) > 2


@pytest.mark.parametrize("kv_heads", [1, 4])
def test_the_fused_step_gives_transformers_logits(kv_heads: int) -> None:
    """One decode step after a left-padded prefill, from the same cache contents."""
    prompts = [[5, 6, 7], [3, 4, 5, 6, 8]]
    plain = DecodeGraph(random_llama(kv_heads), batch=2, length=32, compile_step=False)
    fused_model = random_llama(kv_heads)
    fused = DecodeGraph(
        fused_model, 2, 32, compile_step=False, fused=llama_step.FusedLlamaStep(fused_model)
    )
    with torch.no_grad():
        for graph in (plain, fused):
            graph.prefill(prompts, pad_id=0)
        expected = plain.model(
            input_ids=plain.tokens,
            position_ids=plain.positions,
            attention_mask=plain.mask,
            past_key_values=plain.cache,
            use_cache=True,
        ).logits[:, -1]
        assert fused.fused is not None
        got = fused.fused.logits(fused.tokens, fused.positions, fused.mask, fused.cache)
    assert got.shape == (2, 128)
    torch.testing.assert_close(got, expected)


def test_fusing_re_points_the_weights_without_changing_the_model() -> None:
    model = random_llama(1)
    ids = torch.tensor([[3, 4, 5, 6]])
    with torch.no_grad():
        before = model(input_ids=ids).logits
        parameters = sum(p.numel() for p in model.parameters())
        step = llama_step.FusedLlamaStep(model)
        after = model(input_ids=ids).logits
    attention = model.model.layers[1].self_attn
    assert attention.q_proj.weight.data_ptr() == step.qkv[1].data_ptr()
    assert attention.v_proj.weight.data_ptr() == step.qkv[1][-16:].data_ptr()
    assert model.model.layers[0].mlp.up_proj.weight.data_ptr() == step.gate_up[0][128:].data_ptr()
    assert sum(p.numel() for p in model.parameters()) == parameters
    torch.testing.assert_close(after, before)


def test_only_llama_structured_models_take_the_fused_step() -> None:
    assert llama_step.supports(random_llama(1))
    assert not llama_step.supports(random_llama(1, attention_bias=True))
    assert not llama_step.supports(random_llama(1, hidden_act="gelu"))


@pytest.mark.parametrize("vocab", [1, 63, 64, 1000, 128256])
def test_the_two_stage_argmax_is_argmax(vocab: int) -> None:
    torch.manual_seed(vocab)
    scores = torch.randn(5, vocab)
    scores[1] = 0.0  # all tied: the first index
    scores[2, -1] = 100.0  # the last column (in the padded slice)
    assert argmax_rows(scores).tolist() == scores.argmax(-1).tolist()
