"""Figures of runs, for the HTML report (`report`) and the dashboard.

Every builder returns matplotlib `Figure`s made without pyplot: pyplot keeps a global
registry of figures (they would pile up in a long-lived dashboard unless closed) and is not
thread-safe, while Streamlit runs each session in a thread. A `Figure` made directly is
freed when dropped, renders with any backend (`fig.savefig(buf, format="svg")`) and
`st.pyplot(fig)` shows it.

    from pytest_llmperf.report.plots import run_figures
    for title, figure in run_figures([open_run("latest")]):
        figure.savefig(f"{title}.svg")

Tests are keyed as thresholds key them (`TestRecord.key`); the labels on the figures are
the part after `::`, prefixed by a short run id when there are several runs. Text from
result files reaches matplotlib only through `label_text`, which keeps a `$` in a test id from
starting mathtext.
"""

from __future__ import annotations

from pytest_llmperf.report.plots.common import Plot, concurrency, run_labels
from pytest_llmperf.report.plots.comparison import comparison_figures, comparison_plots
from pytest_llmperf.report.plots.runs import run_figures, run_plots
from pytest_llmperf.report.plots.trend import trend_plots, trend_title

__all__ = [
    "Plot",
    "comparison_figures",
    "comparison_plots",
    "concurrency",
    "run_figures",
    "run_labels",
    "run_plots",
    "trend_plots",
    "trend_title",
]
