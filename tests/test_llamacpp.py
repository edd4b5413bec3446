"""The llamacpp engine: the tiny model as GGUF (same tokens, same greedy output as
transformers), quantized files, continuous batching, failures recorded, and the smoke
suite with pp and tg in the results."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

if not os.environ.get("CI"):  # under CI a missing engine must fail, not skip unseen
    pytest.importorskip("llama_cpp", reason="the llamacpp extra is not installed")

from pytest_llmperf.engines.base import (
    EngineConfig,
    GenerationRequest,
    SamplingParams,
    StreamChunk,
)
from pytest_llmperf.engines.hf.engine import HFEngine
from pytest_llmperf.engines.llamacpp.engine import LlamaCppEngine
from pytest_llmperf.engines.llamacpp.server import (
    LlamaCppServerEngine,
    find_llama_server,
)
from pytest_llmperf.errors import LLMPerfUsageError
from pytest_llmperf.models.gguf import gguf_model
from tests.suite_run import run_suite

PROMPTS = (
    "Please summarise the engine in one short paragraph.",
    "The cache keeps every sequence",
    " hello world, it's 42!\n ok?",
    "Explain a batch.",
)


@pytest.fixture(scope="module")
def llamacpp() -> Iterator[LlamaCppEngine]:
    engine = LlamaCppEngine(EngineConfig.make("llamacpp", "tiny", {"max_num_seqs": 4}))
    engine.start()
    yield engine
    engine.close()


def outputs(engine: object, requests: list[GenerationRequest]) -> dict[int, list[int]]:
    tokens: dict[int, list[int]] = {i: [] for i in range(len(requests))}
    chunks: list[StreamChunk] = list(engine.stream(requests))  # type: ignore[attr-defined]
    assert all(c.error is None for c in chunks), [c.error for c in chunks if c.error]
    for chunk in chunks:
        tokens[chunk.index] += list(chunk.token_ids)
    return tokens


def fixed(prompt: str, n: int = 32) -> GenerationRequest:
    return GenerationRequest(prompt, SamplingParams.fixed_length(n), prompt=prompt)


def test_gguf_tokenizer_gives_the_hf_tokenizer_ids(llamacpp: LlamaCppEngine) -> None:
    hf = HFEngine(EngineConfig.make("hf", "tiny", {}))
    hf.start()
    try:
        for prompt in (*PROMPTS, "  spaces\tand tabs", "émigré café"):
            assert llamacpp.tokenizer.encode(prompt) == hf.tokenizer.encode(prompt), prompt
            ids = hf.tokenizer.encode(prompt)
            assert llamacpp.tokenizer.decode(ids) == hf.tokenizer.decode(ids)
    finally:
        hf.close()


def test_f16_gguf_greedy_output_equals_hf_for_32_tokens(llamacpp: LlamaCppEngine) -> None:
    requests = [fixed(p) for p in PROMPTS]
    hf = HFEngine(EngineConfig.make("hf", "tiny", {"dtype": "float32"}))
    hf.start()
    try:
        expected = outputs(hf, requests)
    finally:
        hf.close()
    got = outputs(llamacpp, requests)
    assert got == expected
    assert all(len(t) == 32 for t in got.values())


def test_parallel_sequences_give_the_serial_outputs(llamacpp: LlamaCppEngine) -> None:
    """Eight requests through four slots (continuous batching) == one at a time."""
    requests = [fixed(p, 24) for p in PROMPTS * 2]
    serial = LlamaCppEngine(EngineConfig.make("llamacpp", "tiny", {"max_num_seqs": 1}))
    serial.start()
    try:
        one_by_one = outputs(serial, requests)
    finally:
        serial.close()
    assert outputs(llamacpp, requests) == one_by_one


def test_stop_strings_and_max_tokens_end_requests(llamacpp: LlamaCppEngine) -> None:
    free = list(llamacpp.stream([fixed(PROMPTS[0], 16)]))
    text = llamacpp.tokenizer.decode([t for c in free for t in c.token_ids])
    stop = text[len(text) // 2 : len(text) // 2 + 3]
    assert stop.strip(), text
    stopped = GenerationRequest("s", SamplingParams(max_tokens=16, stop=(stop,)), prompt=PROMPTS[0])
    last = list(llamacpp.stream([stopped]))[-1]
    assert last.finish_reason == "stop"
    assert last.text == text[: text.find(stop)]
    assert free[-1].finish_reason == "length"


def test_a_request_too_long_is_a_recorded_failure_and_the_others_go_on() -> None:
    engine = LlamaCppEngine(EngineConfig.make("llamacpp", "tiny", {"max_model_len": 64}))
    engine.start()
    try:
        chunks = list(engine.stream([fixed("word " * 80, 8), fixed(PROMPTS[1], 8)]))
    finally:
        engine.close()
    failed = [c for c in chunks if c.index == 0]
    assert len(failed) == 1 and failed[0].finish_reason == "error"
    assert "exceeds max_model_len 64" in (failed[0].error or "")
    assert sum(len(c.token_ids) for c in chunks if c.index == 1) == 8


def test_quantized_gguf_is_written_by_llama_cpp_and_smaller() -> None:
    f16 = gguf_model("tiny", "F16")
    q8 = gguf_model("tiny", "Q8_0")
    assert q8 != f16 and q8.stat().st_size < 0.7 * f16.stat().st_size
    assert gguf_model("tiny", "q8_0") == q8  # names are llama.cpp's, any case
    with pytest.raises(LLMPerfUsageError, match=r"quantization 'Q9_X' is not llama\.cpp's"):
        gguf_model("tiny", "Q9_X")


def test_smoke_suite_on_llamacpp_reports_pp_and_tg(tmp_path: Path) -> None:
    run = run_suite(tmp_path, "-m", "smoke", "--engine", "llamacpp")
    assert run.out.returncode == 0, run.output
    tests = {t["test_id"]: t for t in run.summary()["tests"]}
    pp = tests["suites/test_prefill_decode.py::test_prompt_processing"]["metrics"]
    tg = tests["suites/test_prefill_decode.py::test_token_generation"]["metrics"]
    assert pp["pp_tok_per_s"] > 0 and tg["tg_tok_per_s"] > 0
    # The engine's tests, and the suite's own code (suites/test_own_code.py: engine "own").
    assert {t["engine"] for t in tests.values()} == {"llamacpp", "own"}
    # thresholds/cpu/llamacpp.yaml bounds the suite: every test was checked and passed.
    assert all(t["thresholds"]["checked"] and t["thresholds"]["passed"] for t in tests.values())


def server_outputs(settings: dict[str, object], requests: list[GenerationRequest]) -> dict:
    engine = LlamaCppServerEngine(EngineConfig.make("llamacpp-server", "tiny", settings))
    engine.start()
    try:
        return outputs_by_text(engine, requests)
    finally:
        engine.close()


def outputs_by_text(engine: object, requests: list[GenerationRequest]) -> dict[int, tuple]:
    """(output token count, text) per request: a server returns text, not ids."""
    chunks: list[StreamChunk] = list(engine.stream(requests))  # type: ignore[attr-defined]
    assert all(c.error is None for c in chunks), [c.error for c in chunks if c.error]
    ends = {c.index: c for c in chunks if c.finish_reason is not None}
    return {
        i: (
            ends[i].output_tokens or sum(len(c.token_ids) for c in chunks if c.index == i),
            ends[i].text,
        )
        for i in range(len(requests))
    }


def test_llama_cpp_python_server_answers_as_the_engine_in_process(
    llamacpp: LlamaCppEngine,
) -> None:
    """Same GGUF, greedy: the server's text equals the in-process engine's, without
    ignore_eos (the client biases EOS away). It streams no usage, so counts are the
    client's re-tokenizing of the text: only the texts are compared, without the U+FFFD
    that our decoding puts for a random model's broken UTF-8 and the server drops."""
    requests = [fixed(p, 24) for p in PROMPTS]
    expected = outputs_by_text(llamacpp, requests)
    got = server_outputs({"server_binary": "python"}, requests)
    assert {i: text for i, (_, text) in got.items()} == {
        i: text.replace("\ufffd", "") for i, (_, text) in expected.items()
    }
    assert all(count == 24 for count, _ in expected.values())


