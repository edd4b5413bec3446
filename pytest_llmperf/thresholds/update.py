"""Rewriting a thresholds file from measurements (`--llmperf-update-thresholds`, `llmperf
calibrate`).

The file format, and how bounds are read and checked, are in `thresholds.files` and
`thresholds.check`. A metric measured round by round gets its bound from its noise
(`thresholds.noise`: a prediction limit for a new run, with the noise, runs, rounds and the
smallest change it catches written beside it); a metric judged as a value
(`MetricSpec.judged_exactly`), or one with fewer than two samples, gets the old bound: the
value less (min) or plus (max) `margin`.

No bound is written from a number the tool knows is bad (`measure.reliability`): a test
whose every request failed, or that measured nothing, gets none, and neither does a
client-bound timing or a latency of 0 ms; the report says which (`refused`), and a bound
already in the file stays as it was.

A test without an entry gets bounds on the run's default metrics, except an A/B test
(`llmperf.compare`, own code compared in turns: its record has `ab`), whose metrics are each
side's and their ratios: it gets one bound, on its headline `speedup` (B/A of throughput),
written from its per-pair samples by the same noise rule as any metric's rounds.

Two runs may update one file at once (two CI jobs, two xdist-free runs on one machine):
each reads, merges and writes the file under an exclusive lock (`fcntl.flock` on the
file's folder, so that no lock file is left among committed thresholds), so each run's
bounds are merged into what the other wrote, never written over it.
"""

from __future__ import annotations

import contextlib
import fcntl
import math
import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from pathlib import Path
from typing import TypeAlias

import yaml

from pytest_llmperf.errors import LLMPerfUsageError, did_you_mean
from pytest_llmperf.measure.metrics import metric_names, spec_for
from pytest_llmperf.measure.reliability import EVERY_METRIC, unreliable
from pytest_llmperf.results.baseline import DEFAULT_DRIFT
from pytest_llmperf.results.record import TestRecord
from pytest_llmperf.thresholds.check import DEFAULT_ALPHA
from pytest_llmperf.thresholds.comments import Comments, generated_header, put_back, read_comments
from pytest_llmperf.thresholds.files import (
    _BOUND_KEYS,
    _NOISE_KEYS,
    SCHEMA,
    Bound,
    Measured,
    ThresholdSet,
    _parse,
    limit_text,
    load_threshold_file,
)
from pytest_llmperf.thresholds.noise import Side, bound_from_noise

Limits: TypeAlias = tuple[float | None, float | None]  # (min, max)

#: What an A/B test without an entry is bounded on: its headline, B/A of throughput.
AB_DEFAULT_METRICS = ("speedup",)


@dataclass(frozen=True)
class Observed:
    """What a test measured: its headline values and, per metric, each run's per-round
    samples (one run under `--llmperf-update-thresholds`, several under `llmperf calibrate`)."""

    values: Measured
    runs: Mapping[str, Sequence[Sequence[float]]] = field(default_factory=dict)
    #: The metrics to bound when the test has no entry; None: the update's defaults.
    defaults: Sequence[str] | None = None

    @classmethod
    def of(cls, records: Sequence[TestRecord]) -> Observed:
        """One test's records in one or more runs, oldest first: the newest's values, each
        run's samples, and `AB_DEFAULT_METRICS` for an A/B test."""
        names = {m for record in records for m in record.samples}
        runs = {m: [list(record.samples_of(m)) for record in records] for m in names}
        newest = records[-1]
        return cls(newest.metrics_flat, runs, AB_DEFAULT_METRICS if newest.ab else None)


@dataclass(frozen=True)
class Written:
    """A bound as it will be written: its limits and, when written from noise, the noise."""

    min: float | None
    max: float | None
    noise: float | None = None
    runs: int | None = None
    rounds: int | None = None
    detects: float | None = None

    @classmethod
    def of(cls, bound: Bound) -> Written:
        return cls(bound.min, bound.max, bound.noise, bound.runs, bound.rounds, bound.detects)


@dataclass(frozen=True)
class UpdateReport:
    #: Test ids whose bounds were written.
    written: list[str]
    #: `test: metric side old -> new (looser)` for each bound the update relaxed.
    loosened: list[str]
    #: `test: metric: no bound written: why` for each bound refused (unreliable values).
    refused: list[str] = field(default_factory=list)


