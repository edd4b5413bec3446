"""Issue 28's workloads sent for real: a trace replayed on its timestamps and conversations
whose turns wait for their answers, against the instrument server (scripted timing) and once
on the hf engine (tiny model)."""

from __future__ import annotations

import itertools
import json
import re
import statistics
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from pytest_llmperf import ConversationWorkload, SharedPrefixWorkload, TraceWorkload
from pytest_llmperf.engines.base import EngineConfig, GenerationRequest, StreamChunk
from pytest_llmperf.engines.openai.engine import OpenAIEngine
from pytest_llmperf.measure.harness import run_round
from pytest_llmperf.measure.rounds import RoundPlan, run_rounds
from tests.instrument_server import InstrumentServer, Script

SHIPPED_TRACE = Path(__file__).resolve().parent.parent / "suites" / "data" / "trace_block16.jsonl"


def engine_for(server: InstrumentServer) -> OpenAIEngine:
    engine = OpenAIEngine(
        EngineConfig.make("openai", "tiny", {"base_url": server.base_url, "tokenizer": "tiny"})
    )
    engine.start()
    return engine


def test_trace_replay_sends_each_request_at_its_timestamp() -> None:
    """Tolerance: each request reaches the server within 15 ms of its timestamp (relative to
    the first), the median within 3 ms (the 2 ms test's bound, plus the server's own stamp)."""
    lines = [json.loads(x) for x in SHIPPED_TRACE.read_text().splitlines()]
    with InstrumentServer(Script(delays_s=[0.005] * 2)) as server:
        engine = engine_for(server)
        try:
            requests = TraceWorkload(SHIPPED_TRACE, block_size=16).build(engine.tokenizer)
            run_round(engine, requests[:2], 0)  # warm the connection pool
            server.received_at.clear()
            server.requests.clear()
            records, duration = run_round(engine, requests, 0)
        finally:
            engine.close()
    assert all(r.error is None for r in records)
    # Requests of one timestamp may reach the server in either order: compare sorted times.
    got_ms = sorted((t - server.received_at[0]) * 1000 for t in server.received_at)
    want_ms = [x["timestamp"] - lines[0]["timestamp"] for x in lines]
    errors = [abs(g - w) for g, w in zip(got_ms, want_ms, strict=True)]
    assert statistics.median(errors) < 3.0, errors
    assert max(errors) < 15.0, errors
    assert 0.98 < duration < 1.5  # the trace spans 980 ms
    sent = sorted(len(body["prompt"]) for body in server.requests)
    assert sent == sorted(x["input_length"] for x in lines)  # token ids, exact lengths


def test_conversation_turns_wait_for_their_answers_and_carry_them() -> None:
    # Each answer takes 3 x 20 ms; a turn is sent 50 ms after the answer before it.
    workload = ConversationWorkload(
        sessions=2, turns=3, user_tokens=8, output_tokens=3, think_time_s=0.05
    )
    with InstrumentServer(Script(delays_s=[0.02] * 3)) as server:
        engine = engine_for(server)
        try:
            requests = workload.build(engine.tokenizer)
            records, duration = run_round(engine, requests, 0)
        finally:
            engine.close()
    by_id = {r.custom_id: r for r in records}
    assert all(r.error is None for r in records), [r.error for r in records]
    # Per-turn TTFT counts from the turn's own sending: about one scripted gap each.
    assert all(15 < (r.ttft_ms or 0) < 45 for r in records), [r.ttft_ms for r in records]
    # The sessions ran side by side, each turn after the answer before plus the think time:
    # three turns of 60 ms and two thinks of 50 ms.
    assert 0.27 < duration < 0.45
    bodies: dict[str, list[tuple[float, list[dict[str, str]]]]] = {}
    for body, at in zip(server.requests, server.received_at, strict=True):
        bodies.setdefault(json.dumps(body["messages"][0]), []).append((at, body["messages"]))
    assert sorted(len(turns) for turns in bodies.values()) == [3, 3]
    for turns in bodies.values():
        times = [at for at, _ in turns]
        assert all(0.105 < b - a < 0.16 for a, b in itertools.pairwise(times)), times
        last = turns[-1][1]
        # The history holds the server's real answers, not the workload's stand-ins.
        assert [m["content"] for m in last if m["role"] == "assistant"] == [" t0 t1 t2"] * 2
    assert by_id["conv0-turn3"].output_text == " t0 t1 t2"


def test_a_failed_turn_ends_its_session() -> None:
    workload = ConversationWorkload(sessions=2, turns=2, user_tokens=4, output_tokens=2)
    with InstrumentServer(Script(delays_s=[0.01] * 2, fault="http500")) as server:
        engine = engine_for(server)
        try:
            records, _ = run_round(engine, workload.build(engine.tokenizer), 0)
        finally:
            engine.close()
    by_id = {r.custom_id: r for r in records}
    assert "HTTP 500" in (by_id["conv0-turn1"].error or "")
    assert by_id["conv0-turn2"].error == "not sent: the turn before it ('conv0-turn1') failed"
    assert len(server.requests) == 2  # only the first turns went out


