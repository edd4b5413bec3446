"""Engine specs: what an engine takes (its settings) and what it is (its traits), said once.

Each engine family declares its specs in a torch-free `engines/<family>/spec.py`, and the
registry (`pytest_llmperf.engines`) finds them by name without importing the engine.
Everything else reads them:
- grids check each configuration against the spec of the engine that will run it, at
  collection, with the file and line of every setting (`suite.grid`);
- the engine reads its settings through `EngineSpec.resolve`: a setting's type, bounds and
  default live in its `Setting`, not in the engine's code;
- the session and the fixture decide from `Traits` (isolate it? lease GPUs? can it score,
  take arrivals, be ended from another thread?) before any engine exists.

A pass-through setting (`vllm_args`, `llama_args`, `server_args`) hands the engine's own
arguments through as they are; `NativeArgs` says where the engine's list of arguments is
read, so that its names are checked too (`engines.native`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from pytest_llmperf.errors import did_you_mean


class FrozenArgs(Mapping[str, Any]):
    """A mapping setting's value, read-only and hashable: an `EngineConfig` holding it keys
    the session's engine cache, crosses to an isolated engine's process, and compares equal
    for equal arguments whatever their order."""

    def __init__(self, items: Mapping[str, Any] | None = None) -> None:
        self._items = dict(items or {})
        self._key = json.dumps(self._items, sort_keys=True, default=repr)

    def __getitem__(self, key: str) -> Any:
        return self._items[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return hash(self._key)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Mapping) and dict(self._items) == dict(other)

    def __repr__(self) -> str:
        return repr(self._items)

    def plain(self) -> dict[str, Any]:
        """A plain dict, for JSON records and keyword arguments."""
        return dict(self._items)


def freeze(value: Any) -> Any:
    """A setting's value in the form an `EngineConfig` keeps: mappings as `FrozenArgs`,
    lists as tuples (both hashable), anything else as it is."""
    if isinstance(value, Mapping) and not isinstance(value, FrozenArgs):
        return FrozenArgs(value)
    if isinstance(value, list):
        return tuple(value)
    return value


def plain(value: Any) -> Any:
    """The JSON form of a frozen value (records, summaries)."""
    if isinstance(value, FrozenArgs):
        return value.plain()
    if isinstance(value, tuple):
        return list(value)
    return value


@dataclass(frozen=True)
class NativeArgs:
    """How a pass-through setting's names are checked against the engine's own list.

    `reader` ("module:function") returns that list as {name: kind}; it runs in a short
    child process of this interpreter (`engines.native`), so that reading vLLM's arguments
    never loads vLLM or torch into pytest's process. `what` names the list in messages.
    With `as_flags` a mapping's keys are checked as the command-line flags they become
    (`block_size: 16` -> `--block-size 16`). `reader_settings` are the settings the reader
    is given (which server binary will run). `reserved` maps names the harness sets itself
    to the setting that sets them ("" when no setting does): they cannot be passed through.
    """

    reader: str
    what: str
    as_flags: bool = False
    reader_settings: tuple[str, ...] = ()
    reserved: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Setting:
    """One engine setting: its type(s), default, bounds, grid id prefix and meaning.

    `default` is what the engine uses when no one sets it; None where the engine works it
    out when it starts (from the model, the device or the CPUs), as `doc` says. `prefix`
    starts the setting's part of a generated configuration name (`batch8` for
    `max_num_seqs: 8`); None means the setting's own name. `grid` is False for settings that
    come from the run's options or from another engine (`base_url`), never from a grid.
    """

    name: str
    types: tuple[type, ...]
    default: Any = None
    doc: str = ""
    prefix: str | None = None
    choices: tuple[Any, ...] = ()
    minimum: float | None = None
    #: An exclusive lower bound, with `maximum`: the value must be in (above, maximum].
    above: float | None = None
    maximum: float | None = None
    #: For a list setting: the type of its items.
    item: type | None = None
    grid: bool = True
    native: NativeArgs | None = None

    def but(self, **changes: Any) -> Setting:
        """This setting with some fields changed (a family's own default and doc)."""
        return replace(self, **changes)

    def problem(self, value: Any) -> str | None:
        """What is wrong with `value` for this setting, as a sentence; None if nothing."""
        name = f"setting {self.name!r}"
        if not _is_instance(value, self.types):
            return f"{name} must be {_type_names(self.types)}, got {value!r}"
        if isinstance(value, Mapping):
            bad = [k for k in value if not isinstance(k, str)]
            if bad:
                return f"{name}: keys must be names, got {bad[0]!r}"
        if isinstance(value, (list, tuple)) and self.item is not None:
            bad = [v for v in value if not _is_instance(v, (self.item,))]
            if bad:
                return f"{name}: items must be {_type_names((self.item,))}, got {bad[0]!r}"
        if self.choices and value not in self.choices:
            hint = did_you_mean(str(value), [str(c) for c in self.choices])
            hint = hint or f" (one of {', '.join(str(c) for c in self.choices)})"
            return f"{name}: unknown value {value!r}{hint}"
        if self.minimum is not None and value < self.minimum:
            return f"{name} must be at least {self.minimum:g}, got {value!r}"
        if self.above is not None and not value > self.above:
            return f"{name} must be {self._range()}, got {value!r}"
        if self.maximum is not None and not value <= self.maximum:
            return f"{name} must be {self._range()}, got {value!r}"
        return None

    def _range(self) -> str:
        low = f"({self.above:g}" if self.above is not None else f"[{self.minimum or 0:g}"
        return f"in {low}, {self.maximum:g}]" if self.maximum is not None else f"above {low[1:]}"

    def id_part(self, value: Any) -> str:
        """This setting's part of a generated configuration name: `batch8`, `tritontrue`,
        `max_num_batched_tokens1024` (a mapping names its items), `ctx-size4096` (flags)."""
        prefix = self.name if self.prefix is None else self.prefix
        return f"{prefix}{id_text(value)}"


def id_text(value: Any) -> str:
    """A value as it reads in a configuration's name."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, Mapping):
        return "_".join(f"{key}{id_text(item)}" for key, item in value.items())
    if isinstance(value, (list, tuple)):
        if not any(isinstance(v, str) and v.startswith("-") for v in value):
            return "-".join(id_text(v) for v in value)
        parts: list[str] = []
        for token in map(str, value):  # a flag starts a part, its values follow it
            if token.startswith("-") or not parts:
                parts.append(token.lstrip("-"))
            else:
                parts[-1] += token
        return "_".join(parts)
    return str(value)


def _is_instance(value: Any, types: tuple[type, ...]) -> bool:
    if isinstance(value, bool) and bool not in types:
        return False  # True is an int to Python, never to a user
    return isinstance(value, types)


_TYPE_NAMES: dict[Any, str] = {Mapping: "mapping", list: "list", tuple: "list"}


def _type_names(types: tuple[type, ...]) -> str:
    names = dict.fromkeys(_TYPE_NAMES.get(t, t.__name__) for t in types)
    return " or ".join(names)


@dataclass(frozen=True)
class Traits:
    """What an engine is, read before it exists."""

    #: Runs on the run's GPUs: a test leases them (a client of a remote server does not).
    uses_gpus: bool = True
    #: Always runs in a child process of its own (`engines.isolated`), whatever the options.
    isolated: bool = False
    #: Hands tokens over as they are made; False: a batch's chunks arrive at once (vLLM's
    #: `LLM.generate`), so an isolated child sends them in one message.
    streams_tokens: bool = True
    #: Scores log-likelihoods (`Scorer`): multiple-choice tasks run on it.
    scores: bool = False
    #: Sends requests on a schedule (`GenerationRequest.send_offset_s`): open-loop load.
    takes_arrivals: bool = False
    #: Has processes of its own that another thread can end (`Terminable`: a managed
    #: server); an engine that runs in ours is isolated while tests are bounded instead.
    can_terminate: bool = False
    #: `--model` is a local path (or a built-in name), checked before the run starts.
    local_model: bool = False
    #: With `local_model`: a single `.gguf` file is a model too (llama.cpp).
    gguf_model: bool = False


@dataclass(frozen=True)
class EngineSpec:
    """An engine: its name, where its class is ("module:Class"), settings and traits."""

    name: str
    target: str
    settings: tuple[Setting, ...] = ()
    traits: Traits = field(default_factory=Traits)
    doc: str = ""
    #: The modules the engine imports when it starts (its library): an interpreter given
    #: as its `python` setting must import them, and the child records their versions.
    packages: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        names = [s.name for s in self.settings]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"engine spec {self.name!r}: settings declared twice: {twice}")

    def setting(self, name: str) -> Setting | None:
        return next((s for s in self.settings if s.name == name), None)

    def takes(self, name: str) -> bool:
        """Whether a grid may give this engine the setting `name`."""
        setting = self.setting(name)
        return setting is not None and setting.grid

    @property
    def grid_settings(self) -> list[str]:
        """The settings a grid may give this engine, sorted (for messages)."""
        return sorted(s.name for s in self.settings if s.grid)

    def with_settings(self, *settings: Setting, name: str, target: str) -> EngineSpec:
        """A spec for an engine built on this one (a subclass): its own name and class,
        these settings added (or replacing the ones of the same name), the traits kept."""
        added = {s.name for s in settings}
        kept = tuple(s for s in self.settings if s.name not in added)
        return replace(self, name=name, target=target, settings=kept + tuple(settings))

    def resolve(self, given: Mapping[str, Any]) -> dict[str, Any]:
        """Every setting's value: `given`'s, else the setting's default.

        Raises ValueError for a setting this engine does not take or a bad value (a
        configuration made in Python; a grid's were checked at collection, with the line).
        """
        unknown = sorted(set(given) - {s.name for s in self.settings})
        if unknown:
            hint = did_you_mean(unknown[0], [s.name for s in self.settings])
            raise ValueError(
                f"{self.name} engine: unknown setting(s) {', '.join(map(repr, unknown))}{hint}; "
                f"it takes {', '.join(sorted(s.name for s in self.settings))}"
            )
        values: dict[str, Any] = {}
        for setting in self.settings:
            if setting.name not in given:
                values[setting.name] = setting.default
                continue
            problem = setting.problem(given[setting.name])
            if problem is not None:
                raise ValueError(f"{self.name} engine: {problem}")
            values[setting.name] = freeze(given[setting.name])
        return values


def setting_names(specs: Sequence[EngineSpec]) -> list[str]:
    """Every grid setting of `specs`, sorted, once each."""
    return sorted({name for spec in specs for name in spec.grid_settings})


# --- settings several families take -------------------------------------------------------
# One name, type and grid id prefix each, so that `max_num_seqs: 8` is `batch8` whichever
# engine runs it; a family adopts one with its own default and doc (`MAX_NUM_SEQS.but(...)`).

TENSOR_PARALLEL_SIZE = Setting("tensor_parallel_size", (int,), 1, prefix="tp", minimum=1)
MAX_MODEL_LEN = Setting("max_model_len", (int,), prefix="len", minimum=1)
MAX_NUM_SEQS = Setting("max_num_seqs", (int,), prefix="batch", minimum=1)
DTYPE = Setting("dtype", (str,), prefix="")
QUANTIZATION = Setting("quantization", (str,), prefix="q")
N_THREADS = Setting("n_threads", (int,), prefix="th", minimum=1)
#: The interpreter an in-process engine runs under (`engines.isolated.interpreter`).
PYTHON = Setting(
    "python",
    (str,),
    None,
    "the Python interpreter (a virtual environment's bin/python) the engine runs under, "
    "in a child process of its own, so that two package versions are two configurations "
    "of one run; this checkout's pytest_llmperf is put on its path; the versions of its "
    "packages are recorded with each test. Default: pytest's own interpreter",
    prefix="py",
)
SEED = Setting(
    "seed", (int,), 0, "sampling seed of requests that give none (runs repeat)", prefix="seed"
)
