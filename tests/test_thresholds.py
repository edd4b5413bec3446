from __future__ import annotations

import re
import stat
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from pytest_llmperf.errors import LLMPerfUsageError
from pytest_llmperf.thresholds.check import check
from pytest_llmperf.thresholds.files import (
    Bound,
    ThresholdSet,
    hardware_slug,
    load_threshold_file,
    select_threshold_files,
)
from pytest_llmperf.thresholds.update import update_thresholds

DECODE = "suites/test_smoke.py::test_decode[tiny_len256_batch4]"
LATENCY_A = "suites/test_smoke.py::test_latency[a]"

EXAMPLE = """\
# thresholds/cpu/hf.yaml
schema: 1
tests:
  "suites/test_smoke.py::test_decode[tiny_len256_batch4]":
    output_tok_per_s: {min: 120.5}
    ttft_ms.p90: {max: 800}
    failure_rate: {max: 0}
  "suites/test_smoke.py::test_latency[*]":     # a glob
    e2e_ms.p50: {min: 1, max: 5000}
"""


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


@pytest.fixture
def example(tmp_path: Path) -> Path:
    return write(tmp_path / "thresholds" / "cpu" / "hf.yaml", EXAMPLE)


def table_rows(text: str) -> list[list[str]]:
    """Table rows split into cells (columns are two or more spaces apart), without the rule
    under the header or the `thresholds from` lines after the table."""
    lines = [line for line in text.splitlines() if not line.startswith("thresholds from")]
    return [re.split(r"\s{2,}", line.strip()) for line in lines if set(line) - {"-", " "}]


# --- loading -----------------------------------------------------------------------------


def test_load_reads_bounds_with_their_lines(example: Path) -> None:
    loaded = load_threshold_file(example)
    assert loaded.schema == 1
    assert loaded.test_lines == {DECODE: 4, "suites/test_smoke.py::test_latency[*]": 8}
    assert loaded.bounds == [
        Bound(DECODE, "output_tok_per_s", 120.5, None, example, 5),
        Bound(DECODE, "ttft_ms.p90", None, 800.0, example, 6),
        Bound(DECODE, "failure_rate", None, 0.0, example, 7),
        Bound("suites/test_smoke.py::test_latency[*]", "e2e_ms.p50", 1.0, 5000.0, example, 9),
    ]


def test_empty_tests_table_is_allowed(tmp_path: Path) -> None:
    path = write(tmp_path / "t.yaml", "schema: 1\ntests:\n")
    assert load_threshold_file(path).bounds == []


