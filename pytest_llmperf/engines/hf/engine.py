"""The "hf" engine: Hugging Face transformers as people run it, on one device.

Each batch decodes through transformers' own `model.generate` (`hf.generate`: how a batch
becomes one call, how its tokens are streamed and when they are stamped), with the options
people set there as settings. Loading, tokenizing, batching and scoring are shared with
`hf-fast` (`hf.common`, whose docstring describes the shared settings). Beyond them, as
declared in `engines/hf/spec.py` (`HF`):
- `attn_implementation` goes to `from_pretrained`; unset, transformers chooses (sdpa where
  torch has it). flash_attention_2 where it cannot run falls back to sdpa, recorded.
- `cache_implementation` goes to `generate`; unset, transformers' default (the model's
  generation config's, else a dynamic cache).
- `compile`: unset, transformers decides: it compiles the decode forward (torch.compile with
  its `CompileConfig`, mode "reduce-overhead") when the cache is static and the device a GPU.
  true passes a `compile_config` (`generate_args: {compile_config: {...}}` gives its fields);
  where transformers will not compile (the CPU, a dynamic cache) it skips compiling, and so do
  we, with the reason in `EngineInfo.details["compile_fallback"]`. false: `disable_compile`.
  Compiling happens in the first `generate` calls of each shape (tens of seconds on a GPU),
  normally the warm-up round.
- `padding_side`: left (right is what transformers warns about: other tokens, same work).
- `generate_args` go to every `generate` call as they are (names checked against
  `GenerationConfig`'s fields first; those the workload or a setting sets are refused).

`EngineInfo.details` records `decode: "generate"`, the attention, cache, compile and padding
chosen, `compiled` (whether transformers compiles the decode forward, by its criteria), the
pass-through arguments and transformers' and torch's versions.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar

from pytest_llmperf.engines.base import EngineConfig, StreamChunk
from pytest_llmperf.engines.hf.common import HFEngineBase
from pytest_llmperf.engines.hf.generate import (
    GenerateOptions,
    batch_key,
    generate_batch,
)
from pytest_llmperf.engines.hf.rows import Row
from pytest_llmperf.engines.hf.spec import HF
from pytest_llmperf.engines.spec import EngineSpec

logger = logging.getLogger("pytest_llmperf")

#: Where transformers compiles generate's decode forward (`_valid_auto_compile_criteria`).
_COMPILING_DEVICES = ("cuda", "xpu")


class HFEngine(HFEngineBase):
    """transformers' `generate`, one device. See the module docstring for settings."""

    name: ClassVar[str] = "hf"
    spec: ClassVar[EngineSpec] = HF

    def __init__(self, config: EngineConfig) -> None:
        super().__init__(config)
        self._options: GenerateOptions | None = None
        self._worker: ThreadPoolExecutor | None = None

    def _prepare(self, model: Any) -> dict[str, Any]:
        from transformers import CompileConfig

        settings = self.settings
        args = dict(self._native["generate_args"])
        passed = dict(args)
        kwargs: dict[str, Any] = {}
        cache = settings["cache_implementation"]
        if cache is not None:
            kwargs["cache_implementation"] = cache
        cache = cache or getattr(model.generation_config, "cache_implementation", None)
        asked = settings["compile"]
        compile_fields = args.pop("compile_config", None)
        if asked is False:
            if compile_fields is not None:
                raise ValueError(
                    "hf engine: generate_args gives a compile_config but the setting "
                    "'compile' is false"
                )
            kwargs["disable_compile"] = True
        elif asked or compile_fields is not None:
            kwargs["compile_config"] = CompileConfig(**dict(compile_fields or {}))
        kwargs.update(args)
        compiles = (
            asked is not False and cache == "static" and model.device.type in _COMPILING_DEVICES
        )
        self._options = GenerateOptions(kwargs, settings["padding_side"], compiles)
        # One thread runs every generate call: torch.compile's CUDA graphs are recorded
        # per thread, so a thread per batch would record them again every batch.
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="llmperf-hf-generate")
        details: dict[str, Any] = {
            "decode": "generate",
            "cache_implementation": cache or "dynamic",
            "compile": asked,
            "compiled": compiles,
            "padding_side": settings["padding_side"],
        }
        if asked is True and not compiles:
            reason = (
                "compile requested, but transformers compiles generate's decode forward only "
                f"with a static cache on a GPU (cache: {cache or 'dynamic'}, device: "
                f"{model.device.type}): it skips compiling ('unable to meet the criteria for "
                "compilation')"
            )
            logger.warning("hf engine: %s", reason)
            details["compile_fallback"] = reason
        if passed:
            details["generate_args"] = passed
        return details

    def _batch_key(self, row: Row) -> Hashable:
        return batch_key(row)

    def _decode(self, rows: list[Row]) -> Iterator[StreamChunk]:
        assert self._tokenizer is not None
        assert self._options is not None and self._worker is not None
        return generate_batch(
            self._model,
            rows,
            self._options,
            self._worker,
            pad_id=self._pad_id,
            eos_ids=self._eos_ids,
            decode=self._tokenizer.decode,
        )

    def _release(self) -> None:
        if self._worker is not None:
            self._worker.shutdown(wait=True)
            self._worker = None
        self._options = None
