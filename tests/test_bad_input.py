"""The bad-input catalogue: every kind of input, tried with what users get wrong.

One row per input: where it goes, the value, and words the message must hold. Every row
must end as a usage error (pytest: exit 4; `llmperf`: exit 2, on stderr), without a
traceback, and leave a results folder that holds a previous run exactly as it was.
Errors are raised before any engine starts, so pytest runs with `--collect-only`.
RELIABILITY.md ("Bad input") lists the classes of input these rows cover.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.suite_run import make_project

SUITE = """
from pytest_llmperf import SyntheticWorkload
def test_x(llmperf):
    llmperf.measure(workload=SyntheticWorkload(num_requests=1, input_tokens=4, output_tokens=2), rounds=1)
"""

GRID_SUITE = """
import pytest
from pytest_llmperf import grid_params
@pytest.mark.parametrize("config", grid_params("grid.yaml"))
def test_suite(llmperf, config):
    pass
"""

PREVIOUS_RUN = "20260101-000000-aaaaaa"
DEEP_JSON = "[" * 100_000
# Files each row may name: made fresh in every project, so that rows stay independent.
FILES: dict[str, bytes] = {
    "a_file": b"not a folder\n",
    "ok.jsonl": b'{"custom_id": "a", "prompt": "hi"}\n',
    "binary.jsonl": b"\xff\xfe\x00\n",
    "empty.jsonl": b"",
    "bad.jsonl": b'{"custom_id": "a", "prompt": "hi"}\n{"custom_id": "b", "prompt": \n',
    "list.jsonl": b"[1, 2]\n",
    "deep.jsonl": DEEP_JSON.encode(),
    "unknown_field.jsonl": b'{"custom_id": "a", "prompt": "hi", "temperature": 1}\n',
    "number_prompt.jsonl": b'{"custom_id": "a", "prompt": 5}\n',
    "huge_max_tokens.jsonl": b'{"custom_id": "a", "prompt": "x", "max_tokens": 1e400}\n',
    "duplicate_id.jsonl": b'{"custom_id": "\xc3\xbc", "prompt": "x"}\n'
    b'{"custom_id": "\xc3\xbc", "prompt": "y"}\n',
}


def project_with_previous_run(root: Path, suite: str = SUITE) -> Path:
    """A project (see `make_project`) whose results folder already holds a run."""
    make_project(root, suite)
    run = root / "results" / PREVIOUS_RUN
    run.mkdir(parents=True)
    summary = {"schema_version": 1, "run_id": PREVIOUS_RUN, "started_at": "2026", "tests": []}
    (run / "summary.json").write_text(json.dumps(summary))
    (run / "run.json").write_text(json.dumps({"run_id": PREVIOUS_RUN}))
    (run / "tests.jsonl").write_text("")
    for name, data in FILES.items():
        (root / name).write_bytes(data)
    (root / "a_folder").mkdir()
    return root


def hashes(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def unreadable(path: Path) -> Path:
    """A file that cannot be read: mode 000, or, where that does not stop reading (root),
    a folder in the file's place, which no read gets through either."""
    if os.geteuid() == 0:
        path.mkdir()
    else:
        path.write_text("{}\n")
        path.chmod(0)
    return path


@dataclass
class Outcome:
    returncode: int
    stdout: str
    stderr: str


def pytest_in(root: Path, *args: str, gpus: bool = True) -> Outcome:
    argv = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--collect-only", "-q"]
    argv += ["--gpus", "cpu"] if gpus else []
    out = subprocess.run(
        [*argv, *args], cwd=root, capture_output=True, text=True, timeout=120, check=False
    )
    return Outcome(out.returncode, out.stdout, out.stderr)


def llmperf_in(root: Path, *args: str) -> Outcome:
    argv = [sys.executable, "-m", "pytest_llmperf", *args]
    out = subprocess.run(argv, cwd=root, capture_output=True, text=True, timeout=60, check=False)
    return Outcome(out.returncode, out.stdout, out.stderr)