BAD_FILES = [
    pytest.param(
        """\
        schema: 1
        tests:
          "t::a":
            ttft_ms.p90: {max: 800
          "t::b":
            ttft_ms.p90: {max: 800}
        """,
        5,
        "invalid YAML",
        id="syntax",
    ),
    pytest.param("- schema\n- tests\n", 1, "top level must be a mapping", id="top-list"),
    pytest.param("", 1, "empty file", id="empty"),
    pytest.param(
        "schema: 1\ntest:\n  t: {}\n",
        2,
        "unknown top-level key 'test' (did you mean 'tests'?)",
        id="top-key",
    ),
    pytest.param("# c\ntests: {}\n", 2, "missing 'schema: 1'", id="no-schema"),
    pytest.param("schema: 2\ntests: {}\n", 1, "unsupported schema 2", id="schema-2"),
    pytest.param("schema: '1'\ntests: {}\n", 1, "unsupported schema '1'", id="schema-str"),
    pytest.param("schema: 1\ntests:\n  - t::a\n", 3, "'tests' must be a mapping", id="tests"),
    pytest.param(
        "schema: 1\ntests:\n  t::a: [ttft_ms.p90]\n",
        3,
        "test 't::a' must be a mapping",
        id="entry",
    ),
    pytest.param(
        "schema: 1\ntests:\n  t::a:\n    ttft_ms.p90: 800\n",
        4,
        "bound of 'ttft_ms.p90' must be a mapping with 'min' and/or 'max'",
        id="bound-scalar",
    ),
    pytest.param(
        "schema: 1\ntests:\n  t::a:\n    ttft_ms.p90: {}\n",
        4,
        "must be a mapping with 'min'",
        id="bound-empty",
    ),
    pytest.param(
        "schema: 1\ntests:\n  t::a:\n    ttft_ms.p90:\n      max: 1\n      maximum: 2\n",
        6,
        "unknown key 'maximum' in bound of 'ttft_ms.p90'",
        id="bound-key",
    ),
    pytest.param(
        "schema: 1\ntests:\n  t::a:\n    ttft_ms.p90:\n      max: fast\n",
        5,
        "bound 'max' of 'ttft_ms.p90' must be a number, got 'fast'",
        id="bound-word",
    ),
    pytest.param(
        "schema: 1\ntests:\n  t::a:\n    output_tok_per_s: {min: '120'}\n",
        4,
        "bound 'min' of 'output_tok_per_s' must be a number, got '120'",
        id="bound-quoted-number",
    ),
    pytest.param(
        "schema: 1\ntests:\n  t::a:\n    failure_rate: {max: true}\n",
        4,
        "bound 'max' of 'failure_rate' must be a number, got True",
        id="bound-bool",
    ),
    pytest.param(
        "schema: 1\ntests:\n  t::a:\n    failure_rate: {max: .nan}\n",
        4,
        "bound 'max' of 'failure_rate' must be a finite number, got nan",
        id="bound-nan",
    ),
    pytest.param(
        "schema: 1\ntests:\n  t::a:\n    failure_rate: {max: }\n",
        4,
        "bound 'max' of 'failure_rate' must be a number, got None",
        id="bound-null",
    ),
    pytest.param(
        "schema: 1\ntests:\n  t::a:\n    e2e_ms.p50: {min: 10, max: 5}\n",
        4,
        "bound of 'e2e_ms.p50' has min 10 > max 5",
        id="min-over-max",
    ),
    pytest.param(
        "schema: 1\ntests:\n  t::a:\n    ttft_ms.p90: {max: 1}\n    ttft_ms.p90: {max: 2}\n",
        5,
        "duplicate key 'ttft_ms.p90'",
        id="duplicate",
    ),
    pytest.param(
        "schema: 1\ntests:\n  t::a:\n    ttft_ms: {max: 1}\n",
        4,
        "unknown metric 'ttft_ms'",
        id="distribution-without-stat",
    ),
]


@pytest.mark.parametrize(("text", "line", "message"), BAD_FILES)
def test_errors_name_file_and_line(tmp_path: Path, text: str, line: int, message: str) -> None:
    path = write(tmp_path / "thresholds" / "cpu" / "hf.yaml", text)
    with pytest.raises(LLMPerfUsageError) as info:
        load_threshold_file(path)
    assert str(info.value).startswith(f"{path}: line {line}: ")
    assert message in str(info.value)


def test_syntax_error_on_line_4(tmp_path: Path) -> None:
    path = write(tmp_path / "t.yaml", "schema: 1\ntests:\n  t::a:\n    ttft_ms.p90: {max: 1}}\n")
    with pytest.raises(LLMPerfUsageError, match=r"t\.yaml: line 4: invalid YAML"):
        load_threshold_file(path)


def test_unknown_metric_suggests_close_names(tmp_path: Path) -> None:
    text = "schema: 1\ntests:\n  t::a:\n    failure_rate: {max: 0}\n    ttft: {max: 800}\n"
    path = write(tmp_path / "t.yaml", text)
    with pytest.raises(LLMPerfUsageError) as info:
        load_threshold_file(path)
    message = str(info.value)
    assert message.startswith(f"{path}: line 5: unknown metric 'ttft' (did you mean 'ttft_ms.")
    assert message.endswith("(did you mean 'ttft_ms.p50' or 'ttft_ms.p90' or 'ttft_ms.p99'?)")


