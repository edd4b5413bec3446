"""The hf engine's decoding: transformers' own `model.generate`, streamed.

One batch is one `generate` call, as a person runs batched generation: the prompts padded
(on the left unless `padding_side` says otherwise) with an attention mask, the workload's
sampling as generate's own options (`do_sample`, `temperature`, `top_k`, `top_p`,
`max_new_tokens`, `min_new_tokens`), the engine's settings as its options
(`cache_implementation`, `compile_config` / `disable_compile`) and `generate_args` as given.
The model's own `generation_config.json` applies beneath them, as it does in generate.
Where the contract (`engines.base`) needs more than one batch-wide option can say:
- EOS: generate stops a row at the EOS ids the engine stops on (the tokenizer's and the
  generation config's); `min_tokens` and `ignore_eos` hold EOS back through `min_new_tokens`
  (it masks EOS, as the contract asks). Rows of one batch that hold it for different lengths
  get `HoldEos`, which does what `min_new_tokens` does, per row.
- `max_tokens` below the batch's longest and stop strings end a row on the host
  (`rows.advance`); generate runs that row on with its batch-mates, as it would in a script.
- Sampling: a batch shares one configuration (`batch_key`: a request with another starts
  the next batch) and one random generator, seeded before each `generate` with the batch's
  seed, as `set_seed` users do (transformers draws from torch's global generator): runs
  repeat, but a sampled row's tokens depend on its batch-mates (hf-fast draws per row).

The clock. Streaming is transformers' streamer mechanism: `generate` calls `streamer.put`
once with the prompt, then after every step with that step's tokens for the whole batch,
already on the host: transformers copies them there for its stopping criteria (`.cpu()`,
the step's device sync), so a token is seen when transformers itself has it. `put` runs on
generate's thread (one worker thread per engine, kept for its life: torch.compile's CUDA
graphs belong to the thread that recorded them) and only hands the ids to a queue; the
engine's stream, on the harness's thread, takes them off and the harness stamps each chunk
on receipt, where a `TextIteratorStreamer` user sees tokens. When every row is finished on
the host before generate knows (stop strings, shorter `max_tokens`), or the caller leaves
the stream, the next `put` raises to end `generate`: no stopping criterion of ours runs in
its loop.
"""

from __future__ import annotations

import contextlib
import queue
import warnings
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

import torch
from transformers import LogitsProcessor, LogitsProcessorList
from transformers.generation.streamers import BaseStreamer

from pytest_llmperf.engines.base import StreamChunk
from pytest_llmperf.engines.hf.rows import Row, advance

#: The worker's last item on the queue: generate has returned (or raised).
_END = object()


@dataclass(frozen=True)
class GenerateOptions:
    """What the engine's settings add to every `generate` call."""

    #: cache_implementation, compile_config or disable_compile, generate_args.
    kwargs: Mapping[str, Any]
    padding_side: str
    #: Whether transformers will compile the decode forward (warnings of the compiler are
    #: then silenced, as `-W error` would turn them into a failed batch).
    compiles: bool


class _StopGenerate(Exception):
    """Raised in `put` to end `generate`: the host needs no more of its tokens."""


class QueueStreamer(BaseStreamer):
    """Hands each step's tokens (host lists, one per row) to a queue; skips the prompt."""

    def __init__(self, out: queue.SimpleQueue[Any]) -> None:
        self.out = out
        self.prompt_seen = False
        #: Set by the stream's thread: the next `put` ends `generate`.
        self.stop = False

    def put(self, value: torch.Tensor) -> None:
        if not self.prompt_seen:
            self.prompt_seen = True  # generate's first put is the prompt itself
            return
        if self.stop:
            raise _StopGenerate
        self.out.put(value.tolist())

    def end(self) -> None:
        """Nothing to flush: the worker queues `_END` once `generate` has returned."""


class HoldEos(LogitsProcessor):
    """`min_new_tokens` per row: EOS is masked in row i until it has made `holds[i]` tokens
    (transformers' `MinNewTokensLengthLogitsProcessor` takes one length for the batch)."""

    def __init__(
        self, prompt_width: int, holds: Sequence[int], eos_ids: Sequence[int], device: Any
    ) -> None:
        self.prompt_width = prompt_width
        self.holds = torch.tensor(list(holds), device=device)
        self.eos = torch.tensor(list(eos_ids), device=device)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        made = input_ids.shape[1] - self.prompt_width
        held = (self.holds > made)[:, None]
        scores[:, self.eos] = scores[:, self.eos].masked_fill(held, float("-inf"))
        return scores


def batch_key(row: Row) -> Hashable:
    """Rows that one `generate` call can run: greedy ones, or sampled ones alike."""
    sampling = row.sampling
    if sampling.temperature == 0:
        return "greedy"
    return (sampling.temperature, sampling.top_p, sampling.top_k, row.seed)


