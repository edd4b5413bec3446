"""`llmperf report`: the HTML report of real runs of the shipped suites, read by a browser.

The runs are made once for the module: the smoke and accuracy suites on hf (one run), and
two configurations of the vLLM sweep on vLLM's CPU build (a second run), so the report
meets two engines, a grid over max_num_seqs, per-request records and accuracy metrics as
the plugin really writes them. Comparisons and hostile text use copies of a real run with
a few values changed, so that their expectations do not depend on timing.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pytest_llmperf.cli import main
from pytest_llmperf.report.plots import comparison_figures, concurrency, run_figures
from pytest_llmperf.results.runs import open_run
from pytest_llmperf.tables import format_number
from tests import browser
from tests.suite_run import VLLM_REPORT_CONFIGS, run_suite

RUN_PLOT_TITLES = (
    "Throughput vs concurrency",
    "Latency percentiles per test",
    "TTFT distribution",
    "Scaling efficiency",
    "Accuracy vs throughput",
)
COMPARISON_PLOT_TITLES = ("Base vs new: output tok/s and TTFT p90", "Relative change per test")
HF_TESTS = (
    "suites/test_smoke.py::test_decode_throughput[batch1]",
    "suites/test_smoke.py::test_decode_throughput[batch8]",
    "suites/test_accuracy.py::test_sums_multiple_choice",
    "suites/test_accuracy.py::test_sums_generation",
)
VLLM_CONFIGS = VLLM_REPORT_CONFIGS  # max_num_seqs 4 and 16


@dataclass(frozen=True)
class Runs:
    hf: Path
    vllm: Path


def _only_run(results: Path, output: str) -> Path:
    assert results.is_dir(), output
    runs = [p for p in results.iterdir() if (p / "summary.json").is_file()]
    assert len(runs) == 1, output
    return runs[0]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Runs:
    hf_dir, vllm_dir = tmp_path_factory.mktemp("hf"), tmp_path_factory.mktemp("vllm")
    hf_args = ("suites/test_accuracy.py", "-m", "smoke or accuracy")
    vllm_args = ("-m", "smoke", "--engine", "vllm", "-k", " or ".join(VLLM_CONFIGS))
    # One after the other: run side by side on two cores they took longer, not shorter.
    hf = run_suite(hf_dir, *hf_args, target="suites/test_smoke.py")
    vllm = run_suite(vllm_dir, *vllm_args, target="suites/test_vllm_sweep.py")
    # Thresholds may miss on a busy machine (the suite then exits 1): the report shows that,
    # so only the records are required here (the vLLM run's bounds are checked in
    # test_the_vllm_configurations_meet_their_shipped_thresholds).
    hf_run = _only_run(hf.results_dir, hf.output)
    assert set(HF_TESTS) <= {t["test_id"] for t in hf.summary()["tests"]}, hf.output
    vllm_run = _only_run(vllm.results_dir, vllm.output)
    assert len(vllm.summary()["tests"]) == len(VLLM_CONFIGS), vllm.output
    return Runs(hf_run, vllm_run)


def _report(tmp_path: Path, *refs: Path) -> str:
    out = tmp_path / "report.html"
    assert main(["report", *map(str, refs), "-o", str(out)]) == 0
    return out.read_text(encoding="utf-8")


def _sections(html: str) -> dict[str, str]:
    """Each plot section's content by its heading."""
    found = re.findall(r'<section class="plot"><h3>(.*?)</h3>(.*?)</section>', html, re.DOTALL)
    return dict(found)


def _copy_run(source: Path, dest: Path, run_id: str) -> dict[str, Any]:
    """A copy of a run under a new id; returns its summary to edit (saved by `_save`)."""
    shutil.copytree(source, dest)
    summary: dict[str, Any] = json.loads((dest / "summary.json").read_text())
    summary["run_id"] = run_id
    return summary


def _save(dest: Path, summary: dict[str, Any]) -> None:
    (dest / "summary.json").write_text(json.dumps(summary))


def _external_references(html: str) -> list[str]:
    """Anything a browser would fetch: a URL with a scheme or `//`, in any attribute or CSS."""
    found = re.findall(r"(?:https?:)?//[\w.-]+\.\w+", html)
    found += re.findall(r"<(?:script|link|img|iframe|object|embed)\b", html, re.IGNORECASE)
    found += re.findall(r"\b(?:src|srcset)\s*=", html, re.IGNORECASE)
    found += [u for u in re.findall(r"url\(([^)]*)\)", html) if not u.startswith("#")]
    found += re.findall(r"@import|@font-face", html)
    return found


