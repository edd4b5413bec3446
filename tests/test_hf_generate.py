"""The `hf` engine is transformers' own `generate`: its greedy tokens are batched
`model.generate`'s with left padding, setting by setting (cache, attention, compile), on the
tiny model and a random grouped-query Llama; its settings and pass-through arguments reach
transformers, and a name transformers does not take is refused before any model loads.

Every test runs on the CPU; the device-parametrized ones run on a CUDA GPU too where there is
one (skipped here), where `compile` really compiles."""

from __future__ import annotations

import importlib.util
import shutil
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import pytest
import torch
from test_decode_step import random_llama

from pytest_llmperf.engines.base import EngineConfig, GenerationRequest, SamplingParams
from pytest_llmperf.engines.hf.common import HFEngineBase
from pytest_llmperf.engines.hf.engine import HFEngine
from pytest_llmperf.engines.hf.fast import HFFastEngine
from pytest_llmperf.errors import LLMPerfUsageError
from pytest_llmperf.measure.harness import run_round
from pytest_llmperf.models.names import tiny_model_path
from tests.conftest import read_summary

PROMPTS = (
    "Hello",
    "The quick brown fox jumps over the lazy dog.",
    "One two three four five six",
    "Speed test of a model with many words, and then a few more words to make it long.",
)
NEW_TOKENS = 12

DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
    ),
]


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """One intra-op thread: two spin against each other on a small shared VM."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def gqa_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """test_decode_step's random Llama with grouped KV heads (two query heads per KV
    head), sized for the tiny model's tokenizer, saved with it."""
    out = tmp_path_factory.mktemp("gqa-generate")
    tiny = tiny_model_path()
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        if (tiny / name).exists():
            shutil.copy(tiny / name, out / name)
    model = random_llama(
        2, vocab_size=1024, max_position_embeddings=256, pad_token_id=3, bos_token_id=0
    )
    model.save_pretrained(out)
    return out


def model_path(which: str, gqa_model: Path) -> str:
    return str(tiny_model_path()) if which == "tiny" else str(gqa_model)


def requests(n: int = NEW_TOKENS) -> list[GenerationRequest]:
    return [
        GenerationRequest(str(i), SamplingParams.fixed_length(n), prompt=p)
        for i, p in enumerate(PROMPTS)
    ]


def gpus(device: str) -> tuple[int, ...]:
    return (0,) if device == "cuda" else ()


def engine_tokens(engine: HFEngineBase, batch: list[GenerationRequest]) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {i: [] for i in range(len(batch))}
    for chunk in engine.stream(batch):
        assert chunk.error is None, chunk.error
        out[chunk.index] += list(chunk.token_ids)
    return out


def run_engine(
    cls: type[HFEngineBase], model: str, device: str, settings: dict[str, Any]
) -> dict[int, list[int]]:
    engine = cls(EngineConfig.make(cls.name, model, settings, gpus(device)))
    engine.start()
    try:
        return engine_tokens(engine, requests())
    finally:
        engine.close()


@contextmanager
def compiler_quiet(compiling: bool) -> Iterator[None]:
    """torch's compiler warns (deprecations, Inductor's TF32 advice): not ours to fail on."""
    with warnings.catch_warnings() if compiling else nullcontext():
        if compiling:
            warnings.simplefilter("ignore")
        yield


