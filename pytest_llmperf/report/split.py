"""The report's view of loads split over client workers (`suite.split`): each load as the
controller merged it (`summary.json`'s `split_loads`, `results.readback.split`), with its
shares' workers and hosts, its merged latencies and whether it needed more client hosts.

Everything from result files goes through `html.escape`.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any

from pytest_llmperf.results.runs import Run
from pytest_llmperf.tables import format_number


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _cell(metrics: Mapping[str, Any], name: str, stat: str | None = None) -> str:
    value = metrics.get(name)
    if stat is not None:
        value = value.get(stat) if isinstance(value, Mapping) else None
    return f'<td class="num">{_e(format_number(value))}</td>'


def split_section(runs: Sequence[Run], labels: Sequence[str]) -> str:
    """Every split load of `runs`; empty when there is none."""
    rows = []
    for run, label in zip(runs, labels, strict=True):
        for load in run.summary.get("split_loads") or ():
            metrics: Mapping[str, Any] = load.get("metrics") or {}
            shares = ", ".join(
                f"{s.get('index')}: {s.get('worker') or '-'} on {s.get('host') or '?'}"
                for s in load.get("shares") or ()
            )
            missing = load.get("missing_shares") or []
            note = f"shares {missing} did not finish. " if missing else ""
            if load.get("more_client_hosts_needed"):
                bound = ", ".join(map(str, load.get("client_bound_shares") or ()))
                note += f"Client-bound on {bound}: the load needed more client hosts."
            cells = [f"<td>{_e(label)}</td>"] if len(runs) > 1 else []
            cells += [
                f'<td><span class="id">{_e(load.get("load"))}</span></td>',
                f"<td>{_e(shares)}</td>",
                _cell(metrics, "requests"),
                _cell(metrics, "output_tok_per_s"),
                _cell(metrics, "ttft_ms", "p50"),
                _cell(metrics, "ttft_ms", "p90"),
                _cell(metrics, "e2e_ms", "p90"),
                f'<td class="{"fail" if note else ""}">{_e(note or "-")}</td>',
            ]
            rows.append(f"<tr>{''.join(cells)}</tr>")
    if not rows:
        return ""
    head = ["run"] if len(runs) > 1 else []
    head += ["load", "shares", "requests", "out tok/s", "TTFT p50 ms", "TTFT p90 ms"]
    head += ["e2e p90 ms", "client self-check"]
    header = "".join(f"<th>{_e(h)}</th>" for h in head)
    return (
        '<h2 id="split">Split loads</h2>'
        '<p class="muted">Each load split over client workers, merged: latencies are '
        "percentiles of all its shares' requests together (never averaged), throughput over "
        "its rounds, each as long as its slowest share's.</p>"
        f"<table><thead><tr>{header}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )
