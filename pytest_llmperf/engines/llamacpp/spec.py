"""The `llamacpp` and `llamacpp-server` engines' settings and traits (see `engines.spec`).

`llamacpp` takes llama.cpp's own context and model parameters through `llama_args`
({name: value}, set on `llama_context_params` / `llama_model_params` after ours), and
`llamacpp-server` the server's own flags through `server_args`; names are checked against
llama.cpp's own lists (`engines.llamacpp.native`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from pytest_llmperf.engines.openai.spec import CLIENT_SETTINGS, TOKENIZER
from pytest_llmperf.engines.spec import (
    MAX_MODEL_LEN,
    MAX_NUM_SEQS,
    N_THREADS,
    PYTHON,
    QUANTIZATION,
    SEED,
    EngineSpec,
    FrozenArgs,
    NativeArgs,
    Setting,
    Traits,
)


def cpu_threads() -> int:
    """The `n_threads` default: the CPUs this process may use (llama.cpp's own default, 4,
    oversubscribes a 2-core machine)."""
    return len(os.sched_getaffinity(0))


MAX_MODEL_LEN_LLAMA = MAX_MODEL_LEN.but(default=2048, doc="context per sequence (slot)")
MAX_NUM_SEQS_LLAMA = MAX_NUM_SEQS.but(default=1, doc="parallel sequences (slots, n_parallel)")
N_BATCH = Setting("n_batch", (int,), 512, "tokens per llama_decode call", prefix="nb", minimum=1)
N_THREADS_LLAMA = N_THREADS.but(doc="CPU threads; default the CPUs this process may use")
N_GPU_LAYERS = Setting(
    "n_gpu_layers",
    (int,),
    0,
    "layers offloaded to a GPU; -1 all (a CPU build offloads nothing)",
    prefix="ngl",
    minimum=-1,
)
QUANTIZATION_LLAMA = QUANTIZATION.but(
    doc="llama.cpp's type (F16, Q8_0, Q4_K_M, ...) for a model written or quantized here; "
    "default F16, or the .gguf as given"
)

LLAMACPP = EngineSpec(
    name="llamacpp",
    target="pytest_llmperf.engines.llamacpp.engine:LlamaCppEngine",
    doc="llama.cpp in process, through llama-cpp-python's C API",
    settings=(
        MAX_MODEL_LEN_LLAMA,
        MAX_NUM_SEQS_LLAMA,
        N_BATCH,
        N_THREADS_LLAMA,
        N_GPU_LAYERS,
        QUANTIZATION_LLAMA,
        SEED,
        PYTHON,
        Setting(
            "llama_args",
            (Mapping,),
            FrozenArgs(),
            "llama.cpp's own context and model parameters (llama_context_params, "
            "llama_model_params: flash_attn_type, type_k, offload_kqv, main_gpu, ...), set "
            "after ours",
            prefix="",
            native=NativeArgs(
                "pytest_llmperf.engines.llamacpp.native:params",
                "llama.cpp's context and model parameters",
                reserved=(
                    ("n_ctx", "max_model_len"),
                    ("n_seq_max", "max_num_seqs"),
                    ("n_batch", "n_batch"),
                    ("n_threads", "n_threads"),
                    ("n_gpu_layers", "n_gpu_layers"),
                ),
            ),
        ),
    ),
    traits=Traits(local_model=True, gguf_model=True),
    packages=("llama_cpp",),
)

#: Flags the harness gives either server itself (llama-server's, llama-cpp-python's).
_SERVER_RESERVED = (
    *(("-m", ""), ("--model", ""), ("--host", ""), ("--port", "")),
    *(("-c", "max_model_len"), ("--ctx-size", "max_model_len"), ("--n_ctx", "max_model_len")),
    *(("-np", "max_num_seqs"), ("--parallel", "max_num_seqs")),
    *(("-b", "n_batch"), ("--batch-size", "n_batch"), ("--n_batch", "n_batch")),
    *(("-ub", "n_batch"), ("--ubatch-size", "n_batch")),
    *(("-t", "n_threads"), ("--threads", "n_threads"), ("--n_threads", "n_threads")),
    *(("-ngl", "n_gpu_layers"), ("--n-gpu-layers", "n_gpu_layers")),
    ("--n_gpu_layers", "n_gpu_layers"),
)

LLAMACPP_SERVER = EngineSpec(
    name="llamacpp-server",
    target="pytest_llmperf.engines.llamacpp.server:LlamaCppServerEngine",
    doc="llama.cpp's HTTP server (llama-server, or llama-cpp-python's), through our client",
    settings=(
        MAX_MODEL_LEN_LLAMA,
        MAX_NUM_SEQS_LLAMA,
        N_BATCH,
        N_THREADS_LLAMA,
        N_GPU_LAYERS,
        QUANTIZATION_LLAMA,
        Setting(
            "server_binary",
            (str,),
            doc="llama-server to run; default PATH's or the project's built one; python: "
            "llama-cpp-python's server",
            prefix="server",
        ),
        TOKENIZER.but(doc="local Hugging Face tokenizer for the client; needed with a .gguf"),
        Setting(
            "server_args",
            (list, tuple),
            (),
            "the server's own flags, appended to its command line as they are",
            prefix="",
            item=str,
            native=NativeArgs(
                "pytest_llmperf.engines.llamacpp.native:server_flags",
                "the flags of llama.cpp's server",
                reader_settings=("server_binary",),
                reserved=_SERVER_RESERVED,
            ),
        ),
        *CLIENT_SETTINGS,
    ),
    traits=Traits(takes_arrivals=True, can_terminate=True),
)
