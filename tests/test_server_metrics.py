"""Server metrics: each server's Prometheus names read into ours, the series into per-test
metrics, the scraper's reads over HTTP, and the options.

The texts in tests/data/server_metrics/ are vLLM's as its CPU server printed it after four
requests (captured once), and llama.cpp's, SGLang's and TGI's written from their documented
names (only vLLM's server runs here). The live checks against the real vLLM CPU server are in
tests/test_vllm_server.py, beside the servers they share.
"""

from __future__ import annotations

import itertools
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from pytest_llmperf.measure.metrics import metric_specs
from pytest_llmperf.measure.server.names import QUANTITIES
from pytest_llmperf.measure.server.scrape import Sample, Scraper, parse
from pytest_llmperf.measure.server.summary import NULL_SERVER_METRICS, server_metrics
from pytest_llmperf.results.runs import open_run
from tests.instrument_server import InstrumentServer, Script
from tests.suite_run import make_project, run_project

DATA = Path(__file__).parent / "data" / "server_metrics"


def recorded(server: str) -> str:
    return (DATA / f"{server}.txt").read_text(encoding="utf-8")


@pytest.mark.parametrize(
    ("server", "expected"),
    [
        (
            "vllm",
            {
                "kv_cache_usage": 0.0,
                "running": 0.0,
                "waiting": 0.0,
                "preemptions": 0.0,
                "prefix_cache_hits": 0.0,
                "prefix_cache_queries": 324.0,
                # Five finish reasons, summed: the four requests stopped at their length.
                "requests": 4.0,
                "ttft_s_sum": 0.24991726875305176,
                "ttft_s_count": 4.0,
                # The per-request histogram, not the older per-token one.
                "tpot_s_sum": 0.01582405387072809,
                "tpot_s_count": 4.0,
            },
        ),
        ("llamacpp", {"kv_cache_usage": 0.25, "running": 2.0, "waiting": 3.0}),
        (
            "sglang",
            {
                "kv_cache_usage": 0.28,
                "running": 12.0,
                "waiting": 4.0,
                # Cached tokens from the device and the host, among all prompt tokens.
                "prefix_cache_hits": 6000.0,
                "prefix_cache_queries": 8000.0,
                "spec_accept_rate": 0.6,
                "requests": 40.0,
                "ttft_s_sum": 2.0,
                "ttft_s_count": 40.0,
                "tpot_s_sum": 40.0,
                "tpot_s_count": 4000.0,
            },
        ),
        (
            "tgi",
            {
                "running": 8.0,
                "waiting": 6.0,
                # `tgi_request_count`, a counter without `_total` in the text.
                "requests": 25.0,
                "tpot_s_sum": 0.75,
                "tpot_s_count": 25.0,
            },
        ),
    ],
)
def test_each_servers_names_are_read_into_ours(server: str, expected: dict[str, float]) -> None:
    values, kind = parse(recorded(server))
    assert kind == server
    assert values == expected


def test_the_older_vllm_names_are_read_where_the_newer_are_missing() -> None:
    text = recorded("vllm").replace("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc")
    text = text.replace(
        'vllm:gpu_cache_usage_perc{engine="0",model_name="/root/.cache/pytest-llmperf/models/'
        'tiny-v1"} 0.0',
        'vllm:gpu_cache_usage_perc{engine="0",model_name="m"} 0.5',
    )
    assert parse(text)[0]["kv_cache_usage"] == 0.5


def test_text_that_is_not_prometheus_is_refused() -> None:
    with pytest.raises(ValueError):
        parse("<html>not found</html>\n")


def reads(*values: dict[str, float]) -> list[Sample]:
    return [Sample(i * 0.5, 1.7e9 + i * 0.5, v) for i, v in enumerate(values)]