@pytest.mark.skipif(
    find_llama_server() is None, reason="no llama-server (scripts/build_llama_cpp_tools.sh)"
)
def test_llama_server_with_parallel_slots_answers_as_the_engine_in_process(
    llamacpp: LlamaCppEngine,
) -> None:
    requests = [fixed(p, 24) for p in PROMPTS * 2]
    expected = outputs_by_text(llamacpp, requests)
    got = server_outputs({"max_num_seqs": 4, "max_concurrency": 8}, requests)
    assert got == expected


TYPES = ("F16", "Q6_K", "Q4_K_M", "Q4_K_S", "Q3_K_M")


def test_seed002_quantization_table_on_llamacpp(tmp_path: Path) -> None:
    """Memory falls with the type, the sums stay right, and every row was bounded."""
    run = run_suite(
        tmp_path,
        "-m",
        "accuracy or longform",
        "--engine",
        "llamacpp",
        target="suites/test_quantization.py",
    )
    assert run.out.returncode == 0, run.output
    tests = {t["threshold_key"].split("::")[1]: t for t in run.summary()["tests"]}
    sizes = [tests[f"test_quantization[{q}]@quality"]["metrics"]["model_bytes"] for q in TYPES]
    assert sizes == sorted(sizes, reverse=True) and sizes[0] > 2 * sizes[-1]
    for quantization in TYPES:
        quality = tests[f"test_quantization[{quantization}]@quality"]
        assert quality["engine_config"]["settings"]["quantization"] == quantization
        assert quality["metrics"]["exact_match"] >= 0.9
        assert tests[f"test_quantization[{quantization}]@speed"]["metrics"]["tg_tok_per_s"] > 0
    assert all(t["thresholds"]["checked"] and t["thresholds"]["passed"] for t in tests.values())


