"""The cluster a vLLM engine ran on, as its records keep it (`EngineInfo.details["cluster"]`).

vLLM spreads one model over GPUs and nodes by its own settings, which reach it through the
native-argument pass-through (`vllm_args`, the server's `server_args`) unchanged:
`distributed_executor_backend` (`mp` on one node or several with `nnodes`, `ray` over a Ray
cluster), `tensor_parallel_size`, `pipeline_parallel_size`, `data_parallel_size` and its
per-node share. A record that says only "tp2" cannot tell a two-node pipeline from one host's
two GPUs, so each record says the cluster:

- the `vllm` engine: what vLLM made of them (its `ParallelConfig`, defaults and the
  backend it chose included), read after the engine started;
- the `vllm-server` engine: what its command line asked for (the server is another
  process: its configuration is not ours to read), vLLM's defaults where a flag is absent.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

#: The cluster's keys, each with vLLM's default and the server's flags (long, short) for it.
CLUSTER_KEYS: tuple[tuple[str, Any, tuple[str, ...]], ...] = (
    ("distributed_executor_backend", None, ("--distributed-executor-backend",)),
    ("tensor_parallel_size", 1, ("--tensor-parallel-size", "-tp")),
    ("pipeline_parallel_size", 1, ("--pipeline-parallel-size", "-pp")),
    ("data_parallel_size", 1, ("--data-parallel-size", "-dp")),
    ("data_parallel_size_local", None, ("--data-parallel-size-local", "-dpl")),
    ("nnodes", 1, ("--nnodes", "-n")),
    ("node_rank", 0, ("--node-rank", "-r")),
)


def cluster_of_config(parallel_config: Any) -> dict[str, Any]:
    """The cluster from vLLM's `ParallelConfig` (the offline engine's, after its start)."""
    cluster = {key: getattr(parallel_config, key, default) for key, default, _ in CLUSTER_KEYS}
    backend = cluster["distributed_executor_backend"]
    if backend is not None and not isinstance(backend, str):  # an executor class
        cluster["distributed_executor_backend"] = getattr(backend, "__name__", str(backend))
    cluster["world_size"] = getattr(parallel_config, "world_size", None)
    return cluster


def cluster_of_argv(argv: Sequence[str]) -> dict[str, Any]:
    """The cluster a server's command line asks for (`--flag value` or `--flag=value`; the
    last one given wins, as in vLLM's parser)."""
    given: dict[str, str] = {}
    flags = {flag: key for key, _, names in CLUSTER_KEYS for flag in names}
    for index, arg in enumerate(argv):
        flag, eq, value = arg.partition("=")
        if flag in flags:
            if eq:
                given[flags[flag]] = value
            elif index + 1 < len(argv):
                given[flags[flag]] = argv[index + 1]
    cluster: dict[str, Any] = {}
    for key, default, _ in CLUSTER_KEYS:
        text = given.get(key)
        cluster[key] = (
            default if text is None else (text if key.endswith("backend") else _int(text))
        )
    return cluster


def _int(text: str) -> int | str:
    try:
        return int(text)
    except ValueError:  # the server refuses it itself; the record keeps what was asked
        return text
