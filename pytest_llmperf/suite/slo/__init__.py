"""Service-level objectives beyond a single load: the highest load that meets one
(`search`). The SLO itself, goodput and arrivals are `pytest_llmperf.suite.load`'s."""
