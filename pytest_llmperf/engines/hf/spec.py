"""The `hf` and `hf-fast` engines' settings and traits (read without importing torch; see
`engines.spec`).

Both load a model the same way (transformers' `from_pretrained`, with `from_pretrained_args`
passed through) and tokenize and score it the same way; they differ in how they decode:
- `hf` decodes through transformers' own `model.generate`, with the options people set there
  (`attn_implementation`, `cache_implementation`, `compile`, `generate_args`): what
  transformers does with these weights, as you would run it.
- `hf-fast` decodes through our own loop, on CUDA a captured graph of a compiled, fused step
  with hand-written Triton kernels at batch 1: what these weights can do on this GPU, the
  reference that transformers (or any engine) is read against.
"""

from __future__ import annotations

from collections.abc import Mapping

from pytest_llmperf.engines.spec import (
    DTYPE,
    MAX_MODEL_LEN,
    MAX_NUM_SEQS,
    N_THREADS,
    PYTHON,
    SEED,
    TENSOR_PARALLEL_SIZE,
    EngineSpec,
    FrozenArgs,
    NativeArgs,
    Setting,
    Traits,
)

#: The readers of transformers' own argument lists (`engines.hf.native`, in a child process).
_NATIVE = "pytest_llmperf.engines.hf.native"

FROM_PRETRAINED_ARGS = Setting(
    "from_pretrained_args",
    (Mapping,),
    FrozenArgs(),
    "transformers' own from_pretrained keyword arguments, passed as they are "
    "(revision, use_safetensors, quantization_config, trust_remote_code, ...)",
    prefix="",
    native=NativeArgs(
        f"{_NATIVE}:from_pretrained_arguments",
        "the keyword arguments of transformers' from_pretrained",
        reserved=(
            ("dtype", "dtype"),
            ("torch_dtype", "dtype"),
            ("attn_implementation", "attn_implementation"),
            ("device_map", "device"),
            ("tp_plan", "tensor_parallel_size"),
            ("tp_size", "tensor_parallel_size"),
            ("device_mesh", "tensor_parallel_size"),
            ("distributed_config", "tensor_parallel_size"),
            ("output_loading_info", ""),
            ("pretrained_model_name_or_path", ""),
        ),
    ),
)

#: What both engines take: how the model is loaded, batched and scored.
_SHARED = (
    DTYPE.but(
        default="auto",
        choices=("auto", "float32", "bfloat16", "float16"),
        doc="weights' dtype; auto: bfloat16 on CUDA (float16 without bf16), float32 on CPU",
    ),
    MAX_NUM_SEQS.but(default=8, doc="requests per batch (static batching)"),
    MAX_MODEL_LEN.but(doc="prompt + max_tokens limit; default the model's positions"),
    Setting(
        "device",
        (str,),
        grid=False,
        doc="torch device; default the first leased GPU, else cpu (follows --gpus)",
    ),
    SEED,
    N_THREADS.but(
        doc="torch's CPU threads (torch.set_num_threads: one pool per process, set when the "
        "engine starts and given back when it closes); default as torch starts: "
        "OMP_NUM_THREADS, else the cores, under xdist on a CPU run the worker's share"
    ),
    TENSOR_PARALLEL_SIZE.but(doc="must be 1: the hf engines run on one device"),
    Setting("score_batch_size", (int,), 64, "rows per scoring pass", prefix="sbs", minimum=1),
    FROM_PRETRAINED_ARGS,
    PYTHON,
)

HF = EngineSpec(
    name="hf",
    target="pytest_llmperf.engines.hf.engine:HFEngine",
    doc="Hugging Face transformers in process, on one device, decoding through model.generate",
    settings=(
        *_SHARED,
        Setting(
            "attn_implementation",
            (str,),
            prefix="attn",
            doc="transformers' attention (eager, sdpa, flash_attention_2, flex_attention, "
            "...); default transformers' own (sdpa); flash_attention_2 without flash_attn "
            "or CUDA falls back to sdpa, recorded",
        ),
        Setting(
            "cache_implementation",
            (str,),
            prefix="cache",
            choices=("dynamic", "static"),
            doc="generate's KV cache; default transformers' own (dynamic for most models)",
        ),
        Setting(
            "compile",
            (bool,),
            doc="transformers' compile of the decode forward (compile_config); it compiles "
            "only a static cache's, on a GPU. Default transformers' own choice (compiled "
            "there); false: disable_compile",
            prefix="compile",
        ),
        Setting(
            "padding_side",
            (str,),
            "left",
            "where a batch's shorter prompts are padded (right: what transformers warns "
            "about for decoder-only models; same work, other tokens)",
            prefix="pad",
            choices=("left", "right"),
        ),
        Setting(
            "generate_args",
            (Mapping,),
            FrozenArgs(),
            "transformers' own generation options (GenerationConfig fields: "
            "repetition_penalty, use_cache, prefill_chunk_size, compile_config: {mode: ...}, "
            "...), passed to model.generate as they are",
            prefix="",
            native=NativeArgs(
                f"{_NATIVE}:generate_arguments",
                "transformers' generation options (GenerationConfig fields)",
                reserved=(
                    *(("max_new_tokens", ""), ("max_length", ""), ("min_new_tokens", "")),
                    *(("min_length", ""), ("do_sample", ""), ("temperature", "")),
                    *(("top_k", ""), ("top_p", ""), ("stop_strings", "")),
                    *(("eos_token_id", ""), ("pad_token_id", ""), ("num_return_sequences", "")),
                    ("cache_implementation", "cache_implementation"),
                    ("disable_compile", "compile"),
                ),
            ),
        ),
    ),
    traits=Traits(scores=True, local_model=True),
    packages=("torch", "transformers"),
)

HF_FAST = EngineSpec(
    name="hf-fast",
    target="pytest_llmperf.engines.hf.fast:HFFastEngine",
    doc="the reference decoder: transformers' model through our own decode loop; on CUDA "
    "one captured graph per step, compiled, fused, Triton kernels at batch 1",
    settings=(
        *_SHARED,
        Setting(
            "attn_implementation",
            (str,),
            prefix="attn",
            doc="transformers' attention (sdpa, eager, flash_attention_2, ...); default sdpa, "
            "on CUDA sdpa with grouped-query decode steps",
        ),
        Setting(
            "cuda_graphs",
            (bool,),
            True,
            "on CUDA, decode greedy batches through captured CUDA graphs (hf.graph)",
            prefix="graphs",
        ),
        Setting(
            "compile", (bool,), True, "torch.compile the captured step first", prefix="compile"
        ),
        Setting(
            "fuse_projections",
            (bool,),
            True,
            "decode Llama models through fused QKV and gate/up matrices (hf.llama_step)",
            prefix="fuse",
        ),
        Setting(
            "triton_kernels",
            (bool,),
            True,
            "batch-1 graphs of Llama models run hand-written Triton kernels (hf.triton.decode)",
            prefix="triton",
        ),
    ),
    traits=Traits(scores=True, local_model=True),
    packages=("torch", "transformers"),
)
