"""Command-line options and their ini twins, defined once.

Each group is a function taking `addoption`, so that the `llmperf` CLI can reuse
them (as pytest-benchmark does with its `add_*_options`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from pytest_llmperf.measure.server.scrape import DEFAULT_INTERVAL_S
from pytest_llmperf.plugin.gate import MAX_ROUNDS, MAX_SECONDS, MIN_ROUNDS
from pytest_llmperf.plugin.progress import DEFAULT_DELAY_S, PROGRESS_MODES
from pytest_llmperf.results.baseline import DEFAULT_DRIFT
from pytest_llmperf.thresholds.check import DEFAULT_ALPHA

AddOption = Callable[..., None]

#: --llmperf-request-timeout when not given: an isolated engine's silence bound.
DEFAULT_REQUEST_TIMEOUT_S = 1800.0

#: (ini name, help, default) for settings people keep in pyproject.toml.
INI_OPTIONS: list[tuple[str, str, str]] = [
    ("llmperf_engine", "engine name (like --engine)", "hf"),
    ("llmperf_model", "model path or 'tiny' (like --model)", "tiny"),
    ("llmperf_gpus", "GPU indices (like --gpus)", ""),
    ("llmperf_thresholds_dir", "thresholds folder (like --llmperf-thresholds-dir)", "thresholds"),
    ("llmperf_results_dir", "results folder (like --llmperf-results-dir)", "results"),
    ("llmperf_threshold_margin", "margin for --llmperf-update-thresholds", "0.25"),
    ("llmperf_base_url", "server URL for --engine openai (like --base-url)", ""),
    ("llmperf_api_key_env", "variable holding the API key (like --api-key-env)", ""),
    ("llmperf_metrics_url", "server's Prometheus endpoint (like --llmperf-metrics-url)", ""),
    (
        "llmperf_metrics_interval",
        "seconds between reads of server metrics, 0 for none (like --llmperf-metrics-interval)",
        f"{DEFAULT_INTERVAL_S:g}",
    ),
    ("llmperf_dataset", "JSONL dataset for dataset suites (like --llmperf-dataset)", ""),
    ("llmperf_test_timeout", "bound on each test, in seconds (like --llmperf-test-timeout)", ""),
    ("llmperf_progress", "live status line while a test measures: auto, on or off", "auto"),
    ("llmperf_rounds", "measured rounds per test, N or auto (like --llmperf-rounds)", ""),
    ("llmperf_strict", "fail on inconclusive verdicts too: true or false", "false"),
    ("llmperf_alpha", "error rate of one test's verdicts (like --llmperf-alpha)", ""),
    ("llmperf_drift", "least drift between runs against a baseline (like --llmperf-drift)", ""),
    (
        "llmperf_allow_mismatch",
        "compare against a baseline of another engine, model or hardware "
        "(like --llmperf-allow-mismatch: true or false)",
        "false",
    ),
]


def add_engine_options(addoption: AddOption) -> None:
    addoption(
        "--engine",
        dest="llmperf_engine",
        metavar="NAME",
        default=None,
        help="inference engine to benchmark (ini: llmperf_engine). Default: hf.",
    )
    addoption(
        "--model",
        dest="llmperf_model",
        metavar="PATH_OR_NAME",
        default=None,
        help="model directory, or 'tiny' for the built-in model built locally "
        "(ini: llmperf_model). Default: tiny.",
    )
    addoption(
        "--gpus",
        dest="llmperf_gpus",
        metavar="LIST",
        default=None,
        help="GPUs the run may use, e.g. '0,1', or 'cpu' (ini: llmperf_gpus). "
        "Default: every visible GPU, or the CPU when there is none.",
    )


def add_server_options(addoption: AddOption) -> None:
    addoption(
        "--base-url",
        dest="llmperf_base_url",
        metavar="URL",
        default=None,
        help="OpenAI-compatible server for --engine openai, e.g. http://127.0.0.1:8000 "
        "(ini: llmperf_base_url). Default: http://127.0.0.1:8000.",
    )
    addoption(
        "--api-key-env",
        dest="llmperf_api_key_env",
        metavar="VAR",
        default=None,
        help="environment variable holding the server's API key; keys are never "
        "taken from the command line (ini: llmperf_api_key_env). "
        "Default: OPENAI_API_KEY.",
    )
    addoption(
        "--llmperf-metrics-url",
        dest="llmperf_metrics_url",
        metavar="URL",
        default=None,
        help="the server's Prometheus endpoint for --engine openai, read during the "
        "measured rounds, e.g. http://127.0.0.1:8000/metrics (managed servers: their own) "
        "(ini: llmperf_metrics_url). Default: none.",
    )
    addoption(
        "--llmperf-metrics-interval",
        dest="llmperf_metrics_interval",
        metavar="SECONDS",
        type=float,
        default=None,
        help="seconds between reads of the server's metrics; 0 reads none "
        f"(ini: llmperf_metrics_interval). Default: {DEFAULT_INTERVAL_S:g}.",
    )


def add_threshold_options(addoption: AddOption) -> None:
    addoption(
        "--llmperf-thresholds-dir",
        dest="llmperf_thresholds_dir",
        metavar="DIR",
        default=None,
        help="folder of <hardware>/<engine>.yaml threshold files "
        "(ini: llmperf_thresholds_dir). Default: thresholds.",
    )
    addoption(
        "--llmperf-update-thresholds",
        dest="llmperf_update_thresholds",
        action="store_true",
        default=False,
        help="write bounds from this run into the thresholds file instead of "
        "failing on them, and say which bounds get looser. Default: off.",
    )
    addoption(
        "--llmperf-threshold-margin",
        dest="llmperf_threshold_margin",
        metavar="FRACTION",
        default=None,
        help="headroom the update flag leaves, e.g. 0.25 for 25%% "
        "(ini: llmperf_threshold_margin). Default: 0.25.",
    )
    addoption(
        "--llmperf-hardware",
        dest="llmperf_hardware",
        metavar="KEY",
        default=None,
        help="hardware key that picks the thresholds folder, e.g. 'cpu' or 'h100'. "
        "Default: from the first GPU's name, or cpu.",
    )


def add_run_options(addoption: AddOption) -> None:
    addoption(
        "--llmperf-results-dir",
        dest="llmperf_results_dir",
        metavar="DIR",
        default=None,
        help="where runs land, one folder per run (ini: llmperf_results_dir). Default: results.",
    )
    addoption(
        "--llmperf-dataset",
        dest="llmperf_dataset",
        metavar="JSONL",
        default=None,
        help="JSONL dataset for dataset-driven suites (ini: llmperf_dataset). "
        "Default: the suite's own.",
    )
    addoption(
        "--llmperf-isolate",
        dest="llmperf_isolate",
        action="store_true",
        default=False,
        help="run every engine in a child process of its own (vllm always is). Default: off.",
    )
    addoption(
        "--llmperf-lease-timeout",
        dest="llmperf_lease_timeout",
        metavar="SECONDS",
        type=float,
        default=3600.0,
        help="bound on waiting for free, clean GPUs (other workers or runs may hold them). "
        "Default: 3600.",
    )
    addoption(
        "--llmperf-engine-start-timeout",
        dest="llmperf_engine_start_timeout",
        metavar="SECONDS",
        type=float,
        default=600.0,
        help="bound on an isolated engine's start. Default: 600.",
    )
    addoption(
        "--llmperf-request-timeout",
        dest="llmperf_request_timeout",
        metavar="SECONDS",
        type=float,
        default=None,  # None: 1800 for isolated engines, the client's own for clients
        help="bound on a request: an isolated engine's silence while generating, past "
        "which its process group is ended; given, also each request's time on a client "
        "engine (openai, vllm-server, llamacpp-server), past which a managed server is "
        "ended as hung. Timed-out requests are recorded failures and the test fails. "
        "Default: 1800 (clients: their request_timeout_s setting, 600).",
    )
    addoption(
        "--llmperf-test-timeout",
        dest="llmperf_test_timeout",
        metavar="SECONDS",
        type=float,
        default=None,
        help="bound on each test (the llmperf_timeout(seconds) marker sets one test's): "
        "past it the engine's processes are ended and the test fails; engines that run "
        "in process are isolated so that they can be (ini: llmperf_test_timeout). "
        "Default: none.",
    )
    addoption(
        "--llmperf-dry-run",
        dest="llmperf_dry_run",
        action="store_true",
        default=False,
        help="collect, build and tokenize every test's requests and check the files, but "
        "start no engine and measure nothing (each test is skipped with what it would "
        "send). Default: off.",
    )
    addoption(
        "--llmperf-limit",
        dest="llmperf_limit",
        metavar="N",
        type=int,
        default=None,
        help="send at most the first N requests (or questions) of each test's workload. "
        "Default: all.",
    )
    addoption(
        "--llmperf-rounds",
        dest="llmperf_rounds",
        metavar="N|auto",
        default=None,
        help="measured rounds per test, overriding each test's own; auto: from "
        "--llmperf-min-rounds on, until every judged metric is decided or a budget is spent "
        "(ini: llmperf_rounds). Default: the test's.",
    )
    addoption(
        "--llmperf-progress",
        dest="llmperf_progress",
        choices=PROGRESS_MODES,
        default=None,
        help="a live status line while a test measures (round k of n, throughput so far, "
        f"its interval), shown once the test has run {DEFAULT_DELAY_S:g} s and erased before "
        "its outcome; auto: only on a terminal, not under -q, -s, xdist or CI (CI set) "
        "(ini: llmperf_progress). Default: auto.",
    )
    addoption(
        "--llmperf-shard",
        dest="llmperf_shard",
        metavar="K/N",
        default=None,
        help="run shard K of N (1 to N): the selected tests split by engine configuration, "
        "so each configuration loads in one shard only; join the shards' runs with "
        "`llmperf merge`. Default: every test.",
    )


def add_verdict_options(addoption: AddOption) -> None:
    """How bounds and baselines are judged (`thresholds.check`, `results.baseline`) and how
    long `rounds="auto"` measures (`measure.stats.should_continue`)."""
    addoption(
        "--llmperf-alpha",
        dest="llmperf_alpha",
        metavar="P",
        type=float,
        default=None,
        help="error rate of one test's verdicts: the chance that an unchanged setup is "
        f"judged missed or regressed on any of its metrics (ini: llmperf_alpha). Default: "
        f"{DEFAULT_ALPHA:g}.",
    )
    addoption(
        "--llmperf-drift",
        dest="llmperf_drift",
        metavar="FRACTION",
        type=float,
        default=None,
        help="the least drift between runs assumed against a baseline (the standard "
        "deviation of a run's mean, e.g. 0.02: about 2%%); pooled baselines (latest:N) "
        f"measure it (ini: llmperf_drift). Default: {DEFAULT_DRIFT:g}.",
    )
    addoption(
        "--llmperf-strict",
        dest="llmperf_strict",
        action="store_true",
        default=None,
        help="fail tests whose bounds or baseline stayed inconclusive, not only those that "
        "missed or regressed (ini: llmperf_strict). Default: off.",
    )
    addoption(
        "--llmperf-min-rounds",
        dest="llmperf_min_rounds",
        metavar="N",
        type=int,
        default=None,
        help=f"rounds=auto: measured rounds before the first verdict. Default: {MIN_ROUNDS}.",
    )
    addoption(
        "--llmperf-max-rounds",
        dest="llmperf_max_rounds",
        metavar="N",
        type=int,
        default=None,
        help=f"rounds=auto: most measured rounds a test takes. Default: {MAX_ROUNDS}.",
    )
    addoption(
        "--llmperf-max-seconds",
        dest="llmperf_max_seconds",
        metavar="S",
        type=float,
        default=None,
        help="rounds=auto: most seconds of measured rounds a test takes (no round is started "
        f"that would end past it). Default: {MAX_SECONDS:g}.",
    )


def add_compare_options(addoption: AddOption) -> None:
    addoption(
        "--llmperf-compare",
        dest="llmperf_compare",
        metavar="RUN",
        default=None,
        help="baseline run (folder, summary.json, run id under the results folder, or "
        "latest[~N]), several joined by commas, or latest:N (the newest N, pooled): each "
        "test fails when a metric regressed against it beyond tolerance, with confidence "
        "(see --llmperf-alpha). Default: none.",
    )
    addoption(
        "--llmperf-tolerance",
        dest="llmperf_tolerance",
        metavar="METRIC:CHANGE",
        action="append",
        default=[],
        help="allowed worsening against the baseline, e.g. output_tok_per_s:-5%%, "
        "ttft_ms.p90:+10%%, accuracy:-0.02; repeatable; before the defaults of "
        "pytest_llmperf.results.compare.DEFAULT_TOLERANCES. Default: those defaults.",
    )
    addoption(
        "--llmperf-allow-mismatch",
        dest="llmperf_allow_mismatch",
        action="store_true",
        default=None,
        help="compare against a --llmperf-compare baseline measured on another engine, "
        "model or hardware (refused otherwise: its numbers compare setups, not a "
        "regression) (ini: llmperf_allow_mismatch). Default: off.",
    )
    addoption(
        "--llmperf-responses",
        dest="llmperf_responses",
        action="store_true",
        default=False,
        help="also write each test's prompts and responses to "
        "responses/<test>.parquet in the run folder (needs the report extra). Default: off.",
    )


OPTION_GROUPS: tuple[Callable[[AddOption], None], ...] = (
    add_engine_options,
    add_server_options,
    add_threshold_options,
    add_run_options,
    add_verdict_options,
    add_compare_options,
)


def value_flags() -> tuple[str, ...]:
    """Our options that take a value (`--model`, `--llmperf-results-dir`, ...), as written
    on the command line; flags such as `--llmperf-dry-run` take none."""
    flags: list[str] = []

    def record(*names: str, **kwargs: Any) -> None:
        if kwargs.get("action") not in ("store_true", "store_false"):
            flags.extend(names)

    for group in OPTION_GROUPS:
        group(record)
    return tuple(flags)


def add_all_options(parser: pytest.Parser) -> None:
    group = parser.getgroup("llmperf", "LLM inference benchmarks (pytest-llmperf)")
    for add in OPTION_GROUPS:
        add(group.addoption)
    for name, help_text, default in INI_OPTIONS:
        parser.addini(name, help=f"{help_text}. Default: {default or 'none'}.", default=default)
