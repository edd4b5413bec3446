"""The "llamacpp" engine: llama.cpp in process, through llama-cpp-python's C API.

The model is a GGUF file: `--model path/to/model.gguf`, or a local Llama directory /
"tiny" / "tiny-trained", written to GGUF and quantized as the `quantization` setting
asks (`pytest_llmperf.models.gguf`, cached).

Requests run with continuous batching over `max_num_seqs` parallel sequences, as
llama.cpp's server runs its slots: each `llama_decode` call carries one token for every
sequence that is generating plus prompt tokens of sequences that are starting, up to
`n_batch` tokens; a sequence that finishes frees its slot (and its KV cache) for the
next request at once. Every token is handed to the harness right after the
`llama_decode` that produced it returns (llama.cpp syncs the device before logits are
read), so TTFT includes the prompt's processing and TPOT the decode steps, and
`suites/test_prefill_decode.py` reports prompt processing and generation speed apart.

Sampling is ours, on the logits llama.cpp returns: greedy when temperature is 0 (the
arg-max, as llama.cpp's greedy sampler), else temperature, top-k and top-p with a
NumPy generator seeded per request. EOS is masked while `ignore_eos` or `min_tokens`
asks for more tokens. Stop strings end a request with "stop", the text cut before them.

Settings (`llamacpp.spec.LLAMACPP`, with their defaults): `max_model_len` is the context
per sequence (n_ctx is `max_model_len * max_num_seqs`, split between the sequences);
`max_num_seqs` parallel sequences (llama.cpp's `n_parallel`); `n_batch` tokens per
`llama_decode` call (`n_ubatch` the same unless `llama_args` sets it); `n_threads` CPU
threads (default the CPUs this process may use: llama.cpp's own default, 4,
oversubscribes a 2-core machine); `n_gpu_layers` offloaded to a GPU (-1 all; a CPU build
of llama-cpp-python offloads nothing, `gpu_offload` in the engine info says so);
`quantization`, llama.cpp's type name (`F16`, `Q8_0`, `Q4_K_M`, ...) for a model written
or quantized here; `seed` for requests whose `SamplingParams.seed` is None; `llama_args`,
llama.cpp's own context and model parameters (`flash_attn_type`, `type_k`,
`offload_kqv`, `n_ubatch`, ...), set after ours.

Not supported: `score` (log-likelihoods need every prompt position's logits; llama.cpp's
server has no echo of prompt log-probabilities either).
"""

from __future__ import annotations

import collections
import ctypes
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from pytest_llmperf.engines.base import (
    EngineConfig,
    EngineInfo,
    FinishReason,
    GenerationRequest,
    SamplingParams,
    StreamChunk,
)
from pytest_llmperf.engines.llamacpp.spec import LLAMACPP, cpu_threads
from pytest_llmperf.engines.spec import EngineSpec
from pytest_llmperf.models.gguf import gguf_model
from pytest_llmperf.models.llama_cpp_log import LOG, quiet_llama_cpp


class LlamaCppTokenizer:
    """The GGUF's own vocabulary: `encode` adds no special tokens and reads none in the text."""

    def __init__(self, vocab: Any) -> None:
        self._vocab = vocab

    def encode(self, text: str) -> list[int]:
        import llama_cpp

        data = text.encode("utf-8")
        buffer = (llama_cpp.llama_token * (len(data) + 8))()
        n = llama_cpp.llama_tokenize(
            self._vocab, data, len(data), buffer, len(buffer), False, False
        )
        if n < 0:  # too small: llama.cpp says how many it needs, negated
            buffer = (llama_cpp.llama_token * -n)()
            n = llama_cpp.llama_tokenize(self._vocab, data, len(data), buffer, -n, False, False)
        return list(buffer[:n])

    def piece(self, token: int) -> bytes:
        import llama_cpp

        buffer = ctypes.create_string_buffer(64)
        n = llama_cpp.llama_token_to_piece(self._vocab, token, buffer, 64, 0, False)
        if n < 0:
            buffer = ctypes.create_string_buffer(-n)
            n = llama_cpp.llama_token_to_piece(self._vocab, token, buffer, -n, 0, False)
        return buffer.raw[:n]

    def decode(self, token_ids: Sequence[int]) -> str:
        return b"".join(self.piece(t) for t in token_ids).decode("utf-8", "replace")


