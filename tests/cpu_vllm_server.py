"""vLLM's OpenAI server (CPU build) on loopback, started and stopped around a block."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pytest_llmperf.engines.vllm.server import server_argv
from pytest_llmperf.procs.servers import ManagedServer, free_port


@contextmanager
def cpu_vllm_server(model: Path, **settings: Any) -> Iterator[str]:
    """Its base URL while the block runs; 1 GiB of KV cache is plenty for the tiny models."""
    port = free_port()
    server = ManagedServer(
        server_argv(str(model), port, settings, on_gpu=False),
        f"http://127.0.0.1:{port}/health",
        env={"VLLM_CPU_KVCACHE_SPACE": "1", "CUDA_VISIBLE_DEVICES": ""},
    )
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()
