"""The child side of an isolated engine: one engine, one process, driven over a pipe.

This module is what `multiprocessing` imports in the child before anything else of
ours, so it must not import torch, CUDA or the engine at import time: `serve` pins the
GPUs (`CUDA_VISIBLE_DEVICES`) first, then imports the engine.

Messages, parent -> child: ("encode", text), ("decode", ids), ("score", score
requests), ("stream", requests), ("close",). Child -> parent: ("ready", info) or
("error", text) after start; ("ok", value) for encode/decode/score; ("chunk", chunk)...
then ("done",) for stream, or ("error", text) if the engine raised.
"""

from __future__ import annotations

import importlib
import os
import sys
import traceback
from multiprocessing.connection import Connection
from typing import Any


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