@pytest.mark.parametrize(
    ("metric", "suggestion"),
    [
        ("ttft_ms", "'ttft_ms.p90'"),
        ("ttft_ms.p09", "'ttft_ms.p90'"),
        ("output_tokens_per_s", "'output_tok_per_s'"),
        ("output", "'output_tok_per_s'"),
    ],
)
def test_unknown_metric_suggestions(tmp_path: Path, metric: str, suggestion: str) -> None:
    path = write(tmp_path / "t.yaml", f"schema: 1\ntests:\n  t::a:\n    {metric}: {{max: 1}}\n")
    with pytest.raises(LLMPerfUsageError, match=f"line 4: unknown metric '{metric}'") as info:
        load_threshold_file(path)
    assert suggestion in str(info.value)


def test_missing_file_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(LLMPerfUsageError, match="cannot read thresholds file"):
        load_threshold_file(tmp_path / "nope.yaml")


def test_metrics_added_by_an_installed_package_are_accepted(
    tmp_path: Path, installed_metrics: Callable[[str], None]
) -> None:
    path = write(tmp_path / "t.yaml", "schema: 1\ntests:\n  t::a:\n    rouge_l: {min: 0.5}\n")
    with pytest.raises(LLMPerfUsageError, match="unknown metric 'rouge_l'"):
        load_threshold_file(path)
    installed_metrics('SPECS = [MetricSpec("rouge_l", "ratio", "higher")]')
    assert load_threshold_file(path).bounds[0].min == 0.5


# --- checking ----------------------------------------------------------------------------


def test_check_passes_with_headroom(example: Path) -> None:
    result = check(
        ThresholdSet.load([example]),
        DECODE,
        {"output_tok_per_s": 130.0, "ttft_ms.p90": 400, "failure_rate": 0.0},
    )
    assert result.passed
    assert result.failed_verdicts == []
    margins = {v.bound.metric: v.margin for v in result.verdicts}
    assert margins["output_tok_per_s"] == pytest.approx((130 - 120.5) / 120.5)
    assert margins["ttft_ms.p90"] == pytest.approx(0.5)
    assert margins["failure_rate"] == 0  # a zero limit: absolute headroom


def test_check_reports_misses_in_a_table(example: Path) -> None:
    result = check(
        ThresholdSet.load([example]),
        DECODE,
        {"output_tok_per_s": 105.7, "ttft_ms.p90": 800, "failure_rate": 0.25},
    )
    assert not result.passed
    assert [v.bound.metric for v in result.failed_verdicts] == ["output_tok_per_s", "failure_rate"]
    text = result.table()
    assert table_rows(text) == [
        ["metric", "measured", "bound", "margin", "p", "verdict"],
        ["output_tok_per_s", "105.7", ">= 120.5", "-12.3%", "-", "MISS"],
        ["ttft_ms.p90", "800", "<= 800", "+0.0%", "-", "ok"],
        ["failure_rate", "0.25", "<= 0", "-0.25", "-", "MISS"],
    ]
    assert text.splitlines()[-2:] == [
        f"thresholds from {example}:5",
        f"thresholds from {example}:7",
    ]
    # Columns line up: text to the left, numbers to the right.
    assert text.splitlines()[:5] == [
        "metric            measured  bound     margin  p  verdict",
        "----------------  --------  --------  ------  -  -------",
        "output_tok_per_s     105.7  >= 120.5  -12.3%  -  MISS",
        "ttft_ms.p90            800  <= 800     +0.0%  -  ok",
        "failure_rate          0.25  <= 0       -0.25  -  MISS",
    ]


def test_unmeasured_metric_is_a_miss(example: Path) -> None:
    result = check(ThresholdSet.load([example]), DECODE, {"output_tok_per_s": None})
    assert not result.passed
    assert all(v.measured is None and v.margin is None for v in result.verdicts)
    assert table_rows(result.table())[1] == [
        "output_tok_per_s",
        "not measured",
        ">= 120.5",
        "-",
        "-",
        "MISS",
    ]


