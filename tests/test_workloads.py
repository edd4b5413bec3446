"""Issue 28's workloads, built through the tiny model's tokenizer: shapes in its tokens,
determinism from the seed, trace files checked line by line, and the arrivals' statistics."""

from __future__ import annotations

import itertools
import json
import math
import random
import statistics
from pathlib import Path

import pytest

from pytest_llmperf import ConversationWorkload, SharedPrefixWorkload, TraceWorkload
from pytest_llmperf.engines.base import GenerationRequest, Tokenizer
from pytest_llmperf.engines.turns import chain, with_answers
from pytest_llmperf.errors import LLMPerfUsageError
from pytest_llmperf.measure.metrics import RequestRecord, spec_for
from pytest_llmperf.models.tokenizer import local_tokenizer
from pytest_llmperf.suite.load import Arrivals

SHIPPED_TRACE = Path(__file__).resolve().parent.parent / "suites" / "data" / "trace_block16.jsonl"


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    return local_tokenizer("tiny")


def ids(request: GenerationRequest) -> tuple[int, ...]:
    assert request.prompt_token_ids is not None
    return request.prompt_token_ids


def test_shared_prefix_groups_share_exactly_their_prefix(tokenizer: Tokenizer) -> None:
    workload = SharedPrefixWorkload(
        groups=3, prompts_per_group=4, prefix_tokens=40, suffix_tokens=8
    )
    requests = workload.build(tokenizer)
    assert len(requests) == 12 and all(len(ids(r)) == 48 for r in requests)
    by_group: dict[str, list[tuple[int, ...]]] = {}
    for r in requests:
        by_group.setdefault(r.custom_id.split("-")[1], []).append(ids(r))
    prefixes = {g: {p[:40] for p in prompts} for g, prompts in by_group.items()}
    assert all(len(p) == 1 for p in prefixes.values())  # one prefix per group
    assert len({next(iter(p)) for p in prefixes.values()}) == 3  # and a different one each
    assert len({p[40:] for prompts in by_group.values() for p in prompts}) == 12
    # The ids are the tokenizer's own: decoding and encoding again gives them back.
    assert tokenizer.encode(tokenizer.decode(ids(requests[0])[:40])) == list(ids(requests[0])[:40])
    assert [r.sampling.max_tokens for r in requests] == [16] * 12
    assert [r.custom_id for r in requests] != sorted(r.custom_id for r in requests)  # interleaved


def test_shared_prefix_is_seeded_and_fresh_each_round_changes_every_round(
    tokenizer: Tokenizer,
) -> None:
    same = SharedPrefixWorkload(groups=2, prompts_per_group=2, prefix_tokens=16, suffix_tokens=4)
    assert same.build(tokenizer) == same.build(tokenizer)
    assert same.build_round(tokenizer, 3) == same.build(tokenizer)
    other_seed = SharedPrefixWorkload(
        groups=2, prompts_per_group=2, prefix_tokens=16, suffix_tokens=4, seed=1
    )
    assert ids(other_seed.build(tokenizer)[0]) != ids(same.build(tokenizer)[0])
    fresh = SharedPrefixWorkload(
        groups=2, prompts_per_group=2, prefix_tokens=16, suffix_tokens=4, fresh_each_round=True
    )
    rounds = [fresh.build_round(tokenizer, i) for i in range(3)]
    prefixes = [{ids(r)[:16] for r in batch} for batch in rounds]
    assert all(len(p) == 2 for p in prefixes)  # still two groups a round
    assert not (prefixes[0] & prefixes[1]) and not (prefixes[1] & prefixes[2])
    assert fresh.build_round(tokenizer, 1) == rounds[1]  # and each round repeats
    assert [r.custom_id for r in rounds[0]] == [r.custom_id for r in rounds[1]]


def test_shipped_trace_is_built_block_for_block(tokenizer: Tokenizer) -> None:
    workload = TraceWorkload(SHIPPED_TRACE, block_size=16)
    lines = [json.loads(x) for x in SHIPPED_TRACE.read_text().splitlines()]
    requests = workload.build(tokenizer)
    assert [len(ids(r)) for r in requests] == [x["input_length"] for x in lines]
    assert [r.sampling.max_tokens for r in requests] == [x["output_length"] for x in lines]
    assert [r.send_offset_s for r in requests] == [x["timestamp"] / 1000 for x in lines]
    assert requests[0].custom_id == f"trace-L1-s{lines[0]['session_id']}"
    # Equal hash ids are equal blocks; the first differing block differs.
    for (a, la), (b, lb) in itertools.combinations(zip(requests, lines, strict=True), 2):
        common = len(
            list(
                itertools.takewhile(
                    lambda p: p[0] == p[1], zip(la["hash_ids"], lb["hash_ids"], strict=False)
                )
            )
        )
        shared = min(common * 16, len(ids(a)), len(ids(b)))
        assert ids(a)[:shared] == ids(b)[:shared]
        if common < min(len(la["hash_ids"]), len(lb["hash_ids"])):
            end = (common + 1) * 16
            if len(ids(a)) >= end and len(ids(b)) >= end:
                assert ids(a)[common * 16 : end] != ids(b)[common * 16 : end]
    assert workload.build(tokenizer) == requests
    untimed = TraceWorkload(SHIPPED_TRACE, block_size=16, timed=False, speedup=2.0)
    assert {r.send_offset_s for r in untimed.build(tokenizer)} == {0.0}
    faster = TraceWorkload(SHIPPED_TRACE, block_size=16, speedup=2.0).build(tokenizer)
    assert faster[-1].send_offset_s == pytest.approx(lines[-1]["timestamp"] / 2000)


