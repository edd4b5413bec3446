"""Comparing runs: per-test metric changes, judged by each metric's direction.

A change is worse when it goes against the metric's direction (`metrics.spec_for`:
throughput falling, latency rising, accuracy falling). A tolerance says how much worse
is still acceptable, per metric:

    output_tok_per_s:-5%     may fall by 5% of the baseline
    ttft_ms.p90:+10%         may rise by 10%
    accuracy:-0.02           may fall by 0.02 (no %: an absolute amount)
    ttft_ms.*:15%            a glob; the sign may be left out (it is the worsening one)

A sign that contradicts the metric's direction (`output_tok_per_s:+5%`) is an error: a
rise in throughput is never a regression. The first tolerance whose pattern matches a
metric applies; the user's come before `DEFAULT_TOLERANCES`. A metric with no tolerance
is reported, never judged a regression.

The defaults, and why:

    throughput, ttft/tpot/e2e p50 and p90     10%    what a shared GPU runner moves by
                                                     between nights
    mbu                                       10%    decode speed over the card's fixed
                                                     bandwidth: it moves with the speeds
    energy_j, output_tok_per_j                15%    energy is power x time: the time's 10%,
                                                     plus power's own drift with the card's
                                                     temperature and boost clocks
    peak_gpu_mem_bytes                        5%     memory does not move with clocks or
                                                     load; what is worth catching (a bigger
                                                     KV cache, weights held twice, a leak)
                                                     moves it by more
    failure_rate                              0      any new failure
    accuracy, accuracy_norm, exact_match,     0.02   absolute: a relative change of a small
    token_f1                                         ratio says nothing

Power, utilisation, clocks and the other telemetry are shown, not judged: a faster run may
draw more power, and energy per run is what it costs.

A tolerance names a metric as a thresholds file does: a name that is no metric
(`output_tokps`) is an error with the closest names, and a glob must match some metric.

Verdicts: `regressed` (worse beyond the tolerance), `worse` (within it, or no
tolerance), `improved` (better beyond the same amount), `better`, `unchanged`,
`added` / `removed` (in one run only), `undirected` (no direction known), and
`unreliable`: not judged, because the value on one side is one the tool knows is bad
(`pytest_llmperf.measure.reliability`: every request failed, a client-bound round, a
latency of 0 ms), or because the baseline is 0 and the tolerance relative, which would
make any rise a regression. Its `note` says which.

Two runs of different engines, models or hardware compare setups, not one setup over
time: `llmperf compare` shows both sides' (`results.identity`) and says when they differ.
"""

from __future__ import annotations

import fnmatch
import re
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from pytest_llmperf.errors import LLMPerfUsageError
from pytest_llmperf.measure.metrics import Direction, metric_hint, metric_names, spec_for
from pytest_llmperf.measure.reliability import reason_for, unreliable
from pytest_llmperf.results.identity import Setup
from pytest_llmperf.results.record import BaselineRecord, JudgedChange, TestRecord
from pytest_llmperf.results.runs import Run
from pytest_llmperf.tables import render_table

Verdict = Literal[
    "regressed",
    "worse",
    "improved",
    "better",
    "unchanged",
    "added",
    "removed",
    "undirected",
    "unreliable",
]

#: Applied after the user's own (the module docstring says why each amount). Relative for
#: speed, energy and memory; absolute for ratios, where a relative change of a small number
#: (a failure rate of 0.001) says nothing.
DEFAULT_TOLERANCES: tuple[str, ...] = (
    "output_tok_per_s:10%",
    "total_tok_per_s:10%",
    "requests_per_s:10%",
    "questions_per_s:10%",
    "goodput_req_per_s:10%",
    "ttft_ms.p50:10%",
    "ttft_ms.p90:10%",
    "tpot_ms.p50:10%",
    "tpot_ms.p90:10%",
    "e2e_ms.p50:10%",
    "e2e_ms.p90:10%",
    "mbu:10%",
    "energy_j:15%",
    "output_tok_per_j:15%",
    "peak_gpu_mem_bytes:5%",
    "failure_rate:0",
    "accuracy:0.02",
    "accuracy_norm:0.02",
    "exact_match:0.02",
    "token_f1:0.02",
)

