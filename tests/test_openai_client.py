"""The OpenAI-compatible client measured against an instrument server with scripted timing."""

from __future__ import annotations

import itertools
import statistics
import time

import pytest

from pytest_llmperf.engines.base import EngineConfig, GenerationRequest, SamplingParams
from pytest_llmperf.engines.openai.engine import OpenAIEngine
from pytest_llmperf.measure.harness import run_round
from pytest_llmperf.suite.load import SLO, Arrivals, client_check
from tests.instrument_server import InstrumentServer, Script


def engine_for(server: InstrumentServer, **settings: object) -> OpenAIEngine:
    engine = OpenAIEngine(
        EngineConfig.make(
            "openai", "tiny", {"base_url": server.base_url, "tokenizer": "tiny", **settings}
        )
    )
    engine.start()
    return engine


def requests(n: int, **kw: object) -> list[GenerationRequest]:
    return [
        GenerationRequest(f"r{i}", SamplingParams.fixed_length(10), prompt="hello", **kw)  # type: ignore[arg-type]
        for i in range(n)
    ]


def test_ttft_and_gaps_within_2ms_of_what_the_server_sent() -> None:
    script = Script(delays_s=[0.050] + [0.020, 0.005, 0.030, 0.010] * 4)
    with InstrumentServer(script) as server:
        engine = engine_for(server)
        try:
            run_round(engine, requests(1), 0)  # warm the connection pool
            errors_ttft, errors_itl = [], []
            for _ in range(5):
                (record,), _ = run_round(engine, requests(1), 0)
                expected = server.emitted_times_ms()
                # The server kept to its script, so the scripted gaps were really sent.
                assert abs(expected[-1] - server.scripted_times_ms()[-1]) < 20.0
                errors_ttft.append(abs(record.ttft_ms - expected[0]))  # type: ignore[operator]
                gaps = [b - a for a, b in itertools.pairwise(expected)]
                errors_itl.extend(abs(m - e) for m, e in zip(record.itl_ms, gaps, strict=True))
        finally:
            engine.close()
    assert statistics.median(errors_ttft) < 2.0, errors_ttft
    assert statistics.median(errors_itl) < 2.0
    assert max(errors_itl) < 10.0  # one scheduling hiccup is tolerated, not a trend
    assert record.output_tokens == 17 and record.token_count_source == "usage"
    assert record.prompt_tokens == 7


def test_concurrency_limit_and_arrival_at_send() -> None:
    script = Script(delays_s=[0.05] * 2)
    with InstrumentServer(script) as server:
        engine = engine_for(server, max_concurrency=2)
        try:
            records, duration = run_round(engine, requests(4), 0)
        finally:
            engine.close()
    # Two waves of 100 ms; each request's TTFT counts from when it was sent, not queued.
    assert 0.18 < duration < 0.5
    assert all(40 < r.ttft_ms < 90 for r in records), [r.ttft_ms for r in records]  # type: ignore[operator]


def test_prompt_lists_and_token_ids_are_sent_as_evaluation_harnesses_do() -> None:
    with InstrumentServer(Script(delays_s=[0.01] * 3)) as server:
        engine = engine_for(server, prompts_per_request=4)
        try:
            ids = GenerationRequest(
                "ids", SamplingParams.fixed_length(10), prompt_token_ids=(5, 6, 7)
            )
            batch = [*requests(3), ids]
            records, _ = run_round(engine, batch, 0)
        finally:
            engine.close()
    (body,) = server.requests
    assert body["prompt"] == ["hello", "hello", "hello", [5, 6, 7]]
    assert body["min_tokens"] == 10 and body["ignore_eos"] is True and body["stream"] is True
    assert [r.error for r in records] == [None] * 4
    # Usage covers the whole request: each prompt is counted with the tokenizer instead.
    assert {r.token_count_source for r in records} == {"tokenizer"}


def test_chat_messages_use_the_chat_endpoint() -> None:
    with InstrumentServer(Script(delays_s=[0.01] * 3)) as server:
        engine = engine_for(server)
        try:
            chat = GenerationRequest(
                "c", SamplingParams(max_tokens=3), messages=({"role": "user", "content": "hi"},)
            )
            (record,), _ = run_round(engine, [chat], 0)
        finally:
            engine.close()
    assert server.requests[0]["messages"] == [{"role": "user", "content": "hi"}]
    assert record.output_text == " t0 t1 t2" and record.error is None


