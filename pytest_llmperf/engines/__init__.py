"""Engines, found by name through a lazy registry.

Built-in engines are listed below as "module:Class" strings and imported only when
asked for, so `import pytest_llmperf` never imports torch. Third-party engines
register under the entry-point group `pytest_llmperf.engines`, for example in their
`pyproject.toml`:

    [project.entry-points."pytest_llmperf.engines"]
    myengine = "my_package.engine:MyEngine"
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from typing import TYPE_CHECKING

from pytest_llmperf.errors import LLMPerfUsageError, did_you_mean

if TYPE_CHECKING:
    from pytest_llmperf.engines.base import Engine

ENTRY_POINT_GROUP = "pytest_llmperf.engines"

BUILTIN_ENGINES: dict[str, str] = {
    "hf": "pytest_llmperf.engines.hf.engine:HFEngine",
    "vllm": "pytest_llmperf.engines.vllm.offline:VLLMEngine",
    "openai": "pytest_llmperf.engines.openai.engine:OpenAIEngine",
    "vllm-server": "pytest_llmperf.engines.vllm.server:VLLMServerEngine",
    "llamacpp": "pytest_llmperf.engines.llamacpp.engine:LlamaCppEngine",
    "llamacpp-server": "pytest_llmperf.engines.llamacpp.server:LlamaCppServerEngine",
}


def available_engines() -> dict[str, str]:
    """Every engine name we know, mapped to its "module:Class" target."""
    found = dict(BUILTIN_ENGINES)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        found.setdefault(ep.name, ep.value)
    return found


def check_engine_name(name: str, source: str = "--engine") -> None:
    """Raise a usage error naming the known engines when `name` is not one."""
    known = available_engines()
    if name not in known:
        raise LLMPerfUsageError(
            f"{source}: unknown engine {name!r}{did_you_mean(name, known)}; "
            f"known engines: {', '.join(sorted(known))}"
        )


def engine_target(name: str) -> str:
    """The "module:Class" string registered under `name`."""
    check_engine_name(name)
    return available_engines()[name]


def load_engine_class(name: str) -> type[Engine]:
    """Import and return the engine class registered under `name`."""
    check_engine_name(name)
    target = available_engines()[name]
    module_name, _, attr = target.partition(":")
    module = importlib.import_module(module_name)
    cls: type[Engine] = getattr(module, attr)
    return cls
