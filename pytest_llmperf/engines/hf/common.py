"""What both hf engines share: loading a model with transformers, its tokenizer, checking
requests, static batching, scoring and closing. They differ only in how a batch decodes
(`HFEngineBase._decode`): `hf` through transformers' `generate` (`hf.engine`), `hf-fast`
through our own loop (`hf.fast`).

Requests run in batches of at most `max_num_seqs`, in the order given, each batch to
completion before the next starts (static batching: no request joins a running batch).
Settings are declared, with their defaults, in `engines/hf/spec.py` and read through the
engine's spec (`self.settings`). How the shared ones act:
- `dtype` "auto" is bfloat16 on CUDA (float16 without bf16 support), float32 on CPU.
- `max_model_len` unset is the model's `max_position_embeddings`.
- `device` follows the leased GPUs (`EngineConfig.gpus`), else "cpu"; not a grid setting.
- `tensor_parallel_size` must be 1 (these engines use one device).
- `n_threads`: torch's intra-op threads. torch keeps one pool per process, so the engine
  sets it when it starts and gives the process its count back when it closes (an isolated
  engine has a process of its own). Unset, torch's own count stands: `OMP_NUM_THREADS`, else
  the cores; under xdist on a CPU run each worker's share (`hardware.threads`). The count the
  engine ran with, and the CPUs it could use, are in `EngineInfo.details`.
- `from_pretrained_args` go to `from_pretrained` after ours (names checked against
  transformers' own list first, `engines.hf.native`; the ones a setting sets are refused).
- flash_attention_2 without the `flash_attn` package or CUDA falls back to sdpa, recorded in
  `EngineInfo.details["attn_fallback"]` (transformers itself would refuse to load).
"""

from __future__ import annotations

import gc
import importlib.util
import logging
import traceback
from collections.abc import Hashable, Iterator, Sequence
from typing import Any, ClassVar

import torch

from pytest_llmperf.engines.base import (
    EngineConfig,
    EngineInfo,
    GenerationRequest,
    ScoreRequest,
    ScoreResult,
    StreamChunk,
    Tokenizer,
)
from pytest_llmperf.engines.hf.rows import Row
from pytest_llmperf.engines.native import check_native
from pytest_llmperf.engines.scoring import token_pairs
from pytest_llmperf.engines.spec import EngineSpec, plain
from pytest_llmperf.hardware.threads import usable_cpus
from pytest_llmperf.models.names import resolve_model
from pytest_llmperf.models.tokenizer import HFTokenizer

logger = logging.getLogger("pytest_llmperf")

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class RequestError(Exception):
    """A request the engine refuses before running it; the message is the chunk's error."""


