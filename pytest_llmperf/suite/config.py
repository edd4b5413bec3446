"""One configuration of a grid, and how it fits the engine that runs it.

A `Config` is a name, engine settings, workload settings (`max_new_tokens`, `input_tokens`,
`num_requests`: the grid's own, applied to the test's workload), marks, and where each
setting was written (a grid file's line, or the Python call that made it). Settings are
checked twice, both times against engine specs (`engines.spec`), never a table of ours:
- when the configuration is made (a grid file loads): each setting must be one that some
  engine it may run on takes (its own `engine`, the grid's `engines`, else any engine we
  know), with a value of the right type, in bounds;
- when the run's engine is known (`fit`, at collection and when a test measures): each
  setting must be one that engine takes. A grid meant for several engines says so
  (`engines: [llamacpp, openai]`, or `any`): there a setting the engine does not take is
  not applied, and the test's record and the terminal summary say which; anywhere else it
  is a usage error naming the file and line, the engine and the settings it takes. The
  engine's own arguments passed through (`vllm_args`, ...) are checked here too, and an
  interpreter given as `python` must be there and import the engine's library.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pytest_llmperf.engines import engine_spec, engine_specs, find_setting
from pytest_llmperf.engines.isolated.interpreter import check_interpreter
from pytest_llmperf.engines.native import check_native
from pytest_llmperf.engines.spec import (
    PYTHON,
    EngineSpec,
    Setting,
    freeze,
    plain,
    setting_names,
)
from pytest_llmperf.errors import LLMPerfUsageError, did_you_mean
from pytest_llmperf.suite.arguments import bad, text

#: Per-test workload settings: the grid's own, applied to the test's workload.
WORKLOAD_SETTINGS: tuple[Setting, ...] = (
    Setting("max_new_tokens", (int,), doc="output tokens per request", prefix="new", minimum=1),
    Setting("input_tokens", (int,), doc="prompt tokens per request", prefix="in", minimum=1),
    Setting("num_requests", (int,), doc="requests per round", prefix="n", minimum=1),
)
_WORKLOAD = {s.name: s for s in WORKLOAD_SETTINGS}
#: Per-request sampling: the workload's, never an engine's (an engine's settings decide which
#: loaded engine serves a test; sampling changes with each request).
_SAMPLING = frozenset({"temperature", "top_p", "top_k", "min_tokens", "ignore_eos", "stop"})
_SAMPLING_HINT = (
    ": sampling belongs to the workload's requests, not to a grid: "
    "SyntheticWorkload(temperature=0.7), or "
    "DatasetWorkload(path, sampling=SamplingParams(temperature=0.7, top_p=0.9)) "
    "(README: Reference, grid keys)"
)

#: A grid meant for every engine: what an engine does not take is noted, not an error.
ANY_ENGINE: Literal["any"] = "any"
Engines = tuple[str, ...] | Literal["any"] | None


class GridError(LLMPerfUsageError):  # type: ignore[misc]  # UsageError is final in typing only
    """A grid that cannot be used; the message says which file and line."""


class NotForEngine(Exception):
    """A configuration of a grid meant for other engines than the run's: its tests skip."""