def test_the_series_becomes_peaks_means_and_deltas() -> None:
    first = {
        "kv_cache_usage": 0.0,
        "running": 0.0,
        "waiting": 0.0,
        "preemptions": 3.0,
        "prefix_cache_hits": 100.0,
        "prefix_cache_queries": 1000.0,
        "spec_accepted_tokens": 10.0,
        "spec_draft_tokens": 20.0,
        "requests": 50.0,
        "ttft_s_sum": 5.0,
        "ttft_s_count": 50.0,
        "tpot_s_sum": 1.0,
        "tpot_s_count": 50.0,
    }
    middle = {**first, "kv_cache_usage": 0.6, "running": 4.0, "waiting": 8.0}
    last = {
        **first,
        "kv_cache_usage": 0.2,
        "running": 2.0,
        "preemptions": 5.0,
        "prefix_cache_hits": 400.0,
        "prefix_cache_queries": 1400.0,
        "spec_accepted_tokens": 40.0,
        "spec_draft_tokens": 60.0,
        "requests": 66.0,
        "ttft_s_sum": 5.8,
        "ttft_s_count": 66.0,
        "tpot_s_sum": 1.32,
        "tpot_s_count": 66.0,
    }
    metrics = server_metrics(reads(first, middle, last))
    assert metrics == pytest.approx(
        {
            "server_kv_cache_usage_peak": 0.6,
            "server_kv_cache_usage_mean": 0.8 / 3,
            "server_running_peak": 4.0,
            "server_running_mean": 2.0,
            "server_waiting_peak": 8.0,
            "server_waiting_mean": 8 / 3,
            "server_preemptions": 2.0,
            "server_prefix_cache_hit_rate": 300 / 400,
            "server_spec_acceptance_rate": 30 / 40,
            "server_requests": 16.0,
            "server_ttft_ms_mean": 800 / 16,
            "server_tpot_ms_mean": 320 / 16,
        }
    )


def test_what_a_server_does_not_export_is_null_never_zero() -> None:
    text = recorded("llamacpp")
    metrics = server_metrics(reads(parse(text)[0], parse(text)[0]))
    assert metrics["server_running_peak"] == 2.0 and metrics["server_kv_cache_usage_mean"] == 0.25
    for name in ("preemptions", "prefix_cache_hit_rate", "requests", "ttft_ms_mean"):
        assert metrics[f"server_{name}"] is None, name
    # No reads at all (an endpoint that never answered): every one of them is null.
    assert server_metrics([]) == NULL_SERVER_METRICS
    assert set(NULL_SERVER_METRICS.values()) == {None}


def test_a_counter_that_went_down_and_no_prefix_lookups_are_null() -> None:
    before = {"requests": 80.0, "prefix_cache_hits": 0.0, "prefix_cache_queries": 10.0}
    after = {"requests": 3.0, "prefix_cache_hits": 0.0, "prefix_cache_queries": 10.0}
    metrics = server_metrics(reads(before, after))  # the server restarted between reads
    assert metrics["server_requests"] is None
    assert metrics["server_prefix_cache_hit_rate"] is None  # nothing was looked up
    # SGLang's acceptance gauge stands in for missing counters.
    gauge = server_metrics(reads({"spec_accept_rate": 0.5}, {"spec_accept_rate": 0.7}))
    assert gauge["server_spec_acceptance_rate"] == pytest.approx(0.6)


def test_every_server_metric_has_a_spec_thresholds_can_address() -> None:
    specs = metric_specs()
    for name in NULL_SERVER_METRICS:
        spec = specs[name]
        assert spec.defined_in == "pytest_llmperf.measure.server.summary", name
    assert specs["server_requests"].judged_exactly
    assert specs["server_kv_cache_usage_peak"].unit == "ratio"
    # The table names every quantity the summary reads.
    names = {q.name for q in QUANTITIES}
    assert {"kv_cache_usage", "running", "waiting", "requests", "ttft_s", "tpot_s"} <= names


class _Counting(BaseHTTPRequestHandler):
    """Prometheus text whose request counter goes up by one at each read."""

    reads = 0

    def do_GET(self) -> None:
        type(self).reads += 1
        body = (
            "# TYPE vllm:request_success_total counter\n"
            f'vllm:request_success_total{{finished_reason="length"}} {type(self).reads}\n'
            "# TYPE vllm:num_requests_running gauge\n"
            f"vllm:num_requests_running {type(self).reads % 3}\n"
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def counting_endpoint() -> Iterator[str]:
    _Counting.reads = 0
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Counting)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/metrics"
    finally:
        server.shutdown()
        server.server_close()


def test_the_scraper_reads_at_its_interval_from_start_to_stop(counting_endpoint: str) -> None:
    scraper = Scraper(counting_endpoint, interval_s=0.05)
    scraper.start()
    time.sleep(0.5)
    reads = scraper.stop()
    samples = reads.samples
    assert reads.server == "vllm" and reads.failed == 0
    # A read at start, about ten during the half second (the machine may be loaded), one at
    # the end: each read counted once, in order, with its time.
    assert 4 <= len(samples) <= 13
    assert [s.values["requests"] for s in samples] == list(range(1, len(samples) + 1))
    assert all(a.t_s < b.t_s for a, b in itertools.pairwise(samples))
    assert samples[0].t_s < 0.05 and samples[-1].t_s >= 0.5
    assert server_metrics(samples)["server_requests"] == len(samples) - 1


