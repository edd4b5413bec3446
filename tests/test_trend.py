"""History: `llmperf trend` over series of real run folders, and the report's History section.

The two real runs of the small suite (`real_runs`, made once per session) are copied into
series of nightly runs a day apart, each copy's numbers times seeded noise of a few percent;
a step or a regression is injected by scaling a metric from some run on, as
`tests/test_compare.py` does for one comparison. So the verdicts do not hang on this
machine's timings, yet every file read is one the plugin wrote.
"""

from __future__ import annotations

import json
import math
import random
import re
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from pytest_llmperf.cli import main
from pytest_llmperf.measure.stats import fewest_runs
from pytest_llmperf.results.trend import HEADLINE_METRICS, Trend, analyse, collect_runs

#: `change(index, test_id, flat metrics)`: the metrics of copy `index` after the noise.
Change = Callable[[int, str, dict[str, Any]], None]
TIMED = [m for m in HEADLINE_METRICS if m != "accuracy"]  # what the small suite records
TESTS = ("test_decode[batch1]", "test_decode[batch4]", "test_latency")


def series(
    sources: Sequence[Path],
    dest: Path,
    count: int,
    change: Change | None = None,
    noise: float = 0.03,
    seed: int = 0,
    rounds: int = 0,
) -> list[Path]:
    """`count` copies of `sources` (in turn) under `dest`, as nights one day apart: run id and
    start rewritten, each timed metric times log-normal noise (sd `noise`), then `change`.
    With `rounds`, each test also gets that many per-round samples of its output tok/s
    around the changed value (and its headline value stays the unchanged one)."""
    rng = random.Random(seed)
    made = []
    for index in range(count):
        run_id = f"20990101-{index:02d}0000-night{index:02d}"
        copy = dest / run_id
        shutil.copytree(sources[index % len(sources)], copy)
        summary = json.loads((copy / "summary.json").read_text())
        summary["run_id"] = run_id
        summary["started_at"] = f"2099-01-{index + 1:02d}T02:00:00+0000"
        for test in summary["tests"]:
            flat = test["metrics_flat"]
            for metric in TIMED:
                flat[metric] *= math.exp(rng.gauss(0, noise))
            headline = dict(flat)
            if change is not None:
                change(index, test["test_id"], flat)
            # The real run's own samples would not follow the changed values: without
            # `rounds` the series is of values alone.
            test["samples"] = {}
            if rounds:
                level = flat["output_tok_per_s"]
                test["samples"] = {
                    "output_tok_per_s": [
                        level * math.exp(rng.gauss(0, noise)) for _ in range(rounds)
                    ]
                }
                flat.update(headline)
        (copy / "summary.json").write_text(json.dumps(summary))
        made.append(copy)
    return made


def slower_from(start: int, factor: float, metric: str = "output_tok_per_s") -> Change:
    def change(index: int, _test: str, flat: dict[str, Any]) -> None:
        if index >= start:
            flat[metric] *= factor

    return change


