"""Model names: what `--model` may say, resolved to a local directory.

We run offline, so hub names are not resolved: `--model` is a local directory with a
`config.json`, or the name of a built-in model, built on first use into the cache folder
(`models.cache`): "tiny" (`models.tiny`) or "tiny-trained" (`models.tiny_trained`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_llmperf.errors import LLMPerfUsageError
from pytest_llmperf.models.cache import cached_model, model_dir

TINY_MODEL_NAME = "tiny"
TRAINED_MODEL_NAME = "tiny-trained"
BUILT_IN_MODELS = frozenset({TINY_MODEL_NAME, TRAINED_MODEL_NAME})


def tiny_model_path(cache_dir: Path | None = None) -> Path:
    """The directory of the tiny model, built first if the cache lacks it."""
    from pytest_llmperf.models.tiny import TINY_DIRNAME, build_tiny_model

    return cached_model(TINY_DIRNAME, build_tiny_model, cache_dir)


def trained_model_path(cache_dir: Path | None = None) -> Path:
    """The directory of "tiny-trained" (`pytest_llmperf.models.tiny_trained`), built if missing."""
    from pytest_llmperf.models.tiny_trained import TRAINED_DIRNAME, build_trained_model

    return cached_model(TRAINED_DIRNAME, build_trained_model, cache_dir)


def built_in_model_dir(name: str) -> Path:
    """Where the built-in model `name` is cached, without building it."""
    if name == TINY_MODEL_NAME:
        from pytest_llmperf.models.tiny import TINY_DIRNAME

        return model_dir(TINY_DIRNAME)
    if name == TRAINED_MODEL_NAME:
        from pytest_llmperf.models.tiny_trained import TRAINED_DIRNAME

        return model_dir(TRAINED_DIRNAME)
    raise ValueError(f"{name!r} is not a built-in model")


def resolve_model(name_or_path: str) -> Path:
    """The local directory for `--model`: "tiny" or a directory with config.json.

    We run offline, so hub names are not resolved.
    """
    if name_or_path == TINY_MODEL_NAME:
        return tiny_model_path()
    if name_or_path == TRAINED_MODEL_NAME:
        return trained_model_path()
    path = Path(name_or_path).expanduser()
    hint = (
        f"(give a local directory with config.json, or {TINY_MODEL_NAME!r} / "
        f"{TRAINED_MODEL_NAME!r} for the built-in models)"
    )
    if not path.is_dir():
        raise LLMPerfUsageError(f"--model: model path {name_or_path!r} does not exist {hint}")
    if not (path / "config.json").is_file():
        raise LLMPerfUsageError(f"--model: model path {name_or_path!r} has no config.json {hint}")
    return path.resolve()


@dataclass(frozen=True)
class LocalModel:
    """The run's model as local files (the `llmperf_model` fixture), for code that loads
    it itself: `AutoModelForCausalLM.from_pretrained(model.path)`."""

    #: What `--model` said ("tiny", or a directory).
    name: str
    #: The directory with `config.json`, the weights and the tokenizer's files.
    path: Path

    def tokenizer(self, **kwargs: Any) -> Any:
        """transformers' tokenizer of the model (imports transformers)."""
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(self.path, **kwargs)

    def __fspath__(self) -> str:
        return str(self.path)


def local_model(name_or_path: str) -> LocalModel:
    """`--model` resolved (`resolve_model`: a built-in model is built on first use)."""
    return LocalModel(name_or_path, resolve_model(name_or_path))
