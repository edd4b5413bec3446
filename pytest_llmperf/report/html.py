"""`llmperf report RUN [RUN ...] -o report.html`: one self-contained HTML file.

The file holds everything it shows: figures as inline SVG (from `plots`), styles in one
`<style>` element, no script, no font, image or link to fetch, so it opens offline, as an
e-mail attachment or a CI artifact, and shows the same in ten years.

Layout: a header per run (machine, packages, thresholds passed; a line per host where its
tests ran on several), the figures of all the runs together, a table of every test's main
metrics with their intervals and rounds (grouped by host where a run's ran on several), the
A/B tests and the loads split over client workers (`report.split`), every
bound's and baseline metric's verdict (`report.verdicts`), failed requests if any, then with two
to four runs a comparison of the first (the base) against each later one. Five runs or more
are a history (`HISTORY_MIN_RUNS`): a History section plots each headline metric over the
runs in time order with the steps `llmperf trend` finds (`plots.trend`), and one comparison
follows, of the newest run against the run before it (a comparison per run would bury it).

Everything taken from result files (test ids, settings, error messages) is untrusted: it
reaches the page only through `html.escape`, and reaches figures as matplotlib text, which
its SVG writer escapes.
"""

from __future__ import annotations

import html
import io
import os
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_llmperf.errors import LLMPerfUsageError
from pytest_llmperf.report.ab import ab_section
from pytest_llmperf.report.slo_search import slo_search_section
from pytest_llmperf.report.split import split_section
from pytest_llmperf.report.verdicts import tests_table, thresholds_state, verdicts_section
from pytest_llmperf.results.readback.hosts import grouped, host_lines
from pytest_llmperf.results.runs import Run, time_order
from pytest_llmperf.tables import format_number

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from pytest_llmperf.report.plots import Plot
    from pytest_llmperf.results.changes import Change
    from pytest_llmperf.results.compare import RunComparison

#: From this many runs on the report is a history (see the module docstring).
HISTORY_MIN_RUNS = 5
#: Failed requests listed per test; the rest are counted.
MAX_ERRORS_PER_TEST = 3
MAX_ERROR_CHARS = 300

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
       margin: 1.5rem auto; max-width: 1300px; padding: 0 1rem; color: #1f2328; }
h1 { font-size: 1.6rem; margin-bottom: 0.2rem; }
h2 { font-size: 1.3rem; border-bottom: 1px solid #d0d7de; padding-bottom: 0.2rem;
     margin-top: 2.2rem; }
