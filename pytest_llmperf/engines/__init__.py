"""Engines, found by name through a lazy registry of their specs.

Each name maps to an `EngineSpec` (`engines.spec`): the engine's settings, its traits and
where its class is. Built-in specs live in torch-free `engines/<family>/spec.py` modules,
imported when asked for; the engine class itself is imported only to start an engine, and
an isolated one only in its own process. So `import pytest_llmperf`, collection and grid
checks never import torch.

Third-party engines register under the entry-point group `pytest_llmperf.engines`, for
example in their `pyproject.toml`:

    [project.entry-points."pytest_llmperf.engines"]
    myengine = "my_package.spec:MY_ENGINE"        # an EngineSpec (recommended)
    other = "my_package.engine:OtherEngine"       # or the class, with `spec` on it

The entry point names either an `EngineSpec` object, whose `target` is the class
("my_package.engine:MyEngine"): collection then reads the spec without importing the
class's module (which may import torch); or the engine class itself, which declares its
spec as a class attribute `spec`, typically built on a built-in engine's:

    class MyEngine(HFEngine):
        name = "myengine"
        spec = HFEngine.spec.with_settings(
            Setting("greeting", (str,), "hi", "what to say"),
            name="myengine", target="my_package.engine:MyEngine",
        )

Either way the entry point's name is the engine's name (it wins over the spec's), and a
grid may give the engine every setting its spec declares: grids are checked against it.
"""

from __future__ import annotations

import importlib
import sys
from dataclasses import replace
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

from pytest_llmperf.engines.spec import EngineSpec, Setting
from pytest_llmperf.errors import LLMPerfUsageError, did_you_mean

if TYPE_CHECKING:
    from pytest_llmperf.engines.base import Engine

ENTRY_POINT_GROUP = "pytest_llmperf.engines"

#: Built-in engines: name -> where its spec is ("module:NAME").
BUILTIN_ENGINES: dict[str, str] = {
    "hf": "pytest_llmperf.engines.hf.spec:HF",
    "hf-fast": "pytest_llmperf.engines.hf.spec:HF_FAST",
    "vllm": "pytest_llmperf.engines.vllm.spec:VLLM",
    "openai": "pytest_llmperf.engines.openai.spec:OPENAI",
    "vllm-server": "pytest_llmperf.engines.vllm.spec:VLLM_SERVER",
    "llamacpp": "pytest_llmperf.engines.llamacpp.spec:LLAMACPP",
    "llamacpp-server": "pytest_llmperf.engines.llamacpp.spec:LLAMACPP_SERVER",
}

_plugins_by_path: dict[tuple[str, ...], dict[str, str]] = {}


def _plugin_engines() -> dict[str, str]:
    """Entry-point engines: name -> the entry point's object ("module:attr").

    Read once per import path (a test run that adds a folder to it sees new ones)."""
    key = tuple(sys.path)
    if key not in _plugins_by_path:
        _plugins_by_path[key] = {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}
    return _plugins_by_path[key]


def available_engines() -> dict[str, str]:
    """Every engine name we know, mapped to where its spec (or class) is."""
    found = dict(BUILTIN_ENGINES)
    for name, value in _plugin_engines().items():
        found.setdefault(name, value)
    return found


def check_engine_name(name: str, source: str = "--engine") -> None:
    """Raise a usage error naming the known engines when `name` is not one."""
    known = available_engines()
    if name not in known:
        raise LLMPerfUsageError(
            f"{source}: unknown engine {name!r}{did_you_mean(name, known)}; "
            f"known engines: {', '.join(sorted(known))}"
        )


def _load(target: str) -> Any:
    module_name, _, attr = target.partition(":")
    return getattr(importlib.import_module(module_name), attr)


def engine_spec(name: str, source: str = "--engine") -> EngineSpec:
    """The spec of the engine registered under `name` (a usage error if there is none)."""
    check_engine_name(name, source)
    where = available_engines()[name]
    if name in BUILTIN_ENGINES:
        spec: EngineSpec = _load(where)
        return spec
    try:
        found = _load(where)
    except Exception as exc:  # a third party's broken package: say whose
        raise LLMPerfUsageError(
            f"engine {name!r} (entry point {where!r}): cannot load it: {type(exc).__name__}: {exc}"
        ) from None
    if isinstance(found, EngineSpec):
        return replace(found, name=name)
    declared = getattr(found, "spec", None)  # a class: its spec is a class attribute
    if not isinstance(declared, EngineSpec):
        raise LLMPerfUsageError(
            f"engine {name!r} (entry point {where!r}) is neither an EngineSpec nor an engine "
            "class with a `spec` (an EngineSpec): see pytest_llmperf.engines"
        )
    return replace(declared, name=name, target=where)


def engine_specs(plugins: bool = True) -> list[EngineSpec]:
    """Every engine's spec: the built-in ones, then (with `plugins`) the entry points'."""
    names = available_engines() if plugins else BUILTIN_ENGINES
    return [engine_spec(name) for name in names]


def find_setting(name: str) -> Setting | None:
    """The first declaration of a setting called `name` (built-in engines first)."""
    for plugins in (False, True):
        for spec in engine_specs(plugins):
            setting = spec.setting(name)
            if setting is not None:
                return setting
    return None


def engine_target(name: str) -> str:
    """The "module:Class" of the engine registered under `name`."""
    return engine_spec(name).target


def load_engine_class(name: str) -> type[Engine]:
    """Import and return the engine class registered under `name`."""
    cls: type[Engine] = _load(engine_target(name))
    return cls
