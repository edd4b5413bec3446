"""The built-in model "tiny": a small Llama with random weights, built offline.

Benchmarks need a model that every machine has, with no download: "tiny" is built
locally in a few seconds from fixed seeds and cached on disk, so the same code
gives byte-identical files everywhere (same transformers/torch/tokenizers versions).

- Model: `LlamaForCausalLM`, hidden size 128, 2 heads of 64 (vLLM's CPU attention
  kernels reject smaller head sizes), 2 layers, float32 safetensors.
- Tokenizer: byte-level BPE with about 1024 tokens, trained on a synthetic
  English-like corpus generated here; special tokens `<s>`, `</s>`, `<unk>`, `<pad>`,
  and a small chat template. `encode` adds no special tokens.

The cache is `$LLMPERF_CACHE_DIR`, else `$XDG_CACHE_HOME/pytest-llmperf`, else
`~/.cache/pytest-llmperf`; the model lives in `<cache>/models/tiny-v1/`. Bump the
version in `TINY_DIRNAME` whenever the recipe changes, so stale caches are ignored.

This module imports torch and transformers only inside functions: `import
pytest_llmperf.models.tiny` stays cheap.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

TINY_DIRNAME = "tiny-v1"
_SEED = 1234
_VOCAB_SIZE = 1024
_SPECIAL_TOKENS = ("<s>", "</s>", "<unk>", "<pad>")
_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "<|{{ message['role'] }}|>\n{{ message['content'] }}{{ eos_token }}\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)

# Common English words give the tokenizer merges that look like English; the
# syllable-built words below give it a long tail.
_COMMON_WORDS = (
    "the of and to a in is it you that he was for on are with as I his they be at one "
    "have this from or had by hot word but what some we can out other were all there "
    "when up use your how said an each she which do their time if will way about many "
    "then them write would like so these her long make thing see him two has look more "
    "day could go come did number sound no most people my over know water than call "
    "first who may down side been now find any new work part take get place made live "
    "where after back little only round man year came show every good me give our under "
    "name very through just form sentence great think say help low line differ turn cause "
    "much mean before move right boy old too same tell does set three want air well also "
    "play small end put home read hand port large spell add even land here must big high "
    "such follow act why ask men change went light kind off need house picture try us "
    "again animal point mother world near build self earth father model token speed test"
).split()
_ONSETS = (
    "b",
    "c",
    "d",
    "f",
    "g",
    "h",
    "l",
    "m",
    "n",
    "p",
    "r",
    "s",
    "t",
    "v",
    "w",
    "st",
    "tr",
    "pl",
    "gr",
    "ch",
    "sh",
    "th",
    "br",
    "cl",
)
_VOWELS = ("a", "e", "i", "o", "u", "ea", "ou", "ai", "io")
_CODAS = ("", "", "n", "r", "s", "t", "l", "nd", "ng", "st", "ck", "m")
_PUNCTUATION = (".", ".", ".", "?", "!", ",")


def build_tiny_model(dest: Path) -> None:
    """Write the tiny model and its tokenizer into `dest` (created if missing).

    Deterministic: two builds with the same library versions give identical files.
    """
    import torch
    from safetensors.torch import save_file
    from transformers import LlamaConfig, LlamaForCausalLM

    dest.mkdir(parents=True, exist_ok=True)
    tokenizer = _build_tokenizer()
    tokenizer.save_pretrained(dest)

    config = LlamaConfig(
        architectures=["LlamaForCausalLM"],  # vLLM picks its model class by this
        vocab_size=len(tokenizer),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        head_dim=64,
        max_position_embeddings=2048,
        # Wider than Llama's 0.02 so that greedy text is less repetitive and the top
        # two logits are far apart (batched and unbatched runs then agree exactly).
        initializer_range=0.05,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        dtype="float32",
    )
    # fork_rng: seeding must not leak into the caller's global torch RNG.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_SEED)
        model = LlamaForCausalLM(config)  # type: ignore[no-untyped-call]
    # The same three files `model.save_pretrained` writes, without its progress bar.
    config.save_pretrained(dest)
    model.generation_config.save_pretrained(dest)
    state = {
        name: t.detach().to(torch.float32).contiguous() for name, t in model.state_dict().items()
    }
    save_file(state, str(dest / "model.safetensors"), metadata={"format": "pt"})


def _build_tokenizer() -> Any:
    """A `transformers.PreTrainedTokenizerFast` over a freshly trained byte-level BPE."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=_VOCAB_SIZE,
        special_tokens=list(_SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(_synthetic_corpus(), trainer=trainer)
    return PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=bpe,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        padding_side="left",
        chat_template=_CHAT_TEMPLATE,
        model_max_length=2048,
    )


def _synthetic_corpus(sentences: int = 3000) -> Iterator[str]:
    """Seeded English-like sentences: common words plus invented ones, Zipf-weighted."""
    rng = random.Random(_SEED)
    invented = sorted(
        {
            "".join(
                rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS)
                for _ in range(rng.choice((1, 2, 2, 3)))
            )
            for _ in range(1500)
        }
    )
    vocabulary = list(_COMMON_WORDS) + invented
    weights = [1.0 / (rank + 1) for rank in range(len(vocabulary))]
    for _ in range(sentences):
        words = rng.choices(vocabulary, weights=weights, k=rng.randint(4, 16))
        if rng.random() < 0.2:
            words.insert(rng.randrange(len(words)), str(rng.randint(0, 2025)))
        text = " ".join(words)
        yield text[0].upper() + text[1:] + rng.choice(_PUNCTUATION)
