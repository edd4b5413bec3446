"""Native arguments: an engine's own argument list, read without starting a model.

A pass-through setting (`vllm_args`, `llama_args`, `server_args`) hands the engine its own
arguments as they are. Their names are checked first, against the list the engine itself
reads (vLLM's `EngineArgs`, its server's flags, llama.cpp's parameter structs), so that a
typo is a usage error at collection, naming the file and line, not a crash when the model
loads. The list comes from the setting's reader (`NativeArgs.reader`, "module:function",
returning {name: kind}), run in a short child process of this interpreter: vLLM's readers
import vLLM and torch, which must never load into pytest's own process. Each list is read
once per run (per reader and reader settings).

When the list cannot be read (the engine's package is not installed here) nothing is
checked: the engine's start fails with its own error instead.

    python -m pytest_llmperf.engines.native MODULE:FUNCTION '{"server_binary": null}'

prints the list (what the check reads).
"""

from __future__ import annotations

import importlib
import json
import re
import subprocess
import sys
import warnings
from collections.abc import Iterable, Mapping
from typing import Any

from pytest_llmperf.engines.spec import NativeArgs, Setting
from pytest_llmperf.errors import LLMPerfUsageError, did_you_mean

#: The child's answer line starts with this, whatever the engine printed before it.
_MARK = "LLMPERF-NATIVE "
#: The child's exit status when the engine's package is not installed.
_NOT_INSTALLED = 3
READ_TIMEOUT_S = 180.0

_read: dict[tuple[str, str], dict[str, str] | None] = {}


def native_names(native: NativeArgs, settings: Mapping[str, Any]) -> dict[str, str] | None:
    """The engine's own arguments as {name: kind}, or None where they cannot be read."""
    given = {name: settings.get(name) for name in native.reader_settings}
    key = (native.reader, json.dumps(given, sort_keys=True, default=str))
    if key not in _read:
        _read[key] = _read_in_child(native.reader, key[1])
    return _read[key]


def _read_in_child(reader: str, settings_json: str) -> dict[str, str] | None:
    argv = [sys.executable, "-m", "pytest_llmperf.engines.native", reader, settings_json]
    try:
        out = subprocess.run(
            argv, capture_output=True, text=True, timeout=READ_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired:
        warnings.warn(
            f"{reader}: reading the engine's arguments timed out; not checked", stacklevel=2
        )
        return None
    if out.returncode == _NOT_INSTALLED:
        return None
    answer = [line for line in out.stdout.splitlines() if line.startswith(_MARK)]
    if out.returncode != 0 or not answer:
        tail = (out.stderr.strip().splitlines() or ["(no output)"])[-1]
        warnings.warn(
            f"{reader}: cannot read the engine's arguments ({tail}); not checked", stacklevel=2
        )
        return None
    names: dict[str, str] = json.loads(answer[-1][len(_MARK) :])
    return names


def as_flag(key: str, value: Any) -> str:
    """The command-line flag a mapping item becomes: `--block-size`, `--no-enforce-eager`."""
    flag = key.replace("_", "-")
    return f"--no-{flag}" if value is False else f"--{flag}"


def as_flags(args: Mapping[str, Any]) -> list[str]:
    """A mapping of arguments as a server's command line: `block_size: 16` -> `--block-size
    16`, true -> `--flag`, false -> `--no-flag`, a mapping as JSON, a list as its items."""
    argv: list[str] = []
    for key, value in args.items():
        argv.append(as_flag(key, value))
        if isinstance(value, bool) or value is None:
            continue
        if isinstance(value, Mapping):
            argv.append(json.dumps(dict(value)))
        elif isinstance(value, (list, tuple)):
            argv.extend(str(v) for v in value)
        else:
            argv.append(str(value))
    return argv


def flag_names(argv: Iterable[str]) -> list[str]:
    """The flags of a raw argument list (values, negative numbers included, left out)."""
    flags = []
    for token in argv:
        if not token.startswith("-") or re.fullmatch(r"-[\d.]+(e-?\d+)?", token):
            continue
        flags.append(token.split("=", 1)[0])
    return flags


def check_native(
    setting: Setting, value: Any, settings: Mapping[str, Any], engine: str, here: str
) -> None:
    """Raise a usage error for a name in `value` that the engine does not take."""
    native = setting.native
    if native is None:
        return
    if isinstance(value, Mapping):
        items = [(k, as_flag(k, v) if native.as_flags else k) for k, v in value.items()]
    else:
        items = [(flag, flag) for flag in flag_names(value)]
    reserved = dict(native.reserved)
    for given, name in items:
        own = reserved.get(name, reserved.get(_spelled(name)))
        if own is not None:
            instead = f"use the setting {own!r}" if own else "pytest-llmperf sets it itself"
            raise LLMPerfUsageError(
                f"{here}: {setting.name}: {_shown(given, name)} cannot be passed ({instead})"
            )
    known = native_names(native, settings)
    if known is None:
        return
    for given, name in items:
        if not _known(name, known):
            raise LLMPerfUsageError(
                f"{here}: {setting.name}: {_shown(given, name)} is not one of {native.what} "
                f"for engine {engine!r}{did_you_mean(name, known)}"
            )
        kind = known.get(name)
        item = value.get(given) if isinstance(value, Mapping) else None
        if kind in _KINDS and item is not None and not _fits(item, kind):
            raise LLMPerfUsageError(
                f"{here}: {setting.name}: {given!r} must be {kind}, got {item!r}"
            )


def _shown(given: str, name: str) -> str:
    """A name as the user wrote it, with the flag it became if it became one."""
    return repr(given) if given == name else f"{given!r} ({name})"


def _spelled(name: str) -> str:
    """A flag spelled with dashes (vLLM's parser takes `--max_num_seqs` for `--max-num-seqs`)."""
    return name.replace("_", "-") if name.startswith("--") else name


def _known(name: str, known: Mapping[str, str]) -> bool:
    if name in known or _spelled(name) in known:
        return True
    if name.startswith("--") and "." in name:  # vLLM's `--compilation-config.mode 3`
        return _known(name.split(".", 1)[0], known)
    # A short option with its value attached (`-O3`).
    return not name.startswith("--") and any(
        len(k) == 2 and k.startswith("-") and name.startswith(k) for k in known
    )


_KINDS = {"int": (int,), "float": (float, int), "bool": (bool,)}


def _fits(value: Any, kind: str) -> bool:
    if isinstance(value, bool) and kind != "bool":
        return False
    return isinstance(value, _KINDS[kind])


def main(argv: list[str]) -> int:
    """Run a reader (the child process's side); prints the list after `_MARK`."""
    reader, settings_json = argv
    module_name, _, function = reader.partition(":")
    try:
        read = getattr(importlib.import_module(module_name), function)
        names = read(json.loads(settings_json))
    except ImportError as exc:
        print(f"not installed: {exc}", file=sys.stderr)
        return _NOT_INSTALLED
    print(_MARK + json.dumps(names, sort_keys=True), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
