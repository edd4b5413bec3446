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
`tp1_len1024_batch24`: each setting's short name followed by its value, joined with
`_`, in the order the axes are given. A configuration with tensor parallel size k > 1
gets the `gpu(k)` mark, so it skips where fewer GPUs exist.

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from pytest_llmperf.engines import check_engine_name
from pytest_llmperf.errors import LLMPerfUsageError, did_you_mean, where
from pytest_llmperf.yamlnodes import compose, mapping_items, node_error, node_line, node_value

#: Engine-level settings (decide which engine instance serves a test) -> id prefix.
ENGINE_SETTINGS: dict[str, str] = {
    "tensor_parallel_size": "tp",
    "max_model_len": "len",
    "max_num_seqs": "batch",
    "gpu_memory_utilization": "util",
    "dtype": "",
    "enforce_eager": "eager",
    "quantization": "q",
    "enable_prefix_caching": "prefix",
    "seed": "seed",
    "attn_implementation": "attn",
    "max_concurrency": "c",
    "prompts_per_request": "ppr",
    "tokenized_requests": "tok",
    "endpoint": "",
    "n_batch": "nb",
    "n_threads": "th",
    "n_gpu_layers": "ngl",
    # The hf engine's decode paths (engines/hf.py), so that a grid can compare them.
    "cuda_graphs": "graphs",
    "compile": "compile",
    "fuse_projections": "fuse",
    "triton_kernels": "triton",
    "score_batch_size": "sbs",
}
#: Per-test workload settings -> id prefix.
WORKLOAD_SETTINGS: dict[str, str] = {
    "max_new_tokens": "new",
    "input_tokens": "in",
    "num_requests": "n",
}
_SETTING_TYPES: dict[str, tuple[type, ...]] = {
    "tensor_parallel_size": (int,),
    "max_model_len": (int,),
    "max_num_seqs": (int,),
    "gpu_memory_utilization": (float, int),
    "dtype": (str,),
    "enforce_eager": (bool,),
    "quantization": (str,),
    "enable_prefix_caching": (bool,),
    "seed": (int,),
    "attn_implementation": (str,),
    "max_concurrency": (int,),
    "prompts_per_request": (int,),
    "tokenized_requests": (bool,),
    "endpoint": (str,),
    "n_batch": (int,),
    "n_threads": (int,),
    "n_gpu_layers": (int,),
    "cuda_graphs": (bool,),
    "compile": (bool,),
    "fuse_projections": (bool,),
    "triton_kernels": (bool,),
    "score_batch_size": (int,),
    "max_new_tokens": (int,),
    "input_tokens": (int,),
    "num_requests": (int,),
}
#: Settings with a closed set of values: every engine's spellings (hf takes auto, float32,
#: float16, bfloat16; vLLM also half and float), so that a typo fails at collection rather
#: than when the engine starts, hours into a grid.
_SETTING_CHOICES: dict[str, tuple[str, ...]] = {
    "dtype": ("auto", "float32", "float16", "bfloat16", "half", "float"),
}
_POSITIVE = {
    "tensor_parallel_size",
    "max_model_len",
    "max_num_seqs",
    "max_new_tokens",
    "input_tokens",
    "num_requests",
    "max_concurrency",
    "prompts_per_request",
    "n_batch",
    "n_threads",
    "score_batch_size",
}


class GridError(LLMPerfUsageError):  # type: ignore[misc]  # UsageError is final in typing only
    """A grid that cannot be used; the message says which file and line."""


@dataclass(frozen=True)
class Config:
    """One point of a grid: a name, engine settings, workload settings and marks."""

    name: str
    engine_settings: tuple[tuple[str, Any], ...] = ()
    workload_settings: tuple[tuple[str, Any], ...] = ()
    marks: tuple[str, ...] = ()
    engine: str | None = None

    @classmethod
    def make(
        cls,
        name: str,
        settings: Mapping[str, Any],
        marks: Sequence[str] = (),
        engine: str | None = None,
    ) -> Config:
        """Split `settings` into engine and workload settings (checking each)."""
        check_settings(settings, source=f"config {name!r}")
        eng = tuple((k, v) for k, v in settings.items() if k in ENGINE_SETTINGS)
        work = tuple((k, v) for k, v in settings.items() if k in WORKLOAD_SETTINGS)
        return cls(name, eng, work, tuple(marks), engine)

    @property
    def tensor_parallel_size(self) -> int:
        return int(dict(self.engine_settings).get("tensor_parallel_size", 1))

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "engine": self.engine,
            "engine_settings": dict(self.engine_settings),
            "workload_settings": dict(self.workload_settings),
            "marks": list(self.marks),
        }

    def __str__(self) -> str:
        return self.name


