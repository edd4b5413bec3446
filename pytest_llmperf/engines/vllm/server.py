"""The `vllm-server` engine: vLLM's OpenAI-compatible server, started for the configuration.

`start` launches `python -m vllm.entrypoints.openai.api_server` (an argument list, on
127.0.0.1 and a free port) with the configuration's settings as flags, and benchmarks it
through the `openai` client (`managed_server.ManagedServerEngine` does the rest). vLLM's
own engine arguments go through `vllm_args` (`block_size: 16` -> `--block-size 16`) and
raw flags through `server_args`, after ours.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Mapping
from typing import Any, ClassVar

from pytest_llmperf.engines.base import EngineInfo
from pytest_llmperf.engines.managed_server import ManagedServerEngine, ServerCommand
from pytest_llmperf.engines.native import as_flag, as_flags
from pytest_llmperf.engines.spec import EngineSpec
from pytest_llmperf.engines.vllm.cluster import cluster_of_argv
from pytest_llmperf.engines.vllm.install import broken_cpu_install, installed_versions
from pytest_llmperf.engines.vllm.spec import ENGINE_ARGS, VLLM_SERVER
from pytest_llmperf.models.names import resolve_model

#: Our settings that are the server's flags of the same name with a value (`--max-num-seqs 8`);
#: the two booleans are handled apart, below.
_VALUE_FLAGS = tuple(n for n in ENGINE_ARGS if n not in ("enforce_eager", "enable_prefix_caching"))


def server_argv(model_path: str, port: int, settings: Mapping[str, Any], on_gpu: bool) -> list[str]:
    """The server's command line; a setting that is absent or None is left to vLLM."""
    argv = [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        model_path,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    for key in _VALUE_FLAGS:
        if settings.get(key) is not None:
            argv += [as_flag(key, settings[key]), str(settings[key])]
    if settings.get("dtype") is None and not on_gpu:
        argv += ["--dtype", "bfloat16"]
    eager = settings.get("enforce_eager")
    if eager or (eager is None and not on_gpu):
        argv.append("--enforce-eager")
    # Off unless asked: every round repeats its prompts (see the vllm engine's docs).
    argv.append(
        "--enable-prefix-caching"
        if settings.get("enable_prefix_caching")
        else "--no-enable-prefix-caching"
    )
    argv += as_flags(settings.get("vllm_args") or {})
    argv += list(settings.get("server_args") or ())
    return argv


class VLLMServerEngine(ManagedServerEngine):
    name: ClassVar[str] = "vllm-server"
    spec: ClassVar[EngineSpec] = VLLM_SERVER

    def model_files(self) -> tuple[str, str]:
        path = str(resolve_model(self.config.model))
        return path, path

    def start(self) -> EngineInfo:
        info = super().start()
        # A worker sharing another's server has no argv of its own: its configuration's.
        argv = info.details.get("server_argv") or server_argv("", 0, self.settings, False)
        details = {**info.details, "cluster": cluster_of_argv(argv)}
        return dataclasses.replace(info, details=details)

    def server_command(self, model_path: str, port: int) -> ServerCommand:
        broken = broken_cpu_install(installed_versions())  # the server runs this Python
        if broken:
            raise RuntimeError(broken)
        on_gpu = bool(self.config.gpus)
        env = self.gpu_env()
        if not on_gpu and self.settings["gpu_memory_utilization"] is None:
            env["VLLM_CPU_KVCACHE_SPACE"] = "1"  # see the vllm engine: 1 GiB for the tiny model
        return ServerCommand(
            tuple(server_argv(model_path, port, self.settings, on_gpu)),
            f"http://127.0.0.1:{port}/health",
            env,
        )
