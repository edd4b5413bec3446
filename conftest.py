"""Root conftest: the plugin itself is loaded from its `pytest11` entry point.

Keep suite-wide settings here. Suites run with `--strict-markers` so that a typo in
a marker (`@pytest.mark.smok`) is an error rather than a silently unselected test.
"""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Tests under suites/ without a tier marker would never run in `-m smoke`,
    # `-m longform` or `-m accuracy` jobs; say so rather than skip them silently.
    tiers = {"smoke", "longform", "accuracy"}
    for item in items:
        if "suites" in item.path.parts and not tiers & {m.name for m in item.iter_markers()}:
            item.warn(
                pytest.PytestWarning(
                    f"{item.nodeid} has no tier marker ({', '.join(sorted(tiers))})"
                )
            )
