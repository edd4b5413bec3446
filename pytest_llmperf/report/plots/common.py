"""What the run and comparison figures share: titles, limits, colours, a test's view of
its record, and the axes helpers."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from matplotlib.axes import Axes
from matplotlib.figure import Figure

from pytest_llmperf.results.record import TestRecord
from pytest_llmperf.results.runs import Run

if TYPE_CHECKING:
    pass


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
class TestView:
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


def label_text(value: object) -> str:
    """Text from a result file as matplotlib shows it literally (no mathtext)."""
    return str(value).replace("$", r"\$")


def run_labels(runs: Sequence[Run]) -> list[str]:
    """Short distinct names of runs: "" for a single run, else the run ids' last part
    (`20261123-032939-332fdb` -> `332fdb`) when those are distinct, else the run ids."""
    if len(runs) < 2:
        return [""] * len(runs)
    short = [r.run_id.rsplit("-", 1)[-1] for r in runs]
    return short if len(set(short)) == len(short) else [r.run_id for r in runs]


def test_views(runs: Sequence[Run]) -> list[TestView]:
    return [
        TestView(label, test)
        for run, label in zip(runs, run_labels(runs), strict=True)
        for test in run.tests
    ]


def as_number(value: object) -> float | None:
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
        if (number := as_number(source.get(key))) is not None
    ]
    offered = [n for key in REQUEST_COUNT_KEYS if (n := as_number(workload.get(key))) is not None]
    if not offered:  # a dataset of unrecorded size: the requests measured per round
        requests = as_number(test.metrics_flat.get("requests"))
        rounds = as_number(test.rounds)
        offered = [requests / rounds] if requests and rounds else []
    return min(bounds + offered, default=None)


def palette(count: int) -> list[Any]:
    """Distinct colors: tab10 up to ten series, tab20 beyond (repeating past twenty)."""
    from matplotlib import colormaps

    cmap = colormaps["tab10" if count <= 10 else "tab20"]
    size = 10 if count <= 10 else 20
    return [cmap(i % size) for i in range(max(count, 1))]


def new_figure(title: str, width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), layout="constrained")
    figure.suptitle(title, fontsize=13, fontweight="bold")
    return figure


def legend_below(ax: Axes, count: int) -> None:
    if count:
        ax.legend(
            loc="upper center", bbox_to_anchor=(0.5, -0.14), fontsize=8, ncols=2, frameon=False
        )


def concurrency_axis(ax: Axes, values: Iterable[float]) -> None:
    """A log-2 x axis ticked at the concurrencies measured, written as plain numbers."""
    from matplotlib.ticker import FixedLocator, NullLocator, StrMethodFormatter

    ticks = sorted(set(values))
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_major_formatter(StrMethodFormatter("{x:g}"))
    ax.xaxis.set_minor_locator(NullLocator())
    if len(ticks) == 1:  # a log axis around one value needs room on both sides
        ax.set_xlim(ticks[0] / 2, ticks[0] * 2)


def log_if_wide(ax: Axes, values: Iterable[float], axis: str = "x") -> None:
    """A log axis where values span more than two decades: a 20 ms and a 20 s latency
    side by side leave the small one invisible on a linear axis."""
    positive = [v for v in values if v > 0]
    if positive and max(positive) / min(positive) > 100:
        (ax.set_xscale if axis == "x" else ax.set_yscale)("log")


# -- throughput and scaling ------------------------------------------------------------


@dataclass(frozen=True)
class PlotSeries:
    label: str
    #: (concurrency, output tok/s, config name), by concurrency.
    points: list[tuple[float, float, str]]

    @property
    def distinct(self) -> bool:
        """Whether each concurrency is measured once; several configs at one concurrency
        differ in something else (context, output length), so no line joins them."""
        xs = [x for x, _, _ in self.points]
        return len(set(xs)) == len(xs)
