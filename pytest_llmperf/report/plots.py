"""Figures of runs, for the HTML report (`report`) and the dashboard.

Every builder returns matplotlib `Figure`s made without pyplot: pyplot keeps a global
registry of figures (they would pile up in a long-lived dashboard unless closed) and is not
thread-safe, while Streamlit runs each session in a thread. A `Figure` made directly is
freed when dropped, renders with any backend (`fig.savefig(buf, format="svg")`) and
`st.pyplot(fig)` shows it.

    from pytest_llmperf.report.plots import run_figures
    for title, figure in run_figures([open_run("latest")]):
        figure.savefig(f"{title}.svg")

Tests are keyed as thresholds key them (`runs.test_key`); the labels on the figures are
the part after `::`, prefixed by a short run id when there are several runs. Text from
result files reaches matplotlib only through `_text`, which keeps a `$` in a test id from
starting mathtext.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from matplotlib.axes import Axes
from matplotlib.figure import Figure

from pytest_llmperf.results.record import TestRecord
from pytest_llmperf.results.runs import Run

if TYPE_CHECKING:
    from pytest_llmperf.results.compare import Change, RunComparison

THROUGHPUT_TITLE = "Throughput vs concurrency"
LATENCY_TITLE = "Latency percentiles per test"
TTFT_TITLE = "TTFT distribution"
SCALING_TITLE = "Scaling efficiency"
ACCURACY_TITLE = "Accuracy vs throughput"
COMPARE_BARS_TITLE = "Base vs new: output tok/s and TTFT p90"
COMPARE_CHANGES_TITLE = "Relative change per test"

#: Settings that bound how many requests run at once (engine batch, client concurrency).
CONCURRENCY_KEYS = (
    "max_num_seqs",
    "max_concurrency",
    "concurrency",
    "max_batch_size",
    "batch_size",
)
#: Counts of requests a workload offers per round, as workload records name them.
REQUEST_COUNT_KEYS = ("num_requests", "questions", "samples")

#: Past these, a figure shows the first ones and says so: more lines or bars are unreadable.
MAX_SERIES = 20
MAX_TESTS = 40

LATENCIES = ("ttft_ms", "tpot_ms", "e2e_ms")
PERCENTILES = ("p50", "p90", "p99")
#: The metrics the change-per-test figure shows, when a test has them.
CHANGE_METRICS = (
    "output_tok_per_s",
    "ttft_ms.p90",
    "tpot_ms.p50",
    "e2e_ms.p90",
    "questions_per_s",
    "accuracy",
    "exact_match",
)
#: Colors of verdicts (compare.Verdict): green better, red worse, grey neither.
VERDICT_COLORS = {
    "improved": "#1a7f37",
    "better": "#7cc48a",
    "regressed": "#cf222e",
    "worse": "#f0a0a0",
}
NEUTRAL_COLOR = "#9a9a9a"


@dataclass(frozen=True)
class Plot:
    """One figure of the report, or the reason there is none (`figure` None, `note`)."""

    title: str
    figure: Figure | None
    #: Why the figure is missing, or what it leaves out.
    note: str = ""


@dataclass(frozen=True)
class _Test:
    run_label: str
    record: TestRecord

    @property
    def key(self) -> str:
        return self.record.key

    @property
    def label(self) -> str:
        name = self.key.split("::", 1)[-1]
        return f"{self.run_label} {name}" if self.run_label else name

    @property
    def function(self) -> str:
        """The test function, parameters dropped: what a throughput line connects."""
        return self.key.split("::", 1)[-1].split("[", 1)[0].split("@", 1)[0]

    def metric(self, name: str) -> float | None:
        return self.record.metric(name)


def _text(value: object) -> str:
    """Text from a result file as matplotlib shows it literally (no mathtext)."""
    return str(value).replace("$", r"\$")


def run_labels(runs: Sequence[Run]) -> list[str]:
    """Short distinct names of runs: "" for a single run, else the run ids' last part
    (`20261123-032939-332fdb` -> `332fdb`) when those are distinct, else the run ids."""
    if len(runs) < 2:
        return [""] * len(runs)
    short = [r.run_id.rsplit("-", 1)[-1] for r in runs]
    return short if len(set(short)) == len(short) else [r.run_id for r in runs]


def _tests(runs: Sequence[Run]) -> list[_Test]:
    return [
        _Test(label, test)
        for run, label in zip(runs, run_labels(runs), strict=True)
        for test in run.tests
    ]


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        return None
    return float(value)


def concurrency(test: TestRecord) -> float | None:
    """How many requests ran at once, at most: the least of the bounds recorded, each an
    upper bound on its own: the engine's or client's limit on sequences in flight
    (`CONCURRENCY_KEYS` in the config's settings, the workload record, the engine's
    settings, what the engine reports it used) and the requests a round offers (all of a
    round's requests arrive together, so 16 requests on max_num_seqs 256 run 16 at once).
    None when none is known."""
    details = test.engine_info.details
    workload = test.workload
    sources = (
        test.config.engine_settings,
        test.config.workload_settings,
        workload,
        test.engine_config.settings,
        details,
        details.get("llm_kwargs"),
    )
    bounds = [
        number
        for source in sources
        if isinstance(source, Mapping)
        for key in CONCURRENCY_KEYS
        if (number := _number(source.get(key))) is not None
    ]
    offered = [n for key in REQUEST_COUNT_KEYS if (n := _number(workload.get(key))) is not None]
    if not offered:  # a dataset of unrecorded size: the requests measured per round
        requests = _number(test.metrics_flat.get("requests"))
        rounds = _number(test.rounds)
        offered = [requests / rounds] if requests and rounds else []
    return min(bounds + offered, default=None)


def _colors(count: int) -> list[Any]:
    """Distinct colors: tab10 up to ten series, tab20 beyond (repeating past twenty)."""
    from matplotlib import colormaps

    cmap = colormaps["tab10" if count <= 10 else "tab20"]
    size = 10 if count <= 10 else 20
    return [cmap(i % size) for i in range(max(count, 1))]


def _figure(title: str, width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), layout="constrained")
    figure.suptitle(title, fontsize=13, fontweight="bold")
    return figure


def _legend_below(ax: Axes, count: int) -> None:
    if count:
        ax.legend(
            loc="upper center", bbox_to_anchor=(0.5, -0.14), fontsize=8, ncols=2, frameon=False
        )


def _concurrency_axis(ax: Axes, values: Iterable[float]) -> None:
    """A log-2 x axis ticked at the concurrencies measured, written as plain numbers."""
    from matplotlib.ticker import FixedLocator, NullLocator, StrMethodFormatter

    ticks = sorted(set(values))
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_major_formatter(StrMethodFormatter("{x:g}"))
    ax.xaxis.set_minor_locator(NullLocator())
    if len(ticks) == 1:  # a log axis around one value needs room on both sides
        ax.set_xlim(ticks[0] / 2, ticks[0] * 2)


def _log_if_wide(ax: Axes, values: Iterable[float], axis: str = "x") -> None:
    """A log axis where values span more than two decades: a 20 ms and a 20 s latency
    side by side leave the small one invisible on a linear axis."""
    positive = [v for v in values if v > 0]
    if positive and max(positive) / min(positive) > 100:
        (ax.set_xscale if axis == "x" else ax.set_yscale)("log")


# -- throughput and scaling ------------------------------------------------------------


@dataclass(frozen=True)
class _Series:
    label: str
    #: (concurrency, output tok/s, config name), by concurrency.
    points: list[tuple[float, float, str]]

    @property
    def distinct(self) -> bool:
        """Whether each concurrency is measured once; several configs at one concurrency
        differ in something else (context, output length), so no line joins them."""
        xs = [x for x, _, _ in self.points]
        return len(set(xs)) == len(xs)


def throughput_series(runs: Sequence[Run]) -> list[_Series]:
    """output_tok_per_s against concurrency, one series per run, test function and engine.
    Tests that generated nothing (multiple choice scores, it does not decode) are left out."""
    grouped: dict[tuple[str, str, str], list[tuple[float, float, str]]] = defaultdict(list)
    for test in _tests(runs):
        x, y = concurrency(test.record), test.metric("output_tok_per_s")
        if x is None or not y:
            continue
        name = test.record.config.name
        key = (test.run_label, test.function, test.record.engine or "?")
        grouped[key].append((x, y, name))
    return [
        _Series(f"{run} {function} ({engine})".strip(), sorted(points))
        for (run, function, engine), points in grouped.items()
    ]


def throughput_plot(runs: Sequence[Run]) -> Plot:
    series = throughput_series(runs)
    if not series:
        return Plot(
            THROUGHPUT_TITLE,
            None,
            "No test reports output_tok_per_s with a known "
            "concurrency (max_num_seqs, max_concurrency or a request count).",
        )
    shown = series[:MAX_SERIES]
    figure = _figure(THROUGHPUT_TITLE, 10, 5.5 + 0.18 * len(shown))
    ax = figure.add_subplot()
    for line, color in zip(shown, _colors(len(shown)), strict=True):
        xs = [x for x, _, _ in line.points]
        ys = [y for _, y, _ in line.points]
        style = "-o" if line.distinct else "o"
        ax.plot(xs, ys, style, color=color, label=_text(line.label))
        if len(line.points) <= 12:  # the config names, where they still fit
            for x, y, name in line.points:
                if name and name != "default":
                    ax.annotate(
                        _text(name),
                        (x, y),
                        textcoords="offset points",
                        xytext=(4, 4),
                        fontsize=7,
                        color=color,
                    )
    ax.set_xlabel("concurrency: max_num_seqs / max_concurrency, capped by requests per round")
    ax.set_ylabel("output tokens/s")
    _concurrency_axis(ax, [x for line in shown for x, _, _ in line.points])
    _log_if_wide(ax, [y for line in shown for _, y, _ in line.points], axis="y")
    ax.grid(True, alpha=0.3)
    _legend_below(ax, len(shown))
    note = _left_out(len(series), len(shown), "series")
    if any(not s.distinct for s in shown):
        note += (
            " Series with several configurations at one concurrency are drawn as points "
            "only: they differ in more than concurrency."
        )
    return Plot(THROUGHPUT_TITLE, figure, note.strip())


def _left_out(total: int, shown: int, what: str) -> str:
    return f"Showing the first {shown} of {total} {what}." if total > shown else ""


def scaling_series(runs: Sequence[Run]) -> tuple[list[_Series], str]:
    """Efficiency against concurrency, and where it came from.

    Tests that report `efficiency` (or `speedup`, divided here by their concurrency) are
    taken as they are. Otherwise it is derived from each throughput series measured once
    per concurrency: efficiency(n) = tput(n) / ((n / n0) * tput(n0)), n0 the series' least
    concurrency, so 1.0 is linear scaling from n0 (from n0 = 1: tput(n) / (n * tput(1))).
    """
    reported: dict[tuple[str, str], list[tuple[float, float, str]]] = defaultdict(list)
    for test in _tests(runs):
        x = concurrency(test.record)
        efficiency, speedup = test.metric("efficiency"), test.metric("speedup")
        if efficiency is None and speedup is not None and x:
            efficiency = speedup / x
        if efficiency is not None:
            name = test.record.config.name
            reported[(test.run_label, test.function)].append((x or 1.0, efficiency, name))
    if reported:
        series = [
            _Series(f"{run} {function}".strip(), sorted(points))
            for (run, function), points in reported.items()
        ]
        return series, "as the tests report it (efficiency, or speedup / concurrency)"
    derived = []
    for line in throughput_series(runs):
        if not line.distinct or len(line.points) < 2:
            continue
        x0, y0, _ = line.points[0]
        points = [(x, y / ((x / x0) * y0), name) for x, y, name in line.points]
        derived.append(_Series(line.label, points))
    return derived, "derived: tput(n) / ((n / n0) * tput(n0)), n0 the least concurrency"


def scaling_plot(runs: Sequence[Run]) -> Plot:
    series, source = scaling_series(runs)
    if not series:
        return Plot(
            SCALING_TITLE,
            None,
            "No test reports efficiency or speedup, and no "
            "throughput series has two or more concurrencies measured once each.",
        )
    shown = series[:MAX_SERIES]
    figure = _figure(SCALING_TITLE, 10, 5 + 0.18 * len(shown))
    ax = figure.add_subplot()
    ax.axhline(1.0, color="#555555", linestyle="--", linewidth=1, label="linear scaling")
    for line, color in zip(shown, _colors(len(shown)), strict=True):
        xs = [x for x, _, _ in line.points]
        ys = [y for _, y, _ in line.points]
        ax.plot(xs, ys, "-o", color=color, label=_text(line.label))
    ax.set_title(_text(f"efficiency {source}"), fontsize=9)
    ax.set_xlabel("concurrency")
    ax.set_ylabel("efficiency (1.0 = linear)")
    _concurrency_axis(ax, [x for line in shown for x, _, _ in line.points])
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    _legend_below(ax, len(shown) + 1)
    return Plot(SCALING_TITLE, figure, _left_out(len(series), len(shown), "series"))


# -- latency ---------------------------------------------------------------------------


def latency_plot(runs: Sequence[Run]) -> Plot:
    """p50 / p90 / p99 of TTFT, TPOT and end-to-end latency, one group of bars per test."""
    tests = [t for t in _tests(runs) if any(t.metric(f"{m}.p50") is not None for m in LATENCIES)]
    if not tests:
        return Plot(LATENCY_TITLE, None, "No test reports ttft_ms, tpot_ms or e2e_ms.")
    shown = tests[:MAX_TESTS]
    height = 2.2 + 0.45 * len(shown)
    figure = _figure(LATENCY_TITLE, 12, height)
    axes = figure.subplots(1, len(LATENCIES), sharey=True)
    bar = 0.8 / len(PERCENTILES)
    positions = list(range(len(shown)))
    colors = ["#4c72b0", "#dd8452", "#c44e52"]
    for ax, metric in zip(axes, LATENCIES, strict=True):
        values = []
        for i, (stat, color) in enumerate(zip(PERCENTILES, colors, strict=True)):
            widths = [t.metric(f"{metric}.{stat}") or 0.0 for t in shown]
            values += widths
            offsets = [p - 0.4 + bar * (i + 0.5) for p in positions]
            ax.barh(offsets, widths, height=bar, color=color, label=stat)
        _log_if_wide(ax, values)
        ax.set_title(f"{metric} (ms)", fontsize=10)
        ax.grid(True, axis="x", alpha=0.3)
    axes[0].set_yticks(positions, [_text(t.label) for t in shown], fontsize=8)
    axes[0].invert_yaxis()  # shared: the first test on top, as in the table
    axes[-1].legend(fontsize=8, loc="lower right")
    return Plot(LATENCY_TITLE, figure, _left_out(len(tests), len(shown), "tests"))


def ttft_samples(runs: Sequence[Run]) -> list[tuple[str, list[float]]]:
    """Per-request TTFTs (successful requests), by test, in the order tests ran."""
    samples: list[tuple[str, list[float]]] = []
    for run, label in zip(runs, run_labels(runs), strict=True):
        by_test: dict[str, list[float]] = defaultdict(list)
        for record in run.requests():
            ttft = record.get("ttft_ms")
            if record.get("error") is None and isinstance(ttft, (int, float)) and ttft >= 0:
                by_test[str(record.get("test_id"))].append(float(ttft))
        for test_id, values in by_test.items():
            name = test_id.split("::", 1)[-1]
            samples.append((f"{label} {name}".strip(), sorted(values)))
    return samples


def ttft_plot(runs: Sequence[Run]) -> Plot:
    """The empirical CDF of TTFT per test: unlike histograms, many tests overlay legibly and
    every percentile reads off the y axis."""
    samples = ttft_samples(runs)
    if not samples:
        return Plot(
            TTFT_TITLE,
            None,
            "No measured request with a time to first token (requests*.jsonl is missing or empty).",
        )
    shown = samples[:MAX_SERIES]
    figure = _figure(TTFT_TITLE, 10, 5.5 + 0.18 * len(shown))
    ax = figure.add_subplot()
    for (label, values), color in zip(shown, _colors(len(shown)), strict=True):
        fractions = [(i + 1) / len(values) for i in range(len(values))]
        ax.step(
            values, fractions, where="post", color=color, label=_text(f"{label} (n={len(values)})")
        )
    _log_if_wide(ax, [v for _, values in shown for v in values])
    ax.set_xlabel("time to first token (ms)")
    ax.set_ylabel("fraction of requests")
    ax.set_ylim(0, 1.02)
    ax.grid(True, alpha=0.3)
    _legend_below(ax, len(shown))
    return Plot(TTFT_TITLE, figure, _left_out(len(samples), len(shown), "tests"))


# -- accuracy --------------------------------------------------------------------------


def accuracy_points(runs: Sequence[Run]) -> list[tuple[str, float, float, str]]:
    """(label, questions per second, score, score's metric) of every scored test.

    The score is `accuracy`, else `exact_match`; the rate is `questions_per_s`, else
    `requests_per_s` (a generation task sends one request per question). Both are per
    question, so multiple-choice and generation tests share the axis; output tok/s would
    not, as scoring choices decodes nothing."""
    points = []
    for test in _tests(runs):
        metric = next((m for m in ("accuracy", "exact_match") if test.metric(m) is not None), None)
        rate = test.metric("questions_per_s") or test.metric("requests_per_s")
        if metric is None or not rate:
            continue
        score = test.metric(metric)
        assert score is not None
        points.append((test.label, rate, score, metric))
    return points


def accuracy_plot(runs: Sequence[Run]) -> Plot:
    points = accuracy_points(runs)
    if not points:
        return Plot(
            ACCURACY_TITLE,
            None,
            "No test reports accuracy or exact_match with questions_per_s or requests_per_s.",
        )
    shown = points[:MAX_SERIES]
    figure = _figure(ACCURACY_TITLE, 10, 5.5 + 0.18 * len(shown))
    ax = figure.add_subplot()
    for (label, rate, score, metric), color in zip(shown, _colors(len(shown)), strict=True):
        marker = "o" if metric == "accuracy" else "s"
        ax.scatter(
            [rate], [score], color=color, marker=marker, s=60, label=_text(f"{label} ({metric})")
        )
    ax.set_xlabel("questions/s (requests/s where a test reports no questions_per_s)")
    ax.set_ylabel("accuracy / exact match")
    ax.set_ylim(-0.02, 1.05)
    ax.set_xlim(left=0, right=max(rate for _, rate, _, _ in shown) * 1.15)
    ax.grid(True, alpha=0.3)
    _legend_below(ax, len(shown))
    return Plot(ACCURACY_TITLE, figure, _left_out(len(points), len(shown), "tests"))


def run_plots(runs: Sequence[Run]) -> list[Plot]:
    """Every figure of `runs`, those without data as a note saying what is missing."""
    return [
        throughput_plot(runs),
        latency_plot(runs),
        ttft_plot(runs),
        scaling_plot(runs),
        accuracy_plot(runs),
    ]


def run_figures(runs: list[Run]) -> list[tuple[str, Figure]]:
    """(title, figure) of every figure `runs` have data for."""
    return [(p.title, p.figure) for p in run_plots(runs) if p.figure is not None]


# -- comparison ------------------------------------------------------------------------


def _by_test(changes: Iterable[Change], metric: str) -> dict[str, Change]:
    return {c.test_id: c for c in changes if c.metric == metric}


def compare_bars_plot(comparison: RunComparison) -> Plot:
    """Base and new side by side for output tok/s and TTFT p90, per test in both runs."""
    metrics = ("output_tok_per_s", "ttft_ms.p90")
    found = [_by_test(comparison.changes, m) for m in metrics]
    tests = list(dict.fromkeys(t for changes in found for t in changes))[:MAX_TESTS]
    if not tests:
        return Plot(
            COMPARE_BARS_TITLE,
            None,
            "The runs have no test in common that reports output_tok_per_s or ttft_ms.p90.",
        )
    figure = _figure(COMPARE_BARS_TITLE, 12, 2.4 + 0.45 * len(tests))
    # A figure label, not free text: constrained layout keeps it clear of the tick labels.
    figure.supxlabel(
        _text(f"base {comparison.base.run_id}  →  new {comparison.new.run_id}"),
        fontsize=8,
        color="#555555",
    )
    axes = figure.subplots(1, len(metrics), sharey=True)
    positions = list(range(len(tests)))
    for ax, metric, changes in zip(axes, metrics, found, strict=True):
        base = [(changes[t].base or 0.0) if t in changes else 0.0 for t in tests]
        new = [(changes[t].new or 0.0) if t in changes else 0.0 for t in tests]
        ax.barh([p - 0.2 for p in positions], base, height=0.4, color="#9a9a9a", label="base")
        ax.barh([p + 0.2 for p in positions], new, height=0.4, color="#4c72b0", label="new")
        _log_if_wide(ax, base + new)
        better = "higher" if metric == "output_tok_per_s" else "lower"
        ax.set_title(f"{metric} ({better} is better)", fontsize=10)
        ax.grid(True, axis="x", alpha=0.3)
    axes[0].set_yticks(positions, [_text(t.split("::", 1)[-1]) for t in tests], fontsize=8)
    axes[0].invert_yaxis()
    axes[-1].legend(fontsize=8, loc="lower right")
    return Plot(COMPARE_BARS_TITLE, figure)


def compare_changes_plot(comparison: RunComparison) -> Plot:
    """The relative change of each main metric per test, colored by its verdict."""
    rows = [c for c in comparison.changes if c.metric in CHANGE_METRICS and c.relative is not None][
        : MAX_TESTS * 2
    ]
    if not rows:
        return Plot(
            COMPARE_CHANGES_TITLE,
            None,
            "No main metric (output tok/s, latency "
            "p90, accuracy) is measured in both runs with a nonzero base.",
        )
    figure = _figure(COMPARE_CHANGES_TITLE, 12, 2.2 + 0.3 * len(rows))
    ax = figure.add_subplot()
    labels = [_text(f"{c.test_id.split('::', 1)[-1]}  {c.metric}") for c in rows]
    values = [100.0 * (c.relative or 0.0) for c in rows]
    colors = [VERDICT_COLORS.get(c.verdict, NEUTRAL_COLOR) for c in rows]
    positions = list(range(len(rows)))
    ax.barh(positions, values, color=colors)
    for position, value, change in zip(positions, values, rows, strict=True):
        ax.annotate(
            f"{value:+.1f}% {change.verdict}",
            (value, position),
            textcoords="offset points",
            xytext=(4 if value >= 0 else -4, -3),
            ha="left" if value >= 0 else "right",
            fontsize=7,
        )
    ax.axvline(0, color="#333333", linewidth=0.8)
    ax.set_yticks(positions, labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("change from base (%): green better, red worse, by each metric's direction")
    span = max((abs(v) for v in values), default=1.0) or 1.0
    ax.set_xlim(-span * 1.6, span * 1.6)
    ax.grid(True, axis="x", alpha=0.3)
    return Plot(COMPARE_CHANGES_TITLE, figure)


def comparison_plots(comparison: RunComparison) -> list[Plot]:
    return [compare_bars_plot(comparison), compare_changes_plot(comparison)]


def comparison_figures(comparison: RunComparison) -> list[tuple[str, Figure]]:
    """(title, figure) of the comparison of a base run and a new one."""
    return [(p.title, p.figure) for p in comparison_plots(comparison) if p.figure is not None]