def update_thresholds(
    path: Path,
    results: Mapping[str, Measured | Observed],
    margin: float,
    default_metrics: Sequence[str],
    drift: float = DEFAULT_DRIFT,
    alpha: float = DEFAULT_ALPHA,
    keep_met: bool = False,
) -> UpdateReport:
    """Rewrite `path` so that each test's reliable measurements pass: from their noise where
    they were measured round by round (`drift` the floor of the noise between runs, `alpha`
    the error rate the bounds will be judged at), else with `margin` to spare; merged under
    a lock with what the file holds when it is written. A bound of a metric judged exactly
    that the measurement meets is kept; with `keep_met` (`llmperf calibrate`, which writes
    bounds from noise), so is a met bound of any metric without per-round samples."""

    if not 0 <= margin < 1:
        raise LLMPerfUsageError(f"threshold margin must be at least 0 and below 1, got {margin}")
    for name in default_metrics:
        if spec_for(name) is None:
            hint = did_you_mean(name, metric_names())
            raise LLMPerfUsageError(f"unknown default threshold metric {name!r}{hint}")
    observed = {
        test: result if isinstance(result, Observed) else Observed(result)
        for test, result in results.items()
    }
    with _locked(path.parent):
        return _update(path, observed, _Rule(margin, drift, alpha, keep_met), default_metrics)


_SIDES: tuple[Side, Side] = ("min", "max")


@dataclass(frozen=True)
class _Rule:
    """How limits are set: from noise (`drift`, `alpha`), else with `margin`."""

    margin: float
    drift: float
    alpha: float
    keep_met: bool = False

    def limits(
        self, metric: str, value: float, runs: Sequence[Sequence[float]], shape: tuple[bool, bool]
    ) -> Written:
        spec = spec_for(metric)
        if spec is not None and not spec.judged_exactly and runs:
            sides = [
                bound_from_noise(runs, side, self.drift, self.alpha) if wanted else None
                for side, wanted in zip(_SIDES, shape, strict=True)
            ]
            found = [s for s in sides if s is not None]
            if found and len(found) == sum(shape):
                first = found[0]
                low, high = sides
                return Written(
                    _rounded(low.limit, "min") if low is not None else None,
                    _rounded(high.limit, "max") if high is not None else None,
                    float(f"{first.noise:.3g}"),
                    first.runs,
                    first.rounds,
                    float(f"{max(s.detects for s in found):.2g}"),
                )
        has_min, has_max = shape
        return Written(
            _limit(value, self.margin, "min") if has_min else None,
            _limit(value, self.margin, "max") if has_max else None,
        )


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """An exclusive lock on `folder` (made if missing), held for a read-merge-write."""
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _update(
    path: Path, results: Mapping[str, Observed], rule: _Rule, default_metrics: Sequence[str]
) -> UpdateReport:
    before = ThresholdSet([load_threshold_file(path)] if path.exists() else [])
    comments = read_comments(path.read_text(encoding="utf-8")) if path.exists() else Comments()
    entries: dict[str, dict[str, Written]] = {}
    for file in before.files:
        entries.update({pattern: {} for pattern in file.test_lines})
        for bound in file.bounds:
            entries[bound.test_pattern][bound.metric] = Written.of(bound)
    written: list[str] = []
    loosened: list[str] = []
    refused: list[str] = []
    for test_id in sorted(results):
        # An exact entry keeps its shape; an empty or missing one gets the defaults.
        observed = results[test_id]
        existing = entries.get(test_id, {})
        shape = {m: (w.min is not None, w.max is not None) for m, w in existing.items()}
        if not shape:
            defaults = default_metrics if observed.defaults is None else observed.defaults
            shape = {m: _default_shape(m) for m in defaults}
        bad = unreliable(observed.values)
        if EVERY_METRIC in bad:
            refused.append(f"{test_id}: no bound written: {bad[EVERY_METRIC]}")
            continue
        fresh: dict[str, Written] = {}
        for metric, sides in shape.items():
            value = observed.values.get(metric)
            if value is None or isinstance(value, bool) or not math.isfinite(value):
                continue  # not measured: an existing bound stays as it was
            if metric in bad:
                refused.append(f"{test_id}: {metric}: no bound written: {bad[metric]}")
                continue
            runs = observed.runs.get(metric, ())
            if _kept(metric, existing.get(metric), value, not runs and rule.keep_met):
                continue
            fresh[metric] = rule.limits(metric, value, runs, sides)
        if fresh:
            old = {b.metric: b for b in before.bounds_for(test_id)}
            for metric, limits in sorted(fresh.items()):
                if metric in old:
                    loosened += _looser(test_id, metric, old[metric], limits)
            entries[test_id] = {**existing, **fresh}
            written.append(test_id)
    if written:
        text = put_back(_render(entries, rule.margin), comments)
        _parse(text, path)  # never replace a good file with one that does not load
        _write_atomic(path, text)
    return UpdateReport(written, loosened, refused)