@dataclass(frozen=True)
class Config:
    """One point of a grid: a name, engine settings, workload settings and marks."""

    name: str
    engine_settings: tuple[tuple[str, Any], ...] = ()
    workload_settings: tuple[tuple[str, Any], ...] = ()
    marks: tuple[str, ...] = ()
    #: The engine this configuration runs on, whatever the run's `--engine`.
    engine: str | None = None
    #: The engines its grid is meant for (None: only engines that take all its settings).
    engines: Engines = None
    #: Where each setting (and `engines`) was written: "path: line N".
    sources: tuple[tuple[str, str], ...] = field(default=(), compare=False)

    @classmethod
    def make(
        cls,
        name: str,
        settings: Mapping[str, Any],
        marks: Sequence[str] = (),
        engine: str | None = None,
        *,
        engines: Engines = None,
        sources: Mapping[str, str] | None = None,
    ) -> Config:
        """Split `settings` into engine and workload settings, checking each.

        `sources` says where each setting was written; by default, the caller's line."""
        text("Config.make", "name", name)
        if not isinstance(settings, Mapping) or not all(isinstance(k, str) for k in settings):
            raise bad("Config.make", "settings", settings, "must be a mapping of setting names")
        if isinstance(marks, str) or not all(
            isinstance(m, str) and m.isidentifier() for m in marks
        ):
            raise bad("Config.make", "marks", marks, "must be a list of marker names")
        if engine is not None:
            text("Config.make", "engine", engine)
        if sources is None:
            here = caller()
            sources = {key: here for key in [*settings, "engines"]}
        engines = check_engines(engines, sources.get("engines", f"config {name!r}"), engine)
        check_settings(settings, sources, engine, engines)
        eng = tuple((k, freeze(v)) for k, v in settings.items() if k not in _WORKLOAD)
        work = tuple((k, v) for k, v in settings.items() if k in _WORKLOAD)
        return cls(name, eng, work, tuple(marks), engine, engines, tuple(sources.items()))

    @property
    def tensor_parallel_size(self) -> int:
        return int(dict(self.engine_settings).get("tensor_parallel_size", 1))

    @property
    def gpus_on_host(self) -> int:
        """GPUs the configuration uses on this host, which it leases: tensor x pipeline
        parallel x this node's data parallel ranks (vLLM's `vllm_args`), shared out over
        `nnodes` by vLLM's own multi-node launcher; over a Ray cluster
        (`distributed_executor_backend: ray`) the tensor parallel size: Ray places the rest."""
        native = dict(self.engine_settings).get("vllm_args")
        args = dict(native) if isinstance(native, Mapping) else {}

        def size(key: str, default: int = 1) -> int:
            value = args.get(key, default)
            return value if isinstance(value, int) and value > 0 else default

        if args.get("distributed_executor_backend") == "ray":
            return self.tensor_parallel_size
        local = size("data_parallel_size_local", size("data_parallel_size"))
        world = self.tensor_parallel_size * size("pipeline_parallel_size") * local
        return max(1, world // size("nnodes"))

    def source(self, key: str) -> str:
        """Where `key` was written ("path: line N"), or the configuration's name."""
        return dict(self.sources).get(key, f"config {self.name!r}")

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "engine": self.engine,
            "engine_settings": {k: plain(v) for k, v in self.engine_settings},
            "workload_settings": dict(self.workload_settings),
            "marks": list(self.marks),
        }

    def __str__(self) -> str:
        return self.name


def caller() -> str:
    """Where the user's code that made a configuration in Python is ("path: line N"): the
    first frame outside this package's suite and engine modules."""
    frame = sys._getframe(1)
    while frame.f_back is not None and frame.f_globals.get("__name__", "").startswith(
        ("pytest_llmperf.suite.", "pytest_llmperf.engines")
    ):
        frame = frame.f_back
    return f"{frame.f_code.co_filename}: line {frame.f_lineno}"


def check_engines(engines: Any, here: str, engine: str | None = None) -> Engines:
    """`engines` as a grid gives it: a list of known engine names, `any`, or None."""
    if engines is None or engines == ANY_ENGINE:
        return None if engines is None else ANY_ENGINE
    if isinstance(engines, str) or not isinstance(engines, (list, tuple)) or not engines:
        raise GridError(f"{here}: 'engines' must be a list of engine names, or {ANY_ENGINE}")
    for name in engines:
        if not isinstance(name, str):
            raise GridError(f"{here}: 'engines' must be a list of engine names, got {name!r}")
        engine_spec(name, here)  # an unknown name is a usage error naming the known ones
    if engine is not None and engine not in engines:
        raise GridError(f"{here}: engine {engine!r} is not one of the grid's engines")
    return tuple(engines)


