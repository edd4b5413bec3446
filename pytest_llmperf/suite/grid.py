"""Configuration grids: named engine + workload configurations for parametrized tests.

A grid is written in Python or as a YAML file:

    # suites/grids/vllm_sweep.yaml
    schema: 1
    configs:                       # named configurations, kept as written
      tp1_len1024_batch24:
        tensor_parallel_size: 1
        max_model_len: 1024
        max_num_seqs: 24
        max_new_tokens: 256
        gpu_memory_utilization: 0.93
        marks: [longform]          # any registered marker without arguments
    product:                       # and/or the cross product of some axes
      axes: {max_num_seqs: [1, 4], max_new_tokens: [16, 32]}
      base: {max_model_len: 256}

Configurations from `product` are named from their settings in the seeds' style,
`tp1_len1024_batch24`: each setting's short name (its spec's id prefix) followed by its
value, joined with `_`, in the order the axes are given; a pass-through setting names
its items (`vllm_args: {max_num_batched_tokens: 1024}` -> `max_num_batched_tokens1024`).
A configuration with tensor parallel size k > 1 gets the `gpu(k)` mark, so it skips where
fewer GPUs exist.

Settings are those of the engines (their specs, `engines/<family>/spec.py`) plus the
workload's `max_new_tokens`, `input_tokens` and `num_requests`; a configuration is checked
against the engine that runs it when the run's `--engine` is known (`suite.config`). A grid
meant for several engines says so, and then a setting the run's engine does not take is
noted on the test instead of refused; a run on an engine not listed skips its tests:

    engines: [llamacpp, llamacpp-server, openai]   # or `any`; Python: Grid.of(..., engines=)

In a test module:

    from pytest_llmperf import grid_params

    @pytest.mark.parametrize("config", grid_params("grids/smoke.yaml"))
    def test_decode(llmperf, config): ...

Collection never loads a model: a grid is plain data.
"""

from __future__ import annotations

import inspect
import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from pytest_llmperf.engines import engine_spec
from pytest_llmperf.errors import LLMPerfUsageError, where
from pytest_llmperf.suite.arguments import bad
from pytest_llmperf.suite.config import (
    ANY_ENGINE,
    WORKLOAD_SETTINGS,
    Config,
    Engines,
    GridError,
    caller,
    check_engines,
    check_settings,
    config_name,
)
from pytest_llmperf.yamlnodes import compose, mapping_items, node_error, node_line, node_value

__all__ = [
    "ANY_ENGINE",
    "WORKLOAD_SETTINGS",
    "Config",
    "Grid",
    "GridError",
    "config_name",
    "grid_params",
]