def test_range_bound_and_large_numbers(example: Path) -> None:
    checks = ThresholdSet.load([example])
    inside = check(checks, LATENCY_A, {"e2e_ms.p50": 4000})
    above = check(checks, LATENCY_A, {"e2e_ms.p50": 12345.6})
    assert inside.passed
    assert inside.verdicts[0].margin == pytest.approx(0.2)  # the nearer side: max
    assert not above.passed
    assert table_rows(above.table())[1] == [
        "e2e_ms.p50",
        "12346",
        "1 .. 5000",
        "-146.9%",
        "-",
        "MISS",
    ]
    huge = check(checks, LATENCY_A, {"e2e_ms.p50": 2.5e12})
    assert table_rows(huge.table())[1][1] == "2.5e+12"


def test_nan_measurement_misses(example: Path) -> None:
    result = check(ThresholdSet.load([example]), LATENCY_A, {"e2e_ms.p50": float("nan")})
    assert not result.passed
    assert result.verdicts[0].margin is None


def test_a_test_without_thresholds_passes(example: Path) -> None:
    result = check(ThresholdSet.load([example]), "suites/other.py::test_x", {"e2e_ms.p50": 1e9})
    assert result.passed
    assert result.verdicts == []


# --- matching ----------------------------------------------------------------------------


GLOBS = """\
schema: 1
tests:
  "suites/t.py::test_latency[*]":
    e2e_ms.p50: {max: 5000}
    ttft_ms.p90: {max: 900}
  "suites/t.py::test_latency[long*]":
    e2e_ms.p50: {max: 9000}
  "suites/t.py::test_latency[long_a]":
    ttft_ms.p90: {max: 100}
  "suites/*::test_?ecode[*]":
    output_tok_per_s: {min: 10}
"""


def test_glob_keys_treat_brackets_literally(tmp_path: Path) -> None:
    checks = ThresholdSet.load([write(tmp_path / "t.yaml", GLOBS)])
    assert [b.metric for b in checks.bounds_for("suites/t.py::test_latency[short]")] == [
        "e2e_ms.p50",
        "ttft_ms.p90",
    ]
    # fnmatch would read `[*]` as a class matching one '*'; here it is "[" anything "]".
    assert checks.bounds_for("suites/t.py::test_latency") == []
    assert checks.bounds_for("suites/t.py::test_latency[a]x") == []
    assert [b.min for b in checks.bounds_for("suites/sub/x.py::test_decode[p-1]")] == [10]
    assert checks.bounds_for("suites/x.py::test_predecode[p]") == []


def test_exact_key_beats_globs_per_metric(tmp_path: Path) -> None:
    path = write(tmp_path / "t.yaml", GLOBS)
    bounds = {
        b.metric: b
        for b in ThresholdSet.load([path]).bounds_for("suites/t.py::test_latency[long_a]")
    }
    assert bounds["ttft_ms.p90"].max == 100  # exact key
    assert bounds["e2e_ms.p50"].max == 9000  # the more specific of two globs
    assert bounds["e2e_ms.p50"].line == 7


def test_later_file_wins_a_tie(tmp_path: Path) -> None:
    first = write(tmp_path / "a.yaml", "schema: 1\ntests:\n  t::a:\n    e2e_ms.p50: {max: 1}\n")
    second = write(tmp_path / "b.yaml", "schema: 1\ntests:\n  t::a:\n    e2e_ms.p50: {max: 2}\n")
    assert [b.file for b in ThresholdSet.load([first, second]).bounds_for("t::a")] == [second]


