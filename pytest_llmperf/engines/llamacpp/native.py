"""llama.cpp's own argument lists, read for `engines.native` (in a child process, like
vLLM's: llama-cpp-python loads its native library on import)."""

from __future__ import annotations

import ctypes
import re
import subprocess
from typing import Any

#: ctypes field types a YAML value can set, by the kind of value they take. Pointers,
#: callbacks and arrays are left out: no grid value can be one.
_KINDS: dict[Any, str] = {
    ctypes.c_bool: "bool",
    ctypes.c_float: "float",
    ctypes.c_double: "float",
    **{t: "int" for t in (ctypes.c_int, ctypes.c_uint, ctypes.c_int8, ctypes.c_uint8)},
    **{t: "int" for t in (ctypes.c_int32, ctypes.c_uint32, ctypes.c_int64, ctypes.c_uint64)},
    **{t: "int" for t in (ctypes.c_long, ctypes.c_ulong, ctypes.c_size_t)},
}


def params(settings: dict[str, Any]) -> dict[str, str]:
    """The scalar fields of `llama_context_params` and `llama_model_params`."""
    import llama_cpp

    names: dict[str, str] = {}
    for struct in (llama_cpp.llama_context_params, llama_cpp.llama_model_params):
        for declared in struct._fields_:  # (name, ctype) or (name, ctype, bits)
            name, ctype = declared[0], declared[1]
            if ctype in _KINDS:
                names.setdefault(name, _KINDS[ctype])
    return names


def server_flags(settings: dict[str, Any]) -> dict[str, str]:
    """The flags of the server `llamacpp-server` would run: llama-server's (from its
    `--help`), or llama-cpp-python's (its settings models, as its `__main__` builds them)."""
    from pytest_llmperf.engines.llamacpp.server import find_llama_server

    binary = find_llama_server(settings.get("server_binary"))
    if binary is not None:
        text = subprocess.run(
            [binary, "--help"], capture_output=True, text=True, timeout=60, check=False
        ).stdout
        # Option lines start with their flags ("-c,    --ctx-size N   size of ..."); a flag
        # named in a description is a real flag too, so whole lines are read.
        lines = [line.strip() for line in text.splitlines()]
        flags = [
            flag
            for line in lines
            if line.startswith("-")
            for flag in re.findall(r"(?:^|[\s,])(--?[A-Za-z][\w-]*)", line)
        ]
        return dict.fromkeys(flags, "any")
    import argparse

    from llama_cpp.server.cli import add_args_from_model
    from llama_cpp.server.settings import Settings

    parser = argparse.ArgumentParser()
    add_args_from_model(parser, Settings)
    names = {option: "any" for action in parser._actions for option in action.option_strings}
    names["--config_file"] = "any"
    return names
