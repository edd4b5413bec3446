"""The `vllm` and `vllm-server` engines' settings and traits (see `engines.spec`).

Both take vLLM's own engine arguments through `vllm_args` ({name: value}: `LLM(**...)` for
`vllm`, `--name value` flags for the server), and the server its raw flags through
`server_args`; names are checked against vLLM's own lists (`engines.vllm.native`).
"""

from __future__ import annotations

from collections.abc import Mapping

from pytest_llmperf.engines.openai.spec import CLIENT_SETTINGS
from pytest_llmperf.engines.spec import (
    DTYPE,
    MAX_MODEL_LEN,
    MAX_NUM_SEQS,
    PYTHON,
    QUANTIZATION,
    SEED,
    TENSOR_PARALLEL_SIZE,
    EngineSpec,
    FrozenArgs,
    NativeArgs,
    Setting,
    Traits,
)

#: Our setting -> vLLM's engine argument of the same meaning (`LLM(...)`, `--kebab-case`).
ENGINE_ARGS = (
    "tensor_parallel_size",
    "max_model_len",
    "max_num_seqs",
    "gpu_memory_utilization",
    "dtype",
    "enforce_eager",
    "quantization",
    "enable_prefix_caching",
    "seed",
)

SETTINGS = (
    TENSOR_PARALLEL_SIZE.but(doc="GPUs the model is split over"),
    MAX_MODEL_LEN.but(doc="context length; default the model's"),
    MAX_NUM_SEQS.but(doc="sequences scheduled at once; default vLLM's"),
    Setting(
        "gpu_memory_utilization",
        (float, int),
        doc="share of GPU memory vLLM may take; default vLLM's (the CPU build: "
        "VLLM_CPU_KVCACHE_SPACE, 1 GiB unless set)",
        prefix="util",
        above=0,
        maximum=1,
    ),
    DTYPE.but(
        choices=("auto", "half", "float16", "bfloat16", "float", "float32"),
        doc="default auto on a GPU, bfloat16 on the CPU build",
    ),
    Setting(
        "enforce_eager",
        (bool,),
        doc="no CUDA graphs or compilation; default on for the CPU build",
        prefix="eager",
    ),
    QUANTIZATION.but(doc="vLLM's quantization method (awq, fp8, ...)"),
    Setting(
        "enable_prefix_caching",
        (bool,),
        False,
        "off unless asked: every round repeats its prompts, which a warm cache would skip",
        prefix="prefix",
    ),
    SEED,
)


def _reserved_args() -> tuple[tuple[str, str], ...]:
    own = tuple((name, name) for name in ENGINE_ARGS)
    return (*own, ("model", ""), ("tokenizer", ""), ("disable_log_stats", ""))


def _reserved_flags() -> tuple[tuple[str, str], ...]:
    flags = [(f"--{name.replace('_', '-')}", name) for name in ENGINE_ARGS]
    flags += [("--no-enable-prefix-caching", "enable_prefix_caching")]
    flags += [("--no-enforce-eager", "enforce_eager")]
    return (*flags, ("--model", ""), ("--host", ""), ("--port", ""))


VLLM = EngineSpec(
    name="vllm",
    target="pytest_llmperf.engines.vllm.offline:VLLMEngine",
    doc="vLLM's offline LLM, always in a child process of its own",
    settings=(
        *SETTINGS,
        PYTHON,
        Setting(
            "vllm_args",
            (Mapping,),
            FrozenArgs(),
            "vLLM's own engine arguments, passed to vllm.LLM(...) as they are "
            "(kv_cache_dtype, max_num_batched_tokens, block_size, compilation_config, ...)",
            prefix="",
            native=NativeArgs(
                "pytest_llmperf.engines.vllm.native:llm_arguments",
                "vLLM's engine arguments (vllm.LLM / EngineArgs)",
                reserved=_reserved_args(),
            ),
        ),
    ),
    traits=Traits(isolated=True, streams_tokens=False, scores=True, local_model=True),
    packages=("torch", "vllm"),
)

_SERVER_FLAGS = NativeArgs(
    "pytest_llmperf.engines.vllm.native:server_flags",
    "the flags of vLLM's OpenAI server",
    reserved=_reserved_flags(),
)

VLLM_SERVER = EngineSpec(
    name="vllm-server",
    target="pytest_llmperf.engines.vllm.server:VLLMServerEngine",
    doc="vLLM's OpenAI-compatible server, started per configuration, through our client",
    settings=(
        *SETTINGS,
        Setting(
            "vllm_args",
            (Mapping,),
            FrozenArgs(),
            "vLLM's own engine arguments, given to the server as flags "
            "(block_size: 16 -> --block-size 16; true -> --flag, false -> --no-flag; a "
            "mapping as JSON)",
            prefix="",
            native=NativeArgs(
                _SERVER_FLAGS.reader, _SERVER_FLAGS.what, True, reserved=_SERVER_FLAGS.reserved
            ),
        ),
        Setting(
            "server_args",
            (list, tuple),
            (),
            "the server's own flags, appended to its command line as they are",
            prefix="",
            item=str,
            native=_SERVER_FLAGS,
        ),
        *CLIENT_SETTINGS,
    ),
    traits=Traits(scores=True, takes_arrivals=True, can_terminate=True, local_model=True),
)