@pytest.mark.parametrize(
    "fault, reason",
    [
        ("http500", "HTTP 500: scripted failure"),
        ("cut", "stream ended before the request finished"),
        ("malformed", "malformed event from the server"),
        ("inband", "server error in the stream"),
        ("stall", "request timed out after 2 s"),
    ],
)
def test_faults_end_as_failed_requests_with_their_reason(fault: str, reason: str) -> None:
    with InstrumentServer(Script(delays_s=[0.01] * 6, fault=fault)) as server:
        engine = engine_for(server, request_timeout_s=2)
        try:
            started = time.perf_counter()
            records, _ = run_round(engine, requests(2), 0)
            elapsed = time.perf_counter() - started
        finally:
            engine.close()
    assert [r.finish_reason for r in records] == ["error", "error"]
    assert all(reason in (r.error or "") for r in records), records[0].error
    assert elapsed < 5  # every wait is bounded


def test_dead_server_is_a_failed_request_not_a_crash() -> None:
    server = InstrumentServer(Script(delays_s=[0.01]))
    with server:
        engine = engine_for(server, request_timeout_s=2)
    try:  # the server is gone now
        records, _ = run_round(engine, requests(1), 0)
    finally:
        engine.close()
    assert records[0].finish_reason == "error"
    assert "connection failed" in (records[0].error or "")


def test_api_key_comes_from_the_environment_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_KEY", "sk-secret-123")
    with InstrumentServer(Script(delays_s=[0.01])) as server:
        engine = engine_for(server, api_key_env="MY_KEY")
        try:
            run_round(engine, requests(1), 0)
        finally:
            engine.close()
    assert server.headers[0]["Authorization"] == "Bearer sk-secret-123"
    assert "sk-secret-123" not in repr(vars(engine))  # read when needed, never kept


def test_open_loop_arrivals_follow_the_schedule() -> None:
    with InstrumentServer(Script(delays_s=[0.01] * 3)) as server:
        engine = engine_for(server)
        try:
            scheduled = Arrivals(rate_per_s=20, distribution="constant").apply(requests(5))
            records, duration = run_round(engine, scheduled, 0)
        finally:
            engine.close()
    gaps_ms = [(b - a) * 1000 for a, b in itertools.pairwise(server.received_at)]
    assert all(abs(g - 50) < 10 for g in gaps_ms), gaps_ms
    assert 0.2 < duration < 0.5  # the last request left at 200 ms
    assert all(r.error is None for r in records)


def test_poisson_arrivals_are_seeded_and_have_the_rate() -> None:
    offsets = Arrivals(rate_per_s=10, seed=1).offsets(2000)
    assert offsets == Arrivals(rate_per_s=10, seed=1).offsets(2000)
    assert offsets[-1] / 1999 == pytest.approx(0.1, rel=0.1)
    with pytest.raises(ValueError, match="Arrivals: rate_per_s=0: must be a positive number"):
        Arrivals(rate_per_s=0)


def test_goodput_and_client_self_check() -> None:
    with InstrumentServer(Script(delays_s=[0.03] + [0.01] * 4)) as server:
        engine = engine_for(server)
        try:
            records, duration = run_round(engine, requests(4), 0)
            stats = engine.last_round_stats
        finally:
            engine.close()
    assert SLO(ttft_ms=100).goodput(records, duration)["goodput_fraction"] == 1.0
    assert SLO(ttft_ms=10).goodput(records, duration)["goodput_fraction"] == 0.0
    assert SLO(tpot_ms=100, e2e_ms=1).goodput(records, duration)["goodput_fraction"] == 0.0
    assert stats["client_cpu_s"] > 0 and stats["loop_lag_ms_max"] < 50
    check = client_check([stats], [duration], sum(r.output_tokens for r in records))
    assert check["client_bound"] == 0.0
    assert check["client_cpu_ms_per_1k_tok"] > 0  # type: ignore[operator]