def check_settings(
    settings: Mapping[str, Any], source: str, lines: Mapping[str, int] | None = None
) -> None:
    """Raise GridError for an unknown setting or a value of the wrong type."""
    known = {**ENGINE_SETTINGS, **WORKLOAD_SETTINGS}
    for key, value in settings.items():
        here = where(source, (lines or {}).get(key))
        if key not in known:
            raise GridError(f"{here}: unknown setting {key!r}{did_you_mean(key, known)}")
        types = _SETTING_TYPES[key]
        if isinstance(value, bool) and bool not in types:
            ok = False
        else:
            ok = isinstance(value, types)
        if not ok:
            wanted = " or ".join(t.__name__ for t in types)
            raise GridError(f"{here}: setting {key!r} must be {wanted}, got {value!r}")
        if key in _POSITIVE and value < 1:
            raise GridError(f"{here}: setting {key!r} must be at least 1, got {value!r}")
        choices = _SETTING_CHOICES.get(key)
        if choices is not None and value not in choices:
            hint = did_you_mean(value, choices) or f" (one of {', '.join(choices)})"
            raise GridError(f"{here}: setting {key!r}: unknown value {value!r}{hint}")
        if key == "gpu_memory_utilization" and not 0 < value <= 1:
            raise GridError(f"{here}: setting {key!r} must be in (0, 1], got {value!r}")


def config_name(settings: Mapping[str, Any]) -> str:
    """The seeds' naming style: `tp1_len1024_batch24`, in the settings' order."""
    parts = []
    for key, value in settings.items():
        prefix = {**ENGINE_SETTINGS, **WORKLOAD_SETTINGS}.get(key, key)
        text = str(value).lower() if isinstance(value, bool) else str(value)
        parts.append(f"{prefix}{text}")
    return "_".join(parts) or "default"


@dataclass(frozen=True)
class Grid:
    """An ordered set of uniquely named configurations."""

    configs: tuple[Config, ...] = field(default_factory=tuple)

    @classmethod
    def of(cls, configs: Iterable[Config]) -> Grid:
        items = tuple(configs)
        names = [c.name for c in items]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise GridError(f"grid: duplicate configuration name(s) {', '.join(dupes)}")
        return cls(items)

    @classmethod
    def product(
        cls, axes: Mapping[str, Sequence[Any]], base: Mapping[str, Any] | None = None
    ) -> Grid:
        """Every combination of the axes' values, on top of `base` settings."""
        keys = list(axes)
        configs = []
        for values in itertools.product(*(axes[k] for k in keys)):
            point = dict(zip(keys, values, strict=True))
            configs.append(Config.make(config_name(point), {**(base or {}), **point}))
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
            if config.tensor_parallel_size > 1:
                marks.append(pytest.mark.gpu(config.tensor_parallel_size))
            params.append(pytest.param(config, id=config.name, marks=marks))
        return params


def grid_params(source: Grid | str | Path) -> list[Any]:
    """Parametrize values for a grid or a YAML grid file.

    A relative path is taken relative to the calling module's directory, so
    `grid_params("grids/smoke.yaml")` works wherever pytest is started.
    """
    if isinstance(source, Grid):
        return source.params()
    path = Path(source)
    if not path.is_absolute():
        caller = inspect.stack()[1].filename
        path = Path(caller).parent / path
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
        if key not in {"schema", "configs", "product"}:
            what = f"unknown key {key!r} (expected schema, configs, product)"
            raise node_error(path, knode, what, GridError)
    top = {key: value for key, _, value in items}
    if "schema" in top and node_value(path, top["schema"], GridError) != 1:
        raise node_error(path, top["schema"], "unsupported schema (expected 1)", GridError)
    configs: list[Config] = []
    if "configs" in top:
        configs.extend(_named_configs(path, top["configs"]))
    if "product" in top:
        configs.extend(_product_configs(path, top["product"]))
    if not configs:
        raise GridError(f"{path}: grid has no configurations (add 'configs' or 'product')")
    return Grid.of(configs)


def _named_configs(path: Path, node: yaml.Node) -> list[Config]:
    configs = []
    for name, knode, vnode in _items(path, node, "'configs' must map names to settings"):
        if not isinstance(vnode, yaml.MappingNode):
            raise node_error(path, knode, f"config {name!r} must be a mapping", GridError)
        settings, lines = _settings(path, vnode, f"config {name!r} must be a mapping")
        marks = _marks(path, settings, lines)
        engine = _engine(path, settings, lines)
        check_settings(settings, str(path), lines)
        configs.append(Config.make(name, settings, marks, engine))
    return configs


def _product_configs(path: Path, node: yaml.Node) -> list[Config]:
    parts = {key: value for key, _, value in _items(path, node, "'product' must be a mapping")}
    if "axes" not in parts:
        raise node_error(path, node, "'product' needs 'axes'", GridError)
    axes: dict[str, list[Any]] = {}
    for key, knode, vnode in _items(path, parts["axes"], "'axes' must be a mapping"):
        values = node_value(path, vnode, GridError)
        if not isinstance(values, list) or not values:
            raise node_error(path, knode, f"axis {key!r} must be a non-empty list", GridError)
        for value in values:
            check_settings({key: value}, str(path), {key: node_line(knode)})
        axes[key] = values
    base: dict[str, Any] = {}
    if "base" in parts:
        base, lines = _settings(path, parts["base"], "'base' must be a mapping")
        check_settings(base, str(path), lines)
    return list(Grid.product(axes, base).configs)


def _engine(path: Path, settings: dict[str, Any], lines: Mapping[str, int]) -> str | None:
    """A configuration's own engine, if it names one: a known engine's name."""
    engine = settings.pop("engine", None)
    if engine is None:
        return None
    here = where(path, lines.get("engine"))
    if not isinstance(engine, str):
        raise GridError(f"{here}: 'engine' must be an engine name, got {engine!r}")
    try:
        check_engine_name(engine, here)
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
