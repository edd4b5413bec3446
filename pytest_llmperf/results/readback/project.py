"""The project the `llmperf` command runs in: its results and thresholds folders, found as
pytest finds them.

pytest picks the rootdir and the ini file (`pytest.ini`, `pyproject.toml` with
`[tool.pytest.ini_options]`, `tox.ini`, `setup.cfg`) from the folder it is started in,
upwards, and a run writes to `<rootdir>/<llmperf_results_dir>` (default `results`).
`llmperf list`, `show`, `compare`, ... ask pytest's own function for the same answer
(`_pytest.config.findpaths.determine_setup`, as `pytest` with no arguments would call it),
so that from any folder of the project they read the runs the project's pytest wrote,
and with the ini's `llmperf_results_dir`. A `--results-dir` given to the command wins.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: The ini names of the folders, with their defaults (as `plugin.options` declares them).
RESULTS_INI, RESULTS_DEFAULT = "llmperf_results_dir", "results"
THRESHOLDS_INI, THRESHOLDS_DEFAULT = "llmperf_thresholds_dir", "thresholds"


@dataclass(frozen=True)
class Project:
    """Where pytest, started in `cwd`, would put the run's folders."""

    rootdir: Path
    #: The ini file pytest would read; None when there is none.
    inifile: Path | None
    results_dir: Path
    thresholds_dir: Path

    def describe(self) -> str:
        """Where the results folder came from, for messages."""
        ini = f"ini file {self.inifile}" if self.inifile else "no ini file"
        return f"the project's results folder (rootdir {self.rootdir}, {ini})"


def find_project(cwd: Path | None = None) -> Project:
    """The project pytest would see from `cwd` (default: the working folder)."""
    here = (cwd or Path.cwd()).resolve()
    rootdir, inifile, values = _determine_setup(here)
    return Project(
        rootdir=rootdir,
        inifile=inifile,
        results_dir=rootdir / (_ini(values, RESULTS_INI) or RESULTS_DEFAULT),
        thresholds_dir=rootdir / (_ini(values, THRESHOLDS_INI) or THRESHOLDS_DEFAULT),
    )


def _ini(values: dict[str, Any], name: str) -> str | None:
    raw = values.get(name)
    raw = getattr(raw, "value", raw)  # pytest 9 wraps each value in a ConfigValue
    if isinstance(raw, list):  # a list value in pyproject.toml
        raw = raw[0] if raw else None
    return str(raw).strip() or None if raw is not None else None


def _determine_setup(cwd: Path) -> tuple[Path, Path | None, dict[str, Any]]:
    """pytest's rootdir, ini file and ini values for a run started in `cwd` with no
    arguments. pytest's function is internal and its keywords have changed between
    versions (8.x has no `override_ini`), so both forms are tried."""
    from _pytest.config.findpaths import determine_setup

    common: dict[str, Any] = dict(inifile=None, args=[], rootdir_cmd_arg=None, invocation_dir=cwd)
    try:
        found = determine_setup(override_ini=None, **common)
    except TypeError:
        found = determine_setup(**common)
    rootdir, inifile, values = found[0], found[1], found[2]
    return Path(rootdir), Path(inifile) if inifile else None, dict(values)
