"""The report's SLO searches (`llmperf.max_load_under_slo`, `suite.slo.search`): each search's
answer, why it stopped, and a table of its steps in the order they ran (rate, goodput with its
interval, decision, send rates, throughput and latencies). Everything from result files goes
through `html.escape`."""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any

from pytest_llmperf.results.record import TestRecord
from pytest_llmperf.results.runs import Run
from pytest_llmperf.tables import format_number

COLUMNS = (
    "#",
    "phase",
    "rate req/s",
    "rounds",
    "goodput [interval]",
    "decision",
    "sent / asked req/s",
    "output tok/s",
    "tok/s per user",
    "TTFT p90 ms",
    "TPOT p90 ms",
)


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _n(value: object) -> str:
    return format_number(value) if isinstance(value, (int, float)) else "-"


def _goodput(step: Mapping[str, Any]) -> str:
    low, high = step.get("goodput_low"), step.get("goodput_high")
    centre = step.get("goodput_centre")
    if not isinstance(centre, (int, float)):
        return "-"
    if isinstance(low, (int, float)) and isinstance(high, (int, float)) and low != high:
        return f"{centre:.3f} [{low:.3f}, {high:.3f}]"
    return f"{centre:.3f}"


def step_rows(test: TestRecord) -> list[list[str]]:
    """The table's rows, as text, one per step."""
    search: Mapping[str, Any] = test.slo_search or {}
    rows = []
    for index, step in enumerate(search.get("steps") or ()):
        chosen = " (chosen)" if index == search.get("chosen") else ""
        flag = " (client flag)" if step.get("client_flag") else ""
        sent = (
            f"{_n(step.get('achieved_send_rate_per_s'))} / {_n(step.get('asked_send_rate_per_s'))}"
        )
        rows.append(
            [
                str(index + 1),
                str(step.get("phase")),
                _n(step.get("rate_per_s")),
                _n(step.get("rounds")),
                _goodput(step),
                f"{step.get('decision')}{chosen}",
                sent + flag,
                _n(step.get("output_tok_per_s")),
                _n(step.get("output_tok_per_s_per_user")),
                _n(step.get("ttft_ms_p90")),
                _n(step.get("tpot_ms_p90")),
            ]
        )
    return rows


def slo_search_section(runs: Sequence[Run], labels: Sequence[str]) -> str:
    """Every SLO search of `runs`; empty when there is none."""
    tests = [
        (label, t)
        for run, label in zip(runs, labels, strict=True)
        for t in run.tests
        if t.slo_search
    ]
    if not tests:
        return ""
    parts = [
        '<h2 id="slo-search">SLO searches</h2>',
        '<p class="muted">Each search sent its workload at rising rates (sweep, then '
        "bisection) and decided each step on its rounds' goodput fraction against the "
        "required share; an undecided step counts as failing. The interval is the one-sided "
        "bounds at the step's last look.</p>",
    ]
    head = "".join(f"<th>{_e(c)}</th>" for c in COLUMNS)
    for label, test in tests:
        search: Mapping[str, Any] = test.slo_search or {}
        plan: Mapping[str, Any] = search.get("plan") or {}
        run = f" ({_e(label)})" if len(runs) > 1 else ""
        body = "".join(
            "<tr>" + "".join(f"<td>{_e(cell)}</td>" for cell in row) + "</tr>"
            for row in step_rows(test)
        )
        parts.append(
            f'<h3><span class="id">{_e(test.key)}</span>{run}</h3>'
            f"<p>max_rate_under_slo_req_per_s = {_e(_n(search.get('max_rate_per_s')))}: "
            f"{_e(search.get('note'))}</p>"
            f"<p class='muted'>SLO {_e(plan.get('slo'))}, goodput &gt;= "
            f"{_e(plan.get('goodput'))}, step {_e(plan.get('step_per_s'))} req/s, "
            f"{_e(plan.get('distribution'))} arrivals</p>"
            f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
        )
    return "".join(parts)
