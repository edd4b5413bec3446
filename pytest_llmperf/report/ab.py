"""The report's A/B view: each A/B test (`llmperf.compare`) with its two sides and, per
metric, A, B and the ratio B/A with its 95% paired interval (`measure.turns` defines them).

The words are `results.readout`'s, as in the terminal summary. Everything from result files
goes through `html.escape`.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any

from pytest_llmperf.results import readout
from pytest_llmperf.results.record import TestRecord
from pytest_llmperf.results.runs import Run


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _side(side: object) -> str:
    """A side as `config 'four' on hf (max_num_seqs=4), cpu`."""
    if not isinstance(side, Mapping):
        return "-"
    settings: Mapping[str, Any] = (side.get("engine_config") or {}).get("settings") or {}
    shown = ", ".join(f"{k}={v}" for k, v in settings.items())
    what = f"config {side.get('config')!r}" if side.get("config") else str(side.get("given"))
    device = (side.get("engine_info") or {}).get("device")
    return (
        f"{what} on {side.get('engine')}"
        + (f" ({shown})" if shown else "")
        + (f", {device}" if device else "")
    )


def ab_section(runs: Sequence[Run], labels: Sequence[str]) -> str:
    """Every A/B test of `runs`; empty when there is none."""
    tests: list[tuple[str, TestRecord]] = [
        (label, t) for run, label in zip(runs, labels, strict=True) for t in run.tests if t.ab
    ]
    if not tests:
        return ""
    parts = [
        '<h2 id="ab">A/B tests</h2>',
        '<p class="muted">Each A/B test measured A and B in turns (ABBA BAAB ...); B/A is the '
        "geometric mean of the pairs' ratios with a paired t interval on their logs (95%); "
        "below 1 is better for latencies, above 1 for throughputs. A and B show their rounds' "
        "interval as a share of the value.</p>",
    ]
    for label, test in tests:
        ab = test.ab or {}
        run = f" ({_e(label)})" if len(runs) > 1 else ""
        rows = "".join(
            f"<tr><td>{_e(metric)}</td><td class='num'>{_e(a)}</td>"
            f"<td class='num'>{_e(b)}</td><td class='num'>{_e(ratio)}</td></tr>"
            for metric, a, b, ratio in readout.ab_rows(test)
        )
        parts.append(
            f'<h3><span class="id">{_e(test.key)}</span>{run}</h3>'
            f"<p>{_e(readout.ab_text(test))}</p>"
            f"<p>A: {_e(_side(ab.get('a')))}<br>B: {_e(_side(ab.get('b')))}</p>"
            "<table><thead><tr><th>metric</th><th>A</th><th>B</th><th>B/A [95%]</th></tr>"
            f"</thead><tbody>{rows}</tbody></table>"
        )
    return "".join(parts)