_TOLERANCE = re.compile(
    r"^(?P<metric>[^:\s]+):(?P<sign>[+-])?(?P<amount>\d+(?:\.\d+)?)(?P<pct>%)?$"
)


@dataclass(frozen=True)
class Tolerance:
    pattern: str
    amount: float
    relative: bool
    #: "+" or "-" as written, None when left out.
    sign: str | None
    text: str

    @classmethod
    def parse(cls, text: str, source: str = "--tolerance") -> Tolerance:
        match = _TOLERANCE.match(text.strip())
        if match is None:
            raise LLMPerfUsageError(
                f"{source}: {text!r} is not METRIC:CHANGE (e.g. output_tok_per_s:-5%, "
                "ttft_ms.p90:+10%, accuracy:-0.02)"
            )
        tolerance = cls(
            pattern=match["metric"],
            amount=float(match["amount"]) / (100.0 if match["pct"] else 1.0),
            relative=bool(match["pct"]),
            sign=match["sign"],
            text=text.strip(),
        )
        _check_metric(tolerance.pattern, text, source)
        spec = spec_for(tolerance.pattern)
        if tolerance.sign and spec is not None and tolerance.sign != _worsening(spec.better):
            fixed = f"{_worsening(spec.better)}{match['amount']}{match['pct'] or ''}"
            raise LLMPerfUsageError(
                f"{source}: {text!r}: {tolerance.pattern} is {spec.better}-is-better, so a "
                f"regression is a {'fall' if spec.better == 'higher' else 'rise'}; write "
                f"{tolerance.pattern}:{fixed}"
            )
        return tolerance

    def matches(self, metric: str) -> bool:
        return self.pattern == metric or fnmatch.fnmatchcase(metric, self.pattern)

    def allows(self, base: float, worsening: float) -> bool:
        """Whether `worsening` (> 0, in the metric's units) is within this tolerance."""
        limit = self.amount * abs(base) if self.relative else self.amount
        return worsening <= limit + 1e-12


def _check_metric(pattern: str, text: str, source: str) -> None:
    """A tolerance's metric is a known one, or a glob that matches one (as a thresholds
    file names metrics): a misspelt name would otherwise judge nothing, silently."""
    if any(ch in pattern for ch in "*?["):
        if not any(fnmatch.fnmatchcase(name, pattern) for name in metric_names()):
            raise LLMPerfUsageError(f"{source}: {text!r}: {pattern!r} matches no metric")
    elif spec_for(pattern) is None:
        raise LLMPerfUsageError(
            f"{source}: {text!r}: unknown metric {pattern!r}{metric_hint(pattern)}"
        )


def _worsening(better: Direction) -> str:
    return "-" if better == "higher" else "+"


def parse_tolerances(texts: Sequence[str], source: str = "--tolerance") -> list[Tolerance]:
    """The user's tolerances, then the defaults."""
    return [Tolerance.parse(t, source) for t in texts] + [
        Tolerance.parse(t, "DEFAULT_TOLERANCES") for t in DEFAULT_TOLERANCES
    ]


@dataclass(frozen=True)
class Change:
    test_id: str
    metric: str
    base: float | None
    new: float | None
    better: Direction | None
    #: (new - base) / |base|; None when the base is 0 or missing.
    relative: float | None
    verdict: Verdict
    #: The tolerance that judged it, as written ("-5%"), or None.
    tolerance: str | None
    #: Why it was not judged (verdict `unreliable`), else None.
    note: str | None = None


