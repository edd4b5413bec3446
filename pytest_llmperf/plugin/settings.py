"""The run's settings, read once from the options and ini values (`options`) and checked:
a bad value is a usage error that names the option it came from."""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from pytest_llmperf.engines import check_engine_name
from pytest_llmperf.errors import LLMPerfUsageError
from pytest_llmperf.hardware.gpus import parse_gpus
from pytest_llmperf.measure.server.scrape import DEFAULT_INTERVAL_S
from pytest_llmperf.plugin.gate import Gate, Rounds
from pytest_llmperf.plugin.locations import check_folder_path
from pytest_llmperf.plugin.options import DEFAULT_REQUEST_TIMEOUT_S
from pytest_llmperf.plugin.progress import PROGRESS_MODES, ProgressMode
from pytest_llmperf.suite.shard import parse_shard


@dataclass(frozen=True)
class Settings:
    """The llmperf options of one run, checked."""

    engine: str
    model: str
    gpus: tuple[int, ...] | None
    thresholds_dir: Path
    results_dir: Path
    update_thresholds: bool
    threshold_margin: float
    hardware: str | None
    dataset: Path | None
    #: `--llmperf-rounds`: a number, "auto", or None (each test's own).
    rounds: Rounds | None
    isolate: bool = False
    lease_timeout_s: float = 3600.0
    engine_start_timeout_s: float = 600.0
    request_timeout_s: float = 1800.0
    test_timeout_s: float | None = None
    #: Settings every engine that accepts them receives (server URL, key variable).
    engine_options: tuple[tuple[str, str | float], ...] = ()
    #: Seconds between reads of a server's metrics (`measure.server`); 0: none.
    metrics_interval_s: float = DEFAULT_INTERVAL_S
    #: `--llmperf-compare`: the baseline run as given, and the tolerances as written.
    compare_base: str | None = None
    tolerances: tuple[str, ...] = ()
    #: Compare against a baseline of another engine, model or hardware.
    allow_mismatch: bool = False
    responses: bool = False
    dry_run: bool = False
    limit: int | None = None
    #: Where `model` and `dataset` came from ("--model", "ini option llmperf_model"), for
    #: the messages about them.
    model_source: str = "--model"
    dataset_source: str = "--llmperf-dataset"
    results_source: str = "--llmperf-results-dir"
    gpus_source: str = "--gpus"
    #: `--llmperf-shard K/N`: (K, N), or None for every test.
    shard: tuple[int, int] | None = None
    #: `--llmperf-progress`: the live status line (`plugin.progress.progress_wanted`).
    progress: ProgressMode = "auto"
    #: How tests are judged and how long auto rounds go on (`plugin.gate`).
    gate: Gate = field(default_factory=Gate)


_FLAGS = {
    "llmperf_engine": "--engine",
    "llmperf_model": "--model",
    "llmperf_gpus": "--gpus",
    "llmperf_base_url": "--base-url",
    "llmperf_api_key_env": "--api-key-env",
}

#: Longest a timeout may be: 30 days. Past it no wait is meant, and the clock calls behind the
#: waits (`threading.Event.wait`, `time.sleep`) overflow on the largest floats and infinity.
MAX_TIMEOUT_S = 30 * 24 * 3600.0

#: What `--llmperf-hardware` may be: a slug as `thresholds.hardware_slug` makes. It names a
#: folder under the thresholds folder, so a path ("../x") must never get through.
_HARDWARE_KEY = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _flag(name: str) -> str:
    return _FLAGS.get(name, "--" + name.replace("_", "-"))


def _get(config: pytest.Config, name: str) -> tuple[str, str]:
    """An option's value and where it came from (for error messages).

    An empty value on the command line is an error rather than the default: it is
    usually an unset shell variable (`--model "$MODEL"`), and silently falling back to
    the default would measure something the user did not ask for. An empty ini value
    means the default, as the ini defaults are written.
    """
    value = config.getoption(name)
    if value is not None:
        _check_not_empty(str(value), _flag(name))
        return str(value), _flag(name)
    return str(config.getini(name)), f"ini option {name}"


#: An xdist worker's own GPU set, in place of `--gpus`, set in its `--tx` spec
#: (`--tx ssh=gpu2//env:LLMPERF_GPUS=0,1`): hosts differ in their GPUs, and the command
#: line is the same for every worker.
GPUS_ENV = "LLMPERF_GPUS"