@dataclass(frozen=True)
class Grid:
    """An ordered set of uniquely named configurations."""

    configs: tuple[Config, ...] = field(default_factory=tuple)

    @classmethod
    def of(cls, configs: Iterable[Config], *, engines: Engines | list[str] = None) -> Grid:
        """A grid of `configs`; `engines` says it is meant for several engines (see the
        module docstring), each configuration checked against them."""
        if isinstance(configs, (str, Mapping)) or not isinstance(configs, Iterable):
            raise bad("Grid.of", "configs", configs, "must be a list of Config")
        items = tuple(configs)
        for index, config in enumerate(items):
            if not isinstance(config, Config):
                hint = "make one with Config.make(name, settings)"
                raise bad("Grid.of", f"configs[{index}]", config, f"is not a Config ({hint})")
        if engines is not None:
            items = tuple(_meant_for(c, engines, caller()) for c in items)
        names = [c.name for c in items]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise GridError(f"grid: duplicate configuration name(s) {', '.join(dupes)}")
        return cls(items)

    @classmethod
    def product(
        cls,
        axes: Mapping[str, Sequence[Any]],
        base: Mapping[str, Any] | None = None,
        *,
        engines: Engines | list[str] = None,
        sources: Mapping[str, str] | None = None,
    ) -> Grid:
        """Every combination of the axes' values, on top of `base` settings."""
        if not isinstance(axes, Mapping) or not axes:
            raise bad("Grid.product", "axes", axes, "must map setting names to lists of values")
        listed: dict[str, list[Any]] = {}
        for key, values in axes.items():
            # Any iterable of values (a range, an array), but not text: "14" is no list of 1 and 4.
            if isinstance(values, (str, bytes, Mapping)) or not isinstance(values, Iterable):
                problem = "must be a list of values, e.g. [1, 4]"
                raise bad("Grid.product", f"axes[{key!r}]", values, problem)
            listed[key] = list(values)
            if not listed[key]:
                raise bad("Grid.product", f"axes[{key!r}]", values, "must not be empty")
        axes = listed
        if base is not None and not isinstance(base, Mapping):
            raise bad("Grid.product", "base", base, "must map setting names to values")
        if sources is None:
            here = caller()
            sources = {key: here for key in [*axes, *(base or {}), "engines"]}
        keys = list(axes)
        configs = []
        for values in itertools.product(*(axes[k] for k in keys)):
            point = dict(zip(keys, values, strict=True))
            settings = {**(base or {}), **point}
            configs.append(
                Config.make(
                    config_name(point),
                    settings,
                    engines=_as_engines(engines),
                    sources={k: sources[k] for k in [*settings, "engines"] if k in sources},
                )
            )
        return cls.of(configs)

    @classmethod
    def from_yaml(cls, path: Path) -> Grid:
        return _load_yaml_grid(Path(path))

    def __iter__(self) -> Any:
        return iter(self.configs)

    def __len__(self) -> int:
        return len(self.configs)

    def params(self) -> list[Any]:
        """`pytest.param`s with readable ids and each configuration's marks."""
        params = []
        for config in self.configs:
            marks: list[Any] = [getattr(pytest.mark, m) for m in config.marks]
            if config.gpus_on_host > 1:
                marks.append(pytest.mark.gpu(config.gpus_on_host))
            params.append(pytest.param(config, id=config.name, marks=marks))
        return params


def _as_engines(engines: Engines | list[str]) -> Engines:
    return tuple(engines) if isinstance(engines, list) else engines


def _meant_for(config: Config, engines: Engines | list[str], here: str) -> Config:
    """`config` as part of a grid meant for `engines`, its settings checked against them."""
    sources = {**dict(config.sources), "engines": here}
    listed = check_engines(_as_engines(engines), sources["engines"], config.engine)
    settings = {**dict(config.engine_settings), **dict(config.workload_settings)}
    check_settings(settings, sources, config.engine, listed)
    return replace(config, engines=listed, sources=tuple(sources.items()))


def grid_params(source: Grid | str | Path) -> list[Any]:
    """Parametrize values for a grid or a YAML grid file.

    A relative path is taken relative to the calling module's directory, so
    `grid_params("grids/smoke.yaml")` works wherever pytest is started.
    """
    if isinstance(source, Grid):
        return source.params()
    if isinstance(source, bytes) or not isinstance(source, (str, Path)) or not str(source):
        raise bad("grid_params", "source", source, "must be a Grid or a YAML grid file's path")
    path = Path(source)
    if not path.is_absolute():
        calling = inspect.stack()[1].filename
        path = Path(calling).parent / path
    return Grid.from_yaml(path).params()


# --- YAML -------------------------------------------------------------------------
# Read as node trees, not values, so that errors can name the line (see yamlnodes).


