"""Changes of one test's metrics between two runs, judged point by point.

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

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from pytest_llmperf.measure.metrics import Direction, spec_for
from pytest_llmperf.measure.reliability import reason_for, unreliable
from pytest_llmperf.results.record import TestRecord
from pytest_llmperf.results.tolerances import Tolerance
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
    "ok",
    "inconclusive",
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
    #: Judged on samples (`results.baseline`): the change's one-sided confidence bounds
    #: (relative for a relative tolerance, in the metric's units for an absolute one), the
    #: p-value after Holm's correction, and the drift between runs used; else None.
    low: float | None = None
    high: float | None = None
    p: float | None = None
    drift: float | None = None
    #: The share of the verdict's variance more rounds of the new run would shrink.
    reducible: float | None = None


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


def judged(change: Change) -> bool:
    """Compared on both sides with a tolerance: what a verdict was given for."""
    return change.tolerance is not None and change.verdict not in ("added", "removed")


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


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
    """A plain-text table: metric, base, new, change (with its interval where it was judged
    on samples), p, verdict, tolerance."""
    rows = []
    for c in changes:
        change = f"{c.relative:+.1%}" if c.relative is not None else "-"
        if c.low is not None and c.high is not None and c.tolerance and c.tolerance.endswith("%"):
            change += f" [{c.low:+.1%}, {c.high:+.1%}]"
        rows.append(
            (
                c.metric,
                fmt(c.base),
                fmt(c.new),
                change,
                "-" if c.p is None else f"{c.p:.2g}",
                c.verdict.upper() if c.verdict == "regressed" else c.verdict,
                c.tolerance or "-",
            )
        )
    header = ("metric", "base", "new", "change", "p", "verdict", "tolerance")
    return render_table(header, rows)


def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"
