"""The reference tables of README.md ("Grid keys and parameters"), made from the code so that
they cannot drift: `llmperf reference` prints them, and `tests/test_readme.py` checks that the
README holds exactly what it prints.

- Grid keys, per built-in engine: each `Setting` of the engine's spec (`engines/<family>/
  spec.py`) a grid may set, with its type, default, id prefix and doc; then the workload keys
  every engine takes (`suite.config.WORKLOAD_SETTINGS`).
- Parameters of `llmperf.measure` (its signature) and of the workloads, tasks, sampling, arrivals
  and SLO (their dataclasses' fields, with defaults).
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Iterable, Sequence
from typing import Any

from pytest_llmperf.engines import engine_specs
from pytest_llmperf.engines.base import SamplingParams
from pytest_llmperf.engines.spec import Setting
from pytest_llmperf.plugin.fixture import LLMPerfFixture
from pytest_llmperf.suite.accuracy import ChoiceTask, GenerationTask
from pytest_llmperf.suite.config import WORKLOAD_SETTINGS
from pytest_llmperf.suite.conversation import ConversationWorkload
from pytest_llmperf.suite.load import SLO, Arrivals
from pytest_llmperf.suite.shared_prefix import SharedPrefixWorkload
from pytest_llmperf.suite.trace import TraceWorkload
from pytest_llmperf.suite.workload import DatasetWorkload, SyntheticWorkload

#: The README's lines around the generated text.
BEGIN = "<!-- reference: made by `llmperf reference`; tests/test_readme.py checks it -->"
END = "<!-- end of reference -->"

#: The classes whose parameters are listed, in the README's order.
PARAMETER_CLASSES: tuple[type, ...] = (
    SyntheticWorkload,
    DatasetWorkload,
    SharedPrefixWorkload,
    TraceWorkload,
    ConversationWorkload,
    SamplingParams,
    ChoiceTask,
    GenerationTask,
    Arrivals,
    SLO,
)


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return lines


def _type(setting: Setting) -> str:
    names = [t.__name__ for t in setting.types]
    if setting.item is not None:
        names = [f"{n} of {setting.item.__name__}" for n in names]
    return " or ".join(names)


def _default(value: Any) -> str:
    """`unset` where the engine works it out when it starts (the doc says how)."""
    return "unset" if value is None else f"`{value!r}`"


def _prefix(setting: Setting) -> str:
    return "(name)" if setting.prefix is None else f"`{setting.prefix}`" if setting.prefix else "-"


def grid_key_lines() -> list[str]:
    lines: list[str] = []
    for spec in engine_specs(plugins=False):
        settings = [s for s in spec.settings if s.grid]
        lines += ["", f"`{spec.name}`:", ""]
        lines += _table(
            ("key", "type", "default", "id prefix", "what"),
            ((f"`{s.name}`", _type(s), _default(s.default), _prefix(s), s.doc) for s in settings),
        )
    lines += ["", "Every engine, the workload's keys (they override the test's workload):", ""]
    lines += _table(
        ("key", "type", "default", "id prefix", "what"),
        ((f"`{s.name}`", _type(s), "the workload's", _prefix(s), s.doc) for s in WORKLOAD_SETTINGS),
    )
    return lines


def _field_default(field: dataclasses.Field[Any]) -> str:
    if field.default is not dataclasses.MISSING:
        return f"`{field.default!r}`"
    if field.default_factory is not dataclasses.MISSING:
        return f"`{field.default_factory()!r}`"
    return "required"


#: `max_load_under_slo`'s parameters whose default says less than a sentence does.
SEARCH_DEFAULTS = {
    "config": "no configuration: each engine's defaults",
    "workload": "required (checked when the test runs)",
    "slo": "required: an `SLO` with at least one bound",
}

#: `measure`'s parameters whose default says less than a sentence does.
MEASURE_DEFAULTS = {
    "config": "no configuration: each engine's defaults (the `default` column above)",
    "workload": "required (checked when the test runs)",
}


def parameter_lines() -> list[str]:
    measure = inspect.signature(LLMPerfFixture.measure)
    rows = [
        (
            f"`{p.name}`",
            MEASURE_DEFAULTS.get(p.name)
            or ("required" if p.default is inspect.Parameter.empty else f"`{p.default!r}`"),
        )
        for p in measure.parameters.values()
        if p.name != "self"
    ]
    lines = ["", "`llmperf.measure(...)`:", "", *_table(("parameter", "default"), rows)]
    searched = inspect.signature(LLMPerfFixture.max_load_under_slo)
    rows = [
        (f"`{p.name}`", SEARCH_DEFAULTS.get(p.name) or f"`{p.default!r}`")
        for p in searched.parameters.values()
        if p.name != "self"
    ]
    lines += ["", "`llmperf.max_load_under_slo(...)`:", "", *_table(("parameter", "default"), rows)]
    for cls in PARAMETER_CLASSES:
        fields = [f for f in dataclasses.fields(cls) if f.init and not f.name.startswith("_")]
        typed = [(f"`{f.name}`", f"`{f.type}`", _field_default(f)) for f in fields]
        lines += ["", f"`{cls.__name__}(...)`:", ""]
        lines += _table(("parameter", "type", "default"), typed)
    return lines


def reference_text() -> str:
    """What README.md holds between `BEGIN` and `END` (without those lines)."""
    lines = [
        "Grid keys, per engine (`default` is what a test without a configuration gets;",
        "`unset`: the engine decides when it starts, as `what` says):",
        *grid_key_lines(),
        "",
        "Parameters and their defaults:",
        *parameter_lines(),
    ]
    return "\n".join(lines) + "\n"