@dataclass
class _Sequence:
    """One request in a slot: its prompt still to process, its output so far."""

    index: int
    request: GenerationRequest
    slot: int
    prompt: list[int]
    rng: np.random.Generator
    fed: int = 0
    output: list[int] = field(default_factory=list)
    text: bytearray = field(default_factory=bytearray)
    announced: bool = False

    @property
    def prefilling(self) -> bool:
        return self.fed < len(self.prompt)


class LlamaCppEngine:
    name: ClassVar[str] = "llamacpp"
    spec: ClassVar[EngineSpec] = LLAMACPP

    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        settings = self.spec.resolve(dict(config.settings))
        self.max_model_len: int = settings["max_model_len"]
        self.max_num_seqs: int = settings["max_num_seqs"]
        self.n_batch: int = settings["n_batch"]
        self.n_threads: int = settings["n_threads"] or cpu_threads()
        self.n_gpu_layers: int = settings["n_gpu_layers"]
        self.quantization: str | None = settings["quantization"]
        self.seed: int = settings["seed"]
        #: llama.cpp's own parameters, set on its structs after ours.
        self.llama_args: dict[str, Any] = settings["llama_args"].plain()
        self._model: Any = None
        self._ctx: Any = None
        self._vocab: Any = None
        self._tokenizer: LlamaCppTokenizer | None = None
        self._n_vocab = 0
        self._eog: np.ndarray[Any, Any] = np.zeros(0, dtype=bool)

    # --- life cycle -------------------------------------------------------------------

    def start(self) -> EngineInfo:
        import llama_cpp

        quiet_llama_cpp()
        llama_cpp.llama_backend_init()
        path = gguf_model(self.config.model, self.quantization)
        model_params = llama_cpp.llama_model_default_params()
        model_params.n_gpu_layers = self.n_gpu_layers if self.n_gpu_layers >= 0 else 10**6
        _set_native(model_params, self.llama_args)
        self._model = llama_cpp.llama_model_load_from_file(str(path).encode(), model_params)
        if not self._model:
            raise RuntimeError(f"llama.cpp could not load {path}: {_last_log()}")
        ctx_params = llama_cpp.llama_context_default_params()
        ctx_params.n_ctx = self.max_model_len * self.max_num_seqs
        ctx_params.n_seq_max = self.max_num_seqs
        ctx_params.kv_unified = True
        ctx_params.n_batch = ctx_params.n_ubatch = self.n_batch
        ctx_params.n_threads = ctx_params.n_threads_batch = self.n_threads
        _set_native(ctx_params, self.llama_args)
        self._ctx = llama_cpp.llama_init_from_model(self._model, ctx_params)
        if not self._ctx:
            self.close()
            raise RuntimeError(f"llama.cpp could not create a context: {_last_log()}")
        self._vocab = llama_cpp.llama_model_get_vocab(self._model)
        self._tokenizer = LlamaCppTokenizer(self._vocab)
        self._n_vocab = llama_cpp.llama_vocab_n_tokens(self._vocab)
        self._eog = np.array(
            [llama_cpp.llama_vocab_is_eog(self._vocab, t) for t in range(self._n_vocab)]
        )
        description = ctypes.create_string_buffer(256)
        llama_cpp.llama_model_desc(self._model, description, 256)
        return EngineInfo(
            engine=self.name,
            model=str(path),
            device="gpu" if self.n_gpu_layers and llama_cpp.llama_supports_gpu_offload() else "cpu",
            dtype=description.value.decode(errors="replace"),
            details={
                "gguf": str(path),
                "gguf_bytes": path.stat().st_size,
                "model_bytes": llama_cpp.llama_model_size(self._model),
                "parameters": llama_cpp.llama_model_n_params(self._model),
                "llama_cpp_python": llama_cpp.__version__,
                "system_info": llama_cpp.llama_print_system_info().decode(errors="replace"),
                "gpu_offload": bool(llama_cpp.llama_supports_gpu_offload()),
                "n_ctx": llama_cpp.llama_n_ctx(self._ctx),
                "n_seq_max": llama_cpp.llama_n_seq_max(self._ctx),
                "n_batch": self.n_batch,
                "n_ubatch": llama_cpp.llama_n_ubatch(self._ctx),
                "n_threads": ctx_params.n_threads,
                "n_gpu_layers": self.n_gpu_layers,
                "llama_args": dict(self.llama_args),
            },
        )

    @property
    def tokenizer(self) -> LlamaCppTokenizer:
        if self._tokenizer is None:
            raise RuntimeError("llamacpp engine: start() it first")
        return self._tokenizer

    def close(self) -> None:
        import llama_cpp

        ctx, self._ctx = self._ctx, None
        model, self._model = self._model, None
        if ctx:
            llama_cpp.llama_free(ctx)
        if model:
            llama_cpp.llama_model_free(model)

    # --- generation ---------------------------------------------------------------------

    def stream(self, requests: Sequence[GenerationRequest]) -> Iterator[StreamChunk]:
        import llama_cpp

        if self._ctx is None:
            raise RuntimeError("llamacpp engine: start() it first")
        waiting = collections.deque(enumerate(requests))
        running: list[_Sequence] = []
        free_slots = list(range(self.max_num_seqs))
        memory = llama_cpp.llama_get_memory(self._ctx)
        llama_cpp.llama_memory_clear(memory, True)
        batch = llama_cpp.llama_batch_init(self.n_batch, 0, 1)
        try:
            while waiting or running:
                while waiting and free_slots:
                    index, request = waiting.popleft()
                    sequence, failure = self._admit(index, request, free_slots[0])
                    if failure is not None:
                        yield failure
                        continue
                    assert sequence is not None
                    free_slots.pop(0)
                    running.append(sequence)
                rows = self._fill(batch, running)
                status = llama_cpp.llama_decode(self._ctx, batch)
                if status != 0:
                    reason = f"llama_decode returned {status}: {_last_log()}"
                    for sequence in running:
                        yield _failed(sequence.index, reason, len(sequence.prompt))
                        llama_cpp.llama_memory_seq_rm(memory, sequence.slot, -1, -1)
                        free_slots.append(sequence.slot)
                    running.clear()
                    continue
                for sequence, row in rows:
                    chunk = self._advance(sequence, row)
                    yield chunk
                    if chunk.finish_reason is not None:
                        running.remove(sequence)
                        llama_cpp.llama_memory_seq_rm(memory, sequence.slot, -1, -1)
                        free_slots.append(sequence.slot)
        finally:
            llama_cpp.llama_batch_free(batch)

    def _admit(
        self, index: int, request: GenerationRequest, slot: int
    ) -> tuple[_Sequence | None, StreamChunk | None]:
        prompt = self._prompt_ids(request)
        limit = request.sampling.max_tokens + len(prompt)
        if not prompt:
            return None, _failed(index, "empty prompt", 0)
        if limit > self.max_model_len:
            reason = (
                f"prompt ({len(prompt)} tokens) + max_tokens ({request.sampling.max_tokens}) "
                f"exceeds max_model_len {self.max_model_len}"
            )
            return None, _failed(index, reason, len(prompt))
        seed = request.sampling.seed if request.sampling.seed is not None else self.seed
        rng = np.random.default_rng([seed, index])
        return _Sequence(index, request, slot, prompt, rng), None

    def _prompt_ids(self, request: GenerationRequest) -> list[int]:
        if request.prompt_token_ids is not None:
            return list(request.prompt_token_ids)
        if request.messages is not None:
            return self.tokenizer.encode(self._chat_prompt(request.messages))
        return self.tokenizer.encode(request.prompt or "")

    def _chat_prompt(self, messages: Sequence[Any]) -> str:
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        template = _meta(self._model, "tokenizer.chat_template")
        if template is None:
            raise RuntimeError("the GGUF has no chat template (tokenizer.chat_template)")
        formatter = Jinja2ChatFormatter(template, eos_token="</s>", bos_token="<s>")
        chat: Any = [dict(m) for m in messages]  # llama_cpp types them as its TypedDicts
        return str(formatter(messages=chat).prompt)

    def _fill(self, batch: Any, running: list[_Sequence]) -> list[tuple[_Sequence, int]]:
        """Put one token per generating sequence, then prompt tokens, into `batch`.

        Returns the sequences whose logits this step produces, with their row."""
        rows: list[tuple[_Sequence, int]] = []
        n = 0

        def put(token: int, position: int, slot: int, logits: bool) -> None:
            nonlocal n
            batch.token[n] = token
            batch.pos[n] = position
            batch.n_seq_id[n] = 1
            batch.seq_id[n][0] = slot
            batch.logits[n] = logits
            n += 1

        for sequence in running:  # decoding first: they never wait behind a long prompt
            if not sequence.prefilling:
                position = len(sequence.prompt) + len(sequence.output) - 1
                put(sequence.output[-1], position, sequence.slot, True)
                rows.append((sequence, n - 1))
        for sequence in running:
            while sequence.prefilling and n < self.n_batch:
                last = sequence.fed == len(sequence.prompt) - 1
                put(sequence.prompt[sequence.fed], sequence.fed, sequence.slot, last)
                sequence.fed += 1
                if last:
                    rows.append((sequence, n - 1))
        batch.n_tokens = n
        return rows

    def _advance(self, sequence: _Sequence, row: int) -> StreamChunk:
        import llama_cpp

        sampling = sequence.request.sampling
        logits = np.ctypeslib.as_array(
            llama_cpp.llama_get_logits_ith(self._ctx, row), shape=(self._n_vocab,)
        ).copy()
        hold_eos = sampling.ignore_eos or len(sequence.output) < sampling.min_tokens
        if hold_eos:
            logits[self._eog] = -np.inf
        token = _sample(logits, sampling, sequence.rng)
        sequence.output.append(token)
        finish: FinishReason | None = None
        if self._eog[token] and not hold_eos:
            finish = "stop"
        elif sampling.stop:  # only then is the text needed before the end
            sequence.text += self.tokenizer.piece(token)
            so_far = sequence.text.decode("utf-8", "ignore")
            cuts = [c for c in (so_far.find(stop) for stop in sampling.stop) if c >= 0]
            if cuts:
                sequence.text, finish = bytearray(so_far[: min(cuts)].encode()), "stop"
        if finish is None and len(sequence.output) >= sampling.max_tokens:
            finish = "length"
        text: str | None = None
        if finish is not None:
            text = (
                sequence.text.decode("utf-8", "replace")
                if sampling.stop
                else self.tokenizer.decode(sequence.output[: -1 if finish == "stop" else None])
            )
        first = not sequence.announced
        sequence.announced = True
        return StreamChunk(
            index=sequence.index,
            token_ids=(token,),
            finish_reason=finish,
            prompt_tokens=len(sequence.prompt) if first else None,
            text=text,
        )


