"""A load split over client workers (`suite.split`), merged into one measurement.

Each share of a split load is a test of its own with its own record; the controller joins
them at the run's end into one entry of `summary.json`'s `split_loads`:

- latency distributions (TTFT, TPOT, ITL, e2e, queue) from the merged per-request records of
  every share, by `AggregateMetrics.from_records`, the same code as one test's: percentiles
  of the merged samples, never an average of the shares' percentiles, which is no percentile
  of anything;
- throughput over the load's own time: the shares start each measured round together (the
  barrier), so round r of the load lasts as long as its slowest share's round r, and the
  load's duration is the sum of those;
- the client self-check of every share: a share whose client was the bottleneck
  (`client_bound`) means the load needed more client hosts than it had.

A load whose shares did not all finish is still merged, and says which are missing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pytest_llmperf.measure.metrics import AggregateMetrics, RequestRecord
from pytest_llmperf.results.readback.hosts import host_labels
from pytest_llmperf.results.readback.rebuild import read_request
from pytest_llmperf.results.record import TestRecord
from pytest_llmperf.results.writer import read_records


def merged_loads(tests: Sequence[TestRecord], run_dir: Path) -> list[dict[str, Any]]:
    """One entry per split load among `tests`, the tests of the run in `run_dir`."""
    loads: dict[str, list[tuple[int, int, TestRecord]]] = {}
    for test in tests:
        if test.split:  # (index, clients, record), by the share's own word
            share = (int(test.split["index"]), int(test.split["clients"]), test)
            loads.setdefault(str(test.split["load"]), []).append(share)
    if not loads:
        return []
    by_test: dict[str, list[RequestRecord]] = {}
    for row in read_records(run_dir, "requests"):
        by_test.setdefault(str(row.get("test_id")), []).append(read_request(row))
    labels = host_labels(tests)
    return [
        _merged(load, sorted(shares, key=lambda s: s[0]), by_test, labels)
        for load, shares in loads.items()
    ]


def _merged(
    load: str,
    shares: Sequence[tuple[int, int, TestRecord]],
    by_test: Mapping[str, Sequence[RequestRecord]],
    labels: Mapping[str, str],
) -> dict[str, Any]:
    clients = max(n for _, n, _ in shares)
    tests = [t for _, _, t in shares]
    records = [r for t in tests for r in by_test.get(t.test_id, ())]
    durations = _round_durations(tests)
    metrics = AggregateMetrics.from_records(records, durations).as_dict()
    bound = [t.test_id for t in tests if t.metric("client_bound")]
    return {
        "load": load,
        "clients": clients,
        "shares": [
            {
                "test_id": t.test_id,
                "index": index,
                "worker": t.worker,
                "host": labels.get(t.test_id),
                "requests": len(by_test.get(t.test_id, ())),
                "client_bound": t.metric("client_bound"),
            }
            for index, _, t in shares
        ],
        "missing_shares": sorted(set(range(1, clients + 1)) - {i for i, _, _ in shares}),
        "round_durations_s": durations,
        "metrics": metrics,
        "client_bound_shares": bound,
        "more_client_hosts_needed": bool(bound),
    }


def _round_durations(shares: Sequence[TestRecord]) -> list[float]:
    """Round r of the load: its slowest share's round r (they started together)."""
    per_share = [
        [float(d) for d in t.samples.get("duration_s", ()) if d is not None] for t in shares
    ]
    rounds = max((len(d) for d in per_share), default=0)
    return [max(d[r] for d in per_share if r < len(d)) for r in range(rounds)]


def load_lines(loads: Sequence[Mapping[str, Any]]) -> list[str]:
    """The terminal summary's line per split load (and what its client self-check says)."""
    lines = []
    for load in loads:
        m = load["metrics"]
        ttft, e2e = m["ttft_ms"], m["e2e_ms"]
        hosts = sorted({str(s["host"]) for s in load["shares"]})
        line = (
            f"split load {load['load']}: {len(load['shares'])} of {load['clients']} client(s) "
            f"on {', '.join(hosts)}; {m['requests']} requests merged, "
            f"{m['output_tok_per_s']:.1f} out tok/s, TTFT p50 {_ms(ttft['p50'])} "
            f"p90 {_ms(ttft['p90'])}, e2e p90 {_ms(e2e['p90'])}"
        )
        if load["missing_shares"]:
            line += f"; shares {load['missing_shares']} did not finish"
        if load["more_client_hosts_needed"]:
            line += (
                f"; client-bound on {', '.join(load['client_bound_shares'])}: the load needed "
                "more client hosts (split it over more workers)"
            )
        lines.append(line)
    return lines


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} ms"
