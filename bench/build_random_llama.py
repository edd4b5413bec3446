"""Build a random-weight Llama of a given shape, locally, with the tiny model's tokenizer.

Speed and memory depend on a model's shape, not on what it learnt, so benchmarks on a
GPU use models built here instead of downloaded ones (nothing may be downloaded):

    python bench/build_random_llama.py --shape llama-3.2-1b --out /tmp/llama1b
    python bench/build_random_llama.py --hidden 1024 --layers 8 --out /tmp/llama-mid

Weights are drawn from a fixed seed on the GPU when there is one (seconds for 1B
parameters), saved as bf16 safetensors; the tokenizer is the tiny model's (vocab 1024),
and the embedding has the shape's rows (`vocab`, default the tokenizer's 1,024): ids the
tokenizer does not know decode to "", and token counts come from the ids, so a benchmark
measures the real shape's lm-head and embedding traffic.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

SHAPES = {
    # Llama-3.2-1B's shape, its 128,256-row (tied) embedding included: 1.24B parameters,
    # the model of issue 11's bandwidth bound.
    "llama-3.2-1b": dict(
        hidden=2048, layers=16, heads=32, kv_heads=8, intermediate=8192, vocab=128256
    ),
}


def build(
    out: Path,
    hidden: int,
    layers: int,
    heads: int,
    kv_heads: int,
    intermediate: int,
    vocab: int | None = None,
    seed: int = 0,
) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from pytest_llmperf.models.names import tiny_model_path

    tiny = tiny_model_path()
    out.mkdir(parents=True, exist_ok=True)
    for name in (
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "chat_template.jinja",
    ):
        if (tiny / name).exists():
            shutil.copy(tiny / name, out / name)
    base = LlamaConfig.from_pretrained(tiny)
    config = LlamaConfig(
        vocab_size=vocab or base.vocab_size,
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        head_dim=hidden // heads,
        max_position_embeddings=4096,
        rope_theta=500000.0,
        bos_token_id=base.bos_token_id,
        eos_token_id=base.eos_token_id,
        pad_token_id=base.pad_token_id,
        tie_word_embeddings=True,
        torch_dtype="bfloat16",
        architectures=["LlamaForCausalLM"],
    )
    torch.manual_seed(seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with torch.device(device):
        model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--shape", choices=sorted(SHAPES))
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--heads", type=int, default=16)
    parser.add_argument("--kv-heads", type=int, default=8)
    parser.add_argument("--intermediate", type=int, default=4096)
    parser.add_argument("--vocab", type=int, help="embedding rows (default: the tokenizer's)")
    args = parser.parse_args()
    shape = (
        SHAPES[args.shape]
        if args.shape
        else dict(
            hidden=args.hidden,
            layers=args.layers,
            heads=args.heads,
            kv_heads=args.kv_heads,
            intermediate=args.intermediate,
            vocab=args.vocab,
        )
    )
    started = time.perf_counter()
    build(args.out, **shape)
    print(f"built {args.out} in {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