def assert_refused(out: Outcome, code: int, words: tuple[str, ...]) -> None:
    everything = out.stdout + out.stderr
    assert out.returncode == code, everything[-3000:]
    for word in words:
        assert word in out.stderr, f"{word!r} not in stderr:\n{out.stderr[-3000:]}"
    assert "Traceback" not in everything and "INTERNALERROR" not in everything, everything


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return project_with_previous_run(tmp_path)


# --- command-line options ---------------------------------------------------------------

OPTION_ROWS: list[tuple[str, str, tuple[str, ...]]] = [
    # (option, value, words in the message)
    ("--engine", "", ("--engine: empty value",)),
    ("--engine", "日本", ("--engine: unknown engine '日本'",)),
    ("--engine", "x" * 5000, ("--engine: unknown engine",)),
    ("--model", "", ("--model: empty value",)),
    ("--model", "no/such/model", ("--model: model path 'no/such/model' does not exist",)),
    ("--model", "模型/ü", ("--model: model path '模型/ü' does not exist",)),
    ("--model", "a_file", ("--model: model path 'a_file' is a file, not a directory",)),
    ("--gpus", "", ("--gpus: empty value",)),
    ("--gpus", "abc", ("--gpus:", "bad item 'abc'")),
    ("--gpus", "ü", ("--gpus:", "bad item 'ü'")),
    ("--gpus", "99999999999999999999", ("--gpus: GPU 99999999999999999999 is not visible",)),
    ("--base-url", "", ("--base-url: empty value",)),
    ("--base-url", "notaurl", ("--base-url: 'notaurl' is not a server URL", "http://")),
    ("--base-url", "ftp://host", ("--base-url: 'ftp://host' is not a server URL",)),
    ("--base-url", "http://", ("--base-url: 'http://' is not a server URL",)),
    ("--base-url", "http://ü.example", ("--base-url:", "only ASCII")),
    ("--base-url", "http://host:99999", ("--base-url:", "Port out of range")),
    ("--base-url", "http://user:pw@host:8000", ("--base-url: the URL must not hold credentials",)),
    ("--api-key-env", "", ("--api-key-env: empty value",)),
    ("--api-key-env", "1BAD", ("--api-key-env: not an environment variable name",)),
    ("--api-key-env", "sk-live-0123", ("--api-key-env:", "never the key")),
    ("--llmperf-thresholds-dir", "", ("--llmperf-thresholds-dir: empty value",)),
    ("--llmperf-thresholds-dir", "a_file", ("--llmperf-thresholds-dir: 'a_file' is a file",)),
    ("--llmperf-results-dir", "", ("--llmperf-results-dir: empty value",)),
    ("--llmperf-results-dir", "a_file", ("--llmperf-results-dir: 'a_file' is a file",)),
    ("--llmperf-threshold-margin", "", ("--llmperf-threshold-margin: empty value",)),
    ("--llmperf-threshold-margin", "lots", ("--llmperf-threshold-margin: 'lots' is not",)),
    ("--llmperf-threshold-margin", "1", ("--llmperf-threshold-margin: margin must be in [0, 1)",)),
    ("--llmperf-threshold-margin", "nan", ("--llmperf-threshold-margin: margin must be",)),
    ("--llmperf-threshold-margin", "1e400", ("--llmperf-threshold-margin: margin must be",)),
    ("--llmperf-hardware", "", ("--llmperf-hardware: empty value",)),
    ("--llmperf-hardware", "../../elsewhere", ("--llmperf-hardware: '../../elsewhere' is not",)),
    ("--llmperf-hardware", "日本", ("--llmperf-hardware: '日本' is not a hardware key",)),
    ("--llmperf-dataset", "", ("--llmperf-dataset: empty value",)),
    ("--llmperf-dataset", "missing.jsonl", ("--llmperf-dataset:", "does not exist")),
    ("--llmperf-dataset", "a_folder", ("--llmperf-dataset:", "cannot read dataset")),
    ("--llmperf-dataset", "binary.jsonl", ("--llmperf-dataset:", "cannot read", "utf-8")),
    ("--llmperf-dataset", "empty.jsonl", ("--llmperf-dataset:", "dataset has no items")),
    ("--llmperf-dataset", "bad.jsonl", ("bad.jsonl: line 2: not valid JSON",)),
    ("--llmperf-dataset", "list.jsonl", ("list.jsonl: line 1: each line must be a JSON object",)),
    ("--llmperf-dataset", "deep.jsonl", ("deep.jsonl: line 1: JSON nested too deeply",)),
    ("--llmperf-dataset", "unknown_field.jsonl", ("line 1: unknown field(s) temperature",)),
    ("--llmperf-dataset", "number_prompt.jsonl", ("line 1: 'prompt' must be a string",)),
    ("--llmperf-dataset", "huge_max_tokens.jsonl", ("line 1: 'max_tokens' must be a positive",)),
    ("--llmperf-dataset", "duplicate_id.jsonl", ("line 2: duplicate custom_id 'ü'",)),
    ("--llmperf-lease-timeout", "", ("--llmperf-lease-timeout: invalid float value",)),
    ("--llmperf-lease-timeout", "abc", ("--llmperf-lease-timeout: invalid float value",)),
    ("--llmperf-lease-timeout", "0", ("--llmperf-lease-timeout: must be a positive number",)),
    ("--llmperf-lease-timeout", "nan", ("--llmperf-lease-timeout: must be a positive number",)),
    ("--llmperf-lease-timeout", "inf", ("--llmperf-lease-timeout:", "at most 2592000")),
    ("--llmperf-engine-start-timeout", "-1", ("--llmperf-engine-start-timeout: must be",)),
    ("--llmperf-engine-start-timeout", "1e400", ("--llmperf-engine-start-timeout:", "at most")),
    ("--llmperf-request-timeout", "1e9", ("--llmperf-request-timeout:", "at most 2592000")),
    ("--llmperf-request-timeout", "10 s", ("--llmperf-request-timeout: invalid float value",)),
    ("--llmperf-limit", "", ("--llmperf-limit: invalid int value",)),
    ("--llmperf-limit", "1.5", ("--llmperf-limit: invalid int value",)),
    ("--llmperf-limit", "0", ("--llmperf-limit: must be at least 1, got 0",)),
    (
        "--llmperf-rounds",
        "x",
        ("--llmperf-rounds: 'x': expected a whole number of at least 1, or auto",),
    ),
    (
        "--llmperf-rounds",
        "-1",
        ("--llmperf-rounds: '-1': expected a whole number of at least 1, or auto",),
    ),
    ("--llmperf-compare", "", ("--llmperf-compare: empty value",)),
    ("--llmperf-compare", "no-such-run", ("--llmperf-compare: no-such-run: no such run",)),
    ("--llmperf-compare", "latest~5", ("--llmperf-compare: latest~5:", "holds 1 run(s)")),
    ("--llmperf-compare", "a_file", ("--llmperf-compare: a_file: not a run folder",)),
    ("--llmperf-tolerance", "", ("--llmperf-tolerance: '' is not METRIC:CHANGE",)),
    ("--llmperf-tolerance", "ttft_ms:abc", ("--llmperf-tolerance: 'ttft_ms:abc' is not",)),
    ("--llmperf-tolerance", "ttft_ms.p90:nan%", ("--llmperf-tolerance: 'ttft_ms.p90:nan%'",)),
    ("--llmperf-tolerance", "output_tok_per_s:+5%", ("higher-is-better", "output_tok_per_s:-5%")),
]