def _gpus(config: pytest.Config) -> tuple[str, str]:
    """`--gpus` (or its ini twin) and where it came from; in an xdist worker, its host's
    `LLMPERF_GPUS` instead where set (the controller runs no test: it has none)."""
    workerinput = getattr(config, "workerinput", None)
    own = os.environ.get(GPUS_ENV)
    if workerinput is None or own is None:
        return _get(config, "llmperf_gpus")
    source = f"{GPUS_ENV} in xdist worker {workerinput['workerid']}'s environment"
    _check_not_empty(own, source)
    return own, source


def _check_not_empty(value: str, flag: str) -> None:
    if not value.strip():
        raise LLMPerfUsageError(f"{flag}: empty value (leave the option out for the default)")


def _optional_text(config: pytest.Config, name: str) -> str | None:
    """A command-line-only text option, None when left out; empty is an error."""
    value = config.getoption(name)
    if value is None:
        return None
    _check_not_empty(str(value), _flag(name))
    return str(value)


def check_base_url(url: str, source: str) -> str:
    """An http(s) server address without credentials: keys go in the key variable only,
    since the URL is written to every results file."""
    what = f"{source}: {url!r} is not a server URL (expected e.g. http://127.0.0.1:8000)"
    if not url.isascii() or any(c.isspace() for c in url):
        raise LLMPerfUsageError(f"{what}: only ASCII without spaces is allowed")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  # raises ValueError for a port that is not a number in range
    except ValueError as exc:
        raise LLMPerfUsageError(f"{what}: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise LLMPerfUsageError(f"{what}: it needs http:// or https:// and a host")
    if parts.username is not None or parts.password is not None:
        raise LLMPerfUsageError(
            f"{source}: the URL must not hold credentials; put the API key in an environment "
            "variable and name it with --api-key-env"
        )
    return url


def check_env_name(name: str, source: str) -> str:
    """The name of the variable holding the API key; a key given in its place is refused
    without being repeated in the message."""
    if not _ENV_NAME.match(name):
        raise LLMPerfUsageError(
            f"{source}: not an environment variable name (letters, digits and _, not starting "
            "with a digit); give the NAME of the variable that holds the key, never the key"
        )
    return name


def check_hardware_key(key: str) -> str:
    if not _HARDWARE_KEY.match(key):
        raise LLMPerfUsageError(
            f"--llmperf-hardware: {key!r} is not a hardware key (lower-case letters, digits "
            "and '-', e.g. 'cpu' or 'h100-80gb-hbm3')"
        )
    return key


def _folder(config: pytest.Config, name: str) -> tuple[Path, str]:
    """A folder option under rootdir, and where it came from; a file in its place or on
    the way to it is an error now, not a failed write after the measurements (or
    thresholds silently off)."""
    text, source = _get(config, name)
    path = config.rootpath / text
    check_folder_path(path, source, text)
    return path, source


def read_settings(config: pytest.Config) -> Settings:
    engine, engine_src = _get(config, "llmperf_engine")
    check_engine_name(engine, engine_src)
    model, model_src = _get(config, "llmperf_model")
    gpus_text, gpus_src = _gpus(config)
    margin_text, margin_src = _get(config, "llmperf_threshold_margin")
    try:
        margin = float(margin_text)
    except ValueError:
        raise LLMPerfUsageError(f"{margin_src}: {margin_text!r} is not a number") from None
    if not 0 <= margin < 1:
        raise LLMPerfUsageError(f"{margin_src}: margin must be in [0, 1), got {margin_text}")
    rounds = _rounds(config)
    limit = config.getoption("llmperf_limit")
    if limit is not None and limit < 1:
        raise LLMPerfUsageError(f"--llmperf-limit: must be at least 1, got {limit}")
    dataset_text, dataset_src = _get(config, "llmperf_dataset")
    hardware = _optional_text(config, "llmperf_hardware")
    base_url, base_url_src = _get(config, "llmperf_base_url")
    if base_url:
        check_base_url(base_url, base_url_src)
    api_key_env, api_key_env_src = _get(config, "llmperf_api_key_env")
    if api_key_env:
        check_env_name(api_key_env, api_key_env_src)
    metrics_url, metrics_url_src = _get(config, "llmperf_metrics_url")
    if metrics_url:
        check_base_url(metrics_url, metrics_url_src)
    thresholds_dir, _ = _folder(config, "llmperf_thresholds_dir")
    results_dir, results_src = _folder(config, "llmperf_results_dir")
    return Settings(
        engine=engine,
        model=model,
        gpus=parse_gpus(gpus_text, gpus_src),
        thresholds_dir=thresholds_dir,
        results_dir=results_dir,
        update_thresholds=bool(config.getoption("llmperf_update_thresholds")),
        threshold_margin=margin,
        hardware=check_hardware_key(hardware) if hardware is not None else None,
        dataset=(
            Path(dataset_text) if Path(dataset_text).is_absolute() else Path.cwd() / dataset_text
        )
        if dataset_text
        else None,
        rounds=rounds,
        isolate=bool(config.getoption("llmperf_isolate")),
        lease_timeout_s=_positive(config, "llmperf_lease_timeout"),
        engine_start_timeout_s=_positive(config, "llmperf_engine_start_timeout"),
        request_timeout_s=_positive(config, "llmperf_request_timeout", DEFAULT_REQUEST_TIMEOUT_S),
        test_timeout_s=_test_timeout(config),
        compare_base=_optional_text(config, "llmperf_compare"),
        tolerances=tuple(config.getoption("llmperf_tolerance") or ()),
        allow_mismatch=_allow_mismatch(config),
        responses=bool(config.getoption("llmperf_responses")),
        dry_run=bool(config.getoption("llmperf_dry_run")),
        limit=limit,
        model_source=model_src,
        dataset_source=dataset_src,
        results_source=results_src,
        gpus_source=gpus_src,
        shard=_shard(config),
        progress=_progress_mode(config),
        gate=_gate(config),
        metrics_interval_s=_metrics_interval(config),
        engine_options=tuple(
            (key, value)
            for key, value in (
                ("base_url", base_url),
                ("api_key_env", api_key_env),
                ("metrics_url", metrics_url),
                # Given on the command line, the request bound reaches client engines too.
                ("request_timeout_s", _given(config, "llmperf_request_timeout")),
            )
            if value
        ),
    )


def _metrics_interval(config: pytest.Config) -> float:
    """Seconds between reads of server metrics: 0 (none) or a positive number."""
    value, source = _given_or_ini(config, "llmperf_metrics_interval", "--llmperf-metrics-interval")
    if value is None:
        return DEFAULT_INTERVAL_S
    if value == 0:
        return 0.0
    if not 0.01 <= value <= 3600:  # faster than 100 reads a second would load the server
        raise LLMPerfUsageError(f"{source}: must be 0 or in [0.01, 3600] seconds, got {value:g}")
    return value


def _shard(config: pytest.Config) -> tuple[int, int] | None:
    text = _optional_text(config, "llmperf_shard")
    return parse_shard(text) if text is not None else None


def _progress_mode(config: pytest.Config) -> ProgressMode:
    # The command line's choices are argparse's; the ini value is checked here.
    text, source = _get(config, "llmperf_progress")
    mode = text.strip().lower() or "auto"
    if mode not in PROGRESS_MODES:
        raise LLMPerfUsageError(f"{source}: {text!r} is not one of {', '.join(PROGRESS_MODES)}")
    return mode


_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0", "")


def _allow_mismatch(config: pytest.Config) -> bool:
    """`--llmperf-allow-mismatch`, else its ini twin, a boolean as ini files write one."""
    if config.getoption("llmperf_allow_mismatch"):
        return True
    text = str(config.getini("llmperf_allow_mismatch"))
    if text.strip().lower() not in _TRUE + _FALSE:
        raise LLMPerfUsageError(f"ini option llmperf_allow_mismatch: {text!r} is not true or false")
    return text.strip().lower() in _TRUE


def _given(config: pytest.Config, name: str) -> float | None:
    """The option's value if the command line gave it, else None."""
    value = config.getoption(name)
    return None if value is None else _positive(config, name)


def _test_timeout(config: pytest.Config) -> float | None:
    value = config.getoption("llmperf_test_timeout")
    source = "--llmperf-test-timeout"
    if value is None:
        text = str(config.getini("llmperf_test_timeout"))
        if not text:
            return None
        source = "ini option llmperf_test_timeout"
        try:
            value = float(text)
        except ValueError:
            raise LLMPerfUsageError(f"{source}: {text!r} is not a number of seconds") from None
    return _bounded_seconds(source, float(value))


def _positive(config: pytest.Config, name: str, default: float = 0.0) -> float:
    """A positive number of seconds from option `name`; `default` when it is not given."""
    given = config.getoption(name)
    return _bounded_seconds(_flag(name), float(given) if given is not None else default)


def _bounded_seconds(source: str, value: float) -> float:
    if not 0 < value <= MAX_TIMEOUT_S:
        raise LLMPerfUsageError(
            f"{source}: must be a positive number of seconds, at most "
            f"{MAX_TIMEOUT_S:.0f} (30 days), got {value}"
        )
    return value


def describe_settings(settings: Settings) -> dict[str, Any]:
    return {
        "engine": settings.engine,
        "model": settings.model,
        "gpus": list(settings.gpus) if settings.gpus is not None else None,
        "thresholds_dir": str(settings.thresholds_dir),
        "results_dir": str(settings.results_dir),
        "update_thresholds": settings.update_thresholds,
        "threshold_margin": settings.threshold_margin,
        "hardware": settings.hardware,
        "dataset": str(settings.dataset) if settings.dataset else None,
        "rounds": settings.rounds,
        "request_timeout_s": settings.request_timeout_s,
        "test_timeout_s": settings.test_timeout_s,
        "metrics_interval_s": settings.metrics_interval_s,
        "compare_base": settings.compare_base,
        "tolerances": list(settings.tolerances),
        "allow_mismatch": settings.allow_mismatch,
        "responses": settings.responses,
        "dry_run": settings.dry_run,
        "limit": settings.limit,
        "shard": list(settings.shard) if settings.shard is not None else None,
        "gate": {
            "alpha": settings.gate.alpha,
            "drift": settings.gate.drift,
            "strict": settings.gate.strict,
            "min_rounds": settings.gate.min_rounds,
            "max_rounds": settings.gate.max_rounds,
            "max_seconds": settings.gate.max_seconds,
        },
    }


def _rounds(config: pytest.Config) -> Rounds | None:
    """`--llmperf-rounds` (or its ini twin): a whole number of at least 1, or auto."""
    given = config.getoption("llmperf_rounds")
    text, source = (
        (str(given), "--llmperf-rounds")
        if given is not None
        else (
            str(config.getini("llmperf_rounds")),
            "ini option llmperf_rounds",
        )
    )
    text = text.strip()
    if not text and given is None:
        return None
    if text == "auto":
        return "auto"
    if not text.isdigit() or int(text) < 1:
        raise LLMPerfUsageError(
            f"{source}: {text!r}: expected a whole number of at least 1, or auto"
        )
    return int(text)


def _given_or_ini(config: pytest.Config, name: str, option: str) -> tuple[float | None, str]:
    """A number option's value (the command line's, else its ini twin's) and where it came
    from, for the error that names it; None when neither gives one."""
    given = config.getoption(name)
    if given is not None:
        return float(given), option
    text = str(config.getini(name)).strip()
    if not text:
        return None, f"ini option {name}"
    try:
        return float(text), f"ini option {name}"
    except ValueError:
        raise LLMPerfUsageError(f"ini option {name}: {text!r} is not a number") from None


def _gate(config: pytest.Config) -> Gate:
    """The verdict options, checked."""
    default = Gate()
    alpha, alpha_source = _given_or_ini(config, "llmperf_alpha", "--llmperf-alpha")
    if alpha is not None and not 0 < alpha < 0.5:
        raise LLMPerfUsageError(f"{alpha_source}: must be in (0, 0.5), got {alpha}")
    drift, drift_source = _given_or_ini(config, "llmperf_drift", "--llmperf-drift")
    if drift is not None and not (0 <= drift < 1 and math.isfinite(drift)):
        raise LLMPerfUsageError(f"{drift_source}: must be in [0, 1), got {drift}")
    low = config.getoption("llmperf_min_rounds") or default.min_rounds
    high = config.getoption("llmperf_max_rounds") or default.max_rounds
    if low < 2 or high < low:
        raise LLMPerfUsageError(
            f"--llmperf-min-rounds {low} / --llmperf-max-rounds {high}: need 2 <= min <= max "
            "(a verdict needs two rounds' spread)"
        )
    seconds = config.getoption("llmperf_max_seconds")
    if seconds is not None:
        seconds = _bounded_seconds("--llmperf-max-seconds", seconds)
    strict_ini = str(config.getini("llmperf_strict")).strip().lower()
    if strict_ini not in _TRUE + _FALSE:
        raise LLMPerfUsageError(f"ini option llmperf_strict: {strict_ini!r} is not true or false")
    return Gate(
        alpha=default.alpha if alpha is None else alpha,
        drift=default.drift if drift is None else drift,
        strict=bool(config.getoption("llmperf_strict")) or strict_ini in _TRUE,
        min_rounds=low,
        max_rounds=high,
        max_seconds=default.max_seconds if seconds is None else seconds,
    )
