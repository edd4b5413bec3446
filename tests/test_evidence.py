"""The evidence every measurement must show (`pytest_llmperf.measure.evidence`): exact
checks, the failed requests' reasons, the marker that allows failures."""

from __future__ import annotations

import pytest

from pytest_llmperf.errors import LLMPerfUsageError
from pytest_llmperf.measure.evidence import (
    Allowance,
    failure_reasons,
    marker_allowance,
    of_questions,
    of_requests,
)
from pytest_llmperf.measure.metrics import RequestRecord


def record(custom_id: str, error: str | None = None, round: int = 0) -> RequestRecord:
    finish = "error" if error else "length"
    return RequestRecord(
        custom_id, round, 4, 0 if error else 8, finish, None, None, None, None, error=error
    )


def test_the_failure_rate_is_checked_exactly_at_its_limit() -> None:
    records = [record("a", "HTTP 503"), record("b"), record("c"), record("d")]
    at_limit = of_requests(records, Allowance(0.25, "measure(allowed_failure_rate=0.25)"))
    assert at_limit.passed and at_limit.problem("t") is None
    (requests, rate) = at_limit.checks
    assert (requests.name, requests.measured, requests.min, requests.ok) == ("requests", 4, 1, True)
    assert (rate.name, rate.measured, rate.max, rate.source) == (
        "failure_rate",
        0.25,
        0.25,
        "measure(allowed_failure_rate=0.25)",
    )
    below = of_requests(records, Allowance(0.2499))
    assert not below.passed
    assert below.problem("t::x") == (
        "no evidence for t::x: 1 of 4 measured requests failed: failure rate 0.25, allowed "
        "0.2499 (the default)\n"
        "failed requests by reason:\n"
        "  1 x HTTP 503 (e.g. a)\n"
        "(a test that expects failures says so: measure(..., allowed_failure_rate=R) or "
        "@pytest.mark.llmperf_allow_failures(R))"
    )


def test_no_request_is_no_evidence_whatever_is_allowed() -> None:
    nothing = of_requests([], Allowance(1.0, "marker llmperf_allow_failures(1)"))
    assert not nothing.passed
    assert [c.name for c in nothing.checks] == ["requests"]  # no rate of nothing
    assert nothing.problem("t") == "no evidence for t: 0 requests measured: nothing to judge"
    assert not of_questions(0).passed and of_questions(1).passed
    assert (
        of_questions(0).problem("t") == "no evidence for t: 0 questions measured: nothing to judge"
    )


def test_reasons_are_grouped_counted_and_shown_with_a_few_examples() -> None:
    failed = [
        record("a", "request timed out after 2 s"),
        record("b", "HTTP 404:\n  Not Found"),  # a server's page on several lines: one line
        record("c", "HTTP 404: Not Found"),
        record("a", "HTTP 404: Not Found", round=1),  # the same request in the next round
        record("d", "HTTP 404: Not Found"),
        record("e", "HTTP 404: Not Found"),
        record("f", "x" * 1000),
    ]
    groups = failure_reasons(failed)
    assert [(g.reason, g.count, g.examples) for g in groups[:2]] == [
        ("HTTP 404: Not Found", 5, ("b", "c", "a")),
        ("request timed out after 2 s", 1, ("a",)),
    ]
    assert groups[2].reason == "x" * 297 + "..."
    evidence = of_requests(failed, Allowance(0.0))
    message = evidence.problem("t") or ""
    assert "7 of 7 measured requests failed" in message
    assert "  5 x HTTP 404: Not Found (e.g. b, c, a, ...)\n" in message


def test_many_reasons_are_cut_to_the_first_five() -> None:
    failed = [record(f"r{i}", f"reason {i}") for i in range(8)]
    message = of_requests(failed, Allowance(0.0)).problem("t") or ""
    assert "  1 x reason 4 (e.g. r4)" in message and "reason 5" not in message
    assert "  and 3 other reason(s): see the run's requests.jsonl" in message


@pytest.mark.parametrize(
    ("args", "kwargs", "rate"),
    [((0.5,), {}, 0.5), ((0,), {}, 0.0), ((1,), {}, 1.0), ((), {"rate": 0.25}, 0.25)],
)
def test_the_marker_gives_a_rate(
    args: tuple[object, ...], kwargs: dict[str, object], rate: float
) -> None:
    assert marker_allowance("t.py::t", args, kwargs) == rate


@pytest.mark.parametrize(
    ("args", "kwargs", "words"),
    [
        (
            ("lots",),
            {},
            "marker llmperf_allow_failures('lots'): the rate must be a number from 0 to 1",
        ),
        ((1.5,), {}, "marker llmperf_allow_failures(1.5): the rate must be"),
        ((-0.1,), {}, "marker llmperf_allow_failures(-0.1): the rate must be"),
        ((True,), {}, "marker llmperf_allow_failures(True): the rate must be"),
        ((float("nan"),), {}, "marker llmperf_allow_failures(nan): the rate must be"),
        ((), {}, "marker llmperf_allow_failures(): takes one rate, e.g."),
        ((0.1, 0.2), {}, "marker llmperf_allow_failures(0.1, 0.2): takes one rate"),
        ((), {"share": 0.1}, "marker llmperf_allow_failures(share=0.1): takes one rate"),
    ],
)
def test_a_bad_marker_is_a_usage_error_naming_the_test(
    args: tuple[object, ...], kwargs: dict[str, object], words: str
) -> None:
    with pytest.raises(LLMPerfUsageError) as info:
        marker_allowance("t.py::t", args, kwargs)
    assert str(info.value).startswith("t.py::t: " + words), str(info.value)