def test_conversation_and_fresh_prefixes_on_the_hf_engine() -> None:
    from pytest_llmperf.engines.hf.engine import HFEngine

    engine = HFEngine(EngineConfig.make("hf", "tiny"))
    engine.start()
    try:
        workload = ConversationWorkload(sessions=2, turns=3, user_tokens=8, output_tokens=4)
        requests = workload.build(engine.tokenizer)
        batches: list[list[GenerationRequest]] = []

        def stream(batch: Sequence[GenerationRequest]) -> Iterator[StreamChunk]:
            batches.append(list(batch))  # what each wave sent, then the engine's own stream
            return HFEngine.stream(engine, batch)

        engine.stream = stream  # type: ignore[method-assign]
        records, _ = run_round(engine, requests, 0)
        del engine.stream
        fresh = SharedPrefixWorkload(
            groups=2,
            prompts_per_group=2,
            prefix_tokens=8,
            suffix_tokens=4,
            output_tokens=2,
            fresh_each_round=True,
        )
        sent: list[list[tuple[int, ...]]] = []

        def build(i: int) -> list[GenerationRequest]:
            batch = fresh.build_round(engine.tokenizer, i)
            sent.append([r.prompt_token_ids or () for r in batch])
            return batch

        measured = run_rounds(engine, fresh.build(engine.tokenizer), RoundPlan(2, 1), fresh=build)
    finally:
        engine.close()
    assert [r.error for r in records] == [None] * 6
    by_id = {r.custom_id: r for r in records}
    # The per-turn metrics on a real engine: the medians of the turns' own TTFTs (two
    # sessions: the middle of two), each counted from its wave's start.
    turn_ms = {k: [by_id[f"conv{s}-turn{k}"].ttft_ms or 0.0 for s in (0, 1)] for k in (1, 3)}
    assert workload.workload_metrics(records) == {
        "first_turn_ttft_ms_p50": pytest.approx(statistics.fmean(turn_ms[1]), rel=1e-12),
        "last_turn_ttft_ms_p50": pytest.approx(statistics.fmean(turn_ms[3]), rel=1e-12),
    }
    assert all(ms > 0 for ms in turn_ms[1] + turn_ms[3])
    # Waves: turn k of both sessions together; each turn's history holds the real answers,
    # so its prompt grows by a user turn and an answer (and the chat template's tokens).
    for s in (0, 1):
        lengths = [by_id[f"conv{s}-turn{k}"].prompt_tokens or 0 for k in (1, 2, 3)]
        assert lengths[0] < lengths[1] < lengths[2], lengths
        assert all(by_id[f"conv{s}-turn{k}"].ttft_ms is not None for k in (1, 2, 3))
    # Three waves of two turns; turn k + 1 carried the hf engine's own answers to turns 1..k.
    assert [[r.custom_id for r in wave] for wave in batches] == [
        [f"conv0-turn{k}", f"conv1-turn{k}"] for k in (1, 2, 3)
    ]
    for turn in batches[2]:
        assert turn.messages is not None
        session = turn.custom_id.split("-")[0]
        answers = [m["content"] for m in turn.messages if m["role"] == "assistant"]
        expected = [by_id[f"{session}-turn{k}"].output_text for k in (1, 2)]
        assert answers == expected and all(expected), (answers, expected)
    assert len(sent) == 3 and len(measured.records) == 8
    assert not set(sent[0]) & set(sent[1]) and not set(sent[1]) & set(sent[2])


WORKLOAD_SUITE = """
from pytest_llmperf import (
    Arrivals, ConversationWorkload, SharedPrefixWorkload, SyntheticWorkload, TraceWorkload,
)


def test_trace(llmperf):
    llmperf.measure(workload=TraceWorkload("trace.jsonl", block_size=16, speedup=4),
                    rounds=1, warmup_rounds=0)


def test_trace_with_arrivals(llmperf):
    llmperf.measure(workload=TraceWorkload("trace.jsonl", block_size=16),
                    arrivals=Arrivals(rate_per_s=5), rounds=1, warmup_rounds=0)


def test_conversation(llmperf):
    llmperf.measure(workload=ConversationWorkload(sessions=2, turns=2, user_tokens=4,
                                                  output_tokens=3, think_time_s=0.01),
                    rounds=3, warmup_rounds=0)


def test_fresh(llmperf):
    llmperf.measure(workload=SharedPrefixWorkload(groups=2, prompts_per_group=2, prefix_tokens=8,
                                                  suffix_tokens=2, fresh_each_round=True),
                    rounds=2, warmup_rounds=1)


def test_bursty(llmperf):
    llmperf.measure(workload=SyntheticWorkload(num_requests=6, input_tokens=4, output_tokens=3),
                    arrivals=Arrivals(rate_per_s=40, burstiness=0.5, ramp_up="linear",
                                      ramp_from_per_s=10),
                    rounds=1, warmup_rounds=0)
"""


