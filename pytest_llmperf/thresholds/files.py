"""Thresholds: pass/fail bounds on benchmark metrics, in YAML files kept with the suites.

A run reads `<thresholds_dir>/<hardware>/<engine>.yaml` (default dir `thresholds/`)::

    # thresholds/cpu/hf.yaml
    schema: 1
    tests:
      "suites/test_smoke.py::test_decode[tiny_len256_batch4]":
        output_tok_per_s: {min: 120.5}
        ttft_ms.p90: {max: 800}
        failure_rate: {max: 0}
      "suites/test_smoke.py::test_latency[*]":     # a glob: it contains '*'
        e2e_ms.p50: {min: 1, max: 5000}

Hardware is `cpu` without a GPU, else the GPU's name with a leading "NVIDIA" dropped,
lower-cased, other characters turned into "-" ("NVIDIA H100 80GB HBM3" -> "h100-80gb-hbm3").
A directory applies when its name is that slug or a "-"-separated prefix of it (`h100/`
applies to "h100-80gb-hbm3"); of those holding `<engine>.yaml`, the longest name wins.

Test keys are pytest node ids relative to rootdir. A key is a glob only if it contains
`*`: then `*` matches any characters and `?` one, while `[` and `]` stay literal, as in
parametrized ids. Per metric, an exact key wins over globs; among globs the one with most
literal characters wins, then the later one. Metric keys are paths from
`metrics.metric_names()` (`ttft_ms.p90`): the built-in table and the metrics that installed
packages add under the `pytest_llmperf.metrics` entry-point group. A bound is `{min: x}`,
`{max: y}` or both, finite numbers with min <= max; a metric not measured misses it.
Errors name the place: `<path>: line <n>: <what is wrong>`.

`thresholds.update.update_thresholds` (`--llmperf-update-thresholds`) rewrites a file from
measurements: an exact entry keeps the shape of its bounds, reset around the measurement
with the margin; a test without one gets the default metrics (`min` if higher is better,
else `max`); glob entries stay. Bounds are rounded outward to 4 significant digits, so that
the measurements that wrote a file pass it. The file is rewritten whole, under a lock and
merged with what it holds then; its comments are put back where they were
(`thresholds.comments`). No bound is written from a value `measure.reliability` finds
unreliable.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeAlias

import yaml

from pytest_llmperf.errors import LLMPerfUsageError, did_you_mean, where
from pytest_llmperf.measure.metrics import metric_hint, spec_for
from pytest_llmperf.yamlnodes import compose, mapping_items, node_error, node_line, node_value

__all__ = [
    "SCHEMA",
    "Bound",
    "Measured",
    "ThresholdFile",
    "ThresholdSet",
    "hardware_slug",
    "load_threshold_file",
    "select_threshold_files",
]

SCHEMA = 1
_TOP_KEYS = ("schema", "tests")
_BOUND_KEYS = ("min", "max")
#: What a bound written from noise records beside its limits.
_NOISE_KEYS = ("noise", "runs", "rounds", "detects")
_NULL = "tag:yaml.org,2002:null"
_NVIDIA = re.compile(r"^\s*nvidia(?![a-z0-9])", re.IGNORECASE)

Measured: TypeAlias = Mapping[str, float | int | None]


def hardware_slug(gpu_name: str | None) -> str:
    """`cpu` without a GPU, else a slug of its name: "NVIDIA H100 80GB HBM3" -> "h100-80gb-hbm3"."""
    if gpu_name is None or not gpu_name.strip():
        return "cpu"
    slug = re.sub(r"[^a-z0-9]+", "-", _NVIDIA.sub("", gpu_name).lower()).strip("-")
    return slug or "nvidia"


def select_threshold_files(thresholds_dir: Path, hardware: str, engine: str) -> list[Path]:
    """The `<engine>.yaml` of the most specific hardware directory that applies, if any.

    A file where such a directory belongs, or anything but a file where `<engine>.yaml`
    belongs, is a usage error: skipping it would turn this run's thresholds off without
    a word (and the update flag could not write there).
    """
    if not thresholds_dir.is_dir():
        return []
    applies: list[Path] = []
    for d in thresholds_dir.iterdir():
        if not (hardware == d.name.lower() or hardware.startswith(d.name.lower() + "-")):
            continue
        if not d.is_dir():
            raise LLMPerfUsageError(
                f"{d}: a file where the thresholds folder of hardware {hardware!r} belongs "
                f"(its files are {d}/<engine>.yaml)"
            )
        file = d / f"{engine}.yaml"
        if file.exists() and not file.is_file():
            kind = "a folder" if file.is_dir() else "not a regular file"
            raise LLMPerfUsageError(f"{file}: {kind}, where a thresholds file belongs")
        if file.exists():
            applies.append(d)
    return [max(applies, key=lambda d: len(d.name)) / f"{engine}.yaml"] if applies else []


@dataclass(frozen=True)
class Bound:
    """One metric's limits for the tests a key names, and where they were written."""

    test_pattern: str
    metric: str
    min: float | None
    max: float | None
    file: Path
    line: int
    #: The noise the bound was written from (`thresholds.update`): the standard deviation,
    #: between runs, of a run's mean (of the log for positive metrics: 0.03 is about 3%).
    #: Judging takes it as the drift of the setup around the bound; None: not recorded.
    noise: float | None = None
    #: How many runs, and measured rounds per run, the noise was seen over.
    runs: int | None = None
    rounds: int | None = None
    #: The smallest regression (a fraction) the bound catches in 80% of runs, as written.
    detects: float | None = None

    def describe(self) -> str:
        """`>= 120.5`, `<= 800` or `1 .. 5000`."""
        if self.min is not None and self.max is not None:
            return f"{limit_text(self.min)} .. {limit_text(self.max)}"
        if self.min is not None:
            return f">= {limit_text(self.min)}"
        return f"<= {limit_text(self.max)}" if self.max is not None else "any"


