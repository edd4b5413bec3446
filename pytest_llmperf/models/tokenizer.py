"""Tokenizers of local models, as the harness counts with them (`engines.base.Tokenizer`).

One adapter over Hugging Face-style tokenizers (`HFTokenizer`: transformers' or vLLM's,
which is transformers' too), and one loader for a model named by `--model` or an engine's
`tokenizer` setting (`local_tokenizer`), used wherever prompts are built or tokens counted
without the engine that owns the model: the OpenAI-compatible client, dry runs and dataset
statistics.

`local_tokenizer` reads the model's `tokenizer.json` with the `tokenizers` package, which
needs no torch: a client engine, whose model runs in a server, then never imports torch or
transformers (seconds of start-up and hundreds of MB of a process whose CPU time is a
measured client cost). It gives the ids transformers' fast tokenizer gives for the same file
(both run the same Rust tokenizer), and decodes the same text: transformers' optional clean-
up of spaces before punctuation (`clean_up_tokenization_spaces` in `tokenizer_config.json`)
is applied where transformers applies it (not after a BPE model, unless forced). A model
without `tokenizer.json` (a slow, sentencepiece-only tokenizer) is loaded through
transformers instead.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pytest_llmperf.models.names import resolve_model

#: transformers' `clean_up_tokenization`: spaces a word-piece decode leaves before these.
_CLEAN_UPS = (
    (" .", "."),
    (" ?", "?"),
    (" !", "!"),
    (" ,", ","),
    (" ' ", "'"),
    (" n't", "n't"),
    (" 'm", "'m"),
    (" 's", "'s"),
    (" 've", "'ve"),
    (" 're", "'re"),
)


class HFTokenizer:
    """The `Tokenizer` protocol over a Hugging Face-style tokenizer object.

    `encode` adds no special tokens and `decode` drops them, so that counts and text are
    those of the content alone, as the harness expects; `encode_with_specials` is what a
    server would tokenize a prompt into (its BOS included), for token-id requests.
    """

    def __init__(self, hf_tokenizer: Any) -> None:
        self.hf_tokenizer = hf_tokenizer

    def encode(self, text: str) -> list[int]:
        return list(self.hf_tokenizer.encode(text, add_special_tokens=False))

    def encode_with_specials(self, text: str) -> list[int]:
        return list(self.hf_tokenizer.encode(text, add_special_tokens=True))

    def decode(self, token_ids: Sequence[int]) -> str:
        return str(self.hf_tokenizer.decode(list(token_ids), skip_special_tokens=True))

    @property
    def eos_token_id(self) -> int | None:
        eos = self.hf_tokenizer.eos_token_id
        return eos if isinstance(eos, int) else None


class FileTokenizer:
    """The `Tokenizer` protocol over a `tokenizer.json`, read with `tokenizers` (no torch)."""

    def __init__(self, directory: Path) -> None:
        from tokenizers import Tokenizer

        self._tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
        config_file = directory / "tokenizer_config.json"
        config = (
            json.loads(config_file.read_text(encoding="utf-8")) if config_file.is_file() else {}
        )
        # transformers (5.x) cleans up only where it cannot corrupt: not after a BPE model
        # unless told so with a key that says it will.
        bpe = json.loads(self._tokenizer.to_str()).get("model", {}).get("type") == "BPE"
        forced = "clean_up_tokenization_spaces_for_bpe_even_though_it_will_corrupt_output"
        self._clean_up = bool(config.get("clean_up_tokenization_spaces", False)) and (
            not bpe or bool(config.get(forced, False))
        )
        eos = config.get("eos_token")
        eos = eos.get("content") if isinstance(eos, dict) else eos  # an AddedToken's form
        self.eos_token_id: int | None = (
            self._tokenizer.token_to_id(eos) if isinstance(eos, str) else None
        )

    def encode(self, text: str) -> list[int]:
        return list(self._tokenizer.encode(text, add_special_tokens=False).ids)

    def encode_with_specials(self, text: str) -> list[int]:
        return list(self._tokenizer.encode(text, add_special_tokens=True).ids)

    def decode(self, token_ids: Sequence[int]) -> str:
        text = str(self._tokenizer.decode(list(token_ids), skip_special_tokens=True))
        if self._clean_up:
            for before, after in _CLEAN_UPS:
                text = text.replace(before, after)
        return text


def transformers_tokenizer(name_or_path: str) -> Any:
    """transformers' tokenizer of a local model (for chat templates); imports torch."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(resolve_model(name_or_path))


def local_tokenizer(name_or_path: str) -> HFTokenizer | FileTokenizer:
    """The tokenizer of a local model ("tiny", "tiny-trained" or a directory), without
    torch where the model has a `tokenizer.json` (see the module docstring)."""
    directory = resolve_model(name_or_path)
    if (directory / "tokenizer.json").is_file():
        return FileTokenizer(directory)
    return HFTokenizer(transformers_tokenizer(str(directory)))
