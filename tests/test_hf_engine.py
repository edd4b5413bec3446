"""The transformers engines, for real: the tiny model on CPU, no mocks.

What both hf engines promise (the engine contract, `engines/base.py`) runs on each: `hf`
(transformers' `generate`) and `hf-fast` (our own loop; its CPU path). What only `hf`
promises is in test_hf_generate.py; `hf-fast`'s CUDA path in test_hf_graph.py."""

from __future__ import annotations

import json
import logging
import shutil
from collections import defaultdict
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
import torch

from pytest_llmperf.engines.base import (
    Engine,
    EngineConfig,
    GenerationRequest,
    SamplingParams,
    StreamChunk,
    Tokenizer,
)
from pytest_llmperf.engines.hf.common import HFEngineBase
from pytest_llmperf.engines.hf.engine import HFEngine
from pytest_llmperf.engines.hf.fast import HFFastEngine
from pytest_llmperf.models.names import tiny_model_path

PROMPTS = (
    "Hello",
    "The quick brown fox jumps over the lazy dog.",
    "One two three four five six",
    "Speed test of a model with many words, and then a few more words to make it long.",
)
MAX_MODEL_LEN = 256


ENGINES: dict[str, type[HFEngineBase]] = {"hf": HFEngine, "hf-fast": HFFastEngine}


@pytest.fixture(scope="module", params=sorted(ENGINES))
def which(request: pytest.FixtureRequest) -> str:
    """The engine under test: every test of this module runs on both."""
    name: str = request.param
    return name


def start(which: str, model: str = "tiny", **settings: Any) -> HFEngineBase:
    engine = ENGINES[which](EngineConfig.make(which, model, settings))
    engine.start()
    return engine


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """One intra-op thread: for a model this small, on a small shared VM, two threads
    spin against each other and make every step 10x slower and erratic."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def engine(one_thread: None, which: str) -> Iterator[HFEngineBase]:
    engine = start(which, max_model_len=MAX_MODEL_LEN)
    yield engine
    engine.close()


def req(i: int | str, sampling: SamplingParams, **kwargs: Any) -> GenerationRequest:
    return GenerationRequest(str(i), sampling, **kwargs)


def run(engine: HFEngineBase, requests: Sequence[GenerationRequest]) -> list[StreamChunk]:
    return list(engine.stream(requests))


def outputs(chunks: list[StreamChunk]) -> dict[int, list[int]]:
    out: dict[int, list[int]] = defaultdict(list)
    for chunk in chunks:
        out[chunk.index].extend(chunk.token_ids)
    return dict(out)


def finals(chunks: list[StreamChunk]) -> dict[int, StreamChunk]:
    """Each request's final chunk, checking that there is exactly one and it is last."""
    done: dict[int, StreamChunk] = {}
    for chunk in chunks:
        assert chunk.index not in done, f"request {chunk.index} has a chunk after its final one"
        if chunk.finish_reason is not None:
            done[chunk.index] = chunk
    return done


def greedy(engine: HFEngineBase, prompt: str, n: int = 16) -> list[int]:
    return outputs(run(engine, [req(0, SamplingParams.fixed_length(n), prompt=prompt)]))[0]


def test_start_reports_facts(engine: HFEngineBase, which: str) -> None:
    other = ENGINES[which](EngineConfig.make(which, "tiny"))
    info = other.start()
    assert isinstance(other, Engine)
    other.close()
    assert (info.engine, info.device, info.dtype) == (which, "cpu", "float32")
    assert info.model == str(tiny_model_path())
    assert info.details["attn_implementation"] == "sdpa"
    assert info.details["num_parameters"] == 590_464
    assert info.details["max_model_len"] == 2048  # the model's own limit by default
    assert "attn_fallback" not in info.details
    assert {"transformers_version", "torch_version"} <= set(info.details)

    tok = engine.tokenizer
    assert isinstance(tok, Tokenizer)
    ids = tok.encode("x")
    assert len(ids) == 1 and ids[0] > 3  # no <s> or other special token
    assert tok.decode([0, *tok.encode("hi there"), 1, 3]) == "hi there"


def test_greedy_batch_matches_unpadded_generate(engine: HFEngineBase) -> None:
    from transformers import AutoModelForCausalLM

    n = 16
    chunks = run(
        engine,
        [
            req(i, SamplingParams(max_tokens=n, min_tokens=n), prompt=p)
            for i, p in enumerate(PROMPTS)
        ],
    )
    got = outputs(chunks)
    lengths = {len(engine.tokenizer.encode(p)) for p in PROMPTS}
    assert len(lengths) == len(PROMPTS), "prompts must differ in length to test left padding"

    model = AutoModelForCausalLM.from_pretrained(tiny_model_path()).eval()
    for i, prompt in enumerate(PROMPTS):
        ids = torch.tensor([engine.tokenizer.encode(prompt)])
        with torch.inference_mode():
            ref = model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                do_sample=False,
                max_new_tokens=n,
                min_new_tokens=n,
            )
        assert got[i] == ref[0, ids.shape[1] :].tolist(), f"prompt {i}: {prompt!r}"
        assert {c.prompt_tokens for c in chunks if c.index == i} == {ids.shape[1]}