@dataclass(frozen=True)
class ThresholdFile:
    path: Path
    bounds: list[Bound]
    schema: int
    # Line of each test key, so that keys matching no test can be reported where they are.
    test_lines: dict[str, int] = field(default_factory=dict)


def load_threshold_file(path: Path) -> ThresholdFile:
    """Read and check one thresholds file; any problem raises `LLMPerfUsageError`."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise LLMPerfUsageError(f"{path}: cannot read thresholds file: {exc}") from exc
    return _parse(text, path)


def _parse(text: str, path: Path) -> ThresholdFile:
    # Read as a node tree, not as values, so that errors can name the line (see yamlnodes).
    root = compose(text, path)
    if root is None:
        raise node_error(path, None, "empty file: expected 'schema: 1' and 'tests'")
    top = mapping_items(path, root, "the top level must be a mapping with 'schema' and 'tests'")
    for key, key_node, _ in top:
        if key not in _TOP_KEYS:
            hint = did_you_mean(key, _TOP_KEYS) or " (expected 'schema' and 'tests')"
            raise node_error(path, key_node, f"unknown top-level key {key!r}{hint}")
    nodes = {key: value_node for key, _, value_node in top}
    if "schema" not in nodes:
        raise node_error(path, root, f"missing 'schema: {SCHEMA}'")
    schema = node_value(path, nodes["schema"])
    if type(schema) is not int or schema != SCHEMA:
        what = f"unsupported schema {schema!r}: this version reads schema {SCHEMA}"
        raise node_error(path, nodes["schema"], what)
    bounds: list[Bound] = []
    test_lines: dict[str, int] = {}
    tests = nodes.get("tests")
    # `tests:` with nothing under it is an empty table, as after deleting every entry.
    if tests is not None and not (isinstance(tests, yaml.ScalarNode) and tests.tag == _NULL):
        what = "'tests' must be a mapping of test ids to metric bounds"
        for pattern, test_node, entry in mapping_items(path, tests, what):
            if not pattern.strip():
                raise node_error(path, test_node, "empty test id")
            test_lines[pattern] = node_line(test_node)
            what = f"test {pattern!r} must be a mapping of metric names to bounds"
            for metric, metric_node, bound_node in mapping_items(path, entry, what):
                bounds.append(_read_bound(path, pattern, metric, metric_node, bound_node))
    return ThresholdFile(path, bounds, schema, test_lines)


def _read_bound(
    path: Path, pattern: str, metric: str, metric_node: yaml.Node, bound_node: yaml.Node
) -> Bound:
    if spec_for(metric) is None:
        raise node_error(path, metric_node, f"unknown metric {metric!r}{metric_hint(metric)}")
    what = f"bound of {metric!r} must be a mapping with 'min' and/or 'max', e.g. {{max: 800}}"
    items = mapping_items(path, bound_node, what)
    if not items:
        raise node_error(path, bound_node, what)
    limits: dict[str, float] = {}
    noise: dict[str, float] = {}
    for key, key_node, value_node in items:
        if key not in _BOUND_KEYS + _NOISE_KEYS:
            raise node_error(path, key_node, f"unknown key {key!r} in bound of {metric!r}: {what}")
        value = node_value(path, value_node)
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if not number or not math.isfinite(value):
            need = "a finite number" if number else "a number"
            got = f"bound {key!r} of {metric!r} must be {need}, got {value!r}"
            raise node_error(path, value_node, got)
        if key in _NOISE_KEYS:
            whole = key in ("runs", "rounds")
            if (whole and (not isinstance(value, int) or value < 1)) or value < 0:
                need = "a whole number of at least 1" if whole else "a number of at least 0"
                raise node_error(path, value_node, f"{key!r} of {metric!r} must be {need}")
            noise[key] = float(value)
        else:
            limits[key] = float(value)
    if not limits:
        raise node_error(path, bound_node, what)
    low, high = limits.get("min"), limits.get("max")
    if low is not None and high is not None and low > high:
        what = f"bound of {metric!r} has min {limit_text(low)} > max {limit_text(high)}"
        raise node_error(path, metric_node, what)
    runs, rounds = noise.get("runs"), noise.get("rounds")
    return Bound(
        pattern,
        metric,
        low,
        high,
        path,
        node_line(metric_node),
        noise.get("noise"),
        int(runs) if runs is not None else None,
        int(rounds) if rounds is not None else None,
        noise.get("detects"),
    )


@functools.lru_cache(maxsize=1024)
def _glob(pattern: str) -> re.Pattern[str]:
    # Not fnmatch: its `[...]` classes would swallow the brackets of parametrized ids.
    parts = (".*" if ch == "*" else "." if ch == "?" else re.escape(ch) for ch in pattern)
    return re.compile("".join(parts), re.DOTALL)


def _rank(pattern: str, test_id: str) -> tuple[int, int] | None:
    """How specifically a key names a test (exact beats any glob), or None if it does not."""
    if "*" not in pattern:
        return (1, 0) if pattern == test_id else None
    if _glob(pattern).fullmatch(test_id) is None:
        return None
    return (0, sum(ch not in "*?" for ch in pattern))


class ThresholdSet:
    """The bounds of a run, from one or more files (on ties, later files win)."""

    def __init__(self, files: Sequence[ThresholdFile] = ()) -> None:
        self.files = list(files)

    @classmethod
    def load(cls, paths: Iterable[Path]) -> ThresholdSet:
        return cls([load_threshold_file(path) for path in paths])

    @property
    def bounds(self) -> list[Bound]:
        return [bound for file in self.files for bound in file.bounds]

    def bounds_for(self, test_id: str) -> list[Bound]:
        """The bound that applies to each metric of a test, in file order."""
        chosen: dict[str, tuple[tuple[int, int], int, Bound]] = {}
        for index, bound in enumerate(self.bounds):
            rank = _rank(bound.test_pattern, test_id)
            current = chosen.get(bound.metric)
            if rank is not None and (current is None or rank >= current[0]):
                chosen[bound.metric] = (rank, index, bound)
        return [bound for _, _, bound in sorted(chosen.values(), key=lambda c: c[1])]

    def unmatched(
        self,
        seen_test_ids: Iterable[str],
        seen_metrics: Iterable[str],
        ran_test_ids: Iterable[str] | None = None,
    ) -> list[str]:
        """Keys that matched no collected test, and bounds on metrics never measured.

        Pass every collected id, not only those that ran, so that deselecting a test does
        not make its thresholds look stale (nor do keys of files that were not collected);
        metrics are only expected of the keys that match a test that ran (`ran_test_ids`,
        default: all of `seen_test_ids`).
        """
        ids, metrics = list(seen_test_ids), set(seen_metrics)
        ran = list(ran_test_ids) if ran_test_ids is not None else ids
        # Keys of test files this run did not collect (`pytest suites/test_smoke.py`) are
        # not stale: their files were simply not asked for.
        collected_files = {test_id.partition("::")[0] for test_id in ids}
        messages: list[str] = []
        for file in self.files:
            matched: set[str] = set()
            for pattern, line in file.test_lines.items():
                test_file = pattern.partition("::")[0]
                if "::" in pattern and "*" not in test_file and test_file not in collected_files:
                    continue
                # A labelled key (`test_x@label`) names a measurement inside test_x: the
                # collected node id has no label.
                node_pattern = pattern.rsplit("@", 1)[0]
                if not any(
                    _rank(pattern, test_id) is not None or _rank(node_pattern, test_id) is not None
                    for test_id in ids
                ):
                    messages.append(f"{where(file.path, line)}: {pattern!r} matched no test")
                elif any(_rank(pattern, test_id) is not None for test_id in ran):
                    matched.add(pattern)
            messages.extend(
                f"{where(b.file, b.line)}: {b.metric!r} of {b.test_pattern!r} was never measured"
                for b in file.bounds
                if b.test_pattern in matched and b.metric not in metrics
            )
        return messages


def limit_text(value: float) -> str:
    """Up to 4 significant digits; whole below 1e9, where `1.235e+04` would be harder to read."""
    return f"{value:.0f}" if 1e4 <= abs(value) < 1e9 else f"{value:.4g}"