def test_unmatched_keys_and_unmeasured_metrics(tmp_path: Path) -> None:
    path = write(tmp_path / "t.yaml", GLOBS)
    messages = ThresholdSet.load([path]).unmatched(
        ["suites/t.py::test_latency[short]", "suites/t.py::test_other"],
        ["e2e_ms.p50", "output_tok_per_s"],
    )
    assert messages == [
        f"{path}: line 6: 'suites/t.py::test_latency[long*]' matched no test",
        f"{path}: line 8: 'suites/t.py::test_latency[long_a]' matched no test",
        f"{path}: line 10: 'suites/*::test_?ecode[*]' matched no test",
        f"{path}: line 5: 'ttft_ms.p90' of 'suites/t.py::test_latency[*]' was never measured",
    ]


def test_keys_of_test_files_not_collected_are_not_stale(tmp_path: Path) -> None:
    # `pytest suites/u.py`: the keys of suites/t.py were not asked for; a glob over
    # every file still must match something.
    path = write(tmp_path / "t.yaml", GLOBS)
    messages = ThresholdSet.load([path]).unmatched(["suites/u.py::test_x"], ["e2e_ms.p50"])
    assert messages == [f"{path}: line 10: 'suites/*::test_?ecode[*]' matched no test"]


def test_a_labelled_key_matches_its_collected_test(tmp_path: Path) -> None:
    # `suites/t.py::test_x@workers2` is a measurement inside test_x: deselected, test_x is
    # still collected, so the key is not stale.
    path = write(
        tmp_path / "t.yaml",
        "schema: 1\ntests:\n  suites/t.py::test_x@workers2:\n    e2e_ms.p50: {max: 1}\n",
    )
    checks = ThresholdSet.load([path])
    assert checks.unmatched(["suites/t.py::test_x"], [], []) == []
    assert checks.unmatched(["suites/t.py::test_y"], [], []) == [
        f"{path}: line 3: 'suites/t.py::test_x@workers2' matched no test"
    ]


def test_nothing_unmatched_when_everything_is_used(example: Path) -> None:
    checks = ThresholdSet.load([example])
    metrics = ["output_tok_per_s", "ttft_ms.p90", "failure_rate", "e2e_ms.p50"]
    assert checks.unmatched([DECODE, LATENCY_A], metrics) == []


# --- hardware ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("gpu", "slug"),
    [
        (None, "cpu"),
        ("", "cpu"),
        ("NVIDIA H100 80GB HBM3", "h100-80gb-hbm3"),
        ("nvidia H200", "h200"),
        ("NVIDIA A100-SXM4-40GB", "a100-sxm4-40gb"),
        ("NVIDIA GeForce RTX 4090", "geforce-rtx-4090"),
        ("Tesla T4", "tesla-t4"),
        ("AMD Instinct MI300X", "amd-instinct-mi300x"),
    ],
)
def test_hardware_slug(gpu: str | None, slug: str) -> None:
    assert hardware_slug(gpu) == slug


def test_select_longest_matching_directory(tmp_path: Path) -> None:
    root = tmp_path / "thresholds"
    for name in [
        "cpu/hf.yaml",
        "h100/hf.yaml",
        "h100/vllm.yaml",
        "h100-80gb/hf.yaml",
        "h1/hf.yaml",
        "h100x/hf.yaml",
        "h200/hf.yaml",
    ]:
        write(root / name, "schema: 1\n")
    h100 = hardware_slug("NVIDIA H100 80GB HBM3")
    assert select_threshold_files(root, h100, "hf") == [root / "h100-80gb" / "hf.yaml"]
    # The most specific directory lacks vllm.yaml; the next one that applies has it.
    assert select_threshold_files(root, h100, "vllm") == [root / "h100" / "vllm.yaml"]
    assert select_threshold_files(root, hardware_slug("NVIDIA H100 PCIe"), "hf") == [
        root / "h100" / "hf.yaml"
    ]
    assert select_threshold_files(root, hardware_slug(None), "hf") == [root / "cpu" / "hf.yaml"]
    assert select_threshold_files(root, "cpu", "sglang") == []
    assert select_threshold_files(root, "a100-sxm4-40gb", "hf") == []