def test_token_events_are_the_events_that_carry_a_token() -> None:
    from pytest_llmperf.engines.openai.events import EventStream

    completions = EventStream([0])
    for at, event in enumerate(
        [
            b'{"choices": [{"index": 0, "text": "a", "finish_reason": null}]}',
            b'{"choices": [{"index": 0, "text": "", "finish_reason": null}]}',  # half a char
            b'{"choices": [{"index": 0, "text": "", "finish_reason": "stop"}]}',  # closing only
            b'{"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2}}',
        ]
    ):
        assert completions.on_event(event, float(at)) is False
    (chunk,) = completions.chunks(0.0, lambda text: 99)
    assert chunk.token_times == (0.0, 1.0) and chunk.finish_reason == "stop"
    assert (chunk.output_tokens, chunk.token_count_source, chunk.prompt_tokens) == (2, "usage", 3)

    chat = EventStream([0])
    for at, event in enumerate(
        [
            b'{"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}',
            b'{"choices": [{"index": 0, "delta": {"content": "hi"}}]}',
            b'{"choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]}',
        ]
    ):
        chat.on_event(event, float(at))
    (chunk,) = chat.chunks(0.0, lambda text: len(text))
    assert chunk.token_times == (1.0,) and chunk.finish_reason == "length"
    assert (chunk.text, chunk.output_tokens, chunk.token_count_source) == ("hi", 2, "tokenizer")


@pytest.mark.parametrize(
    "event", [b"{not json", b"[1, 2]", b'{"choices": [7]}', b'{"choices": 3}', b'{"a": 1} x']
)
def test_events_not_shaped_like_openai_events_are_malformed(event: bytes) -> None:
    from pytest_llmperf.engines.openai.events import EventStream

    stream = EventStream([4])
    assert stream.on_event(event, 1.0) is True  # stop reading
    (chunk,) = stream.chunks(0.0, len)
    assert chunk.index == 4 and chunk.finish_reason == "error"
    assert "malformed event from the server" in (chunk.error or "")


@pytest.mark.parametrize("chat", [False, True])
def test_ollama_native_api_records_the_servers_own_timings_beside_ours(chat: bool) -> None:
    from pytest_llmperf.measure.metrics import server_timing_metrics

    with InstrumentServer(Script(delays_s=[0.03] + [0.01] * 5)) as server:
        engine = engine_for(server, endpoint="ollama")
        try:
            given = {"messages": ({"role": "user", "content": "hi"},)} if chat else {"prompt": "hi"}
            batch = [
                GenerationRequest(f"r{i}", SamplingParams.fixed_length(10), **given)  # type: ignore[arg-type]
                for i in range(2)
            ]
            records, _ = run_round(engine, batch, 0)
        finally:
            engine.close()
    body = server.requests[0]
    assert body["options"]["num_predict"] == 10 and body["stream"] is True
    assert ("messages" in body) == chat and body.get("raw") is (None if chat else True)
    for record in records:
        assert record.error is None and record.finish_reason == "length"
        assert record.output_text == " t0 t1 t2 t3 t4 t5"
        assert (record.output_tokens, record.token_count_source) == (6, "usage")
        assert record.prompt_tokens == 7
        assert 28 < record.ttft_ms < 32 + 5, record.ttft_ms  # type: ignore[operator]
        assert len(record.itl_ms) == 5 and all(8 < gap < 15 for gap in record.itl_ms)
        assert record.server_timings == {
            "prompt_eval_ms": 12.5,
            "eval_ms": 60.0,
            "load_ms": 1.0,
            "total_ms": 250.0,
            "prompt_eval_count": 7.0,
            "eval_count": 6.0,
        }
    assert server_timing_metrics(records) == {
        "server_prefill_ms_p50": 12.5,
        "server_decode_tok_per_s": pytest.approx(100.0),
    }


def test_ollama_takes_no_token_id_prompts() -> None:
    with InstrumentServer() as server:
        engine = engine_for(server, endpoint="ollama")
        try:
            request = GenerationRequest("r0", SamplingParams(max_tokens=4), prompt_token_ids=(5, 6))
            (record,), _ = run_round(engine, [request], 0)
        finally:
            engine.close()
    assert record.finish_reason == "error"
    assert record.error == "Ollama's native API takes text prompts, not token ids"
    assert server.requests == []