class HFEngineBase:
    """A transformers model on one device; subclasses decode (see the module docstring)."""

    name: ClassVar[str]
    spec: ClassVar[EngineSpec]

    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        #: Every setting's value, the spec's default where the configuration gives none.
        self.settings = self.spec.resolve(dict(config.settings))
        self._model: Any = None
        self._tokenizer: HFTokenizer | None = None
        self._device = "cpu"
        self._max_num_seqs = 8
        self._max_model_len: int | None = None
        self._seed = 0
        self._pad_id = 0
        self._eos_ids: tuple[int, ...] = ()
        self._vocab_size = 0
        #: The pass-through settings' arguments (`from_pretrained_args`, ...), checked.
        self._native: dict[str, dict[str, Any]] = {}
        #: torch's thread count before `n_threads` changed it, given back at close.
        self._threads_before: int | None = None

    # --- what a subclass gives ---------------------------------------------------------------

    def _attention(self, asked: str | None) -> tuple[str | None, str | None]:
        """The attention implementation to load with (None: transformers' own choice), and
        why it is not the one asked for, if it is not."""
        return flash_fallback(asked, self._device, self.name)

    def _prepare(self, model: Any) -> dict[str, Any]:
        """Get ready to decode the loaded `model`; facts for `EngineInfo.details`."""
        return {}

    def _batch_key(self, row: Row) -> Hashable:
        """Rows of one batch share this; a row with another key starts the next batch."""
        return None

    def _decode(self, rows: list[Row]) -> Iterator[StreamChunk]:
        """Decode `rows` as one batch, a chunk per new token of a row (`rows.advance`);
        `row.finished` is set before a row's last chunk is yielded."""
        raise NotImplementedError

    def _release(self) -> None:
        """Free what `_prepare` made (called by `close`)."""

    # --- the engine contract ---------------------------------------------------------------

    def start(self) -> EngineInfo:
        import transformers
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as hf_logging

        settings = self.settings
        if settings["tensor_parallel_size"] != 1:
            raise ValueError(
                f"{self.name} engine: tensor_parallel_size={settings['tensor_parallel_size']} "
                "is not supported; it runs on one device (use tensor_parallel_size=1)"
            )
        self._max_num_seqs = settings["max_num_seqs"]
        self._seed = settings["seed"]
        if settings["n_threads"] is not None:
            self._threads_before = torch.get_num_threads()
            torch.set_num_threads(settings["n_threads"])
        # A grid's were checked at collection, with the line; this catches a configuration
        # made in Python, before any model loads.
        self._native = {
            s.name: self._native_args(s.name) for s in self.spec.settings if s.native is not None
        }
        load_args = self._native["from_pretrained_args"]

        path = resolve_model(self.config.model)
        # The harness chose the GPUs (EngineConfig.gpus, CUDA numbering); none means the CPU.
        gpus = self.config.gpus
        self._device = str(settings["device"] or (f"cuda:{gpus[0]}" if gpus else "cpu"))
        if self._device.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(
                f"{self.name} engine: device={self._device!r} but CUDA is not available"
            )
        dtype_name = _pick_dtype(settings["dtype"], self._device)
        attn, fallback = self._attention(settings["attn_implementation"])

        # A progress bar per load would land in every test's captured stderr.
        hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
        hf_tokenizer = AutoTokenizer.from_pretrained(path)
        chosen = {"attn_implementation": attn} if attn is not None else {}
        model: Any = AutoModelForCausalLM.from_pretrained(
            path, dtype=DTYPES[dtype_name], **chosen, **load_args
        )
        self._model = model.to(self._device).eval()
        self._tokenizer = HFTokenizer(hf_tokenizer)

        eos: set[int] = set()
        # Like vLLM, stop at the tokenizer's EOS and at every EOS the generation config
        # lists (Llama 3's <|eot_id|>, say).
        generation_config = getattr(model, "generation_config", None)
        for ids in (hf_tokenizer.eos_token_id, getattr(generation_config, "eos_token_id", None)):
            eos.update([ids] if isinstance(ids, int) else (ids or ()))
        self._eos_ids = tuple(sorted(eos))
        self._vocab_size = int(model.get_input_embeddings().num_embeddings)
        pad = hf_tokenizer.pad_token_id
        self._pad_id = pad if pad is not None else (self._eos_ids or (0,))[0]
        limit = settings["max_model_len"] or getattr(model.config, "max_position_embeddings", None)
        self._max_model_len = int(limit) if limit is not None else None

        if self._device.startswith("cuda"):
            torch.cuda.set_device(self._device)
        details: dict[str, Any] = {
            "attn_implementation": getattr(model.config, "_attn_implementation", attn),
            "num_parameters": sum(p.numel() for p in model.parameters()),
            # For model bandwidth utilisation (measure/bandwidth.py): what a decode step reads.
            "weight_bytes": sum(p.numel() * p.element_size() for p in model.parameters()),
            "kv_bytes_per_token": _kv_bytes_per_token(model),
            "max_num_seqs": self._max_num_seqs,
            "max_model_len": self._max_model_len,
            "transformers_version": transformers.__version__,
            "torch_version": torch.__version__,
            # What the CPU side ran with: threads beyond the usable CPUs slow each other.
            "torch_num_threads": torch.get_num_threads(),
            "torch_num_interop_threads": torch.get_num_interop_threads(),
            "cpus_allowed_count": len(usable_cpus()),
        }
        if load_args:
            details["from_pretrained_args"] = load_args
        if self._device.startswith("cuda"):
            details["device_name"] = torch.cuda.get_device_name(self._device)
            details["cuda_version"] = torch.version.cuda
        if fallback:
            details["attn_fallback"] = fallback
        details.update(self._prepare(self._model))
        return EngineInfo(
            engine=self.name,
            model=str(path),
            device=self._device,
            dtype=dtype_name,
            details=details,
        )

    @property
    def tokenizer(self) -> Tokenizer:
        if self._tokenizer is None:
            raise RuntimeError(f"{self.name} engine: tokenizer is available after start()")
        return self._tokenizer

    def stream(self, requests: Sequence[GenerationRequest]) -> Iterator[StreamChunk]:
        """Run `requests` in batches of `max_num_seqs`; see `Engine.stream`.

        A request the engine refuses (too long, empty) yields its error chunk as soon
        as it is read, and its batch is filled with the next requests instead.
        """
        if self._model is None or self._tokenizer is None:
            raise RuntimeError(
                f"{self.name} engine: stream() called before start() or after close()"
            )
        batch: list[Row] = []
        key: Hashable = None
        for index, request in enumerate(requests):
            prompt_ids: list[int] | None = None
            try:
                prompt_ids = self._prompt_ids(request)
                self._check(prompt_ids, request)
            except Exception as exc:
                message = str(exc) if isinstance(exc, RequestError) else describe(exc)
                yield StreamChunk(
                    index,
                    (),
                    finish_reason="error",
                    error=message,
                    prompt_tokens=None if prompt_ids is None else len(prompt_ids),
                )
                continue
            seed = request.sampling.seed if request.sampling.seed is not None else self._seed
            row = Row(index, prompt_ids, request.sampling, seed)
            if batch and self._batch_key(row) != key:
                yield from self._run_batch(batch)
                batch = []
            key = self._batch_key(row)
            batch.append(row)
            if len(batch) == self._max_num_seqs:
                yield from self._run_batch(batch)
                batch = []
        if batch:
            yield from self._run_batch(batch)

    def close(self) -> None:
        if self._threads_before is not None:  # the process's pool, as it was
            torch.set_num_threads(self._threads_before)
            self._threads_before = None
        if self._model is None and self._tokenizer is None:
            return
        self._release()
        self._model = None
        self._tokenizer = None
        gc.collect()
        if self._device.startswith("cuda"):
            torch.cuda.empty_cache()

    def score(self, requests: Sequence[ScoreRequest]) -> list[ScoreResult]:
        """Log-likelihoods of continuations, `score_batch_size` rows (default 64) a pass."""
        from pytest_llmperf.engines.hf import scoring as hf_score

        if self._tokenizer is None:
            raise RuntimeError(f"{self.name} engine: start() it first")
        pairs = token_pairs(self._tokenizer, requests, self.name)
        return hf_score.score_rows(
            self._model,
            pairs,
            pad_id=self._pad_id,
            device=self._device,
            batch_rows=self.settings["score_batch_size"],
        )

    # --- shared machinery ------------------------------------------------------------------

    def _native_args(self, name: str) -> dict[str, Any]:
        """A pass-through setting's value as keyword arguments, its names checked against
        transformers' own list first."""
        setting = self.spec.setting(name)
        assert setting is not None
        value = plain(self.settings[name])
        if value:
            check_native(setting, value, self.settings, self.name, f"{self.name} engine")
        return dict(value)

    def _prompt_ids(self, request: GenerationRequest) -> list[int]:
        assert self._tokenizer is not None
        if request.prompt_token_ids is not None:
            return list(request.prompt_token_ids)
        if request.prompt is not None:
            return self._tokenizer.encode(request.prompt)
        assert request.messages is not None
        encoded = self._tokenizer.hf_tokenizer.apply_chat_template(
            [dict(m) for m in request.messages],
            add_generation_prompt=True,
            tokenize=True,
            return_dict=True,
        )
        return list(encoded["input_ids"])

    def _check(self, prompt_ids: list[int], request: GenerationRequest) -> None:
        max_tokens = request.sampling.max_tokens
        if not prompt_ids:
            raise RequestError("empty prompt: a request needs at least one prompt token")
        # Checked here because on CUDA a bad id is a device-side assert that breaks
        # every later batch, not an exception confined to this one.
        bad = [t for t in prompt_ids if not 0 <= t < self._vocab_size]
        if bad:
            raise RequestError(
                f"prompt token id {bad[0]} is outside the vocabulary [0, {self._vocab_size})"
            )
        if max_tokens < 1:
            raise RequestError(f"max_tokens must be at least 1, got {max_tokens}")
        limit = self._max_model_len
        if limit is not None and len(prompt_ids) + max_tokens > limit:
            raise RequestError(
                f"prompt of {len(prompt_ids)} tokens + max_tokens {max_tokens} "
                f"exceeds max_model_len {limit}"
            )

    def _run_batch(self, rows: list[Row]) -> Iterator[StreamChunk]:
        try:
            yield from self._decode(rows)
        except Exception as exc:
            # A failed batch (out of memory, say) is data: its unfinished requests end
            # with an error chunk and the next batch still runs.
            message = describe(exc)
            logger.warning(
                "%s engine: batch of %d requests failed: %s", self.name, len(rows), message
            )
            if self._device.startswith("cuda"):
                torch.cuda.empty_cache()
            for row in rows:
                if not row.finished:
                    row.finished = True
                    yield StreamChunk(
                        row.index,
                        (),
                        finish_reason="error",
                        prompt_tokens=len(row.prompt_ids),
                        error=message,
                    )