def test_missing_thresholds_dir_selects_nothing(tmp_path: Path) -> None:
    assert select_threshold_files(tmp_path / "absent", "cpu", "hf") == []


# --- updating ----------------------------------------------------------------------------

DEFAULTS = ["output_tok_per_s", "ttft_ms.p90", "failure_rate"]


def test_update_writes_a_new_file(tmp_path: Path) -> None:
    path = tmp_path / "thresholds" / "cpu" / "hf.yaml"
    results: dict[str, dict[str, float | None]] = {
        DECODE: {"output_tok_per_s": 123.456, "ttft_ms.p90": 700.0, "failure_rate": 0.0},
        "suites/b.py::t[x: y]": {"output_tok_per_s": 5e-6, "ttft_ms.p90": None},
    }
    report = update_thresholds(path, results, 0.1, DEFAULTS)
    assert report.written == ["suites/b.py::t[x: y]", DECODE]  # sorted
    assert report.loosened == []
    # 123.456 less 10% is 111.1104, rounded down; 5e-6 less 10% needs `4.5e-06` to stay a float.
    text = path.read_text(encoding="utf-8")
    assert text.startswith("# Written by pytest --llmperf-update-thresholds or llmperf")
    assert "the value with a margin of 10%.\n" in text
    assert text[text.index("schema:") :] == textwrap.dedent(f"""\
        schema: 1
        tests:
          "suites/b.py::t[x: y]":
            output_tok_per_s: {{min: 4.5e-06}}
          "{DECODE}":
            failure_rate: {{max: 0}}
            output_tok_per_s: {{min: 111.1}}
            ttft_ms.p90: {{max: 770}}
        """)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert [p.name for p in path.parent.iterdir()] == ["hf.yaml"]  # no temp file left behind
    checks = ThresholdSet.load([path])
    # Unmeasured metrics get no bound, so the measurements that wrote the file pass it.
    assert all(check(checks, test_id, measured).passed for test_id, measured in results.items())