def generate_reference(
    model: str,
    device: str,
    *,
    dtype: torch.dtype = torch.float32,
    attn: str = "sdpa",
    n: int = NEW_TOKENS,
    **options: Any,
) -> dict[int, list[int]]:
    """Batched `model.generate` as a person runs it: the tokenizer pads the batch on the
    left, greedy, exactly `n` new tokens, `options` as generate's own."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model)
    tokenizer.padding_side = "left"
    reference = AutoModelForCausalLM.from_pretrained(model, dtype=dtype, attn_implementation=attn)
    reference = reference.to(device).eval()
    ids = [tokenizer.encode(p, add_special_tokens=False) for p in PROMPTS]
    batch = tokenizer.pad({"input_ids": ids}, return_tensors="pt").to(device)
    assert len({len(i) for i in ids}) == len(ids), "prompts must differ in length"
    with compiler_quiet("compile_config" in options):
        out = reference.generate(
            **batch,
            max_new_tokens=n,
            min_new_tokens=n,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
            **options,
        )
    width = batch["input_ids"].shape[1]
    return {i: row[width:].tolist() for i, row in enumerate(out)}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("compile_decode", [False, True], ids=["nocompile", "compile"])
@pytest.mark.parametrize("attn", ["eager", "sdpa", "flash_attention_2"])
@pytest.mark.parametrize("cache", ["dynamic", "static"])
@pytest.mark.parametrize("which", ["tiny", "gqa"])
def test_greedy_tokens_are_batched_generates(
    gqa_model: Path, which: str, cache: str, attn: str, compile_decode: bool, device: str
) -> None:
    from transformers import CompileConfig

    if attn == "flash_attention_2" and (
        device != "cuda" or importlib.util.find_spec("flash_attn") is None
    ):
        pytest.skip("flash_attention_2 needs CUDA and the flash_attn package")
    model = model_path(which, gqa_model)
    # flash-attn takes half precision only; elsewhere float32, so that equal means equal.
    dtype = "bfloat16" if attn == "flash_attention_2" else "float32"
    settings = {
        "dtype": dtype,
        "attn_implementation": attn,
        "cache_implementation": cache,
        "compile": compile_decode,
        "max_num_seqs": len(PROMPTS),
    }
    engine = HFEngine(EngineConfig.make("hf", model, settings, gpus(device)))
    info = engine.start()
    try:
        got = engine_tokens(engine, requests())
        compiled_call = "_compiled_call" in vars(engine._model)
    finally:
        engine.close()
    compiles = compile_decode and cache == "static" and device == "cuda"
    assert info.details["compiled"] is compiles
    assert compiled_call is compiles  # what transformers did, as it keeps it on the model
    assert ("compile_fallback" in info.details) is (compile_decode and not compiles)
    assert (info.details["attn_implementation"], info.details["cache_implementation"]) == (
        attn,
        cache,
    )
    options: dict[str, Any] = {"cache_implementation": cache}
    if compile_decode:
        options["compile_config"] = CompileConfig()
    else:
        options["disable_compile"] = True
    expected = generate_reference(model, device, dtype=getattr(torch, dtype), attn=attn, **options)
    assert got == expected
    assert all(len(tokens) == NEW_TOKENS for tokens in got.values())
    if compiles:
        torch._dynamo.reset()  # each case compiles its own models: no recompile limit


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("which", ["tiny", "gqa"])
def test_hf_fast_decodes_what_hf_decodes(gqa_model: Path, which: str, device: str) -> None:
    """The reference decoder (on CUDA its graph path; here its eager loop) and transformers'
    generate give the same greedy tokens for a left-padded batch."""
    model = model_path(which, gqa_model)
    settings = {"dtype": "float32", "max_num_seqs": len(PROMPTS)}
    fast = run_engine(HFFastEngine, model, device, settings)
    assert fast == run_engine(HFEngine, model, device, settings)
    assert len({t for tokens in fast.values() for t in tokens}) > 2  # not one repeated token


def test_settings_reach_generate() -> None:
    """What each forward call of generate received shows the cache it was given; the
    attention is the loaded model's; generate_args change the tokens as they change
    generate's; from_pretrained_args reach the model's configuration."""
    seen: dict[str, set[str]] = {}
    tokens: dict[str, dict[int, list[int]]] = {}
    for name, settings in {
        "default": {},
        "static": {"cache_implementation": "static", "attn_implementation": "eager"},
        "penalty": {"generate_args": {"repetition_penalty": 1.5}},
        "loaded": {"from_pretrained_args": {"output_hidden_states": True}},
    }.items():
        engine = HFEngine(EngineConfig.make("hf", "tiny", settings))
        info = engine.start()
        caches: set[str] = set()

        def record(module: Any, args: Any, kwargs: Any, caches: set[str] = caches) -> None:
            caches.add(type(kwargs["past_key_values"]).__name__)

        engine._model.register_forward_pre_hook(record, with_kwargs=True)
        try:
            tokens[name] = engine_tokens(engine, requests())
            seen[name] = caches
            if name == "static":
                assert info.details["attn_implementation"] == "eager"
                assert engine._model.config._attn_implementation == "eager"
            if name == "penalty":
                assert info.details["generate_args"] == {"repetition_penalty": 1.5}
            if name == "loaded":
                assert engine._model.config.output_hidden_states is True
                assert info.details["from_pretrained_args"] == {"output_hidden_states": True}
        finally:
            engine.close()
    assert seen["default"] == {"DynamicCache"}
    assert seen["static"] == {"StaticCache"}
    tiny = str(tiny_model_path())
    assert tokens["penalty"] == generate_reference(tiny, "cpu", repetition_penalty=1.5)
    assert tokens["penalty"] != tokens["default"]
    assert tokens["loaded"] == tokens["default"]


def test_an_unknown_generate_arg_is_refused_before_the_model_loads() -> None:
    engine = HFEngine(
        EngineConfig.make("hf", "tiny", {"generate_args": {"repetition_penalti": 1.1}})
    )
    with pytest.raises(LLMPerfUsageError) as raised:
        engine.start()
    assert str(raised.value) == (
        "hf engine: generate_args: 'repetition_penalti' is not one of transformers' "
        "generation options (GenerationConfig fields) for engine 'hf' (did you mean "
        "'repetition_penalty' or 'encoder_repetition_penalty'?)"
    )
    assert engine._model is None


@pytest.mark.parametrize(
    "line, words",
    [
        (
            "generate_args: {repetiton_penalty: 1.1}",
            "generate_args: 'repetiton_penalty' is not one of transformers' generation options"
            " (GenerationConfig fields) for engine 'hf' (did you mean 'repetition_penalty'",
        ),
        (
            "generate_args: {max_new_tokens: 4}",
            "generate_args: 'max_new_tokens' cannot be passed (pytest-llmperf sets it itself)",
        ),
        (
            "generate_args: {cache_implementation: static}",
            "generate_args: 'cache_implementation' cannot be passed (use the setting "
            "'cache_implementation')",
        ),
        (
            "from_pretrained_args: {torch_dtype: float16}",
            "from_pretrained_args: 'torch_dtype' cannot be passed (use the setting 'dtype')",
        ),
        (
            "from_pretrained_args: {low_cpu_mem_usage: true, use_safetensor: true}",
            "from_pretrained_args: 'use_safetensor' is not one of the keyword arguments of "
            "transformers' from_pretrained for engine 'hf' (did you mean 'use_safetensors'?)",
        ),
    ],
)
def test_transformers_arguments_are_checked_at_collection(
    pytester: pytest.Pytester, line: str, words: str
) -> None:
    pytester.makefile(".yaml", grid=f"schema: 1\nconfigs:\n  a: {{{line}}}\n")
    pytester.makepyfile(
        test_n="""
        import pytest
        from pytest_llmperf import grid_params
        @pytest.mark.parametrize("config", grid_params("grid.yaml"))
        def test_n(llmperf, config):
            pass
        """
    )
    result = pytester.runpytest("--engine", "hf", "--collect-only")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*grid.yaml: line 3: {words}*"])


def test_a_grid_sets_transformers_options_through_the_plugin(pytester: pytest.Pytester) -> None:
    """Seed 004's setup as a grid: the run records what transformers was given."""
    pytester.makefile(
        ".yaml",
        grid="""
        schema: 1
        configs:
          mine:
            attn_implementation: eager
            cache_implementation: static
            compile: true
            max_num_seqs: 2
            generate_args: {repetition_penalty: 1.2}
            from_pretrained_args: {low_cpu_mem_usage: true}
        """,
    )
    pytester.makepyfile(
        test_x="""
        import pytest
        from pytest_llmperf import SyntheticWorkload, grid_params

        @pytest.mark.parametrize("config", grid_params("grid.yaml"))
        def test_x(llmperf, config):
            result = llmperf.measure(config, SyntheticWorkload(num_requests=2, input_tokens=4,
                                                               output_tokens=3), rounds=1)
            assert result.metrics.failures == 0
        """
    )
    result = pytester.runpytest("--engine", "hf", "-v")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*test_x?mine? PASSED*"])
    (test,) = read_summary(pytester)["tests"]
    details = test["engine_info"]["details"]
    assert details["decode"] == "generate"
    assert (details["attn_implementation"], details["cache_implementation"]) == ("eager", "static")
    assert (details["compile"], details["compiled"]) == (True, False)  # the CPU: skipped
    assert "static cache on a GPU" in details["compile_fallback"]
    assert details["generate_args"] == {"repetition_penalty": 1.2}
    assert details["from_pretrained_args"] == {"low_cpu_mem_usage": True}
    assert {"transformers_version", "torch_version"} <= set(details)


