"""A user's run end to end on the real HF engine and the tiny model: measure, record, summarise."""

from __future__ import annotations

import json

import pytest

from tests.conftest import only_run, read_summary


def test_suite_passes_prints_summary_and_writes_results(suite: pytest.Pytester) -> None:
    result = suite.runpytest("-m", "smoke")
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(
        [
            "*llmperf summary*",
            "test*engine*req*fail*out tok/s*ttft p50 ms*",
            "test_suite.py::test_decode?batch1?*hf*12 *0 *",
            "test_suite.py::test_decode?batch4?*hf*12 *0 *",
            "hardware: cpu; results: *results*",
        ]
    )
    run_dir = only_run(suite)
    summary = read_summary(suite)
    assert summary["schema_version"] == 1
    assert summary["hardware"] == "cpu"
    assert summary["machine"]["packages"]["torch"]
    assert summary["machine"]["packages"]["transformers"]
    assert summary["machine"]["cpu_count"] >= 1
    assert summary["machine"]["command_line"]
    by_id = {t["test_id"]: t for t in summary["tests"]}
    decode = by_id["test_suite.py::test_decode[batch4]"]
    assert decode["metrics"]["requests"] == 12
    assert decode["metrics"]["output_tok_per_s"] > 0
    assert decode["metrics"]["ttft_ms"]["count"] == 12
    assert set(decode["metrics"]["ttft_ms"]) == {
        "count",
        "mean",
        "p50",
        "p90",
        "p95",
        "p99",
        "min",
        "max",
    }
    assert decode["metrics"]["tpot_ms"]["p50"] > 0
    assert decode["engine_info"]["device"] == "cpu"
    assert decode["config"]["engine_settings"] == {"max_num_seqs": 4, "max_model_len": 256}
    # Per-request records: measured rounds only (3 rounds x 4 requests), warm-up discarded.
    lines = (run_dir / "requests.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    mine = [r for r in records if r["test_id"] == "test_suite.py::test_decode[batch4]"]
    assert len(mine) == 12
    assert {r["round"] for r in mine} == {0, 1, 2}
    assert all(r["output_tokens"] == 8 and r["prompt_tokens"] == 16 for r in mine)
    assert all(len(r["itl_ms"]) == 7 for r in mine)


def test_engine_is_loaded_once_per_configuration(suite: pytest.Pytester) -> None:
    suite.makepyfile(
        test_more="""
        import pytest
        from pytest_llmperf import Config, SyntheticWorkload

        SMALL = Config.make("small", {"max_num_seqs": 2})
        @pytest.mark.parametrize("n", [1, 2])
        def test_same_config(llmperf, n):
            llmperf.measure(SMALL, SyntheticWorkload(num_requests=n, input_tokens=4,
                                                     output_tokens=2), rounds=1)
    """
    )
    suite.runpytest("test_more.py").assert_outcomes(passed=2)
    tests = {t["test_id"]: t for t in read_summary(suite)["tests"]}
    assert tests["test_more.py::test_same_config[1]"]["engine_load_s"] > 0
    assert tests["test_more.py::test_same_config[2]"]["engine_load_s"] is None


def test_benchmark_json_carries_our_metrics(suite: pytest.Pytester) -> None:
    result = suite.runpytest("-k", "latency", "--benchmark-json=bench.json")
    result.assert_outcomes(passed=1, deselected=2)
    data = json.loads((suite.path / "bench.json").read_text())
    (bench,) = data["benchmarks"]
    assert bench["stats"]["rounds"] == 5
    assert bench["extra_info"]["requests"] == 5
    assert bench["extra_info"]["output_tok_per_s"] > 0
    assert "ttft_ms.p90" in bench["extra_info"]


def test_metrics_still_recorded_with_benchmark_disabled(suite: pytest.Pytester) -> None:
    result = suite.runpytest("-k", "latency", "--benchmark-disable")
    result.assert_outcomes(passed=1, deselected=2)
    (test,) = read_summary(suite)["tests"]
    assert test["metrics"]["requests"] == 5  # our own loop ran all 5 measured rounds


def test_under_xdist_workers_record_and_controller_summarises(suite: pytest.Pytester) -> None:
    result = suite.runpytest_subprocess("-n", "2", "-m", "smoke")
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(["*llmperf summary*", "*test_decode?batch1?*hf*"])
    run_dir = only_run(suite)
    summary = read_summary(suite)
    assert len(summary["tests"]) == 3
    assert {t["worker"] for t in summary["tests"]} <= {"gw0", "gw1"}
    # The records came with the reports: the run's files hold every test once, and each
    # worker's own copy is under workers/ (read by no reader of the run).
    assert sorted(t["test_id"] for t in summary["tests"]) == sorted(
        json.loads(line)["test_id"] for line in (run_dir / "tests.jsonl").read_text().splitlines()
    )
    assert sorted(p.parent.name for p in run_dir.glob("workers/gw*/requests.jsonl"))
    assert not list(run_dir.glob("*-gw*.jsonl"))


def test_collection_loads_no_model(pytester: pytest.Pytester) -> None:
    pytester.makeconftest("""
        import sys
        def pytest_collection_finish(session):
            print("TORCH_IMPORTED", "torch" in sys.modules)
    """)
    pytester.makepyfile(
        test_grid="""
        import pytest
        from pytest_llmperf import Grid, grid_params
        GRID = Grid.product({"max_num_seqs": list(range(1, 51)), "max_new_tokens": [8, 16]})
        @pytest.mark.parametrize("config", grid_params(GRID))
        def test_x(llmperf, config):
            pass
    """
    )
    result = pytester.runpytest_subprocess("--collect-only", "-q")
    result.stdout.fnmatch_lines(["TORCH_IMPORTED False", "100 tests collected*"])
    assert not (pytester.path / "results").exists()


def test_gpu_marker_skips_with_reason_on_cpu(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
        import pytest
        from pytest_llmperf import Config, grid_params, Grid
        @pytest.mark.gpu(2)
        def test_needs_two(llmperf):
            pass
        @pytest.mark.parametrize("config", grid_params(Grid.product({"tensor_parallel_size": [2]})))
        def test_tp2(llmperf, config):
            pass
    """)
    result = pytester.runpytest("-rs", "--gpus", "cpu")
    result.assert_outcomes(skipped=2)
    result.stdout.fnmatch_lines(["*needs 2 GPU(s); this run has 0 (--gpus: none)*"])


def test_plugin_can_be_disabled(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_x(): pass")
    result = pytester.runpytest_subprocess("-p", "no:llmperf", "--engine", "hf")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*unrecognized arguments: --engine*"])


def test_help_lists_our_options(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--help")
    result.stdout.fnmatch_lines(
        [
            "LLM inference benchmarks (pytest-llmperf):",
            "*--engine=NAME*inference engine to benchmark*",
            "*--model=PATH_OR_NAME*",
            "*--gpus=LIST*",
            "*--llmperf-metrics-url=URL*",
            "*--llmperf-metrics-interval=SECONDS*",
            "*--llmperf-thresholds-dir=DIR*",
            "*--llmperf-update-thresholds*",
            "*--llmperf-results-dir=DIR*",
            "*llmperf_engine (string)*",
        ]
    )


def test_markers_are_registered(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--markers")
    result.stdout.fnmatch_lines(
        [
            "@pytest.mark.smoke:*",
            "@pytest.mark.longform:*",
            "@pytest.mark.accuracy:*",
            "@pytest.mark.gpu(n=1, allow_cpu=False):*",
            "@pytest.mark.llmperf_allow_failures(rate): a fault-injection test:*",
        ]
    )


def test_alternating_configurations_load_each_engine_once(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_alt="""
        import pytest
        from pytest_llmperf import Config, SyntheticWorkload

        A = Config.make("a", {"max_num_seqs": 1})
        B = Config.make("b", {"max_num_seqs": 2})
        @pytest.mark.parametrize("config", [A, B, A, B], ids=["a1", "b1", "a2", "b2"])
        def test_alt(llmperf, config):
            llmperf.measure(config, SyntheticWorkload(num_requests=2, input_tokens=4,
                                                      output_tokens=2), rounds=1)
    """
    )
    result = pytester.runpytest("-v")
    result.assert_outcomes(passed=4)
    # Tests are regrouped by engine configuration: a, a, b, b.
    result.stdout.fnmatch_lines(
        ["*test_alt?a1?*", "*test_alt?a2?*", "*test_alt?b1?*", "*test_alt?b2?*"]
    )
    tests = read_summary(pytester)["tests"]
    loads = [(t["config"]["name"], t["engine_load_s"] is not None) for t in tests]
    assert loads == [("a", True), ("a", False), ("b", True), ("b", False)]


def test_engines_registered_by_entry_point_are_found(pytester: pytest.Pytester) -> None:
    # A third-party package, installed the way pip would leave it: a module plus dist-info.
    pytester.makepyfile(
        my_engines="""
        from pytest_llmperf.engines.hf.engine import HFEngine

        class RenamedHF(HFEngine):
            name = "renamed-hf"
    """
    )
    dist = pytester.path / "my_engines-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: my-engines\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[pytest_llmperf.engines]\nrenamed-hf = my_engines:RenamedHF\n"
    )
    pytester.makepyfile(
        test_x="""
        from pytest_llmperf import SyntheticWorkload
        def test_x(llmperf):
            m = llmperf.measure(workload=SyntheticWorkload(num_requests=1, input_tokens=4,
                                                           output_tokens=2), rounds=1)
            assert m.engine_info.engine == "renamed-hf"
    """
    )
    pytester.syspathinsert()
    result = pytester.runpytest("--engine", "renamed-hf")
    result.assert_outcomes(passed=1)
    (test,) = read_summary(pytester)["tests"]
    assert test["engine"] == "renamed-hf"
    # And the unknown-engine message lists it.
    result = pytester.runpytest("--engine", "renamed")
    result.stderr.fnmatch_lines(
        [
            "*unknown engine 'renamed'*known engines: hf, hf-fast, llamacpp, llamacpp-server, openai, renamed-hf, vllm, vllm-server*"
        ]
    )


def install_package(pytester: pytest.Pytester, name: str, module: str, entry_points: str) -> None:
    """A third-party package the way pip leaves it: a module plus its dist-info, on sys.path."""
    pytester.makepyfile(**{name: module})
    dist = pytester.path / f"{name}-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(f"[pytest_llmperf.engines]\n{entry_points}\n")
    pytester.syspathinsert()


GREETING_ENGINE = """
from dataclasses import replace

from pytest_llmperf.engines.hf.engine import HFEngine
from pytest_llmperf.engines.spec import Setting


class GreetingHF(HFEngine):
    '''The hf engine with a setting of its own, which it records in its info.'''

    name = "greeting-hf"
    spec = HFEngine.spec.with_settings(
        Setting("greeting", (str,), "hello", "what the engine records", prefix="greet"),
        name="greeting-hf",
        target="greeting_engines:GreetingHF",
    )

    def start(self):
        info = super().start()
        return replace(info, details={**info.details, "greeting": self.settings["greeting"]})
"""


def test_an_entry_point_engine_takes_a_setting_of_its_own_from_a_grid(
    pytester: pytest.Pytester,
) -> None:
    install_package(
        pytester, "greeting_engines", GREETING_ENGINE, "greeting-hf = greeting_engines:GreetingHF"
    )
    pytester.makefile(
        ".yaml",
        grid="""
        schema: 1
        product:
          axes: {greeting: [bonjour, hola]}
          base: {max_num_seqs: 2}
        """,
    )
    pytester.makepyfile(
        test_x="""
        import pytest
        from pytest_llmperf import SyntheticWorkload, grid_params

        @pytest.mark.parametrize("config", grid_params("grid.yaml"))
        def test_x(llmperf, config):
            llmperf.measure(config, SyntheticWorkload(num_requests=2, input_tokens=4,
                                                      output_tokens=2), rounds=1)
    """
    )
    result = pytester.runpytest("--engine", "greeting-hf", "-v")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*test_x?greetbonjour? PASSED*", "*test_x?greethola? PASSED*"])
    tests = read_summary(pytester)["tests"]
    assert [t["engine_info"]["details"]["greeting"] for t in tests] == ["bonjour", "hola"]
    assert {t["engine"] for t in tests} == {"greeting-hf"}
    assert tests[0]["engine_config"]["settings"] == {"greeting": "bonjour", "max_num_seqs": 2}

    # The hf engine does not take it: a usage error naming it, the file and line.
    result = pytester.runpytest("--engine", "hf", "--collect-only")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            "*grid.yaml: line 3: setting 'greeting' is not a setting of engine 'hf' (the run's "
            "engine); hf takes: attn_implementation, cache_implementation, compile, dtype, *"
        ]
    )


SHARED_GRID = """
import pytest
from pytest_llmperf import SyntheticWorkload, grid_params

@pytest.mark.parametrize("config", grid_params("grid.yaml"))
def test_shared(llmperf, config):
    llmperf.measure(config, SyntheticWorkload(num_requests=2, input_tokens=4, output_tokens=2),
                    rounds=1)
"""


def test_a_setting_the_engine_does_not_take_is_a_usage_error_with_file_and_line(
    pytester: pytest.Pytester,
) -> None:
    """Once silently dropped: a `triton_kernels: false` grid run with --engine vllm ran
    exactly what `true` would have."""
    pytester.makefile(".yaml", grid="schema: 1\nconfigs:\n  a:\n    triton_kernels: false\n")
    pytester.makepyfile(test_shared=SHARED_GRID)
    result = pytester.runpytest("--engine", "vllm", "--collect-only")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            "ERROR: *grid.yaml: line 4: setting 'triton_kernels' is not a setting of engine "
            "'vllm' (the run's engine); vllm takes: dtype, enable_prefix_caching, *, vllm_args"
        ]
    )
    assert "Traceback" not in result.stdout.str() + result.stderr.str()
    # Deselected tests are not checked: their grid is not run.
    result = pytester.runpytest("--engine", "vllm", "--collect-only", "-k", "nothing")
    assert result.ret == pytest.ExitCode.NO_TESTS_COLLECTED
    # An xdist worker cannot end the run with a usage error: the test errors with it.
    result = pytester.runpytest_subprocess("-n", "2", "--engine", "vllm")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*grid.yaml: line 4: setting 'triton_kernels' is not a setting*"])


def test_a_grid_for_several_engines_notes_what_the_run_did_not_apply(
    pytester: pytest.Pytester,
) -> None:
    pytester.makefile(
        ".yaml",
        grid="""
        schema: 1
        engines: [hf, vllm]
        configs:
          eager: {max_num_seqs: 2, enforce_eager: true}
          plain: {max_num_seqs: 2}
        """,
    )
    pytester.makepyfile(test_shared=SHARED_GRID)
    result = pytester.runpytest("--engine", "hf")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(
        [
            "*llmperf summary*",
            "test_shared.py::test_shared?eager?*hf*",
            "note: test_shared.py::test_shared[[]eager[]]: settings not applied on hf: "
            "enforce_eager",
            "hardware: cpu; *",
        ]
    )
    assert result.stdout.str().count("settings not applied") == 1  # `plain` had none
    tests = {t["config"]["name"]: t for t in read_summary(pytester)["tests"]}
    assert tests["eager"]["engine_config"]["settings_not_applied"] == ["enforce_eager"]
    assert tests["eager"]["engine_config"]["settings"] == {"max_num_seqs": 2}
    assert tests["plain"]["engine_config"]["settings_not_applied"] == []


def test_a_grid_for_other_engines_skips_and_one_no_engine_takes_is_refused(
    pytester: pytest.Pytester,
) -> None:
    pytester.makefile(".yaml", grid="schema: 1\nengines: [vllm]\nconfigs:\n  a: {seed: 1}\n")
    pytester.makepyfile(test_shared=SHARED_GRID)
    result = pytester.runpytest("--engine", "hf", "-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(
        [
            "SKIPPED ?1? *grid.yaml: line 2: the grid of 'a' is meant for engines vllm: "
            "run with --engine vllm (this run's engine is 'hf')"
        ]
    )
    assert not (pytester.path / "results").exists()  # no engine was started

    (pytester.path / "grid.yaml").write_text(
        "schema: 1\nengines: [hf, openai]\nconfigs:\n  a:\n    n_batch: 4\n"
    )
    result = pytester.runpytest("--engine", "hf", "--collect-only")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["ERROR: *grid.yaml: line 5: unknown setting 'n_batch' for engines hf, openai"]
    )