def test_update_with_no_margin_still_passes(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    measured = {"output_tok_per_s": 98.76543, "ttft_ms.p90": 1.234567, "failure_rate": 0.0}
    update_thresholds(path, {DECODE: measured}, 0.0, DEFAULTS)
    result = check(ThresholdSet.load([path]), DECODE, measured)
    assert result.passed
    assert [v.bound.describe() for v in result.verdicts] == ["<= 0", ">= 98.76", "<= 1.235"]


def test_update_rewrites_existing_bounds(example: Path) -> None:
    results: dict[str, dict[str, float | None]] = {
        # slower: min drops (looser); ttft better: max drops; failures still none
        DECODE: {"output_tok_per_s": 109.1, "ttft_ms.p90": 500.0, "failure_rate": 0},
        LATENCY_A: {
            "output_tok_per_s": 50.0,
            "ttft_ms.p90": 1e4,
            "failure_rate": 0,
            "e2e_ms.p50": 3e3,
        },
    }
    report = update_thresholds(example, results, 0.1, DEFAULTS)
    assert report.written == [DECODE, LATENCY_A]
    assert report.loosened == [f"{DECODE}: output_tok_per_s min 120.5 -> 98.19 (looser)"]
    loaded = load_threshold_file(example)
    by_key = {(b.test_pattern, b.metric): b for b in loaded.bounds}
    assert by_key[DECODE, "output_tok_per_s"].min == 98.19
    assert by_key[DECODE, "ttft_ms.p90"].max == 550
    assert by_key[DECODE, "failure_rate"].max == 0
    # The glob entry is kept as it was; the new exact entry takes the defaults.
    glob = by_key["suites/test_smoke.py::test_latency[*]", "e2e_ms.p50"]
    assert (glob.min, glob.max) == (1, 5000)
    assert (by_key[LATENCY_A, "ttft_ms.p90"].min, by_key[LATENCY_A, "ttft_ms.p90"].max) == (
        None,
        11000,
    )
    checks = ThresholdSet([loaded])
    assert all(check(checks, test_id, m).passed for test_id, m in results.items())


def test_update_sets_both_sides_of_a_range_and_reports_looser(tmp_path: Path) -> None:
    path = write(
        tmp_path / "t.yaml",
        f"""\
        schema: 1
        tests:
          "{LATENCY_A}":
            e2e_ms.p50: {{min: 900, max: 1100}}
            ttft_ms.p90: {{max: 50}}
        """,
    )
    report = update_thresholds(path, {LATENCY_A: {"e2e_ms.p50": 2000.0}}, 0.2, DEFAULTS)
    assert report.loosened == [f"{LATENCY_A}: e2e_ms.p50 max 1100 -> 2400 (looser)"]
    bounds = {b.metric: b for b in load_threshold_file(path).bounds}
    assert (bounds["e2e_ms.p50"].min, bounds["e2e_ms.p50"].max) == (1600, 2400)
    assert bounds["ttft_ms.p90"].max == 50  # not measured this time: kept
    assert "a margin of 20%" in path.read_text(encoding="utf-8")


def test_update_reports_loosening_against_a_glob(example: Path) -> None:
    report = update_thresholds(example, {LATENCY_A: {"e2e_ms.p50": 6000.0}}, 0.0, ["e2e_ms.p50"])
    assert report.loosened == [
        f"{LATENCY_A}: e2e_ms.p50 min 1 -> none (looser)",
        f"{LATENCY_A}: e2e_ms.p50 max 5000 -> 6000 (looser)",
    ]


def test_update_without_measurements_leaves_the_file(example: Path) -> None:
    before = example.read_text(encoding="utf-8")
    report = update_thresholds(example, {DECODE: {"output_tok_per_s": None}}, 0.1, DEFAULTS)
    assert (report.written, report.loosened) == ([], [])
    assert example.read_text(encoding="utf-8") == before


def test_update_refuses_a_broken_file(tmp_path: Path) -> None:
    path = write(tmp_path / "t.yaml", "schema: 1\ntests:\n  t::a:\n    ttft: {max: 1}\n")
    with pytest.raises(LLMPerfUsageError, match="line 4: unknown metric 'ttft'"):
        update_thresholds(path, {"t::a": {"ttft_ms.p90": 1.0}}, 0.1, DEFAULTS)


@pytest.mark.parametrize(
    ("margin", "defaults", "message"),
    [
        (1.0, DEFAULTS, "margin must be at least 0 and below 1"),
        (-0.1, DEFAULTS, "margin must be at least 0 and below 1"),
        (0.1, ["ttft_ms.p9"], "unknown default threshold metric 'ttft_ms.p9'"),
    ],
)
def test_update_rejects_bad_arguments(
    tmp_path: Path, margin: float, defaults: list[str], message: str
) -> None:
    with pytest.raises(LLMPerfUsageError, match=message):
        update_thresholds(tmp_path / "t.yaml", {"t::a": {"ttft_ms.p90": 1.0}}, margin, defaults)


def test_an_exact_bound_that_still_holds_is_kept_not_loosened_by_the_margin(
    tmp_path: Path,
) -> None:
    # Accuracy of a deterministic model has no noise: a rewrite from a run that still meets
    # its bound keeps it (the margin would only loosen 0.9 to 0.75); a run below it moves it.
    path = tmp_path / "t.yaml"
    path.write_text(f'schema: 1\ntests:\n  "{DECODE}":\n    accuracy: {{min: 0.9}}\n')
    report = update_thresholds(path, {DECODE: {"accuracy": 1.0}}, 0.25, DEFAULTS)
    assert report.loosened == [] and "accuracy: {min: 0.9}" in path.read_text()
    report = update_thresholds(path, {DECODE: {"accuracy": 0.8}}, 0.25, DEFAULTS)
    assert report.loosened == [f"{DECODE}: accuracy min 0.9 -> 0.6 (looser)"]