def test_mooncake_lines_are_sorted_by_time_and_bad_lines_are_named(
    tmp_path: Path, tokenizer: Tokenizer
) -> None:
    trace = tmp_path / "mooncake.jsonl"
    trace.write_text(
        '{"timestamp": 3052, "input_length": 40, "output_length": 5, "hash_ids": [0, 1]}\n'
        '{"timestamp": 0, "input_length": 30, "output_length": 7, "hash_ids": [0, 2]}\n'
    )
    first, second = TraceWorkload(trace, block_size=16).build(tokenizer)
    assert (first.custom_id, first.send_offset_s, len(ids(first))) == ("trace-L2", 0.0, 30)
    assert (second.custom_id, second.send_offset_s) == ("trace-L1", 3.052)
    assert ids(first)[:16] == ids(second)[:16] and ids(first)[16:30] != ids(second)[16:30]
    for line, problem in [
        ('{"timestamp": -1, "input_length": 4, "output_length": 1}', "'timestamp' must be"),
        ('{"timestamp": 0, "input_length": 0, "output_length": 1}', "'input_length' must be"),
        ('{"timestamp": 0, "input_length": 4, "output_length": 1, "hash_ids": "ab"}', "'hash_ids'"),
        (
            '{"timestamp": 0, "input_length": 4, "output_len": 1}',
            "unknown trace field(s) output_len",
        ),
    ]:
        trace.write_text('{"timestamp": 0, "input_length": 4, "output_length": 1}\n' + line + "\n")
        with pytest.raises(
            LLMPerfUsageError,
            match=f"mooncake.jsonl: line 2: .*{problem}".replace("(", r"\(").replace(")", r"\)"),
        ):
            TraceWorkload(trace)


def test_conversation_history_grows_turn_by_turn(tokenizer: Tokenizer) -> None:
    workload = ConversationWorkload(
        sessions=2, turns=3, user_tokens=12, output_tokens=5, think_time_s=0.1
    )
    requests = workload.build(tokenizer)
    assert [r.custom_id for r in requests[:3]] == ["conv0-turn1", "conv0-turn2", "conv0-turn3"]
    assert [r.follows for r in requests[:3]] == [None, "conv0-turn1", "conv0-turn2"]
    assert [r.think_time_s for r in requests[:3]] == [0.0, 0.1, 0.1]
    third = requests[2].messages
    assert third is not None and [m["role"] for m in third] == ["user", "assistant"] * 2 + ["user"]
    lengths = [len(tokenizer.encode(m["content"])) for m in third]
    assert lengths == [12, 5, 12, 5, 12]
    assert requests[1].messages == third[:3]  # the history is the turn before's, grown
    assert requests[3].messages != requests[0].messages  # sessions differ
    assert workload.build(tokenizer) == requests
    by_id = {r.custom_id: r for r in requests}
    assert chain(requests[2], by_id) == ["conv0-turn1", "conv0-turn2"]
    answered = with_answers(requests[2], ["conv0-turn1", "conv0-turn2"], {"conv0-turn1": "A1"})
    assert answered.messages is not None
    contents = [m["content"] for m in third]
    # The first answer is known and replaces its stand-in; the second is not, and stays.
    assert [m["content"] for m in answered.messages] == [contents[0], "A1", *contents[2:]]