@pytest.mark.parametrize(
    "option, value, words", OPTION_ROWS, ids=[f"{o}={v[:20]}" for o, v, _ in OPTION_ROWS]
)
def test_option(project: Path, option: str, value: str, words: tuple[str, ...]) -> None:
    before = hashes(project / "results")
    args = [option, value] if option != "--gpus" else [f"--gpus={value}"]
    engine = ["--engine", "openai"] if option in ("--base-url", "--api-key-env") else []
    out = pytest_in(project, *engine, *args, gpus=option != "--gpus")
    assert_refused(out, pytest.ExitCode.USAGE_ERROR, words)
    assert hashes(project / "results") == before


def test_api_key_given_in_place_of_its_variable_is_not_repeated(project: Path) -> None:
    out = pytest_in(project, "--engine", "openai", "--api-key-env", "sk-live-0123")
    assert "sk-live-0123" not in out.stdout + out.stderr


def test_unreadable_dataset(project: Path) -> None:
    path = unreadable(project / "locked.jsonl")
    out = pytest_in(project, "--llmperf-dataset", str(path))
    assert_refused(out, pytest.ExitCode.USAGE_ERROR, ("--llmperf-dataset:", "cannot read dataset"))


# --- ini keys ------------------------------------------------------------------------------

INI_ROWS: list[tuple[str, str, tuple[str, ...]]] = [
    ("llmperf_engine", "nope ü", ("ini option llmperf_engine: unknown engine 'nope ü'",)),
    ("llmperf_model", "no/such ü", ("ini option llmperf_model: model path 'no/such ü' does not",)),
    ("llmperf_gpus", "x", ("ini option llmperf_gpus:", "bad item 'x'")),
    ("llmperf_thresholds_dir", "a_file", ("ini option llmperf_thresholds_dir: 'a_file' is a",)),
    ("llmperf_results_dir", "a_file", ("ini option llmperf_results_dir: 'a_file' is a file",)),
    ("llmperf_threshold_margin", "lots", ("ini option llmperf_threshold_margin: 'lots' is",)),
    ("llmperf_base_url", "host:8000", ("ini option llmperf_base_url: 'host:8000' is not",)),
    ("llmperf_api_key_env", "MY KEY", ("ini option llmperf_api_key_env: not an environment",)),
    ("llmperf_dataset", "missing.jsonl", ("ini option llmperf_dataset:", "does not exist")),
]