def trend(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["trend", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def analysed(folder: Path, **options: Any) -> Trend:
    return analyse(collect_runs([folder], folder), **options)


# --- steps ------------------------------------------------------------------------------


def test_a_step_injected_into_real_runs_is_found_at_its_run(
    real_runs: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """12 nights, throughput x0.8 from the 7th on: a step there, in each test, and no other."""
    nights = series(real_runs[:1], tmp_path / "h", 12, slower_from(6, 0.8), seed=1)
    result = analysed(tmp_path / "h")
    found = {(s.series.key.test.split("::")[-1], s.series.metric): s for s in result.steps}
    assert set(found) == {(test, "output_tok_per_s") for test in TESTS}
    for step in found.values():
        assert step.step.index == 6 and step.point.run.run_id == nights[6].name
        assert step.worse and step.relative is not None and -0.28 < step.relative < -0.12
        assert step.step.p_value <= 0.005

    code, out, err = trend(capsys, str(tmp_path / "h"))
    assert code == 1 and err == "", out
    rows = [line for line in out.splitlines() if "REGRESSION" in line]
    assert len(rows) == 3
    for row in rows:  # the run, its date, the signed change, the direction's verdict
        assert re.search(rf"output_tok_per_s\s+{nights[6].name}\s+2099-01-07 02:00\s", row), row
        assert re.search(r"\s-[12]\d\.\d%\s+REGRESSION\s+0\.00\d+\s+values$", row), row
    assert "3 step(s) for the worse:" in out
    # The nightly's gate: the newest night, judged against those since the step, is fine.
    code, out, _ = trend(capsys, str(tmp_path / "h"), "--fail-on", "newest")
    assert code == 0 and "(reported; --fail-on newest)" in out
    assert "the newest run regressed nowhere against the last 7 runs" in out


@pytest.mark.parametrize("sources", [1, 2], ids=["one-real-run", "two-real-runs-in-turn"])
def test_an_unchanged_series_has_no_step(
    real_runs: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    sources: int,
) -> None:
    """Seeded noise of a few percent, and with two sources the real runs' own difference."""
    series(real_runs[:sources], tmp_path / "h", 12, seed=2)
    code, out, _ = trend(capsys, str(tmp_path / "h"))
    assert code == 0, out
    assert "steps (change points at level 0.005 per series, 12+ runs)\n  none found" in out
    assert "no step for the worse" in out and "REGRESSED" not in out
    result = analysed(tmp_path / "h")
    assert result.steps == () and len(result.series) == len(TESTS) * len(TIMED)


def test_steps_are_found_in_the_rounds_when_every_run_has_them(
    real_runs: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The per-round samples step while the headline values do not: only samples show it,
    and a run without samples puts the series back on the values."""
    series(real_runs[:1], tmp_path / "h", 12, slower_from(6, 0.8), seed=3, rounds=3)
    result = analysed(tmp_path / "h", metrics=["output_tok_per_s"])
    assert all(s.uses_samples for s in result.series)
    assert {s.step.index for s in result.steps} == {6} and len(result.steps) == 3
    code, out, _ = trend(capsys, str(tmp_path / "h"), "--metric", "output_tok_per_s")
    assert code == 1 and out.count("REGRESSION") == 3 and "  rounds\n" in out

    night = tmp_path / "h" / "20990101-030000-night03"
    summary = json.loads((night / "summary.json").read_text())
    for test in summary["tests"]:
        del test["samples"]  # a run written before samples were kept
    (night / "summary.json").write_text(json.dumps(summary))
    result = analysed(tmp_path / "h", metrics=["output_tok_per_s"])
    assert not any(s.uses_samples for s in result.series) and result.steps == ()


def test_other_engines_models_or_hardware_make_other_series(
    real_runs: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """From the 7th night on the runs are on an H100, five times as fast: not a step."""
    nights = series(real_runs[:1], tmp_path / "h", 12, slower_from(6, 5.0), seed=4)
    for night in nights[6:]:
        summary = json.loads((night / "summary.json").read_text())
        summary["hardware"] = "h100"
        (night / "summary.json").write_text(json.dumps(summary))
    code, out, _ = trend(capsys, str(tmp_path / "h"))
    assert code == 0 and "none found" in out, out
    assert (
        "test_suite.py::test_latency: not mixed, one series per engine, model and hardware: "
        "hf, tiny, cpu (6 runs); hf, tiny, h100 (6 runs)"
    ) in out
    assert "steps need 12 runs of a series" in out
    recent = out[out.index("against up to 7 runs") : out.index("against the first 3 runs")]
    rows = [line for line in recent.splitlines() if "hf, tiny, h100  output_tok_per_s" in line]
    assert len(rows) == 3 and all(re.search(r"\s5\s", row) for row in rows)  # 5 earlier runs


# --- the newest run ---------------------------------------------------------------------


@pytest.mark.parametrize("factor", [0.6, 1.0], ids=["regressed", "unchanged"])
def test_the_newest_run_is_judged_against_the_runs_before_it(
    real_runs: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    factor: float,
) -> None:
    """8 nights (too few for steps): the last one 40% slower, or not."""
    series(real_runs[:1], tmp_path / "h", 8, slower_from(7, factor), seed=5)
    code, out, _ = trend(capsys, str(tmp_path / "h"), "--fail-on", "newest")
    assert "steps need 12 runs of a series (change points at level 0.005)" in out
    assert "against up to 7 runs before it" in out
    recent = out[out.index("against up to 7 runs") : out.index("against the first 3 runs")]
    regressed = [line for line in recent.splitlines() if "REGRESSED" in line]
    if factor < 1:
        assert code == 1, out
        assert len(regressed) == 3 and all(" output_tok_per_s " in r for r in regressed)
        row = re.compile(r"\s7\s+\S+\s+\S+\s+-[34]\d\.\d%\s+10%\s+REGRESSED\s")
        assert all(row.search(r) for r in regressed), regressed
        assert "3 metric(s) regressed against the last 7 runs:" in out
        # 40% below the first nights too: the same fall, seen from the start.
        assert "3 metric(s) regressed since the start of their series" in out
    else:
        assert code == 0 and "REGRESSED" not in out, out
        assert "the newest run regressed nowhere against the last 7 runs" in out
    # The window follows --window.
    code, out, _ = trend(capsys, str(tmp_path / "h"), "--window", "3")
    assert "against up to 3 runs before it" in out
    judged = analysed(tmp_path / "h", window=3).newest
    assert {len(j.window) for j in judged} == {3} and len(judged) == len(TESTS) * len(TIMED)


def creeping(step: float) -> Change:
    """Throughput times `step` a night: night k at step**k."""

    def change(index: int, _test: str, flat: dict[str, Any]) -> None:
        flat["output_tok_per_s"] *= step**index

    return change


def test_a_regression_that_creeps_in_5_percent_a_night_fails_the_nightly_gate(
    real_runs: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """8 nights, each 5% slower than the night before (30% in all): no step, and tonight is
    within what the seven nights before it "drift"; against the first three nights, pooled,
    with the drift floor, the creep is found, and the gate fails."""
    nights = series(real_runs[:1], tmp_path / "h", 8, creeping(0.95), seed=6, rounds=3)
    result = analysed(tmp_path / "h")
    assert result.steps == ()
    assert [j for j in result.newest if j.regressed] == []  # the check that missed creeps
    crept = {j.series.key.test.split("::")[-1]: j for j in result.crept}
    assert set(crept) == set(TESTS), [j.series.metric for j in result.crept]
    for judgement in crept.values():
        assert judgement.series.metric == "output_tok_per_s"
        assert [p.run.run_id for p in judgement.window] == [n.name for n in nights[:3]]
        verdict = judgement.verdict
        assert verdict is not None and verdict.bad and verdict.p_adjusted <= 0.01
        assert 0.6 < verdict.change < 0.85 and verdict.drift == pytest.approx(0.02)
    # Only the creeping metric: latency, unchanged, is judged and not regressed.
    others = [j for j in result.since_start if j.series.metric != "output_tok_per_s"]
    assert others and not any(j.regressed for j in others)

    code, out, err = trend(capsys, str(tmp_path / "h"), "--fail-on", "newest")
    assert code == 1 and err == "", out
    assert "the newest run regressed nowhere against the last 7 runs" in out
    assert (
        f"newest run {nights[-1].name} against the first 3 runs of each series (since its "
        "last step), pooled, drift between runs 2%"
    ) in out
    assert (
        "3 metric(s) regressed since the start of their series, beyond their tolerance and a "
        "drift of 2% between runs (a creep):"
    ) in out
    span = f"against {nights[0].name} to {nights[2].name} (3 runs), pooled"
    crept_lines = [line for line in out.splitlines() if line.endswith(span)]
    assert len(crept_lines) == 3
    for line in crept_lines:
        assert re.search(r"output_tok_per_s: -[23]\d\.\d% against", line), line
    rows = [line for line in out.splitlines() if "REGRESSED" in line]
    assert len(rows) == 3 and all(
        re.search(r"\s3\s.*-[23]\d\.\d%\s+10%\s+REGRESSED", r) for r in rows
    )

    # A wider drift between runs, given, excuses it.
    code, out, _ = trend(capsys, str(tmp_path / "h"), "--fail-on", "newest", "--drift", "0.2")
    assert code == 0 and "drift between runs 20%" in out, out
    assert "the newest run regressed nowhere against the start of its series" in out


def test_an_unchanged_noisy_series_of_14_nights_passes_both_checks(
    real_runs: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """14 nights of seeded noise (3% between nights and between rounds), as the nightly
    keeps them: tonight judged against the last 7 and against the first 3, and neither fails."""
    series(real_runs, tmp_path / "h", 14, seed=7, rounds=3)
    result = analysed(tmp_path / "h")
    assert len(result.since_start) == len(TESTS) * len(TIMED)
    assert result.regressed == [] and result.crept == []
    for judgement in result.since_start:
        assert judgement.verdict is not None and judgement.verdict.outcome != "regressed"
        assert [p.position for p in judgement.window] == [0, 1, 2]
    code, out, _ = trend(capsys, str(tmp_path / "h"), "--fail-on", "newest")
    assert code == 0 and "REGRESSED" not in out, out
    assert "the newest run regressed nowhere against the start of its series" in out


# --- usage errors -----------------------------------------------------------------------


def test_usage_errors_are_one_line_and_exit_2(
    real_runs: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    three = series(real_runs[:1], tmp_path / "h", 3)
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes.txt").write_text("not a run")
    cases = {
        (str(tmp_path / "empty"),): f"{tmp_path / 'empty'}: not a run folder (no summary.json, "
        "run.json or tests.jsonl), and no run folder in it",
        (str(tmp_path / "notes.txt"),): f"{tmp_path / 'notes.txt'}: not a run folder",
        tuple(map(str, three[:2])): "2 run(s) given; a trend needs at least 3 (the newest "
        f"judged against 2 or more before it), and {fewest_runs()} to find steps",
        (str(tmp_path / "h"), "--metric", "ttft"): "--metric: unknown metric 'ttft' (did you "
        "mean 'ttft_ms.p50' or 'ttft_ms.p90' or 'ttft_ms.p99'?)",
        (str(tmp_path / "h"), "--metric", "output_tok_per_sec"): "--metric: unknown metric "
        "'output_tok_per_sec' (did you mean 'output_tok_per_s'",
        (str(tmp_path / "h"), "--window", "1"): "--window: 1 earlier run(s) cannot tell drift "
        "from a regression; give 2 or more",
        (str(tmp_path / "h"), "--test", "*nothing*"): "no test matching --test '*nothing*' in "
        "the 3 runs given",
        (str(tmp_path / "h"), "--tolerance", "ttft_ms.p90:-5%"): "--tolerance: "
        "'ttft_ms.p90:-5%': ttft_ms.p90 is lower-is-better",
    }
    for args, words in cases.items():
        code, out, err = trend(capsys, *args)
        assert code == 2 and out == "", (args, out)
        assert err.startswith(f"llmperf trend: error: {words}"), (args, err)
        assert err.count("\n") == 1 and "Traceback" not in err


# --- the report ---------------------------------------------------------------------------


def _sections(html: str) -> dict[str, str]:
    found = re.findall(r'<section class="plot"><h3>(.*?)</h3>(.*?)</section>', html, re.DOTALL)
    return dict(found)


def test_a_report_of_many_runs_plots_their_history_with_the_steps(
    real_runs: tuple[Path, Path], tmp_path: Path
) -> None:
    nights = series(real_runs[:1], tmp_path / "h", 12, slower_from(6, 0.8), seed=1, rounds=3)
    out = tmp_path / "report.html"
    assert main(["report", *map(str, reversed(nights)), "-o", str(out)]) == 0  # any order
    html = out.read_text(encoding="utf-8")
    history = html[html.index('<h2 id="history">') : html.index('<h2 id="tests">')]
    sections = _sections(history)
    assert list(sections) == [f"History: {metric}" for metric in TIMED]
    for title, content in sections.items():
        assert content.count("<svg") == 1 and f"<title>{title}</title>" in content
        assert "% of the series&#x27; median" in content or "median</text>" in content
    throughput = sections["History: output_tok_per_s"]
    # the step, marked once per test, at the 7th night; the intervals from the rounds
    assert len(re.findall(r">-[12]\d% worse</text>", throughput)) == 3
    assert "each run&#x27;s 95% interval from its per-round samples" in throughput
    assert "worse</text>" not in sections["History: ttft_ms.p90"]
    # x: the nights in time order, the newest named
    assert "2099-01-12 02:00" in throughput and "night11" in throughput
    # one comparison: the newest night against the one before it
    assert html.count('<h2 id="compare-') == 1
    assert f"Comparison: base {nights[10].name} → new {nights[11].name}</h2>" in html

    few = tmp_path / "few.html"
    assert main(["report", *map(str, nights[:4]), "-o", str(few)]) == 0
    text = few.read_text(encoding="utf-8")
    assert 'id="history"' not in text and text.count('<h2 id="compare-') == 3