def _load_yaml_grid(path: Path) -> Grid:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise GridError(f"{path}: grid file does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise GridError(f"{path}: cannot read grid file: {exc}") from None
    root = compose(text, path, GridError)
    if root is None:
        raise GridError(f"{path}: a grid file must be a mapping")
    items = _items(path, root, "a grid file must be a mapping")
    for key, knode, _ in items:
        if key not in {"schema", "engines", "configs", "product"}:
            what = f"unknown key {key!r} (expected schema, engines, configs, product)"
            raise node_error(path, knode, what, GridError)
    top = {key: value for key, _, value in items}
    if "schema" in top and node_value(path, top["schema"], GridError) != 1:
        raise node_error(path, top["schema"], "unsupported schema (expected 1)", GridError)
    engines: Engines = None
    engines_at = str(path)
    if "engines" in top:
        engines_at = where(path, node_line(top["engines"]))
        engines = check_engines(node_value(path, top["engines"], GridError), engines_at)
    configs: list[Config] = []
    if "configs" in top:
        configs.extend(_named_configs(path, top["configs"], engines, engines_at))
    if "product" in top:
        configs.extend(_product_configs(path, top["product"], engines, engines_at))
    if not configs:
        raise GridError(f"{path}: grid has no configurations (add 'configs' or 'product')")
    return Grid.of(configs)


def _named_configs(path: Path, node: yaml.Node, engines: Engines, engines_at: str) -> list[Config]:
    configs = []
    for name, knode, vnode in _items(path, node, "'configs' must map names to settings"):
        if not isinstance(vnode, yaml.MappingNode):
            raise node_error(path, knode, f"config {name!r} must be a mapping", GridError)
        settings, lines = _settings(path, vnode, f"config {name!r} must be a mapping")
        marks = _marks(path, settings, lines)
        engine = _engine(path, settings, lines)
        sources = {key: where(path, line) for key, line in lines.items()}
        sources["engines"] = engines_at
        if engine is not None and isinstance(engines, tuple) and engine not in engines:
            raise GridError(
                f"{sources['engine']}: engine {engine!r} is not one of the grid's "
                f"engines ({', '.join(engines)}, {engines_at})"
            )
        configs.append(Config.make(name, settings, marks, engine, engines=engines, sources=sources))
    return configs


def _product_configs(
    path: Path, node: yaml.Node, engines: Engines, engines_at: str
) -> list[Config]:
    parts = {key: value for key, _, value in _items(path, node, "'product' must be a mapping")}
    if "axes" not in parts:
        raise node_error(path, node, "'product' needs 'axes'", GridError)
    axes: dict[str, list[Any]] = {}
    sources = {"engines": engines_at}
    for key, knode, vnode in _items(path, parts["axes"], "'axes' must be a mapping"):
        values = node_value(path, vnode, GridError)
        if not isinstance(values, list) or not values:
            raise node_error(path, knode, f"axis {key!r} must be a non-empty list", GridError)
        sources[key] = where(path, node_line(knode))
        for value in values:
            check_settings({key: value}, sources, engines=engines)
        axes[key] = values
    base: dict[str, Any] = {}
    if "base" in parts:
        base, lines = _settings(path, parts["base"], "'base' must be a mapping")
        sources.update({key: where(path, line) for key, line in lines.items()})
    return list(Grid.product(axes, base, engines=engines, sources=sources).configs)


def _engine(path: Path, settings: dict[str, Any], lines: Mapping[str, int]) -> str | None:
    """A configuration's own engine, if it names one: a known engine's name."""
    engine = settings.pop("engine", None)
    if engine is None:
        return None
    here = where(path, lines.get("engine"))
    if not isinstance(engine, str):
        raise GridError(f"{here}: 'engine' must be an engine name, got {engine!r}")
    try:
        engine_spec(engine, here)
    except LLMPerfUsageError as exc:
        raise GridError(str(exc)) from None
    return engine


def _marks(path: Path, settings: dict[str, Any], lines: Mapping[str, int]) -> list[str]:
    marks = settings.pop("marks", [])
    if isinstance(marks, list) and all(isinstance(m, str) and m.isidentifier() for m in marks):
        return marks
    raise GridError(f"{where(path, lines.get('marks'))}: 'marks' must be a list of marker names")


def _items(path: Path, node: yaml.Node, what: str) -> list[tuple[str, yaml.Node, yaml.Node]]:
    """`yamlnodes.mapping_items`, raising GridError."""
    return mapping_items(path, node, what, GridError)


def _settings(path: Path, node: yaml.Node, what: str) -> tuple[dict[str, Any], dict[str, int]]:
    """A mapping's values by key, and the line of each key."""
    values: dict[str, Any] = {}
    lines: dict[str, int] = {}
    for key, knode, vnode in _items(path, node, what):
        values[key] = node_value(path, vnode, GridError)
        lines[key] = node_line(knode)
    return values, lines
