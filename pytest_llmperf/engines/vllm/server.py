"""The `vllm-server` engine: vLLM's OpenAI-compatible server, started for the configuration.

`start` launches `python -m vllm.entrypoints.openai.api_server` (an argument list, on
127.0.0.1 and a free port) with the grid's engine settings, as a `ManagedServer`, and
benchmarks it through the `openai` client; `close` stops it. Tests that share the
configuration share the server (the session keeps one engine per configuration).

A request that outlives the client's `request_timeout_s` (`--llmperf-request-timeout`
when given) is a recorded failure, and the server that let it time out is presumed hung:
its process group is ended (SIGTERM, SIGKILL after a grace period) and the engine is
dead (`death_cause`), so the test fails saying so and the configuration's later tests
fail at once. `terminate` does the same from another thread (the per-test bound).
"""

from __future__ import annotations

import hashlib
import os
import sys
import urllib.parse
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

from pytest_llmperf.engines.base import (
    EngineConfig,
    EngineInfo,
    GenerationRequest,
    ScoreRequest,
    ScoreResult,
    StreamChunk,
    Tokenizer,
)
from pytest_llmperf.engines.openai.engine import OpenAIEngine
from pytest_llmperf.hardware.gpus import physical_indices
from pytest_llmperf.models.names import resolve_model
from pytest_llmperf.procs.servers import ManagedServer, SharedServer, free_port, shared_servers_dir

#: Our setting -> the server's flag (booleans become --flag / --no-flag).
_SERVER_FLAGS = {
    "tensor_parallel_size": "--tensor-parallel-size",
    "max_model_len": "--max-model-len",
    "max_num_seqs": "--max-num-seqs",
    "gpu_memory_utilization": "--gpu-memory-utilization",
    "dtype": "--dtype",
    "quantization": "--quantization",
    "seed": "--seed",
}
_CLIENT_SETTINGS = frozenset(
    {
        "max_concurrency",
        "prompts_per_request",
        "tokenized_requests",
        "endpoint",
        "request_timeout_s",
        "api_key_env",
    }
)


def server_argv(model_path: str, port: int, settings: dict[str, Any], on_gpu: bool) -> list[str]:
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
    for key, flag in _SERVER_FLAGS.items():
        if key in settings:
            argv += [flag, str(settings[key])]
    if "dtype" not in settings and not on_gpu:
        argv += ["--dtype", "bfloat16"]
    if settings.get("enforce_eager", not on_gpu):
        argv.append("--enforce-eager")
    # Off unless asked: every round repeats its prompts (see the vllm engine's docs).
    argv.append(
        "--enable-prefix-caching"
        if settings.get("enable_prefix_caching")
        else "--no-enable-prefix-caching"
    )
    return argv


