"""The report's tables of tests: every test's headline metrics with their intervals and the
rounds it took (Tests), then every bound and baseline metric it was judged on, with its
verdict and p-value (Verdicts).

The words are `results.readout`'s, the same as the terminal summary's, the dashboard's and
the exports'. Everything from result files goes through `html.escape`.
"""

from __future__ import annotations

import html
from collections.abc import Sequence

from pytest_llmperf.results import readout
from pytest_llmperf.results.readback.hosts import grouped
from pytest_llmperf.results.record import TestRecord
from pytest_llmperf.results.runs import Run

#: Columns of the tests table, shown when any test has the metric: (heading, flat name).
TABLE_METRICS: tuple[tuple[str, str], ...] = (
    ("requests", "requests"),
    ("failures", "failures"),
    ("out tok/s", "output_tok_per_s"),
    ("req/s", "requests_per_s"),
    ("TTFT p50 ms", "ttft_ms.p50"),
    ("TTFT p90 ms", "ttft_ms.p90"),
    ("TPOT p50 ms", "tpot_ms.p50"),
    ("e2e p90 ms", "e2e_ms.p90"),
    ("questions/s", "questions_per_s"),
    ("accuracy", "accuracy"),
    ("exact match", "exact_match"),
)
#: A verdict's row class (colours in the report's style sheet).
ROW_CLASS = {
    "missed": "regressed",
    "regressed": "regressed",
    "inconclusive": "inconclusive",
    "met": "",
    "ok": "",
}


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def thresholds_state(test: TestRecord) -> str:
    """ "pass", "fail", or "none" when no bound applied to the test."""
    thresholds = test.thresholds
    if not thresholds.checked:
        return "none" if thresholds.passed else "fail"
    return "pass" if thresholds.passed else "fail"


def _thresholds_cell(test: TestRecord) -> str:
    state = thresholds_state(test)
    if state == "none":
        return "-"
    undecided = len(test.thresholds.inconclusive)
    more = f", {undecided} inconclusive" if undecided else ""
    if state == "pass":
        return f'<span class="pass">pass</span> ({len(test.thresholds.checked)}{more})'
    return f'<span class="fail">FAIL</span> {_e(", ".join(test.thresholds.missed))}'


def _has(test: TestRecord, metric: str) -> bool:
    return test.metric(metric) is not None


def tests_table(runs: Sequence[Run], labels: Sequence[str]) -> str:
    """Every test of `runs`: its setup, thresholds, baseline, rounds, and headline metrics
    (each with its 95% interval where it was measured round by round); where a run's tests
    ran on several hosts, a host column, each run's tests grouped by host."""
    # A run measured in several places (xdist workers on other hosts, merged shards): its
    # tests grouped by place, as the terminal summary groups them (`results.readback.hosts`).
    places = {id(run): grouped(run.tests) for run in runs}
    spread = any(len(groups) > 1 for groups in places.values())
    tests = [
        (label, place, t)
        for run, label in zip(runs, labels, strict=True)
        for place, group in places[id(run)]
        for t in group
    ]
    if not tests:
        return '<h2 id="tests">Tests</h2><p class="note">The runs hold no measured test.</p>'
    columns = [(h, m) for h, m in TABLE_METRICS if any(_has(t, m) for _, _, t in tests)]
    compared = any(t.baseline is not None for _, _, t in tests)
    head = ["run"] if len(runs) > 1 else []
    head += ["test", "host"] if spread else ["test"]
    head += ["config", "engine", "model", "thresholds"]
    head += ["baseline"] if compared else []
    head += ["rounds", *(h for h, _ in columns)]
    rows = []
    for label, place, test in tests:
        model = test.engine_config.model or test.engine_info.model
        cells = [f"<td>{_e(label)}</td>"] if len(runs) > 1 else []
        cells.append(f'<td class="test"><span class="id">{_e(test.key)}</span></td>')
        cells += [f'<td class="host">{_e(place)}</td>'] if spread else []
        texts = [_e(test.config.name), _e(test.engine), _e(model or ""), _thresholds_cell(test)]
        if compared:
            texts.append(_e(readout.baseline_verdict(test)))
        texts.append(_e(readout.rounds_text(test)))
        cells += (f"<td>{text}</td>" for text in texts)
        cells += (f'<td class="num">{_e(readout.headline(test, m))}</td>' for _, m in columns)
        rows.append(f"<tr>{''.join(cells)}</tr>")
    header = "".join(f"<th>{_e(h)}</th>" for h in head)
    return (
        '<h2 id="tests">Tests</h2>'
        '<p class="muted">Each metric measured round by round shows its 95% interval, a t '
        "interval on the logs of its per-round values, as a share of the value (± half its "
        "width); rounds: how many were measured and why they ended.</p>"
        '<div class="wide">'
        f"<table><thead><tr>{header}</tr></thead><tbody>{''.join(rows)}</tbody></table></div>"
    )