def compare_metrics(
    test_id: str,
    base: Mapping[str, object],
    new: Mapping[str, object],
    tolerances: Sequence[Tolerance],
    base_unreliable: Mapping[str, str] | None = None,
    new_unreliable: Mapping[str, str] | None = None,
) -> list[Change]:
    """Every numeric metric of either side, judged.

    A metric unreliable on either side (`measure.reliability`; by default as assessed
    from the metrics themselves) is not judged: verdict `unreliable`, with a note."""
    base_bad = unreliable(base) if base_unreliable is None else base_unreliable
    new_bad = unreliable(new) if new_unreliable is None else new_unreliable
    changes = []
    for metric in sorted(set(base) | set(new)):
        b, n = _number(base.get(metric)), _number(new.get(metric))
        if b is None and n is None:
            continue
        spec = spec_for(metric)
        better = spec.better if spec is not None else None
        relative = (n - b) / abs(b) if b is not None and n is not None and b != 0 else None
        tolerance = next((t for t in tolerances if t.matches(metric)), None)
        verdict = _verdict(b, n, better, tolerance)
        note = _unjudged(metric, b, n, better, tolerance, base_bad, new_bad)
        if note is not None and verdict not in ("added", "removed", "undirected", "unchanged"):
            verdict = "unreliable"
        changes.append(
            Change(
                test_id,
                metric,
                b,
                n,
                better,
                relative,
                verdict,
                tolerance.text.partition(":")[2] if tolerance else None,
                note if verdict == "unreliable" else None,
            )
        )
    return changes


def _unjudged(
    metric: str,
    base: float | None,
    new: float | None,
    better: Direction | None,
    tolerance: Tolerance | None,
    base_bad: Mapping[str, str],
    new_bad: Mapping[str, str],
) -> str | None:
    """Why this metric's change cannot be judged, or None."""
    for side, reasons in (("baseline", base_bad), ("new", new_bad)):
        reason = reason_for(reasons, metric)
        if reason is not None:
            return f"{side} value unreliable: {reason}"
    zero_base = base == 0 and new is not None and new > 0
    if zero_base and better == "lower" and tolerance is not None and tolerance.relative:
        return "baseline value 0: a relative tolerance of 0 allows no rise at all"
    return None


def _verdict(
    base: float | None, new: float | None, better: Direction | None, tolerance: Tolerance | None
) -> Verdict:
    if base is None:
        return "added"
    if new is None:
        return "removed"
    if better is None:
        return "undirected"
    if new == base:
        return "unchanged"
    gain = (new - base) if better == "higher" else (base - new)
    if gain < 0:
        within = tolerance is None or tolerance.allows(base, -gain)
        return "worse" if within else "regressed"
    return "better" if tolerance is None or tolerance.allows(base, gain) else "improved"


def _judged(change: Change) -> bool:
    """Compared on both sides with a tolerance: what a verdict was given for."""
    return change.tolerance is not None and change.verdict not in ("added", "removed")


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


@dataclass(frozen=True)
class RunComparison:
    base: Run
    new: Run
    changes: list[Change]
    tests_only_in_base: list[str]
    tests_only_in_new: list[str]

    @property
    def regressions(self) -> list[Change]:
        return [c for c in self.changes if c.verdict == "regressed"]


def compare_runs(base: Run, new: Run, tolerances: Sequence[str] = ()) -> RunComparison:
    """Tests present in both runs, metric by metric (`tolerances` as the CLI takes them)."""
    parsed = parse_tolerances(tolerances)
    base_ids = [t.key for t in base.tests]
    new_ids = [t.key for t in new.tests]
    changes: list[Change] = []
    for test_id in dict.fromkeys(new_ids):
        before, after = base.test(test_id), new.test(test_id)
        if before is None or after is None:
            continue
        changes += compare_metrics(
            test_id,
            before.metrics_flat,
            after.metrics_flat,
            parsed,
            record_unreliable(before),
            record_unreliable(after),
        )
    return RunComparison(
        base,
        new,
        changes,
        [t for t in dict.fromkeys(base_ids) if t not in set(new_ids)],
        [t for t in dict.fromkeys(new_ids) if t not in set(base_ids)],
    )


def record_unreliable(record: TestRecord) -> dict[str, str]:
    """A test's unreliable metrics: as assessed now from its numbers, and as recorded."""
    return {**unreliable(record.metrics_flat), **record.unreliable}


class _Judged(Protocol):
    """A judged change, as compared (`Change`) or as recorded (`JudgedChange`)."""

    @property
    def metric(self) -> str: ...
    @property
    def verdict(self) -> str: ...
    @property
    def note(self) -> str | None: ...


def unjudged_notes(changes: Sequence[_Judged]) -> list[str]:
    """One line per reason some metrics were not judged, naming them."""
    by_note: dict[str, list[str]] = {}
    for change in changes:
        if change.verdict == "unreliable" and change.note:
            by_note.setdefault(change.note, []).append(change.metric)
    return [f"not judged: {', '.join(metrics)}: {note}" for note, metrics in by_note.items()]