def flash_fallback(asked: str | None, device: str, engine: str) -> tuple[str | None, str | None]:
    """`asked`, or sdpa where flash_attention_2 cannot run, with the reason."""
    if asked != "flash_attention_2":
        return asked, None
    if importlib.util.find_spec("flash_attn") is None:
        reason = "flash_attention_2 requested but flash_attn is not installed; using sdpa"
    elif not device.startswith("cuda"):
        reason = f"flash_attention_2 requested but the device is {device!r}; using sdpa"
    else:
        return asked, None
    logger.warning("%s engine: %s", engine, reason)
    return "sdpa", reason


def describe(exc: BaseException) -> str:
    """The error and where it was raised (the innermost frame): an `AssertionError` deep in
    transformers or torch says nothing by itself."""
    text = f"{type(exc).__name__}: {exc}"
    frames = traceback.extract_tb(exc.__traceback__)
    if frames:
        last = frames[-1]
        text += f" (at {last.filename}:{last.lineno} in {last.name})"
    return text


def _kv_bytes_per_token(model: Any) -> int:
    """Bytes of keys and values one token adds to the cache, over all layers."""
    config = model.config
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    element = torch.finfo(model.dtype).bits // 8
    return int(2 * config.num_hidden_layers * kv_heads * head_dim * element)


def _pick_dtype(name: str, device: str) -> str:
    """The dtype to load with: `name` (one of the spec's choices), "auto" resolved."""
    if name != "auto":
        return name
    if not device.startswith("cuda"):
        return "float32"
    return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