def generate_kwargs(
    model: Any,
    rows: Sequence[Row],
    options: GenerateOptions,
    *,
    pad_id: int,
    eos_ids: Sequence[int],
) -> dict[str, Any]:
    """The arguments of one batch's `generate` call (see the module docstring)."""
    width = max(len(row.prompt_ids) for row in rows)
    ids, mask = [], []
    for row in rows:
        pad, real = [pad_id] * (width - len(row.prompt_ids)), row.prompt_ids
        left = options.padding_side == "left"
        ids.append(pad + real if left else real + pad)
        ones, zeros = [1] * len(real), [0] * len(pad)
        mask.append(zeros + ones if left else ones + zeros)
    device = model.device
    kwargs: dict[str, Any] = {
        "input_ids": torch.tensor(ids, dtype=torch.long, device=device),
        "attention_mask": torch.tensor(mask, dtype=torch.long, device=device),
        "max_new_tokens": max(row.sampling.max_tokens for row in rows),
        "eos_token_id": list(eos_ids) or None,
        "pad_token_id": pad_id,
    }
    sampling = rows[0].sampling  # the batch's (batch_key)
    if sampling.temperature > 0:
        kwargs.update(
            do_sample=True,
            temperature=sampling.temperature,
            top_k=sampling.top_k,
            top_p=sampling.top_p,
        )
    else:
        kwargs["do_sample"] = False
    holds = {row.eos_held_for for row in rows}
    if len(holds) > 1 and eos_ids:
        per_row = [row.eos_held_for for row in rows]
        kwargs["logits_processor"] = LogitsProcessorList([HoldEos(width, per_row, eos_ids, device)])
    elif holds and (hold := holds.pop()) > 0:
        kwargs["min_new_tokens"] = hold
    kwargs.update(options.kwargs)
    return kwargs


def generate_batch(
    model: Any,
    rows: Sequence[Row],
    options: GenerateOptions,
    worker: ThreadPoolExecutor,
    *,
    pad_id: int,
    eos_ids: Sequence[int],
    decode: Callable[[Sequence[int]], str],
) -> Iterator[StreamChunk]:
    """Run `rows` through one `generate` call on `worker`, yielding each row's chunks as
    its tokens reach this thread. An exception of `generate` is raised here."""
    kwargs = generate_kwargs(model, rows, options, pad_id=pad_id, eos_ids=eos_ids)
    out: queue.SimpleQueue[Any] = queue.SimpleQueue()
    streamer = QueueStreamer(out)
    seed = rows[0].seed if kwargs["do_sample"] else None
    threads = torch.get_num_threads()  # the caller's: a thread keeps the count it started with
    job = worker.submit(_generate, model, kwargs, streamer, seed, threads, options.compiles)
    try:
        while (item := out.get()) is not _END:
            if isinstance(item, BaseException):
                raise item
            for row, new in zip(rows, item, strict=True):
                # A step's tokens: one a row, or several where generate accepted more
                # than one in a step (assisted decoding through generate_args).
                for token in new if isinstance(new, list) else (new,):
                    if not row.finished:
                        yield advance(row, token, eos_ids, decode)
            if all(row.finished for row in rows):
                streamer.stop = True
        for row in rows:
            if not row.finished:
                # generate stopped before the row's end on the host: a criterion of its
                # own ended it (generate_args' max_time, say), as a stop.
                row.finished = True
                yield StreamChunk(
                    row.index,
                    (),
                    finish_reason="stop",
                    prompt_tokens=len(row.prompt_ids),
                    text=decode(row.output),
                )
    finally:
        # Also when the caller leaves early: generate ends at its next step, before the
        # worker may take the next batch.
        streamer.stop = True
        wait([job])


def _generate(
    model: Any,
    kwargs: dict[str, Any],
    streamer: QueueStreamer,
    seed: int | None,
    threads: int,
    quiet: bool,
) -> None:
    """The worker's job: one `generate` call; its tokens, error and end go to the queue."""
    try:
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
        if model.device.type == "cuda":
            torch.cuda.set_device(model.device)
        if seed is not None:
            torch.manual_seed(seed)
        with _compiler_quiet() if quiet else contextlib.nullcontext():
            model.generate(**kwargs, streamer=streamer)
    except _StopGenerate:
        pass
    except Exception as exc:
        streamer.out.put(exc)
    finally:
        streamer.out.put(_END)


@contextlib.contextmanager
def _compiler_quiet() -> Iterator[None]:
    """torch's compiler imports modules that announce their own deprecations, and Inductor
    gives advice (TF32 for float32 models) as UserWarnings: not the user's to act on, and
    under `-W error` they would fail the batch. (The filters are the process's: the stream's
    thread only waits on a queue meanwhile.)"""
    with warnings.catch_warnings():
        for category in (DeprecationWarning, FutureWarning, UserWarning):
            warnings.simplefilter("ignore", category)
        yield