def verdicts_section(runs: Sequence[Run], labels: Sequence[str]) -> str:
    """Every bound and baseline metric each test was judged on, with its verdict; empty when
    no test had any."""
    rows = []
    several = len(runs) > 1
    for run, label in zip(runs, labels, strict=True):
        for test in run.tests:
            first = [f"<td>{_e(label)}</td>"] if several else []
            first.append(f'<td class="test"><span class="id">{_e(test.key)}</span></td>')
            for check in test.thresholds.checked:
                measured = (
                    readout.headline(test, check.metric)
                    if check.measured is not None
                    else "not measured"
                )
                rows.append(
                    _row(
                        first,
                        "bound",
                        check.metric,
                        readout.bound_limits(check),
                        measured,
                        check.verdict,
                        readout.p_text(check.p),
                        check.how or "value",
                    )
                )
            if test.baseline is None:
                continue
            for change in test.baseline.judged:
                rows.append(
                    _row(
                        first,
                        f"baseline {test.baseline.run_id}",
                        change.metric,
                        change.tolerance or "-",
                        readout.change_interval(change),
                        "not judged" if change.verdict == "unreliable" else change.verdict,
                        readout.p_text(change.p),
                        "samples" if change.p is not None else (change.note or "value"),
                    )
                )
    if not rows:
        return ""
    head = ["run"] if several else []
    head += ["test", "against", "metric", "bound / tolerance", "measured / change"]
    head += ["verdict", "p", "judged on"]
    header = "".join(f"<th>{_e(h)}</th>" for h in head)
    return (
        '<h2 id="verdicts">Verdicts</h2>'
        '<p class="muted">Each bound and baseline tolerance: <b>missed</b> / <b>regressed</b> '
        "only when the test is confident the value is beyond it (a one-sided test at the "
        "run's error rate, Holm-corrected over the test's metrics), <b>met</b> / <b>ok</b> "
        "when its confidence bound is inside it, <b>inconclusive</b> otherwise. p: the "
        "corrected one-sided p-value (small: beyond). A baseline change shows its confidence "
        "bounds in brackets.</p>"
        '<div class="wide">'
        f"<table><thead><tr>{header}</tr></thead><tbody>{''.join(rows)}</tbody></table></div>"
    )


def _row(first: Sequence[str], *texts: str) -> str:
    """A verdicts row: the run and test cells, then against, metric, bound or tolerance,
    measured or change, verdict, p and how it was judged."""
    against, metric, limit, measured, verdict, p, how = texts
    cells = [
        *first,
        f"<td>{_e(against)}</td>",
        f"<td>{_e(metric)}</td>",
        f'<td class="num">{_e(limit)}</td>',
        f'<td class="num">{_e(measured)}</td>',
        f'<td class="{ROW_CLASS.get(verdict, "")}">{_e(verdict)}</td>',
        f'<td class="num">{_e(p)}</td>',
        f"<td>{_e(how)}</td>",
    ]
    return f"<tr>{''.join(cells)}</tr>"