def test_seed002_presets_run_with_their_settings(tmp_path: Path) -> None:
    run = run_suite(
        tmp_path, "-m", "longform", "--engine", "llamacpp", target="suites/test_presets.py"
    )
    assert run.out.returncode == 0, run.output
    tests = {t["test_id"].split("[")[1].rstrip("]"): t for t in run.summary()["tests"]}
    assert sorted(tests) == sorted(
        f"{preset}_{task}"
        for preset in ("throughput", "quality", "stretch")
        for task in ("closed_book", "open_book")
    )
    throughput = tests["throughput_open_book"]
    assert throughput["engine_config"]["settings"]["quantization"] == "Q4_K_M"
    assert throughput["engine_config"]["settings"]["max_model_len"] == 8192
    assert tests["quality_closed_book"]["engine_config"]["settings"]["quantization"] == "Q6_K"
    assert throughput["workload"]["default_max_tokens"] == 1024
    assert tests["stretch_open_book"]["workload"]["default_max_tokens"] == 512
    assert all(t["metrics"]["requests"] == 2 * 16 for t in tests.values())
    assert all(t["thresholds"]["checked"] and t["thresholds"]["passed"] for t in tests.values())


def test_seed002_suites_say_which_engines_they_need(tmp_path: Path) -> None:
    run = run_suite(tmp_path, "-m", "accuracy or longform", "-rs", target="suites/test_presets.py")
    assert run.out.returncode == 0, run.output
    assert "6 skipped" in run.output and "run with --engine llamacpp" in run.output


def test_llama_args_reach_llama_cpp() -> None:
    """llama.cpp's own context parameters pass through `llama_args`, after ours."""
    settings = {"n_batch": 256, "llama_args": {"n_ubatch": 64}}
    engine = LlamaCppEngine(EngineConfig.make("llamacpp", "tiny", settings))
    info = engine.start()
    try:
        request = fixed("hello", 4)
        assert sum(len(c.token_ids) for c in engine.stream([request])) == 4
    finally:
        engine.close()
    assert (info.details["n_batch"], info.details["n_ubatch"]) == (256, 64)
    assert info.details["llama_args"] == {"n_ubatch": 64}


@pytest.mark.parametrize(
    "engine, line, words",
    [
        (
            "llamacpp",
            "llama_args: {flash_atn: 1}",
            "llama_args: 'flash_atn' is not one of llama.cpp's context and model parameters "
            "for engine 'llamacpp' (did you mean 'flash_attn_type'?)",
        ),
        (
            "llamacpp",
            "llama_args: {offload_kqv: 3}",
            "llama_args: 'offload_kqv' must be bool, got 3",
        ),
        (
            "llamacpp",
            "llama_args: {n_ctx: 64}",
            "llama_args: 'n_ctx' cannot be passed (use the setting 'max_model_len')",
        ),
        (
            "llamacpp-server",
            "{server_binary: python, server_args: [--use_mlock, 'true', --n_ctxx, '64']}",
            "server_args: '--n_ctxx' is not one of the flags of llama.cpp's server for engine "
            "'llamacpp-server' (did you mean '--n_ctx'?)",
        ),
    ],
)
def test_native_arguments_are_checked_at_collection(
    pytester: pytest.Pytester, engine: str, line: str, words: str
) -> None:
    body = line if line.startswith("{") else "{" + line + "}"
    pytester.makefile(".yaml", grid=f"schema: 1\nconfigs:\n  a: {body}\n")
    pytester.makepyfile(
        test_n="""
        import pytest
        from pytest_llmperf import grid_params
        @pytest.mark.parametrize("config", grid_params("grid.yaml"))
        def test_n(llmperf, config):
            pass
    """
    )
    result = pytester.runpytest("--engine", engine, "--collect-only")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: *grid.yaml: line 3: {words}"])