def test_fixed_length_and_step_by_step_order(engine: HFEngineBase) -> None:
    n = 7
    chunks = run(
        engine,
        [req(i, SamplingParams.fixed_length(n), prompt=p) for i, p in enumerate(PROMPTS[:3])],
    )
    # One token per running request per step, in request order: step by step.
    assert [c.index for c in chunks] == [0, 1, 2] * n
    assert all(len(c.token_ids) == 1 for c in chunks)
    done = finals(chunks)
    assert sorted(done) == [0, 1, 2]
    for i, final in done.items():
        assert final.finish_reason == "length"
        assert final.text == engine.tokenizer.decode(outputs(chunks)[i])
    assert {len(v) for v in outputs(chunks).values()} == {n}


def test_stream_is_lazy_and_can_be_abandoned(engine: HFEngineBase) -> None:
    stream = engine.stream([req(0, SamplingParams.fixed_length(50), prompt="Hello")])
    first = next(stream)
    assert first.index == 0 and len(first.token_ids) == 1 and first.finish_reason is None
    # Inference mode is entered per step, never left on for the caller between chunks.
    assert not torch.is_inference_mode_enabled()
    stream.close()  # type: ignore[attr-defined]
    assert greedy(engine, "Hello", 1) == list(first.token_ids)


def test_batches_of_max_num_seqs_run_in_order(which: str) -> None:
    engine = start(which, max_num_seqs=2)
    try:
        chunks = run(
            engine,
            [
                req(i, SamplingParams.fixed_length(3), prompt=p)
                for i, p in enumerate([*PROMPTS, "last one"])
            ],
        )
    finally:
        engine.close()
    assert [c.index for c in chunks] == [0, 1] * 3 + [2, 3] * 3 + [4] * 3


def test_seeded_sampling_repeats_and_differs_from_greedy(engine: HFEngineBase) -> None:
    prompt = PROMPTS[1]
    sampled = SamplingParams.fixed_length(16, temperature=1.0, top_k=100, top_p=0.95, seed=7)
    first = outputs(run(engine, [req(0, sampled, prompt=prompt)]))[0]
    # The same seed gives the same tokens, alone or with batch-mates around it.
    again = outputs(
        run(
            engine,
            [req(0, SamplingParams.fixed_length(4), prompt="x"), req(1, sampled, prompt=prompt)],
        )
    )[1]
    assert again == first
    assert first != greedy(engine, prompt)
    other_seed = SamplingParams.fixed_length(16, temperature=1.0, seed=8)
    assert outputs(run(engine, [req(0, other_seed, prompt=prompt)]))[0] != first


def test_top_k_1_and_tiny_top_p_are_greedy(engine: HFEngineBase) -> None:
    prompt = PROMPTS[3]
    for params in (dict(top_k=1), dict(top_p=1e-6)):
        sampling = SamplingParams.fixed_length(12, temperature=0.8, seed=1, **params)
        assert outputs(run(engine, [req(0, sampling, prompt=prompt)]))[0] == greedy(
            engine, prompt, 12
        ), params


def test_stop_strings(engine: HFEngineBase) -> None:
    prompt = PROMPTS[1]
    tokens = greedy(engine, prompt)
    decode = engine.tokenizer.decode
    # A stop string is the text of some ASCII output token past the first.
    stop = next(t for t in (decode([tok]) for tok in tokens[2:]) if t.strip() and t.isascii())
    expected = next(j for j in range(1, 17) if stop in decode(tokens[:j]))
    assert expected < 16

    chunks = run(
        engine,
        [
            req(0, SamplingParams(max_tokens=16, stop=("never-seen", stop)), prompt=prompt),
            req(1, SamplingParams(max_tokens=16), prompt=prompt),
        ],
    )
    done = finals(chunks)
    assert outputs(chunks)[0] == tokens[:expected]
    assert done[0].finish_reason == "stop"
    full = decode(tokens[:expected])
    assert done[0].text == full[: full.index(stop)]
    # The batch-mate without stop strings runs to max_tokens.
    assert (outputs(chunks)[1], done[1].finish_reason) == (tokens, "length")