@pytest.mark.parametrize("key, value, words", INI_ROWS, ids=[k for k, _, _ in INI_ROWS])
def test_ini_key(project: Path, key: str, value: str, words: tuple[str, ...]) -> None:
    (project / "pytest.ini").write_text(f"[pytest]\n{key} = {value}\n", encoding="utf-8")
    before = hashes(project / "results")
    out = pytest_in(project, gpus=key != "llmperf_gpus")
    assert_refused(out, pytest.ExitCode.USAGE_ERROR, words)
    assert hashes(project / "results") == before


# --- marker arguments ------------------------------------------------------------------------

MARKER_ROWS = [
    ("'two'", "marker gpu('two'): the GPU count must be a positive integer"),
    ("0", "marker gpu(0): the GPU count must be a positive integer"),
    ("True", "marker gpu(True): the GPU count must be a positive integer"),
    ("1.5", "marker gpu(1.5): the GPU count must be a positive integer"),
    ("n='x'", "marker gpu(n='x'): the GPU count must be a positive integer"),
    ("1, 2", "marker gpu(1, 2): takes one GPU count"),
    ("count=2", "marker gpu(count=2): takes one GPU count"),
]


@pytest.mark.parametrize("arguments, words", MARKER_ROWS, ids=[a for a, _ in MARKER_ROWS])
def test_gpu_marker(tmp_path: Path, arguments: str, words: str) -> None:
    suite = f"import pytest\n@pytest.mark.gpu({arguments})\ndef test_m(llmperf):\n    pass\n"
    project = project_with_previous_run(tmp_path, suite)
    out = pytest_in(project)
    assert_refused(out, pytest.ExitCode.USAGE_ERROR, ("test_suite.py::test_m: " + words,))


# --- grid files --------------------------------------------------------------------------------