def test_an_endpoint_that_does_not_answer_gives_null_metrics() -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    scraper = Scraper(f"http://127.0.0.1:{port}/metrics", interval_s=0.05)
    scraper.start()
    reads = scraper.stop()
    assert reads.samples == [] and reads.server is None
    assert reads.failed >= 2 and reads.error is not None
    assert "Connection" in reads.error or "refused" in reads.error


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--llmperf-metrics-interval", "-1"], "--llmperf-metrics-interval: must be 0 or in"),
        (["--llmperf-metrics-url", "localhost:8000/metrics"], "--llmperf-metrics-url: "),
    ],
)
def test_bad_metrics_options_are_usage_errors(
    pytester: pytest.Pytester, args: list[str], message: str
) -> None:
    pytester.makepyfile(test_x="def test_x():\n    pass\n")
    result = pytester.runpytest(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*{message}*"])


SERVED = """
from pytest_llmperf import SyntheticWorkload


def test_served(llmperf):
    llmperf.measure(workload=SyntheticWorkload(num_requests=4, input_tokens=4, output_tokens=10),
                    rounds=2, warmup_rounds=1)
"""


def served(tmp_path: Path, script: Script) -> tuple[str, dict[str, Any], list[dict[str, Any]]]:
    """`--engine openai` against the instrument server, its /metrics read every 20 ms: the
    run's output, the test's metrics and the reads kept."""
    project = make_project(tmp_path, SERVED)
    with InstrumentServer(script) as server:
        out = run_project(
            project,
            "--engine",
            "openai",
            "--base-url",
            server.base_url,
            "--llmperf-metrics-url",
            f"{server.base_url}/metrics",
            "--llmperf-metrics-interval",
            "0.02",
        )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    run = open_run("latest", project / "results")
    (test,) = run.tests
    return out.stdout, dict(test.metrics), list(run.server_reads())


def test_a_client_of_a_server_reads_its_metrics_url(tmp_path: Path) -> None:
    stdout, metrics, reads = served(tmp_path, Script(delays_s=[0.05] * 10))
    # Counted from the first measured round (the warm-up's four are before it): eight.
    assert metrics["requests"] == metrics["server_requests"] == 8
    # Four at once, each half a second long: some read saw all four in flight.
    assert metrics["server_running_peak"] == 4
    # What this server does not export is null, never 0.
    for name in ("kv_cache_usage_peak", "waiting_peak", "ttft_ms_mean", "preemptions"):
        assert metrics[f"server_{name}"] is None, name
    assert {r["server"] for r in reads} == {"tgi"} and len(reads) >= 10
    assert all(r["test_id"] == "test_suite.py::test_served" for r in reads)
    assert "the server finished" not in stdout


def test_a_server_count_unlike_ours_is_a_warning(tmp_path: Path) -> None:
    stdout, metrics, _ = served(tmp_path, Script(delays_s=[0.02] * 5, counted_per_request=3))
    assert (metrics["requests"], metrics["server_requests"]) == (8, 24)
    assert (
        "warning: test_suite.py::test_served: the server finished 24 requests during the "
        "rounds, this test sent 8: another client shared the server"
    ) in " ".join(stdout.split()), stdout[-3000:]


def test_each_side_of_an_ab_reads_its_own_servers_metrics(tmp_path: Path) -> None:
    """Two servers' URLs as the sides of an A/B, `--llmperf-metrics-url` naming A's: B's
    side reads B's own /metrics, and each side's server counts that side's requests only."""
    with (
        InstrumentServer(Script(delays_s=[0.02] * 4)) as a,
        InstrumentServer(Script(delays_s=[0.02] * 4, counted_per_request=2)) as b,
    ):
        project = make_project(
            tmp_path,
            f"""
from pytest_llmperf import SyntheticWorkload


def test_ab(llmperf):
    work = SyntheticWorkload(num_requests=3, input_tokens=4, output_tokens=4)
    llmperf.compare("{a.base_url}", "{b.base_url}", work, rounds=2, warmup_rounds=1)
""",
        )
        out = run_project(
            project,
            "--engine",
            "openai",
            "--base-url",
            a.base_url,
            "--llmperf-metrics-url",
            f"{a.base_url}/metrics",
            "--llmperf-metrics-interval",
            "0.02",
        )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    (test,) = open_run("latest", project / "results").tests
    assert test.ab is not None
    urls = {side: test.ab[side]["engine_config"]["settings"]["metrics_url"] for side in "ab"}
    assert urls == {"a": f"{a.base_url}/metrics", "b": f"{b.base_url}/metrics"}
    # Two measured rounds of three requests a side; B's server counts each request twice.
    assert test.metric("a.requests") == test.metric("b.requests") == 6
    assert test.metric("a.server_requests") == 6 and test.metric("b.server_requests") == 12