@pytest.fixture(scope="module")
def two_eos(
    engine: HFEngineBase, which: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[HFEngineBase, list[int], int, int]]:
    """An engine whose model has a second EOS token: one the greedy output emits.

    Random weights never pick `</s>`; a model that lists the k-th greedy token as
    an EOS id too (like Llama 3's `<|eot_id|>`) lets us test EOS handling for real.
    Yields (engine, greedy tokens, that token, k).
    """
    tokens = greedy(engine, PROMPTS[2])
    k = next(k for k in range(2, 16) if tokens[k] not in tokens[:k])
    path = tmp_path_factory.mktemp("two-eos") / "model"
    shutil.copytree(tiny_model_path(), path)
    gen_config = json.loads((path / "generation_config.json").read_text())
    gen_config["eos_token_id"] = [gen_config["eos_token_id"], tokens[k]]
    (path / "generation_config.json").write_text(json.dumps(gen_config))
    eos_engine = start(which, str(path))
    yield eos_engine, tokens, tokens[k], k
    eos_engine.close()


def test_eos_stops_without_being_output(two_eos: tuple[HFEngineBase, list[int], int, int]) -> None:
    engine, tokens, _, k = two_eos
    chunks = run(engine, [req(0, SamplingParams(max_tokens=16), prompt=PROMPTS[2])])
    assert outputs(chunks)[0] == tokens[:k]
    assert len(chunks) == k + 1  # one chunk per token, then an empty final one
    assert chunks[-1].token_ids == () and chunks[-1].finish_reason == "stop"
    assert chunks[-1].text == engine.tokenizer.decode(tokens[:k])


def test_min_tokens_masks_eos(two_eos: tuple[HFEngineBase, list[int], int, int]) -> None:
    engine, tokens, eos, k = two_eos
    chunks = run(
        engine, [req(0, SamplingParams(max_tokens=16, min_tokens=k + 2), prompt=PROMPTS[2])]
    )
    out = outputs(chunks)[0]
    assert out[:k] == tokens[:k]
    assert len(out) >= k + 2
    assert eos not in out
    final = finals(chunks)[0]
    assert final.finish_reason == ("length" if len(out) == 16 else "stop")


def test_ignore_eos_gives_max_tokens(two_eos: tuple[HFEngineBase, list[int], int, int]) -> None:
    engine, _, eos, _ = two_eos
    chunks = run(engine, [req(0, SamplingParams.fixed_length(16), prompt=PROMPTS[2])])
    assert len(outputs(chunks)[0]) == 16 and eos not in outputs(chunks)[0]
    assert finals(chunks)[0].finish_reason == "length"


def test_rows_of_one_batch_hold_eos_for_their_own_lengths(
    two_eos: tuple[HFEngineBase, list[int], int, int],
) -> None:
    """One batch (hf: one generate call, EOS held per row) of a fixed-length row, a free
    row that stops at EOS, a row held past it, and a shorter free row: each ends as alone."""
    engine, tokens, eos, k = two_eos
    prompt = PROMPTS[2]
    sampling = [
        SamplingParams.fixed_length(16),
        SamplingParams(max_tokens=16),
        SamplingParams(max_tokens=16, min_tokens=k + 2),
        SamplingParams(max_tokens=k - 1),
    ]
    together = run(engine, [req(i, s, prompt=prompt) for i, s in enumerate(sampling)])
    alone = [outputs(run(engine, [req(0, s, prompt=prompt)]))[0] for s in sampling]
    assert [outputs(together)[i] for i in range(4)] == alone
    assert [f.finish_reason for f in finals(together).values()] == [
        "length",
        "stop",
        finals(run(engine, [req(0, sampling[2], prompt=prompt)]))[0].finish_reason,
        "length",
    ]
    assert len(alone[0]) == 16 and eos not in alone[0] and eos not in alone[2]
    assert alone[1] == tokens[:k] and alone[3] == tokens[: k - 1]


def test_prompt_token_ids_and_messages(engine: HFEngineBase) -> None:
    prompt = PROMPTS[1]
    ids = tuple(engine.tokenizer.encode(prompt))
    messages = ({"role": "system", "content": "Be brief."}, {"role": "user", "content": prompt})
    from transformers import AutoTokenizer

    chat_ids = AutoTokenizer.from_pretrained(tiny_model_path()).apply_chat_template(
        list(messages), add_generation_prompt=True, tokenize=True, return_dict=True
    )["input_ids"]
    chunks = run(
        engine,
        [
            req(0, SamplingParams.fixed_length(8), prompt_token_ids=ids),
            req(1, SamplingParams.fixed_length(8), messages=messages),
            req(2, SamplingParams.fixed_length(8), prompt_token_ids=tuple(chat_ids)),
        ],
    )
    got = outputs(chunks)
    assert got[0] == greedy(engine, prompt, 8)
    assert got[1] == got[2]
    assert {c.prompt_tokens for c in chunks if c.index == 1} == {len(chat_ids)}
    assert chat_ids[0] == 0  # the template's <s>