GRID_ROWS: list[tuple[str, str, tuple[str, ...]]] = [
    ("empty", "", ("grid.yaml: a grid file must be a mapping",)),
    ("list", "[1]\n", ("grid.yaml: line 1: a grid file must be a mapping",)),
    ("syntax", "schema: 1\nconfigs: {a: {max_num_seqs: 1}\n", ("grid.yaml: line 3: invalid YAML",)),
    ("schema", "schema: 2\nconfigs: {a: {}}\n", ("grid.yaml: line 1: unsupported schema",)),
    ("unknown_key", "schema: 1\nconfig: {}\n", ("grid.yaml: line 2: unknown key 'config'",)),
    ("no_configs", "schema: 1\n", ("grid has no configurations",)),
    ("deep", DEEP_JSON, ("grid.yaml: invalid YAML: nested too deeply",)),
    ("not_utf8", "schema: 1\n\udcff\n", ("grid.yaml: cannot read grid file", "utf-8")),
    ("python_tag", "schema: 1\nconfigs: {a: {seed: !!python/name:os.system }}\n", ("line 2:",)),
    ("duplicate_key", "schema: 1\nconfigs:\n  a: {}\n  a: {}\n", ("line 4: duplicate key 'a'",)),
    ("bad_marks", "schema: 1\nconfigs:\n  a: {marks: 5}\n", ("line 3: 'marks' must be a list",)),
    ("engine_name", "schema: 1\nconfigs:\n  a: {engine: hff}\n", ("unknown engine 'hff'",)),
    ("engine_type", "schema: 1\nconfigs:\n  a: {engine: 5}\n", ("line 3: 'engine' must be",)),
    ("empty_axis", "schema: 1\nproduct: {axes: {max_num_seqs: []}}\n", ("must be a non-empty",)),
    ("same_names", "schema: 1\nproduct: {axes: {max_num_seqs: [1, 1]}}\n", ("duplicate",)),
    ("no_axes", "schema: 1\nproduct: {base: {}}\n", ("line 2: 'product' needs 'axes'",)),
]
# Engine settings, as the hf engine reads them: names, types and values.
HF_SETTING_ROWS: list[tuple[str, str, tuple[str, ...]]] = [
    ("unknown_name", "max_num_seq: 4", ("line 3: unknown setting 'max_num_seq'", "max_num_seqs")),
    ("non_ascii_name", "größe: 4", ("line 3: unknown setting 'größe'",)),
    (  # issue 24: sampling in a grid says where it belongs
        "sampling_in_grid",
        "temperature: 0.7",
        ("line 3: unknown setting 'temperature'", "SyntheticWorkload(temperature=0.7)"),
    ),
    ("int_as_text", "max_num_seqs: four", ("setting 'max_num_seqs' must be int, got 'four'",)),
    ("int_as_float", "max_num_seqs: 1.5", ("setting 'max_num_seqs' must be int, got 1.5",)),
    ("int_as_bool", "max_num_seqs: true", ("setting 'max_num_seqs' must be int, got True",)),
    ("zero", "max_model_len: 0", ("setting 'max_model_len' must be at least 1, got 0",)),
    ("huge_float", "max_new_tokens: 1e400", ("setting 'max_new_tokens' must be int",)),
    ("empty", "seed: ", ("setting 'seed' must be int, got None",)),
    ("bool_as_text", "enforce_eager: 'yes'", ("setting 'enforce_eager' must be bool",)),
    ("hf_path_as_text", "triton_kernels: 'no'", ("setting 'triton_kernels' must be bool",)),
    ("zero_score_rows", "score_batch_size: 0", ("setting 'score_batch_size' must be at least 1",)),
    ("dtype_typo", "dtype: float17", ("setting 'dtype': unknown value 'float17'",)),
    ("dtype_number", "dtype: 16", ("setting 'dtype' must be str, got 16",)),
    ("tp_text", "tensor_parallel_size: two", ("setting 'tensor_parallel_size' must be int",)),
    ("utilization", "gpu_memory_utilization: 1.5", ("must be in (0, 1], got 1.5",)),
]
ALL_GRID_ROWS = GRID_ROWS + [
    (f"hf_{n}", f"schema: 1\nconfigs:\n  a: {{{s}}}\n", w) for n, s, w in HF_SETTING_ROWS
]


@pytest.mark.parametrize(
    "text, words", [r[1:] for r in ALL_GRID_ROWS], ids=[r[0] for r in ALL_GRID_ROWS]
)
def test_grid_file(tmp_path: Path, text: str, words: tuple[str, ...]) -> None:
    project = project_with_previous_run(tmp_path, GRID_SUITE)
    (project / "grid.yaml").write_bytes(text.encode("utf-8", errors="surrogateescape"))
    before = hashes(project / "results")
    out = pytest_in(project, "--engine", "hf")
    assert_refused(out, pytest.ExitCode.USAGE_ERROR, words)
    assert hashes(project / "results") == before