h3 { font-size: 1.05rem; margin: 1.6rem 0 0.4rem; }
.muted { color: #59636e; font-size: 0.9rem; }
table { border-collapse: collapse; font-size: 0.85rem; margin: 0.5rem 0; }
th, td { border: 1px solid #d0d7de; padding: 0.2rem 0.5rem; text-align: left;
         vertical-align: top; }
th { background: #f6f8fa; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
table.meta th { width: 11rem; }
code, .id { font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: 0.8rem;
            overflow-wrap: anywhere; }
td.test { min-width: 18rem; }
.wide { overflow-x: auto; }
.pass { color: #1a7f37; font-weight: 600; }
.fail { color: #cf222e; font-weight: 600; }
.improved { background: #c8f0d0; } .better { background: #eaf7ec; }
.regressed { background: #ffc9c9; font-weight: 600; } .worse { background: #fdeaea; }
.inconclusive { background: #fff3bf; }
.note { color: #59636e; font-style: italic; margin: 0.2rem 0 0.8rem; }
.plot svg { max-width: 100%; height: auto; }
.plot svg * { stroke-linejoin: round; stroke-linecap: butt; }
nav ul { margin: 0.3rem 0; }
"""


#: In every report's head, before anything of variable length: how `llmperf report -o`
#: knows a file it wrote (and may write over) from one it did not.
GENERATOR = '<meta name="generator" content="pytest-llmperf report">'


def written_by_report(path: Path) -> bool:
    """Whether the file at `path` is a report this command wrote (its head holds
    `GENERATOR`)."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(1024)
    except OSError:
        return False
    return GENERATOR.encode() in head


def write_report(runs: list[Run], out: Path) -> None:
    """Write the HTML report of `runs` (the first is the base of comparisons) to `out`."""
    if not runs:
        raise LLMPerfUsageError("no run to report: give one or more runs")
    text = render_report(runs)
    out.parent.mkdir(parents=True, exist_ok=True)
    # Written whole, then renamed: a report that failed half-way never looks finished.
    partial = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, out)


def render_report(runs: Sequence[Run]) -> str:
    """The report of `runs` as one HTML document."""
    plots = _plots_module()
    ids = ", ".join(run.run_id for run in runs)
    generated = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        GENERATOR,
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(f'pytest-llmperf report: {ids}')}</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>pytest-llmperf report</h1>",
        f'<p class="muted">Generated {_e(generated)} from {len(runs)} run(s).</p>',
        _contents(runs),
    ]
    labels = plots.run_labels(runs)
    for index, (run, label) in enumerate(zip(runs, labels, strict=True)):
        parts.append(_run_header(run, index, label))
    parts.append('<h2 id="plots">Plots</h2>')
    if len(runs) > 1:
        parts.append(
            '<p class="muted">Figures label tests with the short run names of the headers '
            "above.</p>"
        )
    parts += (_plot_html(plot, f"f{i}-") for i, plot in enumerate(plots.run_plots(runs)))
    if len(runs) >= HISTORY_MIN_RUNS:
        parts.append(_history(runs))
    parts.append(tests_table(runs, labels))
    parts.append(ab_section(runs, labels))
    parts.append(split_section(runs, labels))
    parts.append(slo_search_section(runs, labels))
    parts.append(verdicts_section(runs, labels))
    parts.append(_errors(runs))
    from pytest_llmperf.results.compare import compare_runs

    for index, (base, new) in enumerate(_compared(runs), start=1):
        parts.append(_comparison(compare_runs(base, new), index))
    parts.append("</body></html>")
    return "\n".join(part for part in parts if part) + "\n"


def _plots_module() -> Any:
    try:
        from pytest_llmperf.report import plots
    except ImportError as exc:
        raise LLMPerfUsageError(
            f"the report needs matplotlib ({exc}): pip install 'pytest-llmperf[report]'"
        ) from None
    return plots


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _compared(runs: Sequence[Run]) -> list[tuple[Run, Run]]:
    """(base, new) of each comparison: the first run against each later one; in a history,
    the newest against the run before it."""
    if len(runs) >= HISTORY_MIN_RUNS:
        ordered = sorted(runs, key=time_order)
        return [(ordered[-2], ordered[-1])]
    return [(runs[0], new) for new in runs[1:]]


def _contents(runs: Sequence[Run]) -> str:
    items = [f'<li><a href="#run-{i}">Run {_e(r.run_id)}</a></li>' for i, r in enumerate(runs)]
    items.append('<li><a href="#plots">Plots</a></li>')
    if len(runs) >= HISTORY_MIN_RUNS:
        items.append('<li><a href="#history">History</a></li>')
    items.append('<li><a href="#tests">Tests</a></li>')
    if any(t.ab for r in runs for t in r.tests):
        items.append('<li><a href="#ab">A/B tests</a></li>')
    if any(r.summary.get("split_loads") for r in runs):
        items.append('<li><a href="#split">Split loads</a></li>')
    if any(t.slo_search for r in runs for t in r.tests):
        items.append('<li><a href="#slo-search">SLO searches</a></li>')
    if any(t.thresholds.checked or t.baseline is not None for r in runs for t in r.tests):
        items.append('<li><a href="#verdicts">Verdicts</a></li>')
    items += [
        f'<li><a href="#compare-{i}">Comparison: {_e(base.run_id)} → {_e(new.run_id)}</a></li>'
        for i, (base, new) in enumerate(_compared(runs), start=1)
    ]
    return f"<nav><ul>{''.join(items)}</ul></nav>"


def _history(runs: Sequence[Run]) -> str:
    plots = _plots_module()
    intro = (
        '<p class="muted">Each headline metric over the runs, oldest first: one line per test '
        "(on one engine, model and hardware), dotted at each stretch's level, a dashed line "
        "where <code>llmperf trend</code> finds a step, a ring on a newest run that regressed "
        "against the runs before it or against the start of its series.</p>"
    )
    figures = "".join(_plot_html(plot, f"h{i}-") for i, plot in enumerate(plots.trend_plots(runs)))
    return f'<h2 id="history">History</h2>{intro}{figures}'


# -- run headers -----------------------------------------------------------------------


def _plain(value: object) -> str:
    """A JSON value as short text: lists joined, objects as key=value."""
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={_plain(v)}" for k, v in value.items() if v is not None)
    if isinstance(value, (list, tuple)):
        return ", ".join(_plain(v) for v in value)
    return "" if value is None else str(value)


def _cpu(machine: Mapping[str, Any]) -> str | None:
    name, count = machine.get("cpu"), machine.get("cpu_count")
    if name and count:
        return f"{name} ({count} logical CPUs)"
    return str(name or count or "") or None


def _run_header(run: Run, index: int, label: str) -> str:
    summary = run.summary
    settings = summary.get("settings") or {}
    machine = summary.get("machine") or {}
    states = [thresholds_state(t) for t in run.tests]
    counts = (
        f'<span class="pass">{states.count("pass")} passed</span>, '
        f'<span class="{"fail" if "fail" in states else ""}">{states.count("fail")} failed'
        f"</span>, {states.count('none')} without thresholds"
    )
    rows: list[tuple[str, str]] = [
        ("started", _e(run.started_at or "?")),
        ("finished", _e(summary.get("finished_at") or "unfinished (no summary.json)")),
        ("hardware", _e(summary.get("hardware") or "?")),
        ("tests", f"{len(run.tests)}; thresholds: {counts}"),
        ("folder", f'<span class="id">{_e(run.path)}</span>'),
    ]
    if label:
        rows.insert(0, ("name in figures", _e(label)))
    for key in ("engine", "model", "gpus", "dataset"):
        if settings.get(key) not in (None, "", []):
            rows.append((key, _e(_plain(settings[key]))))
    for key, heading in (("plugin_version", "pytest-llmperf"),):
        if summary.get(key):
            rows.append((heading, _e(summary[key])))
    memory = machine.get("memory_total_bytes")
    machine_rows = [
        ("host", machine.get("hostname")),
        ("platform", machine.get("platform")),
        ("python", machine.get("python")),
        ("CPU", _cpu(machine)),
        ("memory", f"{memory / 2**30:.1f} GiB" if isinstance(memory, (int, float)) else None),
        ("GPUs", _plain(machine.get("gpus")) or None),
        ("driver", machine.get("driver")),
        ("CUDA_VISIBLE_DEVICES", machine.get("cuda_visible_devices")),
        ("git commit", machine.get("git_commit")),
    ]
    rows += [(name, _e(value)) for name, value in machine_rows if value not in (None, "")]
    packages = machine.get("packages") or {}
    if isinstance(packages, Mapping):
        installed = [f"{name} {version}" for name, version in packages.items() if version]
        if installed:
            rows.append(("packages", _e(", ".join(installed))))
    if len(grouped(run.tests)) > 1:  # measured on several hosts: each with its workers
        rows += [("hosts", "<br>".join(_e(line) for line in host_lines(run.tests)))]
    command = machine.get("command_line")
    if command:
        rows.append(("command", f'<span class="id">{_e(_plain(command))}</span>'))
    body = "".join(f"<tr><th>{name}</th><td>{value}</td></tr>" for name, value in rows)
    return (
        f'<h2 id="run-{index}">Run {_e(run.run_id)}</h2>'
        f'<table class="meta"><tbody>{body}</tbody></table>'
    )


# -- figures ---------------------------------------------------------------------------

_TAG = re.compile(r"<[^>]*>")
_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)
_STYLE = re.compile(r"<style[^>]*>.*?</style>", re.DOTALL)
_XMLNS = re.compile(r'\s+xmlns(?::\w+)?="[^"]*"')


def figure_svg(figure: Figure, title: str, prefix: str) -> str:
    """`figure` as an `<svg>` element to inline in HTML, titled `title`.

    Its ids get `prefix`: matplotlib names clip paths and markers by a hash of their shape
    (`svg.hashsalt` fixed, for reproducible files), so two figures of one page can define
    the same id and a `<use>` would find the other figure's. The XML prolog, DOCTYPE,
    comments and namespace attributes go: HTML's parser puts `<svg>` in the SVG namespace
    by itself, and the namespace URIs would be the only http:// left in the file. Text stays
    text (`svg.fonttype: none`) so that it can be searched, copied and read by a browser.
    """
    from matplotlib import rc_context

    buffer = io.StringIO()
    with rc_context({"svg.fonttype": "none", "svg.hashsalt": "pytest-llmperf"}):
        figure.savefig(
            buffer,
            format="svg",
            metadata={"Creator": None, "Date": None, "Format": None, "Type": None},
        )
    svg = buffer.getvalue()
    svg = _COMMENT.sub("", svg[svg.index("<svg") :])
    svg = _STYLE.sub("", svg)  # its `*` rule would style the whole page: in _CSS, scoped

    def fix_tag(match: re.Match[str]) -> str:
        tag = _XMLNS.sub("", match.group(0))
        tag = re.sub(r'\bid="([^"]+)"', rf'id="{prefix}\1"', tag)
        tag = re.sub(r'href="#([^"]+)"', rf'href="#{prefix}\1"', tag)
        return re.sub(r"url\(#([^)]+)\)", rf"url(#{prefix}\1)", tag)

    svg = _TAG.sub(fix_tag, svg)
    end = svg.index(">")  # of the opening <svg ...> tag
    label = _e(title)
    return f'{svg[:end]} role="img" aria-label="{label}"><title>{label}</title>{svg[end + 1 :]}'


def _plot_html(plot: Plot, prefix: str) -> str:
    heading = f"<h3>{_e(plot.title)}</h3>"
    note = f'<p class="note">{_e(plot.note)}</p>' if plot.note else ""
    if plot.figure is None:
        return f'<section class="plot">{heading}{note}</section>'
    try:
        svg = figure_svg(plot.figure, plot.title, prefix)
    finally:
        plot.figure.clear()  # drop its artists now: a report renders several figures
    return f'<section class="plot">{heading}{svg}{note}</section>'


# -- tables ----------------------------------------------------------------------------


def _errors(runs: Sequence[Run]) -> str:
    """Failed requests, a few per test: the first thing to read when throughput drops."""
    blocks = []
    for run in runs:
        by_test: dict[str, list[Mapping[str, Any]]] = {}
        for record in run.requests():
            if record.get("error") is not None:
                by_test.setdefault(str(record.get("test_id")), []).append(record)
        for test_id, failed in by_test.items():
            items = "".join(
                f"<li><code>{_e(r.get('custom_id'))}</code>: "
                f"{_e(str(r.get('error'))[:MAX_ERROR_CHARS])}</li>"
                for r in failed[:MAX_ERRORS_PER_TEST]
            )
            more = len(failed) - MAX_ERRORS_PER_TEST
            items += f"<li>… and {more} more</li>" if more > 0 else ""
            blocks.append(
                f'<h3><span class="id">{_e(test_id)}</span> ({_e(run.run_id)}): '
                f"{len(failed)} failed request(s)</h3><ul>{items}</ul>"
            )
    return '<h2 id="errors">Failed requests</h2>' + "".join(blocks) if blocks else ""


# -- comparison ------------------------------------------------------------------------


def _percent(change: Change) -> str:
    return "-" if change.relative is None else f"{change.relative * 100:+.1f}%"


def _shown(changes: Iterable[Change]) -> list[Change]:
    """As `llmperf compare` prints them: metrics with a tolerance, and any regression."""
    return [c for c in changes if c.tolerance is not None or c.verdict == "regressed"]


def _comparison(comparison: RunComparison, index: int) -> str:
    from pytest_llmperf.results.compare import setup_lines

    plots = _plots_module()
    base, new = comparison.base, comparison.new
    verdicts = [c.verdict for c in comparison.changes]
    regressions = verdicts.count("regressed")
    unjudged = sum(1 for c in _shown(comparison.changes) if c.verdict == "unreliable")
    summary = (
        f'<span class="{"fail" if regressions else "pass"}">{regressions} regression(s)</span>'
        f" beyond tolerance, {verdicts.count('improved')} improvement(s)"
        + (f", {unjudged} not judged (unreliable values)" if unjudged else "")
        + f"; {len({c.test_id for c in comparison.changes})} test(s) in both runs"
    )
    parts = [
        f'<h2 id="compare-{index}">Comparison: base {_e(base.run_id)} → new {_e(new.run_id)}</h2>',
        f"<p>{summary}.</p>",
        *(f'<p class="note">{_e(line)}</p>' for line in setup_lines(base, new)),
    ]
    for what, ids in (
        ("Only in base", comparison.tests_only_in_base),
        ("Only in new", comparison.tests_only_in_new),
    ):
        if ids:
            listed = ", ".join(f'<span class="id">{_e(t)}</span>' for t in ids)
            parts.append(f"<p>{what}: {listed}</p>")
    parts += (
        _plot_html(plot, f"c{index}-{i}-")
        for i, plot in enumerate(plots.comparison_plots(comparison))
    )
    rows = []
    for change in _shown(comparison.changes):
        cells = [
            f'<td><span class="id">{_e(change.test_id)}</span></td>',
            f"<td>{_e(change.metric)}</td>",
            f'<td class="num">{_e(format_number(change.base))}</td>',
            f'<td class="num">{_e(format_number(change.new))}</td>',
            f'<td class="num {_e(change.verdict)}">{_e(_percent(change))}</td>',
            f'<td class="{_e(change.verdict)}">{_e(change.verdict)}</td>',
            f"<td>{_e(change.tolerance or '-')}</td>",
            f"<td>{_e(change.better or '-')}</td>",
        ]
        rows.append(f"<tr>{''.join(cells)}</tr>")
    head = ("test", "metric", "base", "new", "change", "verdict", "tolerance", "better")
    header = "".join(f"<th>{h}</th>" for h in head)
    parts.append("<h3>Metric changes</h3>")
    if rows:
        parts.append(
            '<p class="muted">Metrics with a tolerance (pytest_llmperf.results.compare.'
            "DEFAULT_TOLERANCES); <code>llmperf compare --all</code> lists every metric. "
            "Green: better by the metric's direction, red: worse; strong colors are beyond "
            "the tolerance.</p>"
            f"<table><thead><tr>{header}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
        )
    else:
        parts.append('<p class="note">No metric with a tolerance in tests of both runs.</p>')
    return "".join(parts)
