"""The highest load under an SLO in one test: `llmperf.max_load_under_slo` (`search`); how
each step is decided, and the metrics, are defined in `pytest_llmperf.suite.slo.search`."""