@pytest.mark.parametrize("kind", ["missing", "unreadable"])
def test_grid_file_that_cannot_be_read(tmp_path: Path, kind: str) -> None:
    project = project_with_previous_run(tmp_path, GRID_SUITE)
    if kind == "unreadable":
        unreadable(project / "grid.yaml")
    words = "grid file does not exist" if kind == "missing" else "cannot read grid file"
    assert_refused(pytest_in(project), pytest.ExitCode.USAGE_ERROR, (f"grid.yaml: {words}",))


# --- thresholds files ----------------------------------------------------------------------------

THRESHOLD_ROWS: list[tuple[str, str, tuple[str, ...]]] = [
    ("empty", "", ("hf.yaml: line 1: empty file",)),
    ("list", "[1]\n", ("hf.yaml: line 1: the top level must be a mapping",)),
    ("no_schema", "tests: {}\n", ("hf.yaml: line 1: missing 'schema: 1'",)),
    ("schema_text", "schema: one\n", ("hf.yaml: line 1: unsupported schema 'one'",)),
    ("deep", DEEP_JSON, ("hf.yaml: invalid YAML: nested too deeply",)),
    ("not_utf8", "schema: 1\n# \udcff\n", ("hf.yaml: cannot read thresholds file", "utf-8")),
    ("python_tag", "schema: !!python/object/apply:os.system [true]\n", ("line 1:",)),
    ("unknown_metric", "schema: 1\ntests:\n  t:\n    ttft: {max: 1}\n", ("line 4: unknown",)),
    ("text_bound", "schema: 1\ntests:\n  t:\n    ttft_ms.p90: {max: fast}\n", ("line 4:",)),
    ("inf_bound", "schema: 1\ntests:\n  t:\n    ttft_ms.p90: {max: .inf}\n", ("finite number",)),
    (
        "min_over_max",
        "schema: 1\ntests:\n  t:\n    e2e_ms.p50: {min: 2, max: 1}\n",
        ("min 2 > max 1",),
    ),
    ("empty_id", "schema: 1\ntests:\n  '': {}\n", ("line 3: empty test id",)),
    ("non_ascii_key", "schema: 1\ntésts: {}\n", ("line 2: unknown top-level key 'tésts'",)),
]


@pytest.mark.parametrize(
    "text, words", [r[1:] for r in THRESHOLD_ROWS], ids=[r[0] for r in THRESHOLD_ROWS]
)
def test_thresholds_file(project: Path, text: str, words: tuple[str, ...]) -> None:
    path = project / "thresholds" / "cpu" / "hf.yaml"
    path.parent.mkdir(parents=True)
    path.write_bytes(text.encode("utf-8", errors="surrogateescape"))
    before = hashes(project / "results")
    out = pytest_in(project, "--engine", "hf")
    assert_refused(out, pytest.ExitCode.USAGE_ERROR, words)
    assert hashes(project / "results") == before


def test_unreadable_thresholds_file(project: Path) -> None:
    if os.geteuid() == 0:
        # A folder in the file's place is not a thresholds file at all (the file is looked
        # up with is_file), so as root there is no way to make one that exists but cannot
        # be read.
        pytest.skip("running as root: mode 000 does not stop reads")
    path = project / "thresholds" / "cpu" / "hf.yaml"
    path.parent.mkdir(parents=True)
    unreadable(path)
    out = pytest_in(project, "--engine", "hf")
    assert_refused(out, pytest.ExitCode.USAGE_ERROR, ("hf.yaml: cannot read thresholds file",))


# --- the llmperf command ------------------------------------------------------------------------

