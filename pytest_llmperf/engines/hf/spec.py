"""The `hf` engine's settings and traits (read without importing torch; see `engines.spec`)."""

from __future__ import annotations

from pytest_llmperf.engines.spec import (
    DTYPE,
    MAX_MODEL_LEN,
    MAX_NUM_SEQS,
    N_THREADS,
    SEED,
    TENSOR_PARALLEL_SIZE,
    EngineSpec,
    Setting,
    Traits,
)

HF = EngineSpec(
    name="hf",
    target="pytest_llmperf.engines.hf.engine:HFEngine",
    doc="Hugging Face transformers in process, on one device, with our own decode loop",
    settings=(
        DTYPE.but(
            default="auto",
            choices=("auto", "float32", "bfloat16", "float16"),
            doc="weights' dtype; auto: bfloat16 on CUDA (float16 without bf16), float32 on CPU",
        ),
        Setting(
            "attn_implementation",
            (str,),
            prefix="attn",
            doc="transformers' attention (sdpa, eager, flash_attention_2, ...); default sdpa, "
            "on CUDA sdpa with grouped-query decode steps",
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
            doc="torch's CPU threads (torch.set_num_threads: one pool per process, set when "
            "the engine starts and given back when it closes); default as torch starts: "
            "OMP_NUM_THREADS, else the cores, under xdist on a CPU run the worker's share"
        ),
        TENSOR_PARALLEL_SIZE.but(doc="must be 1: the hf engine runs on one device"),
        Setting("score_batch_size", (int,), 64, "rows per scoring pass", prefix="sbs", minimum=1),
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
)