def test_report_of_one_run_has_every_plot_and_table(runs: Runs, tmp_path: Path) -> None:
    html = _report(tmp_path, runs.hf)
    sections = _sections(html)
    assert list(sections) == list(RUN_PLOT_TITLES)
    for title, content in sections.items():
        # a figure, titled in its heading, its SVG <title> and its matplotlib title
        assert content.count("<svg") == 1, title
        assert f"<title>{title}</title>" in content
        assert f">{title}</text>" in content
    assert "test_decode_throughput (hf)" in sections["Throughput vs concurrency"]
    assert "test_sums_multiple_choice (accuracy)" in sections["Accuracy vs throughput"]
    assert "test_sums_generation (exact_match)" in sections["Accuracy vs throughput"]
    # the header and the tests table
    run = open_run(runs.hf)
    assert f'<h2 id="run-0">Run {run.run_id}</h2>' in html
    assert f"{len(run.tests)}; thresholds:" in html
    for test_id in HF_TESTS:
        assert f'<span class="id">{test_id}</span>' in html
    assert "Comparison" not in html
    # offline: nothing to fetch, not even a namespace URI
    assert "http://" not in html and "https://" not in html
    assert _external_references(html) == []


def test_the_vllm_configurations_meet_their_shipped_thresholds(runs: Runs) -> None:
    """The part of tests/test_shipped_suites.py's vLLM check that this module's run makes:
    these sweep configurations met `thresholds/cpu/vllm.yaml` (the shipped suite's run
    leaves them out)."""
    tests = read_summary_tests(runs.vllm)
    assert [t["test_id"].split("[")[-1].rstrip("]") for t in tests] == list(VLLM_CONFIGS)
    for test in tests:
        assert test["thresholds"]["checked"], f"{test['test_id']} has no thresholds"
        assert test["thresholds"]["passed"], test["thresholds"]


def read_summary_tests(run: Path) -> list[dict[str, Any]]:
    tests: list[dict[str, Any]] = json.loads((run / "summary.json").read_text())["tests"]
    return tests


def test_figures_for_the_dashboard(runs: Runs) -> None:
    both = [open_run(runs.hf), open_run(runs.vllm)]
    titles = [title for title, _ in run_figures(both)]
    assert titles == list(RUN_PLOT_TITLES)
    # the vLLM run alone: no accuracy test, so no accuracy figure (and no error)
    assert [t for t, _ in run_figures([open_run(runs.vllm)])] == list(RUN_PLOT_TITLES[:4])


def test_concurrency_is_read_from_real_records(runs: Runs) -> None:
    """The x of throughput and scaling: max_num_seqs, capped by the requests of a round."""
    hf = {t.test_id.split("::")[-1]: concurrency(t) for t in open_run(runs.hf).tests}
    assert hf["test_decode_throughput[batch1]"] == 1  # max_num_seqs 1
    assert hf["test_decode_throughput[batch8]"] == 8  # max_num_seqs 8, 16 requests
    assert hf["test_single_request_latency"] == 1  # hf's default batch, one request
    assert [concurrency(t) for t in open_run(runs.vllm).tests] == [4, 16]


def test_report_escapes_text_from_result_files(runs: Runs, tmp_path: Path) -> None:
    hostile_id = 'suites/test_x.py::test_<img src=x onerror="alert(1)">[&$1$]'
    dest = tmp_path / "hostile"
    summary = _copy_run(runs.hf, dest, "run-<b>bold</b>")
    test = summary["tests"][0]
    old_id = test["test_id"]
    test["test_id"] = test["threshold_key"] = hostile_id
    test["config"]["name"] = "<script>alert(2)</script>"
    _save(dest, summary)
    requests = [json.loads(line) for line in (dest / "requests.jsonl").read_text().splitlines()]
    mine = [r for r in requests if r["test_id"] == old_id]
    for record in mine:
        record["test_id"] = hostile_id
    mine[0]["error"] = "<script>alert(3)</script>"
    (dest / "requests.jsonl").write_text("".join(json.dumps(r) + "\n" for r in requests))

    html = _report(tmp_path, dest)
    for raw in ("<img", "<script", "<b>bold"):  # no tag from the files, only text
        assert raw not in html
    assert (
        '<span class="id">suites/test_x.py::test_&lt;img src=x onerror=&quot;alert(1)&quot;&gt;[&amp;$1$]</span>'
        in html
    )
    assert "&lt;script&gt;alert(2)&lt;/script&gt;" in html
    assert "&lt;script&gt;alert(3)&lt;/script&gt;" in html  # the failed requests section
    assert "Run run-&lt;b&gt;bold&lt;/b&gt;" in html
    # In figures too (matplotlib escapes its text), with `$1$` shown as typed, not as math.
    assert (
        'test_&lt;img src=x onerror="alert(1)"&gt;[&amp;$1$]'
        in _sections(html)["TTFT distribution"]
    )