class VLLMServerEngine:
    name: ClassVar[str] = "vllm-server"
    supports_arrivals: ClassVar[bool] = True
    #: Through the `openai` client's echo + logprobs scoring, which vLLM's server supports.
    supports_scoring: ClassVar[bool] = True
    settings_accepted: ClassVar[frozenset[str]] = (
        frozenset(_SERVER_FLAGS) | {"enforce_eager", "enable_prefix_caching"} | _CLIENT_SETTINGS
    )

    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        self._server: ManagedServer | None = None
        self._shared: SharedServer | None = None
        self._client: OpenAIEngine | None = None
        #: Why the server was ended (hung, or past the test's bound); None while healthy.
        self.death_cause: str | None = None

    def _make_server(self, path: str, settings: dict[str, Any]) -> ManagedServer:
        port = free_port()
        on_gpu = bool(self.config.gpus)
        env = {"CUDA_VISIBLE_DEVICES": ",".join(map(str, physical_indices(self.config.gpus)))}
        if not on_gpu and "gpu_memory_utilization" not in settings:
            env["VLLM_CPU_KVCACHE_SPACE"] = "1"  # see the vllm engine: 1 GiB for the tiny model
        return ManagedServer(
            server_argv(path, port, settings, on_gpu), f"http://127.0.0.1:{port}/health", env=env
        )

    #: Settings that go to the client (`OpenAIEngine`), not to the server.
    client_settings: ClassVar[frozenset[str]] = _CLIENT_SETTINGS

    def _model_files(self) -> tuple[str, str]:
        """(what the server loads, the tokenizer directory the client uses)."""
        path = str(resolve_model(self.config.model))
        return path, path

    def _client_extras(self) -> dict[str, Any]:
        """Client settings the server kind needs, under the user's own."""
        return {}

    def start(self) -> EngineInfo:
        settings = dict(self.config.settings)
        path, tokenizer = self._model_files()
        server_settings = {k: v for k, v in settings.items() if k not in self.client_settings}
        run_uid = os.environ.get("PYTEST_XDIST_TESTRUNUID")
        argv: list[str] | None
        if os.environ.get("PYTEST_XDIST_WORKER") and run_uid:
            # Under xdist the workers share one server per configuration.
            key = hashlib.sha256(
                repr((path, sorted(server_settings.items()), self.config.gpus)).encode()
            ).hexdigest()[:16]
            self._shared = SharedServer(
                key,
                shared_servers_dir(run_uid),
                lambda: self._make_server(path, server_settings),
                _base_url,
            )
            base_url = self._shared.acquire()
            argv = self._shared.owned.argv if self._shared.owned else None
        else:
            self._server = self._make_server(path, server_settings)
            self._server.start()
            base_url, argv = _base_url(self._server), self._server.argv
        client_settings = {k: v for k, v in settings.items() if k in self.client_settings}
        self._client = OpenAIEngine(
            EngineConfig.make(
                "openai",
                path,
                {
                    **self._client_extras(),
                    **client_settings,
                    "base_url": base_url,
                    "tokenizer": tokenizer,
                },
            )
        )
        client_info = self._client.start()
        return EngineInfo(
            engine=self.name,
            model=path,
            device="server",
            dtype="server",
            details={
                **client_info.details,
                "server_argv": argv,
                "shared_server": self._shared is not None,
                "server_owner": self._shared is None or self._shared.owned is not None,
            },
        )

    @property
    def last_round_stats(self) -> dict[str, float]:
        return self._client.last_round_stats if self._client is not None else {}

    @property
    def tokenizer(self) -> Tokenizer:
        if self._client is None:
            raise RuntimeError(f"{self.name} engine: start() it first")
        return self._client.tokenizer

    def stream(self, requests: Sequence[GenerationRequest]) -> Iterator[StreamChunk]:
        client = self._client
        if client is None:
            raise RuntimeError(f"{self.name} engine: start() it first")
        timed_out = client.timed_out_requests
        yield from client.stream(requests)
        if client.timed_out_requests > timed_out and self.death_cause is None:
            self.terminate(
                f"the server answered no request within {client.request_timeout_s:g} s "
                "(request timeout): presumed hung"
            )

    def terminate(self, reason: str) -> None:
        """End the server's process group now (from any thread); requests in flight fail
        with a connection error and the engine is dead, with `reason` as the cause."""
        server = self._server or (self._shared.owned if self._shared is not None else None)
        if server is not None:
            server.keep_log = True
            reason += f"; its process group was ended (server log: {server.log_path})"
            server.stop()
        else:  # a server another xdist worker owns: not ours to end
            reason += "; the server is another worker's, left to it"
        self.death_cause = reason

    def score(self, requests: Sequence[ScoreRequest]) -> list[ScoreResult]:
        if self._client is None:
            raise RuntimeError(f"{self.name} engine: start() it first")
        return self._client.score(requests)

    def close(self) -> None:
        client, self._client = self._client, None
        server, self._server = self._server, None
        shared, self._shared = self._shared, None
        try:
            if client is not None:
                client.close()
        finally:
            if server is not None:
                server.stop()
            if shared is not None:
                shared.release()


def _base_url(server: ManagedServer) -> str:
    """scheme://host:port of the server's health URL."""
    parts = urllib.parse.urlsplit(server.health_url)
    return f"{parts.scheme}://{parts.netloc}"
