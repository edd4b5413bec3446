"""The child side of an isolated engine: one engine, one process, driven over a pipe.

The parent runs `python -m pytest_llmperf.engines.isolated.child FD` under the engine's
interpreter (pytest's own, or the engine's `python` setting), with `FD` one end of a
socket pair. This module must not import torch, CUDA or the engine at import time:
`serve` pins the GPUs (`CUDA_VISIBLE_DEVICES`) first, then imports the engine.

Messages, parent -> child: ("start", Start) first; then ("encode", text), ("decode",
ids), ("score", score requests), ("stream", requests), ("close",). Child -> parent:
("ready", info) or ("error", text) after start; ("ok", value) for encode/decode/score;
("chunk", chunk)... then ("done",) for stream, or ("error", text) if the engine raised.
The ready info's details carry the child's interpreter and package versions
(`interpreter.environment`) under "interpreter".
"""

from __future__ import annotations

import importlib
import os
import sys
import traceback
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection
from typing import Any


@dataclass(frozen=True)
class Start:
    """What the child needs to start its engine (the parent's first message)."""

    target: str
    streams_tokens: bool
    config: Any
    visible: str
    log_path: str
    #: Folders put on the child's path after its own (the parent's project folders, so
    #: that an engine class defined beside the tests is found); all of the parent's path
    #: when the child runs the parent's interpreter, as multiprocessing's spawn did.
    sys_path: tuple[str, ...]
    replace_path: bool


def main() -> None:
    conn = Connection(int(sys.argv[1]))
    kind, start = conn.recv()
    if kind != "start":
        raise SystemExit(f"expected a start message, got {kind!r}")
    if start.replace_path:
        sys.path[:] = list(start.sys_path)
    else:
        sys.path.extend(p for p in start.sys_path if p not in sys.path)
    serve(
        conn,
        start.target,
        start.streams_tokens,
        start.config,
        start.visible,
        start.log_path,
    )


def serve(
    conn: Connection,
    target: str,
    streams_tokens: bool,
    config: Any,
    visible: str,
    log_path: str,
) -> None:
    """Start the engine class `target` on `config` and answer the parent until it closes.

    `streams_tokens` is the engine's trait: False sends a batch's chunks in one message."""
    # A process group of our own, so the parent can end us and every process the
    # engine starts (vLLM's engine core) with one signal.
    os.setpgrp()
    os.environ["CUDA_VISIBLE_DEVICES"] = visible
    log = open(log_path, "ab", buffering=0)
    os.dup2(log.fileno(), 1)
    os.dup2(log.fileno(), 2)
    sys.stdout = open(1, "w", buffering=1, closefd=False)
    sys.stderr = open(2, "w", buffering=1, closefd=False)
    try:
        module_name, _, attr = target.partition(":")
        engine = getattr(importlib.import_module(module_name), attr)(config)
        info = engine.start()
        from pytest_llmperf.engines.isolated.interpreter import environment

        details = {**info.details, "interpreter": environment()}
        info = replace(info, details=details)
    except BaseException:
        text = traceback.format_exc()
        print(text, file=sys.stderr, flush=True)  # the log keeps it for whoever reads it later
        conn.send(("error", text))
        return
    conn.send(("ready", info))
    while True:
        try:
            message = conn.recv()
        except EOFError:  # the parent is gone
            break
        kind = message[0]
        if kind == "close":
            break
        try:
            if kind == "encode":
                conn.send(("ok", engine.tokenizer.encode(message[1])))
            elif kind == "decode":
                conn.send(("ok", engine.tokenizer.decode(message[1])))
            elif kind == "score":
                conn.send(("ok", engine.score(message[1])))
            elif kind == "stream":
                if streams_tokens:
                    for chunk in engine.stream(message[1]):
                        conn.send(("chunk", chunk))
                else:  # all chunks arrive at once (vLLM's LLM.generate): one message
                    conn.send(("chunks", list(engine.stream(message[1]))))
                conn.send(("done",))
            else:
                conn.send(("error", f"unknown message {kind!r}"))
        except BaseException:
            conn.send(("error", traceback.format_exc()))
    try:
        engine.close()
    finally:
        conn.close()


if __name__ == "__main__":
    main()