RUN = f"results/{PREVIOUS_RUN}"
CLI_ROWS: list[tuple[tuple[str, ...], tuple[str, ...]]] = [
    ((), ("llmperf: error: the following arguments are required: COMMAND",)),
    (("nope",), ("llmperf: error: argument COMMAND: invalid choice: 'nope'",)),
    (("list", "--results-dir", ""), ("llmperf list: error: argument --results-dir: empty value",)),
    (("list", "--results-dir", "missing"), ("llmperf list: error: missing: no such results",)),
    (("list", "--results-dir", "a_file"), ("llmperf list: error: a_file: no such results folder",)),
    (("show",), ("llmperf show: error: the following arguments are required: run",)),
    (("show", ""), ("llmperf show: error: empty run name",)),
    (("show", "nope ü"), ("llmperf show: error: nope ü: no such run", PREVIOUS_RUN)),
    (("show", "a_file"), ("llmperf show: error: a_file: not a run folder",)),
    (("show", "latest~x"), ("llmperf show: error: latest~x: no such run",)),
    (("show", "latest~99999999999999999999"), ("holds 1 run(s), 0 of them with measured",)),
    (("compare", RUN), ("llmperf compare: error: the following arguments are required: new",)),
    (("compare", RUN, RUN, "--tolerance", "x"), ("llmperf compare: error: --tolerance: 'x'",)),
    (("report", RUN, "-o", ""), ("llmperf report: error: argument -o/--output: empty value",)),
    (("report", RUN, "-o", "a_folder"), ("llmperf report: error: -o: a_folder is a folder",)),
    (("dashboard", "missing"), ("llmperf dashboard: error: missing: no such results folder",)),
    (("dashboard", "--port", "x"), ("llmperf dashboard: error: argument --port: invalid int",)),
    (("dashboard", "--port", "99999"), ("llmperf dashboard: error: --port: 99999 is not a TCP",)),
    (("dashboard", "--host", ""), ("llmperf dashboard: error: --host: '' is not an address",)),
    (("workload", "stats", ""), ("llmperf workload stats: error: argument dataset: empty value",)),
    (("workload", "stats", "missing.jsonl"), ("missing.jsonl: dataset file does not exist",)),
    (("workload", "stats", "a_folder"), ("a_folder: cannot read dataset",)),
    (("workload", "stats", "deep.jsonl"), ("deep.jsonl: line 1: JSON nested too deeply",)),
    (("workload", "stats", "bad.jsonl"), ("bad.jsonl: line 2: not valid JSON",)),
    (("workload", "stats", "bad.jsonl", "--coverage", "x"), ("argument --coverage: invalid",)),
    (("workload", "stats", "list.jsonl"), ("list.jsonl: line 1: each line must be a JSON",)),
    (("workload", "stats", "ok.jsonl", "--coverage", "nan"), ("--coverage: must be in (0, 1]",)),
    (("workload", "stats", "ok.jsonl", "--coverage", "5"), ("--coverage: must be in (0, 1]",)),
    (("workload", "stats", "ok.jsonl", "--model", "no/such"), ("--model: model path 'no/such'",)),
]


@pytest.mark.parametrize(
    "args, words", CLI_ROWS, ids=[" ".join(a)[:40] or "no-command" for a, _ in CLI_ROWS]
)
def test_cli(project: Path, args: tuple[str, ...], words: tuple[str, ...]) -> None:
    before = hashes(project / "results")
    assert_refused(llmperf_in(project, *args), 2, words)
    assert hashes(project / "results") == before


RUN_FILE_ROWS: list[tuple[str, str, bytes, str]] = [
    # (case, file in the run folder, its bytes, words)
    ("deep_summary", "summary.json", DEEP_JSON.encode(), "summary.json: cannot be read as JSON"),
    ("summary_list", "summary.json", b"[]", "summary.json: not a run summary"),
    ("truncated", "summary.json", b'{"tests": [', "summary.json: cannot be read as JSON"),
    ("deep_records", "tests.jsonl", DEEP_JSON.encode() + b"\n", "its records cannot be read"),
    ("binary_records", "tests.jsonl", b"\xff\n", "its records cannot be read"),
]


@pytest.mark.parametrize(
    "name, data, words", [r[1:] for r in RUN_FILE_ROWS], ids=[r[0] for r in RUN_FILE_ROWS]
)
def test_broken_run_folder(project: Path, name: str, data: bytes, words: str) -> None:
    run = project / "results" / PREVIOUS_RUN
    if name != "summary.json":
        (run / "summary.json").unlink()
    (run / name).write_bytes(data)
    before = hashes(project / "results")
    for command in (("show", RUN), ("list",), ("compare", RUN, RUN)):
        assert_refused(llmperf_in(project, *command), 2, (words,))
    out = pytest_in(project, "--llmperf-compare", RUN)
    assert_refused(out, pytest.ExitCode.USAGE_ERROR, ("--llmperf-compare:", words))
    assert hashes(project / "results") == before