def test_workloads_through_the_plugin(tmp_path: Path) -> None:
    from pytest_llmperf.results.runs import open_run
    from tests.suite_run import make_project, run_project

    project = make_project(tmp_path, WORKLOAD_SUITE)
    (project / "trace.jsonl").write_text(SHIPPED_TRACE.read_text())
    # A bound on a conversation's first turns that their scripted TTFT misses.
    (project / "thresholds" / "cpu").mkdir(parents=True)
    (project / "thresholds" / "cpu" / "openai.yaml").write_text(
        'schema: 1\ntests:\n  "test_suite.py::test_conversation":\n'
        "    first_turn_ttft_ms_p50: {max: 5}\n"
    )
    # A chat request's first token waits 20 ms more per message: turn 1 (one message)
    # 5 + 20 ms, turn 2 (a message, the answer, a message) 5 + 60 ms.
    script = Script(delays_s=[0.005] * 3, first_token_per_message_s=0.02)
    with InstrumentServer(script) as server:
        out = run_project(
            project, "--engine", "openai", "--base-url", server.base_url, "-rA",
            "--llmperf-responses",
        )  # fmt: skip
        bodies = list(server.requests)
    assert "2 failed, 3 passed" in out.stdout, out.stdout[-3000:]
    assert "test_suite.py: line 13: measure(): arrivals=Arrivals(rate_per_s=5, " in out.stdout
    assert "this workload sends on its own times (a trace's timestamps): give no arrivals" in (
        out.stdout
    )
    tests = {t.test_id.split("::")[-1]: t for t in open_run("latest", project / "results").tests}
    conversation = tests["test_conversation"]
    assert conversation.metric("requests") == 3 * 4
    # Per-turn TTFT, as scripted (the script is a floor; 30 ms of slack for a busy machine),
    # over all rounds and in each round, so that the bound judged the samples and failed.
    first, last = (conversation.metric(f"{t}_turn_ttft_ms_p50") for t in ("first", "last"))
    assert first is not None and last is not None
    assert 25 <= first < 55 and 65 <= last < 95, (first, last)
    for name, floor in (("first", 25), ("last", 65)):
        samples = conversation.samples[f"{name}_turn_ttft_ms_p50"]
        assert len(samples) == 3 and all(floor <= x < floor + 30 for x in samples), samples
    assert re.search(r"first_turn_ttft_ms_p50 +[\d.]+ .*<= 5 .* MISS", out.stdout), out.stdout
    assert tests["test_trace"].metric("requests") == 24
    # Fresh prefixes: three rounds (one warm-up) of four prompts, none sent twice.
    prompts = [tuple(b["prompt"]) for b in bodies if len(b.get("prompt") or ()) == 10]
    assert len(prompts) == 12 and len(set(prompts)) == 12
    # The responses table gives each measured round the prompts that round sent (the custom
    # ids repeat from round to round; the prompts do not): the server's last eight.
    import pyarrow.parquet as pq

    run = open_run("latest", project / "results").path
    table = pq.read_table(run / str(tests["test_fresh"].responses)).to_pylist()
    assert [row["round"] for row in table] == [0] * 4 + [1] * 4
    assert sorted(tuple(row["prompt_token_ids"]) for row in table) == sorted(prompts[4:])
    hf = run_project(project, "--engine", "hf", "-rs", "-k", "test_trace and not arrivals")
    assert (
        "1 skipped" in hf.stdout
        and "a trace replayed on its timestamps needs a client engine" in hf.stdout
    )


def test_an_ab_of_fresh_prefixes_sends_each_side_every_round_once(tmp_path: Path) -> None:
    from tests.suite_run import make_project, run_project

    with (
        InstrumentServer(Script(delays_s=[0.005] * 2)) as a,
        InstrumentServer(Script(delays_s=[0.005] * 2)) as b,
    ):
        project = make_project(
            tmp_path,
            f"""
from pytest_llmperf import SharedPrefixWorkload


def test_fresh_ab(llmperf):
    work = SharedPrefixWorkload(groups=2, prompts_per_group=2, prefix_tokens=8, suffix_tokens=2,
                                output_tokens=2, fresh_each_round=True)
    llmperf.compare("{a.base_url}", "{b.base_url}", work, rounds=2, warmup_rounds=1)
""",
        )
        out = run_project(project, "--engine", "openai", "--base-url", a.base_url)
        sent_a = [tuple(r["prompt"]) for r in a.requests]
        sent_b = [tuple(r["prompt"]) for r in b.requests]
    assert "1 passed" in out.stdout, out.stdout[-3000:]
    # Each side: a warm-up and two measured rounds of four prompts, no prompt sent twice,
    # and both sides sent the same prompts.
    assert len(sent_a) == 12 and len(set(sent_a)) == 12
    assert sorted(sent_a) == sorted(sent_b)
