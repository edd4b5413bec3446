"""The `vllm` engine: vLLM's offline `LLM`, always in a child process of its own.

The harness never imports this module in its own process: its spec (`vllm.spec`) marks
the engine `isolated`, so the session runs it through `engines.isolated` (GPUs pinned
before CUDA starts, memory handed back between configurations). Settings, with their
defaults, are the spec's; `vllm_args` passes vLLM's own engine arguments to `vllm.LLM`
as they are, and the info's details say what vLLM made of them (`max_num_batched_tokens`,
`block_size`, ...).

Timings come from vLLM's own per-request statistics (`disable_log_stats=False` makes
`RequestOutput.metrics` a `RequestStateStats`): its engine-core timestamps
(`queued_ts`, `scheduled_ts`, `first_token_ts`, `last_token_ts`) are
`time.monotonic()`, the same clock as `time.perf_counter()` on Linux and across
processes, so they are passed on as `EngineTimings` with the arrival taken just before
`LLM.generate` is called. `LLM.generate` returns when the whole batch is done, so there
are no per-token gaps: `itl_ms` stays empty and `tpot_ms` comes from first and last
token. Token counts are the lengths of vLLM's own token id lists.

Prefix caching is off unless a configuration turns it on: every measured round sends
the same prompts, and with the cache on, rounds after the first would skip their
prefill and report a speed no real workload of distinct prompts would see.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

from pytest_llmperf.engines.base import (
    EngineConfig,
    EngineInfo,
    EngineTimings,
    GenerationRequest,
    ScoreRequest,
    ScoreResult,
    StreamChunk,
    Tokenizer,
)
from pytest_llmperf.engines.scoring import result_from_tokens, token_pairs
from pytest_llmperf.engines.spec import EngineSpec
from pytest_llmperf.engines.vllm.cluster import cluster_of_config
from pytest_llmperf.engines.vllm.install import broken_cpu_install, installed_versions
from pytest_llmperf.engines.vllm.spec import ENGINE_ARGS, VLLM
from pytest_llmperf.models.names import resolve_model
from pytest_llmperf.models.tokenizer import HFTokenizer

log = logging.getLogger("pytest_llmperf")


class VLLMEngine:
    name: ClassVar[str] = "vllm"
    spec: ClassVar[EngineSpec] = VLLM

    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        self.settings = self.spec.resolve(dict(config.settings))
        self._llm: Any = None
        self._tokenizer: HFTokenizer | None = None

    def start(self) -> EngineInfo:
        import os

        broken = broken_cpu_install(installed_versions())
        if broken:  # before vLLM fails deep in its imports with a message that says less
            raise RuntimeError(broken)
        import torch

        on_gpu = torch.cuda.is_available()
        if not on_gpu and self.settings["gpu_memory_utilization"] is None:
            # On the CPU build, vLLM otherwise reserves 92% of the NUMA node's memory for
            # its KV cache and refuses to start beside anything else; 1 GiB fits the tiny
            # model. Set VLLM_CPU_KVCACHE_SPACE (GiB) yourself for a real model.
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
        import vllm

        kwargs = {k: self.settings[k] for k in ENGINE_ARGS if self.settings[k] is not None}
        if self.settings["dtype"] is None:
            kwargs["dtype"] = "auto" if on_gpu else "bfloat16"
        if self.settings["enforce_eager"] is None and not on_gpu:
            # The CPU build compiles nothing useful for a benchmark's short runs.
            kwargs["enforce_eager"] = True
        # vLLM's own arguments, as given (their names were checked at collection).
        kwargs.update(self.settings["vllm_args"].plain())
        path = str(resolve_model(self.config.model))
        self._llm = vllm.LLM(model=path, tokenizer=path, disable_log_stats=False, **kwargs)
        self._tokenizer = HFTokenizer(self._llm.get_tokenizer())
        vllm_config = self._llm.llm_engine.vllm_config
        model_config = vllm_config.model_config
        return EngineInfo(
            engine=self.name,
            model=path,
            device="cuda" if torch.cuda.is_available() else "cpu",
            dtype=str(model_config.dtype).removeprefix("torch."),
            details={
                "vllm_version": vllm.__version__,
                "torch_version": torch.__version__,
                "llm_kwargs": dict(kwargs),
                "max_model_len": model_config.max_model_len,
                # What vLLM made of its arguments, defaults included (`vllm_args` land here).
                "max_num_seqs": vllm_config.scheduler_config.max_num_seqs,
                "max_num_batched_tokens": vllm_config.scheduler_config.max_num_batched_tokens,
                "block_size": vllm_config.cache_config.block_size,
                # Backend, sizes, nodes: what vLLM chose (`engines.vllm.cluster`).
                "cluster": cluster_of_config(vllm_config.parallel_config),
                "cuda_version": torch.version.cuda,
            },
        )

    @property
    def tokenizer(self) -> Tokenizer:
        if self._tokenizer is None:
            raise RuntimeError("vllm engine: start() it first")
        return self._tokenizer

    def _prompt(self, request: GenerationRequest) -> dict[str, Any]:
        if request.prompt_token_ids is not None:
            return {"prompt_token_ids": list(request.prompt_token_ids)}
        if request.messages is not None:
            text = self._llm.get_tokenizer().apply_chat_template(
                [dict(m) for m in request.messages], add_generation_prompt=True, tokenize=False
            )
            return {"prompt": text}
        return {"prompt": request.prompt}

    def _sampling(self, request: GenerationRequest) -> Any:
        import vllm

        s = request.sampling
        return vllm.SamplingParams(
            max_tokens=s.max_tokens,
            min_tokens=s.min_tokens,
            ignore_eos=s.ignore_eos,
            temperature=s.temperature,
            top_p=s.top_p,
            top_k=s.top_k,
            seed=s.seed if s.temperature > 0 else None,
            stop=list(s.stop) or None,
        )

    def stream(self, requests: Sequence[GenerationRequest]) -> Iterator[StreamChunk]:
        if self._llm is None:
            raise RuntimeError("vllm engine: start() it first")
        prompts: list[Any] = []
        params: list[Any] = []
        keep: list[int] = []
        for index, request in enumerate(requests):
            try:
                prompts.append(self._prompt(request))
                params.append(self._sampling(request))
                keep.append(index)
            except Exception as exc:  # a bad request fails alone
                yield StreamChunk(index, (), "error", error=f"{type(exc).__name__}: {exc}")
        if not keep:
            return
        arrival = time.monotonic()
        outputs = self._llm.generate(prompts, params, use_tqdm=False)
        for index, output in zip(keep, outputs, strict=True):
            yield _chunk(index, output, arrival)

    def score(self, requests: Sequence[ScoreRequest]) -> list[ScoreResult]:
        """Log-likelihoods of continuations from vLLM's prompt log-probabilities.

        Each pair goes in as one token-id prompt (context + continuation) with
        `prompt_logprobs=0`: vLLM then returns, for every prompt position after the first,
        the log-probability and rank of the prompt's own token; a continuation token is
        greedy when its rank is 1. One `generate` call for all pairs, so vLLM batches
        them as it batches generation. The one generated token is discarded.
        """
        import vllm

        if self._llm is None or self._tokenizer is None:
            raise RuntimeError("vllm engine: start() it first")
        pairs = token_pairs(self._tokenizer, requests, self.name)
        params = vllm.SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0)
        prompts = [{"prompt_token_ids": [*context, *cont]} for context, cont in pairs]
        outputs = self._llm.generate(prompts, params, use_tqdm=False)
        results = []
        for (context, cont), output in zip(pairs, outputs, strict=True):
            # One entry per prompt position (None for the first, which has no context).
            positions = output.prompt_logprobs[len(context) : len(context) + len(cont)]
            picked = [entry[token] for entry, token in zip(positions, cont, strict=True)]
            results.append(
                result_from_tokens([p.logprob for p in picked], [p.rank == 1 for p in picked])
            )
        return results

    def close(self) -> None:
        llm, self._llm = self._llm, None
        if llm is None:
            return
        # The process ends right after; this only makes vLLM stop its engine core now.
        shutdown = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
        if shutdown is not None and hasattr(shutdown, "shutdown"):
            shutdown.shutdown()
        del llm
        gc.collect()


def _chunk(index: int, output: Any, arrival: float) -> StreamChunk:
    completion = output.outputs[0]
    finish = completion.finish_reason
    reason = "length" if finish == "length" else ("stop" if finish == "stop" else "error")
    stats = output.metrics
    timings = None
    if stats is not None and getattr(stats, "first_token_ts", None):
        timings = EngineTimings(
            arrival=arrival,
            scheduled=stats.scheduled_ts or None,
            first_token=stats.first_token_ts,
            last_token=stats.last_token_ts or stats.first_token_ts,
        )
    return StreamChunk(
        index=index,
        token_ids=tuple(completion.token_ids),
        finish_reason=reason,  # type: ignore[arg-type]
        prompt_tokens=len(output.prompt_token_ids or ()),
        error=None if reason != "error" else f"vLLM finished the request with {finish!r}",
        text=completion.text,
        engine_timings=timings,
    )