def test_tokens_reach_the_caller_while_generate_runs() -> None:
    """The first token is handed over while generate is still decoding (its forward calls
    go on after it), and leaving the stream ends generate within a step or two."""
    engine = HFEngine(EngineConfig.make("hf", "tiny", {}))
    engine.start()
    calls: list[int] = []
    engine._model.register_forward_pre_hook(lambda module, args: calls.append(1))
    try:
        stream = engine.stream(
            [GenerationRequest("long", SamplingParams.fixed_length(400), prompt="Hi")]
        )
        first = next(stream)
        at_first = len(calls)
        stream.close()  # type: ignore[attr-defined]
        at_close = len(calls)
        # And the engine goes on: the next batch runs whole.
        records, _ = run_round(engine, requests(32), 0)
    finally:
        engine.close()
    assert len(first.token_ids) == 1 and at_first < 50 and at_close < 100
    for record in records:
        assert record.output_tokens == 32 and record.error is None
        assert record.ttft_ms is not None and record.e2e_ms is not None
        assert len(record.itl_ms) == 31 and record.ttft_ms < record.e2e_ms


def test_right_padding_runs_and_leaves_the_longest_prompt_alone() -> None:
    engine = HFEngine(EngineConfig.make("hf", "tiny", {"padding_side": "right"}))
    info = engine.start()
    try:
        right = engine_tokens(engine, requests())
    finally:
        engine.close()
    left = run_engine(HFEngine, "tiny", "cpu", {})
    assert info.details["padding_side"] == "right"
    assert all(len(tokens) == NEW_TOKENS for tokens in right.values())
    longest = len(PROMPTS) - 1  # the one prompt without padding either way
    assert right[longest] == left[longest]
    assert right != left  # the padded rows now see their padding


def test_a_request_generate_ends_early_finishes_as_a_stop() -> None:
    """A criterion of generate's own (`max_time` through generate_args) ends the batch
    before the requests' lengths: each ends with "stop" and the tokens it got."""
    engine = HFEngine(EngineConfig.make("hf", "tiny", {"generate_args": {"max_time": 1e-6}}))
    engine.start()
    try:
        chunks = list(engine.stream(requests(50)))
    finally:
        engine.close()
    finals = [c for c in chunks if c.finish_reason is not None]
    assert sorted(c.index for c in finals) == list(range(len(PROMPTS)))
    assert {c.finish_reason for c in finals} == {"stop"}
    got = {i: sum(len(c.token_ids) for c in chunks if c.index == i) for i in range(len(PROMPTS))}
    assert all(1 <= n < 50 for n in got.values()), got
