"""README.md's Options table against the options the plugin defines: every option and ini
setting of `pytest_llmperf/plugin/options.py` has a row, and the README names no `--llmperf-`
option that does not exist (a renamed or removed option leaves no stale row behind)."""

from __future__ import annotations

import re
from typing import Any

from pytest_llmperf.plugin.options import INI_OPTIONS, OPTION_GROUPS
from tests.suite_run import REPO

README = (REPO / "README.md").read_text(encoding="utf-8")


def _options() -> list[str]:
    names: list[str] = []

    def record(*flags: str, **_kwargs: Any) -> None:
        names.extend(flags)

    for group in OPTION_GROUPS:
        group(record)
    return names


def _table() -> str:
    return README[README.index("### Options") : README.index("### Markers")]


def test_every_option_and_ini_setting_has_a_row_in_the_readme() -> None:
    rows = [line for line in _table().splitlines() if line.startswith("| `-")]
    first_cells = " ".join(row.split(" | ")[0] for row in rows)
    missing = [name for name in _options() if f"`{name}" not in first_cells]
    assert missing == [], f"README.md's Options table lacks {missing}"
    ini_cells = " ".join(row.split(" | ")[1] for row in rows)
    missing_ini = [name for name, _, _ in INI_OPTIONS if f"`{name}`" not in ini_cells]
    assert missing_ini == [], f"README.md's Options table lacks the ini names {missing_ini}"


def test_the_readme_names_no_option_that_does_not_exist() -> None:
    named = set(re.findall(r"--llmperf-[a-z]+(?:-[a-z]+)*", README))
    unknown = sorted(named - set(_options()))
    assert unknown == [], f"README.md names options the plugin lacks: {unknown}"