def _sample(
    logits: np.ndarray[Any, Any], sampling: SamplingParams, rng: np.random.Generator
) -> int:
    if sampling.temperature == 0:
        return int(np.argmax(logits))
    scaled = logits / sampling.temperature
    if sampling.top_k:
        cutoff = np.partition(scaled, -sampling.top_k)[-sampling.top_k]
        scaled[scaled < cutoff] = -np.inf
    probs = np.exp(scaled - scaled.max())
    probs /= probs.sum()
    if sampling.top_p < 1:
        order = np.argsort(-probs)
        keep = np.cumsum(probs[order]) - probs[order] < sampling.top_p
        mask = np.zeros_like(probs, dtype=bool)
        mask[order[keep]] = True
        probs = np.where(mask, probs, 0.0)
        probs /= probs.sum()
    return int(rng.choice(len(probs), p=probs))


def _failed(index: int, reason: str, prompt_tokens: int) -> StreamChunk:
    return StreamChunk(
        index=index, token_ids=(), finish_reason="error", prompt_tokens=prompt_tokens, error=reason
    )


def _meta(model: Any, key: str) -> str | None:
    import llama_cpp

    buffer = ctypes.create_string_buffer(1 << 16)
    n = llama_cpp.llama_model_meta_val_str(model, key.encode(), buffer, len(buffer))
    return buffer.value.decode("utf-8", "replace") if n >= 0 else None


def _set_native(params: Any, args: dict[str, Any]) -> None:
    """Set the `llama_args` that are fields of `params` (a context or model params struct);
    their names were checked against both structs' fields at collection."""
    fields = {name for name, _ in params._fields_}
    for name, value in args.items():
        if name in fields:
            setattr(params, name, value)


def _last_log() -> str:
    lines = [line.strip() for line in LOG if line.strip()]
    return " | ".join(lines[-3:]) or "(llama.cpp logged nothing)"
