"""The Streamlit script behind `llmperf dashboard` (run by Streamlit, not imported).

Pages, as tabs: runs (every run of the folder, its tests and metrics, then for the chosen
runs each test's rounds, headline metrics with their intervals and verdicts), plots (the
HTML report's figures for the chosen runs), compare (a base run against a new one,
judged as `llmperf compare` judges), responses (prompts and responses of a test, from
its responses.parquet or else its request records). Everything is read from the
results folder on each page load, so a run that is still going shows what it has.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import streamlit as st

from pytest_llmperf.errors import LLMPerfUsageError
from pytest_llmperf.results import readout
from pytest_llmperf.results.compare import compare_runs
from pytest_llmperf.results.runs import Run, find_runs, load_runs

# Streamlit puts this script's folder first on sys.path on every run, where `html.py` (the
# report) would stand for the standard library's `html` in later imports: matplotlib's
# pyparsing imports `html.entities`, and the plots tab failed. The package is imported by name.
_HERE = Path(__file__).parent.resolve()
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
if Path(getattr(sys.modules.get("html"), "__file__", None) or "/").parent.resolve() == _HERE:
    del sys.modules["html"]  # imported through that path already: the standard one next time

#: The columns the runs table shows first (the rest follow).
KEY_COLUMNS = [
    "run_id",
    "test_id",
    "engine",
    "config",
    "passed",
    "output_tok_per_s",
    "ttft_ms.p90",
    "tpot_ms.p90",
    "e2e_ms.p90",
    "failure_rate",
]
#: The headline metrics the verdicts table shows with their intervals: (heading, metric).
INTERVAL_METRICS = (
    ("out tok/s", "output_tok_per_s"),
    ("TTFT p90 ms", "ttft_ms.p90"),
    ("TPOT p50 ms", "tpot_ms.p50"),
    ("e2e p90 ms", "e2e_ms.p90"),
)


def main(results_dir: Path) -> None:
    st.set_page_config(page_title="pytest-llmperf dashboard", layout="wide")
    st.title("pytest-llmperf results")
    st.caption(f"results folder: {results_dir}")
    try:
        runs = find_runs(results_dir)
    except LLMPerfUsageError as exc:
        st.error(str(exc))
        return
    if not runs:
        st.info("No runs yet: run `pytest suites/ -m smoke` to make one.")
        return
    by_id = {run.run_id: run for run in runs}
    ids = list(by_id)
    chosen = st.sidebar.multiselect("runs", ids, default=ids[-2:])
    runs_tab, plots_tab, compare_tab, responses_tab = st.tabs(
        ["runs", "plots", "compare", "responses"]
    )
    with runs_tab:
        _runs_table(runs)
        _verdicts([by_id[i] for i in chosen])
    with plots_tab:
        _plots([by_id[i] for i in chosen])
    with compare_tab:
        _compare(by_id, ids)
    with responses_tab:
        _responses(by_id, ids)


def _runs_table(runs: list[Run]) -> None:
    st.subheader(f"{len(runs)} run(s)")
    for run in reversed(runs):
        state = "" if run.finished else " (unfinished)"
        st.markdown(
            f"**{run.run_id}**{state}: {run.started_at}, hardware "
            f"{run.summary.get('hardware')}, {len(run.tests)} test(s)"
        )
    frame = load_runs(*(run.path for run in runs))
    if not frame.empty:
        first = [c for c in KEY_COLUMNS if c in frame.columns]
        st.dataframe(frame[first + [c for c in frame.columns if c not in first]])


def _verdicts(runs: list[Run]) -> None:
    """Each test of the chosen runs: its rounds and why they ended, its headline metrics with
    their 95% intervals, and every bound's and baseline metric's verdict (a static table, so
    that the words can be searched and copied)."""
    for run in runs:
        st.subheader(f"{run.run_id}: intervals and verdicts")
        rows = [
            {
                "test": test.key,
                "rounds": readout.rounds_text(test),
                **{heading: readout.headline(test, m) for heading, m in INTERVAL_METRICS},
                "bounds": "; ".join(readout.bound_text(c) for c in test.thresholds.checked)
                or "none",
                "baseline": "; ".join(readout.change_text(c) for c in test.baseline.judged)
                if test.baseline is not None
                else "none",
            }
            for test in run.tests
        ]
        if rows:
            st.table(rows)
        else:
            st.info("This run has no tests yet.")


def _plots(runs: list[Run]) -> None:
    if not runs:
        st.info("Choose runs in the sidebar.")
        return
    from pytest_llmperf.report.plots import run_figures

    for title, figure in run_figures(runs):
        st.subheader(title)
        st.pyplot(figure)


def _compare(by_id: dict[str, Run], ids: list[str]) -> None:
    if len(ids) < 2:
        st.info("Comparing needs two runs.")
        return
    base_id = st.selectbox("base", ids, index=len(ids) - 2)
    new_id = st.selectbox("new", ids, index=len(ids) - 1)
    tolerance_text = st.text_input("tolerances (METRIC:CHANGE, comma-separated)", "")
    tolerances = [t.strip() for t in tolerance_text.split(",") if t.strip()]
    try:
        comparison = compare_runs(by_id[base_id], by_id[new_id], tolerances)
    except LLMPerfUsageError as exc:
        st.error(str(exc))
        return
    regressions = comparison.regressions
    if regressions:
        st.error(f"{len(regressions)} regression(s) beyond tolerance")
    else:
        st.success("no regression beyond tolerance")
    rows: list[dict[str, Any]] = [
        {
            "test": c.test_id,
            "metric": c.metric,
            "base": c.base,
            "new": c.new,
            "change %": None if c.relative is None else round(100 * c.relative, 2),
            "verdict": c.verdict,
            "tolerance": c.tolerance,
        }
        for c in comparison.changes
        if c.tolerance is not None and c.verdict not in ("added", "removed")
    ]
    st.dataframe(rows)
    from pytest_llmperf.report.plots import comparison_figures

    for title, figure in comparison_figures(comparison):
        st.subheader(title)
        st.pyplot(figure)


def _responses(by_id: dict[str, Run], ids: list[str]) -> None:
    run = by_id[st.selectbox("run", ids, index=len(ids) - 1, key="responses-run")]
    keys = [t.key for t in run.tests]
    if not keys:
        st.info("This run has no tests yet.")
        return
    record = run.test(st.selectbox("test", keys))
    if record is None:  # not reached: the keys are this run's own
        return
    table = record.responses
    if table:
        import pandas

        st.dataframe(pandas.read_parquet(run.path / str(table)))
        return
    st.caption(
        "no responses.parquet for this test (run with --llmperf-responses to keep "
        "prompts too); its request records:"
    )
    st.dataframe([r for r in run.requests() if r.get("test_id") == record.test_id])


main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("results"))
