"""The `llamacpp-server` engine: llama.cpp's HTTP server, started for the configuration.

Which server: `llama-server` (llama.cpp's own, continuous batching over `-np` slots) when
the `server_binary` setting names one, or one is on PATH, or
`scripts/build_llama_cpp_tools.sh` built one into `.cache/llama.cpp-tools/build/bin`;
else, or with `server_binary: python`, llama-cpp-python's server (`python -m
llama_cpp.server`, the `llamacpp-server` extra), which runs one request at a time. Either
is started on 127.0.0.1 and a free port with the GGUF that the `llamacpp` engine would load
(`models.gguf.gguf_model`), and benchmarked through the `openai` client, like
`vllm-server` (`managed_server.ManagedServerEngine`).

Settings (`llamacpp.spec.LLAMACPP_SERVER`): the llamacpp engine's server-side ones, the
same declarations with the same defaults (`max_model_len` per slot, `max_num_seqs` slots,
`n_batch`, `n_threads`, `n_gpu_layers`, `quantization`), `server_binary`, `server_args`
(the server's own flags, appended), and the client's (`max_concurrency`,
`prompts_per_request`, `tokenized_requests`, `tokenizer`, ...). The client needs a Hugging
Face tokenizer: the model's directory ("tiny", a local Llama), or the `tokenizer` setting
when `--model` is a `.gguf` file.

llama-cpp-python's server has no `ignore_eos`: the client sends `logit_bias` -100 on EOS
for fixed-length requests instead (`eos_logit_bias`), and `repeat_penalty: 1` (its default
is 1.1, which changes greedy output). It sends no usage when streaming, so output token
counts come from the client's tokenizer on the text (`token_count_source`). It cannot
score (no echo of prompt log-probabilities), and neither can llama-server.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Any, ClassVar

from pytest_llmperf.engines.base import EngineConfig
from pytest_llmperf.engines.llamacpp.spec import LLAMACPP_SERVER, cpu_threads
from pytest_llmperf.engines.managed_server import ManagedServerEngine, ServerCommand
from pytest_llmperf.engines.spec import EngineSpec
from pytest_llmperf.errors import LLMPerfUsageError
from pytest_llmperf.models.gguf import gguf_model
from pytest_llmperf.models.names import resolve_model

#: Where scripts/build_llama_cpp_tools.sh puts llama-server (relative to the project).
BUILT_TOOLS = Path(".cache") / "llama.cpp-tools" / "build" / "bin"


def find_llama_server(explicit: str | None = None) -> str | None:
    """The llama-server to run: `explicit`, else PATH, else the project's built one;
    None for llama-cpp-python's server (none found, or `explicit` is "python")."""
    if explicit == "python":
        return None
    if explicit:
        if not (Path(explicit).is_file() and os.access(explicit, os.X_OK)):
            raise LLMPerfUsageError(f"server_binary: {explicit!r} is not an executable file")
        return explicit
    found = shutil.which("llama-server")
    if found:
        return found
    built = Path.cwd() / BUILT_TOOLS / "llama-server"
    project_built = Path(__file__).resolve().parents[3] / BUILT_TOOLS / "llama-server"
    for candidate in (built, project_built):
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


class LlamaCppServerEngine(ManagedServerEngine):
    name: ClassVar[str] = "llamacpp-server"
    spec: ClassVar[EngineSpec] = LLAMACPP_SERVER

    def __init__(self, config: EngineConfig) -> None:
        super().__init__(config)
        self._binary: str | None = None

    @property
    def metrics_url(self) -> str | None:
        """llama-server's /metrics (it is started with `--metrics`); llama-cpp-python's
        server has none, so its server metrics are left unread (null)."""
        return super().metrics_url if self._binary is not None else None

    def model_files(self) -> tuple[str, str]:
        path = gguf_model(self.config.model, self.settings["quantization"])
        tokenizer = self.settings["tokenizer"]
        if tokenizer is None:
            if self.config.model.endswith(".gguf"):
                raise LLMPerfUsageError(
                    "llamacpp-server: a .gguf --model needs the `tokenizer` setting (a local "
                    "Hugging Face tokenizer directory) for the client's prompts and counts"
                )
            tokenizer = str(resolve_model(self.config.model))
        self._binary = find_llama_server(self.settings["server_binary"])
        return str(path), str(tokenizer)

    def client_extras(self) -> dict[str, Any]:
        if self._binary is None:
            # llama-cpp-python's server: no ignore_eos (bias EOS away instead), and a
            # repetition penalty of 1.1 unless told otherwise, which greedy must not have.
            return {
                "vllm_extensions": False,
                "eos_logit_bias": True,
                "extra_body": {"repeat_penalty": 1.0},
            }
        return {}

    def server_command(self, model_path: str, port: int) -> ServerCommand:
        settings = self.settings
        slots, context = settings["max_num_seqs"], settings["max_model_len"]
        threads = settings["n_threads"] or cpu_threads()
        batch, layers = settings["n_batch"], settings["n_gpu_layers"]
        common = ["--host", "127.0.0.1", "--port", str(port)]
        if self._binary is not None:
            argv = [self._binary, "-m", model_path, *common, "-c", str(context * slots)]
            argv += ["-np", str(slots), "-b", str(batch), "-ub", str(batch), "-t", str(threads)]
            argv += ["-ngl", str(layers), "--no-webui", "--metrics"]  # /metrics: server metrics
            health = f"http://127.0.0.1:{port}/health"
        else:
            if slots > 1:
                raise LLMPerfUsageError(
                    "llamacpp-server: max_num_seqs > 1 needs llama-server (llama-cpp-python's "
                    "server runs one request at a time); build it with "
                    "scripts/build_llama_cpp_tools.sh or give server_binary"
                )
            argv = [sys.executable, "-m", "llama_cpp.server", "--model", model_path, *common]
            # Its default lets a new request cut off the one streaming: queue them instead.
            argv += ["--interrupt_requests", "False"]
            argv += ["--n_ctx", str(context), "--n_batch", str(batch), "--n_threads", str(threads)]
            argv += ["--n_gpu_layers", str(layers)]
            health = f"http://127.0.0.1:{port}/v1/models"
        argv += settings["server_args"]
        return ServerCommand(tuple(argv), health, self.gpu_env())
