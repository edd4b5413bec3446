"""Evidence: what every measured test must show before it can pass, thresholds or not.

Each measurement (`llmperf.measure`, `llmperf.evaluate_choices`) is checked, whether or
not a thresholds file names it, and fails unless:

    requests      at least one request was measured (`evaluate_choices`: `questions`,
                  at least one question scored; `llmperf.time` and `llmperf.record`:
                  `rounds`, at least one round): a test that measured nothing shows nothing.
    failure_rate  failed requests / measured requests is at most the allowed rate. A failed
                  request is any request record with an error: an HTTP error, an error in
                  the stream, a stream cut short, a refused connection, a request past its
                  timeout (`--llmperf-request-timeout`, the engine's `request_timeout_s`), a
                  request the engine never answered, or one cut short by a dead engine.

The allowed rate is 0 unless the test says otherwise: `measure(...,
allowed_failure_rate=R)`, else the marker `llmperf_allow_failures(R)` (for fault-injection
suites), else the `max` of a `failure_rate` bound the test's thresholds file gives it.

These checks are exact: counts against limits, never softened by an interval, unlike the
thresholds' verdicts on noisy numbers. They are recorded with the test (`TestRecord.evidence`:
each check, its limit and where the limit came from, and the failed requests grouped by
reason) before the test fails, so nothing measured is lost.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pytest_llmperf.errors import LLMPerfUsageError
from pytest_llmperf.measure.metrics import RequestRecord

#: The marker that lets a fault-injection test fail some of its requests.
MARKER = "llmperf_allow_failures"

#: Reasons the failure message shows, and example requests per reason.
SHOWN_REASONS = 5
EXAMPLES = 3
#: Longer reasons (a server's error page) are cut to this many characters.
REASON_CHARS = 300


@dataclass(frozen=True)
class Allowance:
    """The share of requests allowed to fail, and who said so."""

    rate: float
    #: "default", "measure(allowed_failure_rate=0.25)", "marker llmperf_allow_failures(0.5)"
    #: or the thresholds bound's place ("thresholds/cpu/hf.yaml: line 7").
    source: str = "default"


@dataclass(frozen=True)
class EvidenceCheck:
    """One check of a measurement against its limit (`min` or `max`), and where the limit
    came from."""

    #: "requests", "questions", "rounds" or "failure_rate".
    name: str
    measured: float
    min: float | None
    max: float | None
    ok: bool
    source: str


@dataclass(frozen=True)
class FailureReason:
    """Failed requests that ended with one reason: how many, and a few of their ids."""

    reason: str
    count: int
    examples: tuple[str, ...]


@dataclass(frozen=True)
class Evidence:
    """A measurement's checks; `passed` when every one held."""

    passed: bool
    checks: tuple[EvidenceCheck, ...]
    #: The failed requests by reason, most frequent first.
    failures: tuple[FailureReason, ...] = ()

    def problem(self, key: str) -> str | None:
        """Why the test fails for lack of evidence, with the failures' reasons; or None."""
        failed = [check for check in self.checks if not check.ok]
        if not failed:
            return None
        measured = {check.name: check.measured for check in self.checks}
        failed_requests = sum(group.count for group in self.failures)
        lines = []
        for check in failed:
            if check.name == "failure_rate":
                source = "the default" if check.source == "default" else check.source
                says = (
                    f"{failed_requests} of {measured['requests']:g} measured requests failed: "
                    f"failure rate {check.measured:.4g}, allowed {check.max:g} ({source})"
                )
            else:
                says = f"{check.measured:g} {check.name} measured: nothing to judge"
            lines.append(f"no evidence for {key}: {says}")
        if self.failures:
            lines.append("failed requests by reason:")
            for group in self.failures[:SHOWN_REASONS]:
                ids = ", ".join(group.examples)
                more = ", ..." if group.count > len(group.examples) else ""
                lines.append(f"  {group.count} x {group.reason} (e.g. {ids}{more})")
            hidden = len(self.failures) - SHOWN_REASONS
            if hidden > 0:
                lines.append(f"  and {hidden} other reason(s): see the run's requests.jsonl")
        if any(check.name == "failure_rate" for check in failed):
            lines.append(
                f"(a test that expects failures says so: measure(..., "
                f"allowed_failure_rate=R) or @pytest.mark.{MARKER}(R))"
            )
        return "\n".join(lines)


def of_requests(records: Sequence[RequestRecord], allowance: Allowance) -> Evidence:
    """The checks of a measurement's request records (all measured rounds)."""
    failed = [r for r in records if r.error is not None]
    checks = [EvidenceCheck("requests", len(records), 1, None, bool(records), "always")]
    if records:
        rate = len(failed) / len(records)
        checks.append(
            EvidenceCheck(
                "failure_rate", rate, None, allowance.rate, rate <= allowance.rate, allowance.source
            )
        )
    return Evidence(all(c.ok for c in checks), tuple(checks), failure_reasons(failed))


def of_questions(questions: int) -> Evidence:
    """The check of a scoring measurement: at least one question scored."""
    check = EvidenceCheck("questions", questions, 1, None, questions >= 1, "always")
    return Evidence(check.ok, (check,))


def of_rounds(rounds: int) -> Evidence:
    """The check of timed code (`llmperf.time`, `llmperf.record`): at least one round."""
    check = EvidenceCheck("rounds", rounds, 1, None, rounds >= 1, "always")
    return Evidence(check.ok, (check,))


def failure_reasons(failed: Sequence[RequestRecord]) -> tuple[FailureReason, ...]:
    """Failed requests grouped by their reason, most frequent first (then first seen)."""
    groups: dict[str, list[str]] = {}
    for record in failed:
        reason = " ".join(str(record.error).split())  # one line, whatever the server sent
        if len(reason) > REASON_CHARS:
            reason = reason[: REASON_CHARS - 3] + "..."
        groups.setdefault(reason, []).append(record.custom_id)
    ordered = sorted(groups.items(), key=lambda item: -len(item[1]))
    return tuple(
        FailureReason(reason, len(ids), tuple(dict.fromkeys(ids))[:EXAMPLES])
        for reason, ids in ordered
    )


def marker_allowance(test_id: str, args: Sequence[object], kwargs: Mapping[str, object]) -> float:
    """The rate a `llmperf_allow_failures(rate)` marker allows; a bad one is a usage error."""
    given = f"{MARKER}({', '.join([*map(repr, args), *(f'{k}={v!r}' for k, v in kwargs.items())])})"
    values = [*args, *(kwargs[k] for k in kwargs if k == "rate")]
    if len(values) != 1 or len(args) + len(kwargs) != 1:
        raise LLMPerfUsageError(f"{test_id}: marker {given}: takes one rate, e.g. {MARKER}(0.5)")
    (rate,) = values
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate <= 1:
        raise LLMPerfUsageError(
            f"{test_id}: marker {given}: the rate must be a number from 0 to 1 (the share of "
            "measured requests that may fail)"
        )
    return float(rate)
