"""Managed-server engines: an inference server started for a configuration, measured through
the `openai` client, and stopped when the configuration changes or the run ends.

`ManagedServerEngine` does what every such engine does: start the server (a
`ManagedServer`, on 127.0.0.1 and a free port; under pytest-xdist one `SharedServer` per
configuration for all workers), wait for its health URL, drive it through an `OpenAIEngine`
built from the client settings, end it when it hangs, and stop it. Tests that share a
configuration share the server (the session keeps one engine per configuration).

A server family (`vllm-server`, `llamacpp-server`) subclasses it with its spec and two
hooks, and may override a third:
- `model_files()`: (what the server loads, the tokenizer directory the client uses);
- `server_command(model_path, port)`: the `ServerCommand` that starts the server;
- `client_extras()`: client settings the server kind needs, under the user's own.
Settings are read through the spec: `self.settings` holds every setting's value, defaults
included; the client settings (`openai.spec.CLIENT_SETTINGS`) go to the client as given.

A request that outlives the client's `request_timeout_s` (`--llmperf-request-timeout`
when given) is a recorded failure, and the server that let it time out is presumed hung:
its process group is ended (SIGTERM, SIGKILL after a grace period) and the engine is dead
(`death_cause`), so the test fails saying so and the configuration's later tests fail at
once. `terminate` does the same from another thread (the per-test bound).
"""

from __future__ import annotations

import hashlib
import json
import os
import urllib.parse
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
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
from pytest_llmperf.engines.openai.spec import client_settings
from pytest_llmperf.engines.spec import EngineSpec, plain
from pytest_llmperf.hardware.gpus import physical_indices
from pytest_llmperf.procs.servers import ManagedServer, SharedServer, free_port, shared_servers_dir


@dataclass(frozen=True)
class ServerCommand:
    """How to start a server: its argument list (never a shell line), the URL that answers
    once it is ready, and environment variables to set for it."""

    argv: tuple[str, ...]
    health_url: str
    env: Mapping[str, str] = field(default_factory=dict)


class ManagedServerEngine:
    """The base of the server engines; see the module docstring for its hooks."""

    name: ClassVar[str]
    spec: ClassVar[EngineSpec]
    #: The client sends a conversation's turns after their answers (`SendsTurns`).
    sends_turns: ClassVar[bool] = True

    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        #: Every setting's value, the spec's default where the configuration gives none.
        self.settings = self.spec.resolve(dict(config.settings))
        self._server: ManagedServer | None = None
        self._shared: SharedServer | None = None
        self._client: OpenAIEngine | None = None
        #: Why the server was ended (hung, or past the test's bound); None while healthy.
        self.death_cause: str | None = None

    # --- hooks --------------------------------------------------------------------------

    def model_files(self) -> tuple[str, str]:
        """(what the server loads, the tokenizer directory the client uses)."""
        raise NotImplementedError

    def server_command(self, model_path: str, port: int) -> ServerCommand:
        """The command that starts the server on 127.0.0.1:`port` with this configuration."""
        raise NotImplementedError

    def client_extras(self) -> dict[str, Any]:
        """Client settings this kind of server needs, under the user's own."""
        return {}

    def gpu_env(self) -> dict[str, str]:
        """`CUDA_VISIBLE_DEVICES` for the server: the GPUs leased for this configuration."""
        return {"CUDA_VISIBLE_DEVICES": ",".join(map(str, physical_indices(self.config.gpus)))}

    # --- life cycle -----------------------------------------------------------------------

    def _make_server(self, path: str) -> ManagedServer:
        command = self.server_command(path, free_port())
        return ManagedServer(list(command.argv), command.health_url, env=dict(command.env))

    def start(self) -> EngineInfo:
        path, tokenizer = self.model_files()
        given = dict(self.config.settings)
        client = client_settings(given)
        run_uid = os.environ.get("PYTEST_XDIST_TESTRUNUID")
        argv: list[str] | None
        if os.environ.get("PYTEST_XDIST_WORKER") and run_uid:
            # Under xdist the workers share one server per configuration.
            server_given = {k: plain(v) for k, v in given.items() if k not in client}
            identity = json.dumps([path, server_given, self.config.gpus], sort_keys=True)
            key = hashlib.sha256(identity.encode()).hexdigest()[:16]
            self._shared = SharedServer(
                key, shared_servers_dir(run_uid), lambda: self._make_server(path), _base_url
            )
            base_url = self._shared.acquire()
            argv = self._shared.owned.argv if self._shared.owned else None
        else:
            self._server = self._make_server(path)
            self._server.start()
            base_url, argv = _base_url(self._server), self._server.argv
        self._client = OpenAIEngine(
            EngineConfig.make(
                "openai",
                path,
                {**self.client_extras(), **client, "base_url": base_url, "tokenizer": tokenizer},
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
    def last_round_stats(self) -> Mapping[str, float]:
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
        """Through the client's echo + logprobs scoring, where the server supports it."""
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