def changes_table(changes: Sequence[Change]) -> str:
    """A plain-text table: metric, base, new, change, verdict, tolerance."""
    rows = []
    for c in changes:
        change = f"{c.relative:+.1%}" if c.relative is not None else "-"
        rows.append(
            (
                c.metric,
                _fmt(c.base),
                _fmt(c.new),
                change,
                c.verdict.upper() if c.verdict == "regressed" else c.verdict,
                c.tolerance or "-",
            )
        )
    return render_table(("metric", "base", "new", "change", "verdict", "tolerance"), rows)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def check_measured(run: Run, role: str) -> None:
    """A run compared must hold measured tests: one without judges nothing, silently."""
    if not run.tests:
        raise LLMPerfUsageError(
            f"{role} {run.run_id} ({run.path}) has no measured tests, so there is nothing to "
            "compare (a run that stopped before measuring?)"
        )


def setup_lines(base: Run, new: Run) -> list[str]:
    """Both sides' engine, model and hardware, and a warning line when they differ."""
    before, after = Setup.of_run(base), Setup.of_run(new)
    lines = [f"base {base.run_id}: {before.describe()}", f"new  {new.run_id}: {after.describe()}"]
    differences = before.differences(after)
    if differences:
        lines.append(
            f"WARNING: the runs differ in {'; '.join(differences)}: the changes below compare "
            "two setups, not one setup over time"
        )
    return lines


def compare_command(base: Run, new: Run, tolerances: Sequence[str], show_all: bool = False) -> int:
    """`llmperf compare`: print the changes; 1 when any metric regressed, else 0."""
    parse_tolerances(tolerances)  # a bad tolerance first: it is what the user typed last
    check_measured(base, "base")
    check_measured(new, "new")
    comparison = compare_runs(base, new, tolerances)
    print("\n".join(setup_lines(base, new)))
    for test_id in dict.fromkeys(c.test_id for c in comparison.changes):
        mine = [c for c in comparison.changes if c.test_id == test_id]
        shown = [c for c in mine if show_all or _judged(c)]
        if shown:
            print(f"\n{test_id}")
            print(textwrap.indent(changes_table(shown), "  "))
        for note in unjudged_notes([c for c in mine if _judged(c)]):
            print(f"  {note}")
    for label, ids in (
        ("only in base", comparison.tests_only_in_base),
        ("only in new", comparison.tests_only_in_new),
    ):
        if ids:
            print(f"\n{label}: " + ", ".join(ids))
    regressions = comparison.regressions
    if regressions:
        print(f"\n{len(regressions)} regression(s) beyond tolerance:")
        for c in regressions:
            print(
                f"  {c.test_id}  {c.metric}: {_fmt(c.base)} -> {_fmt(c.new)} "
                f"(tolerance {c.tolerance})"
            )
        return 1
    print("\nno regression beyond tolerance")
    return 0


@dataclass(frozen=True)
class BaselineCheck:
    """One test against the baseline run of `--llmperf-compare`."""

    base_run_id: str
    #: False when the baseline has no such test (nothing to regress against).
    found: bool
    changes: list[Change]

    @property
    def regressions(self) -> list[Change]:
        return [c for c in self.changes if c.verdict == "regressed"]

    def as_record(self) -> BaselineRecord:
        return BaselineRecord(
            run_id=self.base_run_id,
            found=self.found,
            passed=not self.regressions,
            judged=tuple(
                JudgedChange(c.metric, c.base, c.new, c.relative, c.verdict, c.tolerance, c.note)
                for c in self.changes
                if _judged(c)
            ),
        )


def check_against(
    baseline: Run, test_key: str, flat: Mapping[str, object], tolerances: Sequence[Tolerance]
) -> BaselineCheck:
    before = baseline.test(test_key)
    if before is None:
        return BaselineCheck(baseline.run_id, False, [])
    changes = compare_metrics(
        test_key, before.metrics_flat, flat, tolerances, record_unreliable(before)
    )
    return BaselineCheck(baseline.run_id, True, changes)