def test_two_run_report_compares_base_with_new(runs: Runs, tmp_path: Path) -> None:
    dest = tmp_path / "new"
    summary = _copy_run(runs.hf, dest, "20990101-000000-new000")
    for test in summary["tests"]:
        flat = test["metrics_flat"]
        if test["test_id"].endswith("[batch8]"):  # throughput halved: beyond the 10% tolerance
            flat["output_tok_per_s"] *= 0.5
        if test["test_id"].endswith("[batch1]"):  # TTFT p90 down by a half: improved
            flat["ttft_ms.p90"] *= 0.5
        # The copied rounds do not follow the changed values: judged as values, not samples.
        test["samples"] = {}
    _save(dest, summary)

    html = _report(tmp_path, runs.hf, dest)
    base = open_run(runs.hf).run_id
    assert f"Comparison: base {base} → new 20990101-000000-new000</h2>" in html
    comparison = html[html.index('<h2 id="compare-1">') :]
    assert "1 regression(s)</span> beyond tolerance, 1 improvement(s)" in comparison
    assert f"base {base}: engine hf, model tiny, hardware cpu" in comparison
    assert "WARNING" not in comparison  # one setup: no difference to warn of
    sections = _sections(comparison)
    assert list(sections) == list(COMPARISON_PLOT_TITLES)
    assert all(content.count("<svg") == 1 for content in sections.values())
    rows = re.findall(r"<tr>(.*?)</tr>", comparison)
    regressed = [r for r in rows if "[batch8]" in r and ">output_tok_per_s<" in r]
    assert len(regressed) == 1 and 'class="num regressed">-50.0%<' in regressed[0]
    improved = [r for r in rows if "[batch1]" in r and ">ttft_ms.p90<" in r]
    assert len(improved) == 1 and 'class="num improved">-50.0%<' in improved[0]
    assert _external_references(html) == []

    from pytest_llmperf.results.compare import compare_runs

    figures = comparison_figures(compare_runs(open_run(runs.hf), open_run(dest)))
    assert [title for title, _ in figures] == list(COMPARISON_PLOT_TITLES)


def _cells(row: str) -> list[str]:
    """A table row's cells as text (tags dropped, entities kept as the page escapes them)."""
    return [re.sub(r"<[^>]+>", "", cell) for cell in re.findall(r"<td[^>]*>(.*?)</td>", row)]