def test_per_turn_ttft_metrics_take_the_medians_of_first_and_last_turns() -> None:
    def record(custom_id: str, ttft: float | None, error: str | None = None) -> RequestRecord:
        return RequestRecord(custom_id, 0, 8, 4, "length", ttft, 50.0, 5.0, None, error=error)

    workload = ConversationWorkload(sessions=3, turns=11)
    records = [
        record("conv0-turn1", 10.0),
        record("conv1-turn1", 30.0),
        record("conv2-turn1", 900.0, error="HTTP 500"),  # failed: not a turn's TTFT
        record("conv0-turn11", 70.0),  # the last turn, not turn 1
        record("conv1-turn11", 80.0),
        record("conv2-turn11", 120.0),
        record("conv0-turn2", 5.0),  # a middle turn: neither
    ]
    assert workload.workload_metrics(records) == {
        "first_turn_ttft_ms_p50": 20.0,
        "last_turn_ttft_ms_p50": 80.0,
    }
    # No last turn answered (a limit, or failures): null, never 0.
    assert workload.workload_metrics(records[:3])["last_turn_ttft_ms_p50"] is None
    # Metrics thresholds know: defined in the conversation module.
    for name in ("first_turn_ttft_ms_p50", "last_turn_ttft_ms_p50"):
        spec = spec_for(name)
        assert spec is not None and spec.better == "lower" and spec.unit == "ms"
        assert spec.defined_in == "pytest_llmperf.suite.conversation"


def gap_stats(arrivals: Arrivals, n: int) -> tuple[float, float]:
    gaps = arrivals.gaps(n)
    mean = statistics.fmean(gaps)
    return mean, statistics.pstdev(gaps) / mean


@pytest.mark.parametrize("burstiness", [0.25, 1.0, 4.0])
def test_bursty_gaps_have_the_gammas_mean_and_variation(burstiness: float) -> None:
    # Gamma(k, 1/(rate k)): mean 1/rate, coefficient of variation 1/sqrt(k). With 20,000
    # gaps the sample mean's standard error is cv/141 (at most 1.4%) and the sample CV's
    # under 2%: 6% and 10% are over four standard errors.
    mean, cv = gap_stats(Arrivals(rate_per_s=20, burstiness=burstiness, seed=3), 20_001)
    assert mean == pytest.approx(1 / 20, rel=0.06)
    assert cv == pytest.approx(1 / math.sqrt(burstiness), rel=0.10)


def test_bursty_arrivals_are_seeded_and_poisson_is_unchanged() -> None:
    bursty = Arrivals(rate_per_s=5, burstiness=0.5, seed=7)
    assert bursty.offsets(50) == Arrivals(rate_per_s=5, burstiness=0.5, seed=7).offsets(50)
    assert bursty.offsets(50) != Arrivals(rate_per_s=5, burstiness=0.5, seed=8).offsets(50)
    # Burstiness 1 is the Poisson process, drawn as before this option existed.
    rng = random.Random(0)
    expected = list(itertools.accumulate([rng.expovariate(4.0) for _ in range(9)], initial=0.0))
    assert Arrivals(rate_per_s=4).offsets(10) == expected


def test_ramp_up_goes_from_its_start_rate_to_the_rate() -> None:
    linear = Arrivals(rate_per_s=9, distribution="constant", ramp_up="linear", ramp_from_per_s=1)
    gaps = linear.gaps(5)  # rates at requests 0..3 of 5: 1, 3, 5, 7 (9 at the last)
    assert gaps == pytest.approx([1, 1 / 3, 1 / 5, 1 / 7])
    exponential = Arrivals(
        rate_per_s=16, distribution="constant", ramp_up="exponential", ramp_from_per_s=1
    )
    assert exponential.gaps(5) == pytest.approx([1, 1 / 2, 1 / 4, 1 / 8])
    ramped = Arrivals(rate_per_s=50, ramp_up="linear", ramp_from_per_s=5, seed=2)
    early, late = ramped.gaps(2001)[:200], ramped.gaps(2001)[-200:]
    assert statistics.fmean(early) > 3 * statistics.fmean(late)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"burstiness": 0}, "burstiness=0: must be a positive number"),
        ({"distribution": "constant", "burstiness": 2}, "a constant schedule has no burstiness"),
        ({"ramp_from_per_s": 2}, "ramp_from_per_s=2: needs ramp_up="),
        ({"ramp_up": "linear"}, "ramp_from_per_s=None: ramp_up needs the rate it starts from"),
        ({"ramp_up": "exponential", "ramp_from_per_s": 0}, "ramp_from_per_s=0: must be a positive"),
        ({"ramp_up": "steep", "ramp_from_per_s": 1}, "ramp_up='steep'"),
    ],
)
def test_bad_arrivals_are_usage_errors(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(LLMPerfUsageError, match=message.replace("(", r"\(")):
        Arrivals(rate_per_s=4, **kwargs)  # type: ignore[arg-type]


def test_arrivals_schedule_only_the_turns_that_start_a_session(tokenizer: Tokenizer) -> None:
    requests = ConversationWorkload(sessions=3, turns=2, user_tokens=4, output_tokens=2).build(
        tokenizer
    )
    scheduled = Arrivals(rate_per_s=10, distribution="constant").apply(requests)
    assert [r.send_offset_s for r in scheduled] == pytest.approx([0, 0, 0.1, 0, 0.2, 0])