def _kept(metric: str, bound: Written | None, value: float, unsampled: bool) -> bool:
    """Whether a bound stays as it is: one of a metric judged exactly (accuracy of a
    deterministic model, a failure rate, coverage), or of an `unsampled` one, has no noise to
    be written from, and a value that still meets it would only loosen it by the margin."""
    spec = spec_for(metric)
    if bound is None or spec is None or not (spec.judged_exactly or unsampled):
        return False
    return (bound.min is None or value >= bound.min) and (bound.max is None or value <= bound.max)


def _default_shape(metric: str) -> tuple[bool, bool]:
    """(has min, has max) of a new bound: a floor if higher is better, else a ceiling."""
    spec = spec_for(metric)
    higher = spec is not None and spec.better == "higher"
    return (higher, not higher)


def _looser(test_id: str, metric: str, old: Bound, new: Written) -> list[str]:
    """Messages for each side of the bound in force before that the new limits relax."""

    messages: list[str] = []
    for side, was, now in zip(_BOUND_KEYS, (old.min, old.max), (new.min, new.max), strict=True):
        if was is not None and (now is None or (now < was if side == "min" else now > was)):
            shown = "none" if now is None else limit_text(now)
            messages.append(f"{test_id}: {metric} {side} {limit_text(was)} -> {shown} (looser)")
    return messages


def _limit(value: float, margin: float, side: str) -> float:
    """`value` less (min) or plus (max) `margin`, to 4 significant digits rounded outward.

    Outward, so that the measurement passes its new bound even with no margin; in decimal,
    from the shortest repr, so that 109.1 less 10% is 98.19 rather than 98.18.
    """
    exact = Decimal(repr(float(value)))
    spread = abs(exact) * Decimal(repr(float(margin)))
    moved = exact - spread if side == "min" else exact + spread
    if moved == 0:
        return 0.0
    rounding = ROUND_FLOOR if side == "min" else ROUND_CEILING
    return float(moved.quantize(Decimal(1).scaleb(moved.adjusted() - 3), rounding=rounding))


def _rounded(value: float, side: str) -> float:
    """A limit from noise, to 4 significant digits rounded outward (looser)."""
    return _limit(value, 0.0, side)


def _plain(value: float) -> float | int:
    return int(value) if value.is_integer() else value  # `800`, not `800.0`


class _TestId(str):
    """A test id, written double-quoted: ids hold `::`, `[`, spaces and other YAML syntax."""


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.add_representer(
    _TestId, lambda dumper, s: dumper.represent_scalar("tag:yaml.org,2002:str", s, style='"')
)


def _render(entries: Mapping[str, Mapping[str, Written]], margin: float) -> str:
    def leaf(w: Written) -> dict[str, float | int]:
        keys = (*_BOUND_KEYS, *_NOISE_KEYS)
        values = (w.min, w.max, w.noise, w.runs, w.rounds, w.detects)
        return {k: _plain(float(v)) for k, v in zip(keys, values, strict=True) if v is not None}

    tests = {
        _TestId(test_id): {metric: leaf(w) for metric, w in sorted(entries[test_id].items())}
        for test_id in sorted(entries)
    }
    # Leaf mappings (one metric's bounds) come out in flow style, one line each.
    doc = {"schema": SCHEMA, "tests": tests}
    body = yaml.dump(
        doc,
        Dumper=_Dumper,
        sort_keys=False,
        default_flow_style=None,
        allow_unicode=True,
        width=10**6,
    )
    return generated_header(margin) + body


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        # mkstemp makes the file private (0600); a thresholds file is shared, committed data.
        os.chmod(tmp, path.stat().st_mode & 0o777 if path.exists() else 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
