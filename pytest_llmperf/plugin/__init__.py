"""The pytest plugin (entry point `pytest11: llmperf`): hooks, options, the run's session,
the fixtures (`llmperf`, `llmperf_gpus`, `llmperf_model`, `llmperf_engine`), test bounds
and the terminal summary.

pytest registers this module; its hooks and fixtures live in `hooks`.
"""

from __future__ import annotations

from pytest_llmperf.plugin.hooks import (
    llmperf,
    llmperf_engine,
    llmperf_gpus,
    llmperf_model,
    pytest_addhooks,
    pytest_addoption,
    pytest_collection_finish,
    pytest_collection_modifyitems,
    pytest_configure,
    pytest_make_collect_report,
    pytest_runtest_call,
    pytest_runtest_makereport,
    pytest_runtest_setup,
    pytest_sessionfinish,
    pytest_terminal_summary,
    pytest_unconfigure,
)

__all__ = [
    "llmperf",
    "llmperf_engine",
    "llmperf_gpus",
    "llmperf_model",
    "pytest_addhooks",
    "pytest_addoption",
    "pytest_collection_finish",
    "pytest_collection_modifyitems",
    "pytest_configure",
    "pytest_make_collect_report",
    "pytest_runtest_call",
    "pytest_runtest_makereport",
    "pytest_runtest_setup",
    "pytest_sessionfinish",
    "pytest_terminal_summary",
    "pytest_unconfigure",
]