def _specs_for(engine: str | None, engines: Engines) -> tuple[list[EngineSpec], str]:
    """The specs a configuration's settings are checked against, and how to name them."""
    if engine is not None:
        return [engine_spec(engine)], f" for engine {engine!r}"
    if isinstance(engines, tuple):
        return [engine_spec(e) for e in engines], f" for engines {', '.join(engines)}"
    return engine_specs(plugins=False), ""


def check_settings(
    settings: Mapping[str, Any],
    sources: Mapping[str, str],
    engine: str | None = None,
    engines: Engines = None,
) -> None:
    """Raise GridError for a setting no engine the configuration may run on takes, or a
    value none of them takes (wrong type, out of bounds, not one of its choices)."""
    for key, value in settings.items():
        here = sources.get(key, "grid")
        if key in _WORKLOAD:
            problem = _WORKLOAD[key].problem(value)
            if problem is not None:
                raise GridError(f"{here}: {problem}")
            continue
        specs, whom = _specs_for(engine, engines)
        taking = [s for s in specs if s.takes(key)]
        if not taking and not whom:  # any engine: the entry points' too
            specs = engine_specs(plugins=True)
            taking = [s for s in specs if s.takes(key)]
        if not taking:
            known = [*setting_names(specs), *_WORKLOAD]
            hint = _SAMPLING_HINT if key in _SAMPLING else did_you_mean(key, known)
            raise GridError(f"{here}: unknown setting {key!r}{whom}{hint}")
        problems = [s.setting(key).problem(value) for s in taking]  # type: ignore[union-attr]
        if all(problems):
            raise GridError(f"{here}: {problems[0]}")


def config_name(settings: Mapping[str, Any]) -> str:
    """The seeds' naming style: `tp1_len1024_batch24`, in the settings' order."""
    parts = []
    for key, value in settings.items():
        setting = _WORKLOAD.get(key) or find_setting(key) or Setting(key, (object,))
        parts.append(setting.id_part(value))
    return "_".join(p for p in parts if p) or "default"


@dataclass(frozen=True)
class Fit:
    """What of a configuration the engine that runs it applies."""

    engine: str
    settings: dict[str, Any]
    #: Settings of a grid meant for several engines that this engine does not take.
    not_applied: tuple[str, ...] = ()


def fit(config: Config, run_engine: str) -> Fit:
    """Check `config` against the spec of the engine that runs it (its own, else the run's).

    Raises GridError (a usage error naming the file and line) for a setting that engine
    does not take, unless the grid is meant for several engines, and for a native argument
    it does not know; NotForEngine when the grid is meant for other engines.
    """
    name = config.engine or run_engine
    if config.engine is None and isinstance(config.engines, tuple):
        if name not in config.engines:
            listed = ", ".join(config.engines[:-1]) + " or " if len(config.engines) > 1 else ""
            raise NotForEngine(
                f"{config.source('engines')}: the grid of {config.name!r} is meant for "
                f"engines {', '.join(config.engines)}: run with --engine "
                f"{listed}{config.engines[-1]} (this run's engine is {name!r})"
            )
    spec = engine_spec(name)
    whose = "its own engine" if config.engine else "the run's engine"
    given = dict(config.engine_settings)
    applied: dict[str, Any] = {}
    not_applied: list[str] = []
    for key, value in config.engine_settings:
        here = config.source(key)
        setting = spec.setting(key)
        if setting is None or not setting.grid:
            if config.engines is not None:
                not_applied.append(key)
                continue
            raise GridError(
                f"{here}: setting {key!r} is not a setting of engine {name!r} ({whose})"
                f"{did_you_mean(key, spec.grid_settings)}; {name} takes: "
                f"{', '.join(spec.grid_settings) or 'no settings'}"
            )
        problem = setting.problem(value)
        if problem is not None:
            raise GridError(f"{here}: {problem} (engine {name!r})")
        check_native(setting, value, given, name, here)
        if key == PYTHON.name:  # asks the interpreter, once per run
            check_interpreter(value, spec.packages, here)
        applied[key] = value
    return Fit(name, applied, tuple(not_applied))
