"""Bad input: a usage error that says what was wrong and where, never a traceback."""

from __future__ import annotations

import pytest

SMOKE = """
import pytest
from pytest_llmperf import SyntheticWorkload
def test_x(llmperf):
    llmperf.measure(workload=SyntheticWorkload(num_requests=1, input_tokens=4, output_tokens=2), rounds=1)
"""


def assert_usage_error(result: pytest.RunResult, *patterns: str) -> None:
    assert result.ret == pytest.ExitCode.USAGE_ERROR, result.stdout.str() + result.stderr.str()
    result.stderr.fnmatch_lines(list(patterns))
    assert "Traceback" not in result.stdout.str() + result.stderr.str()


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makepyfile(test_x=SMOKE)
    return pytester


def test_unknown_engine_suggests_names(project: pytest.Pytester) -> None:
    assert_usage_error(
        project.runpytest("--engine", "hff"),
        "ERROR: --engine: unknown engine 'hff' (did you mean 'hf'?); known engines: hf*",
    )


def test_unknown_engine_from_ini(project: pytest.Pytester) -> None:
    project.makeini("[pytest]\nllmperf_engine = nope\n")
    assert_usage_error(
        project.runpytest(), "ERROR: ini option llmperf_engine: unknown engine 'nope'*"
    )


@pytest.mark.parametrize(
    "ini, message",
    [
        ("llmperf_alpha = 0.7", "ini option llmperf_alpha: must be in (0, 0.5), got 0.7"),
        ("llmperf_alpha = often", "ini option llmperf_alpha: 'often' is not a number"),
        ("llmperf_drift = 1.5", "ini option llmperf_drift: must be in [[]0, 1), got 1.5"),
    ],
)
def test_verdict_ini_options_are_checked(project: pytest.Pytester, ini: str, message: str) -> None:
    project.makeini(f"[pytest]\n{ini}\n")
    assert_usage_error(project.runpytest(), f"ERROR: {message}*")


@pytest.mark.parametrize(
    "value, problem",
    [
        ("0,x", "bad item 'x'"),
        ("1,,2", "bad item ''"),
        ("-1", "bad item '-1'"),
        ("0,0", "GPU 0 is listed twice"),
        ("3", "GPU 3 is not visible (visible GPUs: none)"),
    ],
)
def test_malformed_gpus(project: pytest.Pytester, value: str, problem: str) -> None:
    assert_usage_error(project.runpytest(f"--gpus={value}"), f"ERROR: --gpus: *{problem}*")


def write(pytester: pytest.Pytester, text: str) -> None:
    path = pytester.path / "thresholds" / "cpu" / "hf.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_thresholds_yaml_syntax_error_names_file_and_line(project: pytest.Pytester) -> None:
    write(project, "schema: 1\ntests:\n  test_x.py::test_x:\n    output_tok_per_s: {min: 1\n")
    assert_usage_error(project.runpytest(), "ERROR: *thresholds/cpu/hf.yaml: line [45]: *")


def test_thresholds_unknown_metric_suggests(project: pytest.Pytester) -> None:
    write(project, "schema: 1\ntests:\n  test_x.py::test_x:\n    ttft: {max: 1}\n")
    assert_usage_error(
        project.runpytest(),
        "ERROR: *thresholds/cpu/hf.yaml: line 4: unknown metric 'ttft'*did you mean*ttft_ms.*",
    )


def test_thresholds_non_numeric_bound(project: pytest.Pytester) -> None:
    write(project, "schema: 1\ntests:\n  test_x.py::test_x:\n    ttft_ms.p90: {max: fast}\n")
    assert_usage_error(
        project.runpytest(),
        "ERROR: *hf.yaml: line 4: *'max' of 'ttft_ms.p90' must be a number, got 'fast'*",
    )


def test_missing_model_path(project: pytest.Pytester) -> None:
    assert_usage_error(
        project.runpytest("--model", "no/such/model"),
        "ERROR: --model: model path 'no/such/model' does not exist*",
    )


def test_dataset_with_a_broken_line(project: pytest.Pytester) -> None:
    data = project.path / "data.jsonl"
    data.write_text('{"custom_id": "a", "prompt": "hi"}\n{"custom_id": "b", "prompt": \n')
    assert_usage_error(
        project.runpytest("--llmperf-dataset", str(data)),
        f"ERROR: --llmperf-dataset: {data}: line 2: not valid JSON*",
    )


def test_grid_file_with_unknown_setting(project: pytest.Pytester) -> None:
    (project.path / "grid.yaml").write_text(
        "schema: 1\nconfigs:\n  tp1:\n    tensor_parallel_size: 1\n    max_num_seq: 4\n"
    )
    project.makepyfile(
        test_grid="""
        import pytest
        from pytest_llmperf import grid_params
        @pytest.mark.parametrize("config", grid_params("grid.yaml"))
        def test_g(llmperf, config):
            pass
    """
    )
    assert_usage_error(
        project.runpytest("test_grid.py"),
        "ERROR: *grid.yaml: line 5: unknown setting 'max_num_seq' (did you mean 'max_num_seqs'?)",
    )


def test_bad_gpu_marker_argument(project: pytest.Pytester) -> None:
    project.makepyfile(
        test_m="""
        import pytest
        @pytest.mark.gpu("two")
        def test_m(): pass
    """
    )
    assert_usage_error(
        project.runpytest("test_m.py"),
        "ERROR: test_m.py::test_m: marker gpu('two'): the GPU count must be a positive integer",
    )


def test_bad_margin(project: pytest.Pytester) -> None:
    assert_usage_error(
        project.runpytest("--llmperf-threshold-margin", "lots"),
        "ERROR: --llmperf-threshold-margin: 'lots' is not a number",
    )