def test_report_shows_intervals_rounds_and_every_verdict(gated_run: Path, tmp_path: Path) -> None:
    """A real run judged on bounds, against a baseline and with rounds until decided: each
    headline metric with its interval, the rounds and why they ended, each bound's and each
    baseline metric's verdict with its p-value, in the words the terminal summary uses."""
    html = _report(tmp_path, gated_run)
    run = open_run(gated_run)
    tests_part = html[html.index('<h2 id="tests">') : html.index('<h2 id="verdicts">')]
    verdicts_part = html[html.index('<h2 id="verdicts">') :]
    assert '<li><a href="#verdicts">Verdicts</a></li>' in html
    rows = re.findall(r"<tr>(.*?)</tr>", tests_part)
    header = re.findall(r"<th>(.*?)</th>", tests_part)
    assert header[:7] == ["test", "config", "engine", "model", "thresholds", "baseline", "rounds"]
    for test in run.tests:
        (row,) = [r for r in rows if f'<span class="id">{test.key}</span>' in r]
        cells = dict(zip(header, _cells(row), strict=True))
        assert test.stop is not None and 3 <= test.stop.rounds <= 5
        why = {"decided": "every verdict decided", "max_rounds": "round budget spent"}
        assert cells["rounds"].startswith(f"{test.stop.rounds} ({why.get(test.stop.reason, '')}")
        # throughput measured round by round: its value and its interval's half-width
        found = test.interval("output_tok_per_s")
        assert found is not None and found.relative_half_width is not None
        value = format_number(test.metrics_flat["output_tok_per_s"])
        assert cells["out tok/s"] == f"{value} ±{found.relative_half_width * 100:.1f}%"
        assert re.fullmatch(r"[\d,.]+ ±\d+\.\d%", cells["TTFT p90 ms"]), cells
        assert cells["requests"] == str(test.metrics_flat["requests"])  # a count: no interval
        assert cells["baseline"] in ("ok", "regressed", "inconclusive")
    latency = next(t for t in run.tests if t.key.endswith("test_latency"))
    assert "FAIL" in _cells(next(r for r in rows if latency.key in r))[4]

    verdict_rows = [_cells(r) for r in re.findall(r"<tr>(.*?)</tr>", verdicts_part)]
    verdict_rows = [r for r in verdict_rows if r]  # the header row has no <td>
    bounds = [r for r in verdict_rows if r[1] == "bound"]
    assert len(bounds) == sum(len(t.thresholds.checked) for t in run.tests) == 5
    (missed,) = [r for r in bounds if r[0] == latency.key]
    p = latency.thresholds.checked[0].p
    assert p is not None and p <= 0.01
    assert missed[2:] == [
        "e2e_ms.p90",
        "&lt;= 0.001",
        missed[4],
        "missed",
        f"{p:.2g}",
        "samples",
    ]
    assert re.fullmatch(r"[\d,.]+ ±\d+\.\d%", missed[4]), missed
    assert 'class="regressed">missed</td>' in verdicts_part
    met = [r for r in bounds if r[2] == "output_tok_per_s"]
    assert len(met) == 2 and all(r[3] == "&gt;= 0.001" and r[5] == "met" for r in met)
    baseline = [r for r in verdict_rows if r[1].startswith("baseline ")]
    judged = [(t, c) for t in run.tests if t.baseline for c in t.baseline.judged]
    assert len(baseline) == len(judged) > 0
    for test, change in judged:
        (row,) = [r for r in baseline if r[0] == test.key and r[2] == change.metric]
        assert (
            test.baseline is not None
            and row[1] == f"baseline {test.baseline.run_id}"
            and row[3] == change.tolerance
        )
        verdict = "not judged" if change.verdict == "unreliable" else change.verdict
        assert row[5] == verdict and row[6] == ("-" if change.p is None else f"{change.p:.2g}")
        if change.low is not None and change.tolerance and change.tolerance.endswith("%"):
            assert row[4] == (f"{change.relative:+.1%} [{change.low:+.1%}, {change.high:+.1%}]"), (
                row
            )
    assert _external_references(html) == []


def test_report_of_a_missing_run_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "x.html"
    code = main(["report", "does-not-exist", "-o", str(out), "--results-dir", str(tmp_path)])
    assert code == 2
    err = capsys.readouterr().err
    assert "llmperf report: error: does-not-exist: no such run" in err
    assert not out.exists() and list(tmp_path.iterdir()) == []


# -- in a browser ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def chromium() -> str:
    """Chromium's path (skips, or fails where CI is set, without it); module-scoped so that,
    asked for before `runs`, a missing browser skips before the suites run."""
    return browser.chromium()


def test_report_renders_in_headless_chromium(chromium: str, runs: Runs, tmp_path: Path) -> None:
    """A real browser draws the figures (not a blank page) and finds their titles."""
    from matplotlib.image import imread

    out = tmp_path / "report.html"
    assert main(["report", str(runs.hf), str(runs.vllm), "-o", str(out)]) == 0
    url = out.resolve().as_uri()

    png = browser.screenshot(url, tmp_path / "report.png", width=1400, height=3000)
    pixels = imread(str(png))[:, :, :3]  # floats in [0, 1]
    assert pixels.shape[:2] == (3000, 1400)
    ink = (pixels.min(axis=2) < 0.9).mean()
    # Colored pixels (bars, lines, markers) come from the figures: text is black or grey
    # (this page: ~2.4% colored; without its SVGs ~0.2%).
    colored = ((pixels.max(axis=2) - pixels.min(axis=2)) > 0.25).mean()
    distinct = len({tuple(p) for p in (pixels[::7, ::7] * 255).astype(int).reshape(-1, 3)})
    assert ink > 0.03, f"only {ink:.1%} of the page is not white"
    assert colored > 0.01, f"only {colored:.2%} of the page is colored: no figure drawn?"
    assert distinct > 100, f"{distinct} distinct colors"

    dom = browser.rendered_dom(url)
    for title in RUN_PLOT_TITLES:
        assert f"<h3>{title}</h3>" in dom
        assert f"<title>{title}</title>" in dom  # the SVG's own title, parsed as SVG
        assert re.search(rf"<text[^>]*>{re.escape(title)}</text>", dom), title
    assert dom.count("<svg") == len(RUN_PLOT_TITLES)
    assert "test_decode_throughput (hf)" in dom
    assert "test_sweep_cpu (vllm)" in dom
    assert "Comparison: base" in dom