def test_too_long_request_is_an_error_chunk(engine: HFEngineBase) -> None:
    chunks = run(
        engine,
        [
            req(0, SamplingParams.fixed_length(4), prompt="Hello"),
            req(1, SamplingParams.fixed_length(MAX_MODEL_LEN), prompt="Hello"),
            req(2, SamplingParams.fixed_length(4), prompt="Bye"),
        ],
    )
    done = finals(chunks)
    n = len(engine.tokenizer.encode("Hello"))
    assert [c for c in chunks if c.index == 1] == [
        StreamChunk(
            1,
            (),
            finish_reason="error",
            prompt_tokens=n,
            error=f"prompt of {n} tokens + max_tokens {MAX_MODEL_LEN} exceeds max_model_len "
            f"{MAX_MODEL_LEN}",
        )
    ]
    assert (done[0].finish_reason, done[2].finish_reason) == ("length", "length")
    assert len(outputs(chunks)[0]) == len(outputs(chunks)[2]) == 4


def test_failing_batch_yields_errors_and_next_batch_runs(
    which: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A model whose logits are NaN: sampling fails inside the batch (greedy does not)."""
    from safetensors.torch import load_file, save_file

    path = tmp_path_factory.mktemp("nan-model") / "model"
    shutil.copytree(tiny_model_path(), path)
    weights = load_file(path / "model.safetensors")
    weights["lm_head.weight"] = torch.full_like(weights["lm_head.weight"], float("nan"))
    save_file(weights, path / "model.safetensors", metadata={"format": "pt"})
    engine = start(which, str(path), max_num_seqs=2)
    try:
        sampled = SamplingParams.fixed_length(3, temperature=1.0)
        chunks = run(
            engine,
            [
                req(0, sampled, prompt="Hello"),
                req(1, sampled, prompt="Hello"),
                req(2, SamplingParams.fixed_length(3), prompt="Bye"),
            ],
        )
        n = len(engine.tokenizer.encode("Hello"))
    finally:
        engine.close()
    done = finals(chunks)
    assert sorted(done) == [0, 1, 2]
    for i in (0, 1):
        assert [c for c in chunks if c.index == i] == [done[i]]
        assert done[i].finish_reason == "error" and done[i].token_ids == ()
        assert done[i].error is not None and done[i].error.startswith("RuntimeError: ")
        assert done[i].prompt_tokens == n
    assert done[2].finish_reason == "length" and len(outputs(chunks)[2]) == 3


def test_bad_requests_are_error_chunks(engine: HFEngineBase) -> None:
    chunks = run(
        engine,
        [
            req(0, SamplingParams(max_tokens=2), prompt=""),
            req(1, SamplingParams(max_tokens=2), prompt_token_ids=(5, 10**6)),
            req(2, SamplingParams(max_tokens=2), prompt="Hello"),
        ],
    )
    assert [(c.index, c.finish_reason, c.error) for c in chunks if c.index != 2] == [
        (0, "error", "empty prompt: a request needs at least one prompt token"),
        (1, "error", "prompt token id 1000000 is outside the vocabulary [0, 1024)"),
    ]
    assert finals(chunks)[2].finish_reason == "length"


def test_impossible_sampling_is_refused_when_built() -> None:
    with pytest.raises(ValueError, match="max_tokens must be at least 1, got 0"):
        SamplingParams(max_tokens=0)
    with pytest.raises(ValueError, match="min_tokens must be in"):
        SamplingParams(max_tokens=2, min_tokens=3)


def test_settings_are_checked(which: str) -> None:
    with pytest.raises(ValueError, match="tensor_parallel_size=2 is not supported"):
        start(which, tensor_parallel_size=2)
    # Settings made in Python are checked by the engine's spec (grids' at collection).
    with pytest.raises(ValueError, match="setting 'dtype': unknown value 'float8'"):
        start(which, dtype="float8")
    with pytest.raises(ValueError, match=r"unknown setting\(s\) 'gpu_memory_utilization'"):
        start(which, gpu_memory_utilization=0.9)


def test_flash_attention_falls_back_to_sdpa(which: str, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="pytest_llmperf"):
        engine = ENGINES[which](
            EngineConfig.make(which, "tiny", {"attn_implementation": "flash_attention_2"})
        )
        info = engine.start()
    engine.close()
    assert info.details["attn_implementation"] == "sdpa"
    reason = info.details["attn_fallback"]
    assert reason.startswith("flash_attention_2 requested but ") and reason.endswith("using sdpa")
    assert reason in caplog.text


def test_close_twice_and_stream_after_close(which: str) -> None:
    engine = start(which)
    engine.close()
    engine.close()
    with pytest.raises(RuntimeError, match="after close"):
        run(engine, [req(0, SamplingParams(max_tokens=1), prompt="x")])
