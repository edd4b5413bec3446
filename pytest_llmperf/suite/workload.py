"""Workloads: the requests a test sends, built with the engine's own tokenizer.

`SyntheticWorkload` makes prompts of an exact length in the model's tokens, with
output lengths fixed or drawn from a seeded distribution. `DatasetWorkload` reads a
JSONL file, one request per line:

    {"custom_id": "q1", "prompt": "Hello", "max_tokens": 32, "reference": "Hi"}
    {"custom_id": "q2", "messages": [{"role": "user", "content": "Hello"}]}

`custom_id` is required and unique; exactly one of `prompt` or `messages`;
`max_tokens` (positive integer) and `reference` (string) are optional. Every response
must map back to its `custom_id`: the harness records a request without a response as
a failure.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

from pytest_llmperf.engines.base import GenerationRequest, SamplingParams, Tokenizer
from pytest_llmperf.errors import LLMPerfUsageError, where
from pytest_llmperf.measure.metrics import RequestRecord
from pytest_llmperf.models.tokenizer import local_tokenizer
from pytest_llmperf.suite import arguments
from pytest_llmperf.suite.arguments import bad, dataset_path, one_of, whole

# Plain words: byte-level BPE tokenizers split them predictably, so a prompt built
# from them reaches an exact token count in a few adjustments.
_WORDS = (
    "the of and to in is was for on that with as by at from it be this are an which or "
    "model token speed latency engine batch memory cache layer value request answer time "
    "first second data test run result number small large fast slow long short"
).split()


class Workload(Protocol):
    """Something that turns into requests once the engine's tokenizer is known."""

    def build(self, tokenizer: Tokenizer) -> list[GenerationRequest]: ...

    def describe(self) -> dict[str, Any]: ...

    def with_overrides(self, settings: Mapping[str, Any]) -> Workload: ...


@runtime_checkable
class FreshEachRound(Protocol):
    """A workload that can send other requests every round (`SharedPrefixWorkload`'s
    `fresh_each_round`): when `fresh_each_round` is true, round i (from 0, warm-up rounds
    counted) sends `build_round(tokenizer, i)`."""

    fresh_each_round: bool

    def build_round(self, tokenizer: Tokenizer, round_index: int) -> list[GenerationRequest]: ...


@runtime_checkable
class WorkloadMetrics(Protocol):
    """A workload whose shape gives metrics of its own (`ConversationWorkload`: per-turn
    TTFT): `llmperf.measure` adds `workload_metrics(records)` to the test's metrics, over
    all measured rounds and round by round, as it does a `score=` callable's."""

    def workload_metrics(self, records: Sequence[RequestRecord]) -> dict[str, float | None]: ...


@runtime_checkable
class Scheduled(Protocol):
    """A workload whose requests carry their own send times (`TraceWorkload`): it needs a
    client engine, and takes no `Arrivals`."""

    def scheduled(self) -> bool: ...


@dataclass(frozen=True)
class LengthDistribution:
    """Output lengths drawn per request: uniform in [low, high] or normal(mean, std)."""

    kind: Literal["uniform", "normal"]
    a: float
    b: float

    def __post_init__(self) -> None:
        owner = "LengthDistribution"
        one_of(owner, "kind", self.kind, ("uniform", "normal"))
        if self.kind == "uniform":  # whole lengths from a to b
            low = whole(owner, "a", self.a, 1)
            whole(owner, "b", self.b, low)
        else:  # mean a (at least 1 token), standard deviation b
            arguments.number(owner, "a", self.a, minimum=1)
            arguments.number(owner, "b", self.b, minimum=0)

    def draw(self, rng: random.Random) -> int:
        if self.kind == "uniform":
            return rng.randint(int(self.a), int(self.b))
        return max(1, round(rng.gauss(self.a, self.b)))


def exact_length_prompt(tokenizer: Tokenizer, n_tokens: int, rng: random.Random) -> str:
    """Text that the tokenizer encodes to exactly `n_tokens` tokens.

    Words are added until the text is long enough, then the token list is cut and
    decoded; a cut can re-merge at the boundary, so try again with other words.
    """
    if n_tokens < 1:
        raise ValueError("input_tokens must be at least 1")
    for _attempt in range(20):
        words: list[str] = []
        ids: list[int] = []
        while len(ids) < n_tokens + 2:
            words.extend(rng.choice(_WORDS) for _ in range(max(4, n_tokens)))
            ids = tokenizer.encode(" ".join(words))
        text = tokenizer.decode(ids[:n_tokens])
        if len(tokenizer.encode(text)) == n_tokens:
            return text
    raise ValueError(f"could not build a prompt of exactly {n_tokens} tokens")


@dataclass(frozen=True)
class SyntheticWorkload:
    """`num_requests` prompts of `input_tokens` tokens each.

    `output_tokens` is a fixed length (every request produces exactly that many
    tokens: `min_tokens == max_tokens`, EOS ignored) or a `LengthDistribution`.
    """

    num_requests: int = 8
    input_tokens: int = 32
    output_tokens: int | LengthDistribution = 32
    seed: int = 0
    temperature: float = 0.0

    def __post_init__(self) -> None:
        owner = "SyntheticWorkload"
        whole(owner, "num_requests", self.num_requests, 1)
        whole(owner, "input_tokens", self.input_tokens, 1)
        if not isinstance(self.output_tokens, LengthDistribution):
            if isinstance(self.output_tokens, bool) or not isinstance(self.output_tokens, int):
                problem = "must be a whole number of at least 1, or a LengthDistribution"
                raise bad(owner, "output_tokens", self.output_tokens, problem)
            whole(owner, "output_tokens", self.output_tokens, 1)
        whole(owner, "seed", self.seed)
        arguments.number(owner, "temperature", self.temperature, minimum=0)

    def build(self, tokenizer: Tokenizer) -> list[GenerationRequest]:
        rng = random.Random(self.seed)
        requests = []
        for i in range(self.num_requests):
            if isinstance(self.output_tokens, LengthDistribution):
                n_out = self.output_tokens.draw(rng)
            else:
                n_out = self.output_tokens
            requests.append(
                GenerationRequest(
                    custom_id=f"synthetic-{i}",
                    prompt=exact_length_prompt(tokenizer, self.input_tokens, rng),
                    sampling=SamplingParams.fixed_length(
                        n_out, temperature=self.temperature, seed=self.seed + i
                    ),
                )
            )
        return requests

    def describe(self) -> dict[str, Any]:
        out = self.output_tokens
        return {
            "kind": "synthetic",
            "num_requests": self.num_requests,
            "input_tokens": self.input_tokens,
            "output_tokens": out
            if isinstance(out, int)
            else {"kind": out.kind, "a": out.a, "b": out.b},
            "seed": self.seed,
            "temperature": self.temperature,
        }

    def with_overrides(self, settings: Mapping[str, Any]) -> SyntheticWorkload:
        changes: dict[str, Any] = {}
        if "max_new_tokens" in settings:
            changes["output_tokens"] = int(settings["max_new_tokens"])
        if "input_tokens" in settings:
            changes["input_tokens"] = int(settings["input_tokens"])
        if "num_requests" in settings:
            changes["num_requests"] = int(settings["num_requests"])
        return replace(self, **changes)


class DatasetError(LLMPerfUsageError):  # type: ignore[misc]
    """A dataset file that cannot be read as the JSONL format above."""


@dataclass(frozen=True)
class DatasetItem:
    custom_id: str
    prompt: str | None
    messages: tuple[Mapping[str, str], ...] | None
    max_tokens: int | None
    reference: str | None
    line: int


def read_json_lines(path: Path, limit: int | None = None) -> list[tuple[int, dict[str, Any]]]:
    """The JSON objects of a JSONL file with their line numbers (blank lines skipped, at
    most `limit`); every problem is a `DatasetError` naming the file and line."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DatasetError(f"{path}: dataset file does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: cannot read dataset: {exc}") from None
    rows: list[tuple[int, dict[str, Any]]] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        here = where(path, number)
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise DatasetError(
                f"{here}: not valid JSON ({exc.msg} at column {exc.colno})"
            ) from None
        except RecursionError:  # json's decoder recurses once per nested [ or {
            raise DatasetError(f"{here}: JSON nested too deeply") from None
        if not isinstance(obj, dict):
            raise DatasetError(f"{here}: each line must be a JSON object, got {type(obj).__name__}")
        rows.append((number, obj))
        if limit is not None and len(rows) >= limit:
            break
    if not rows:
        raise DatasetError(f"{path}: dataset has no items")
    return rows


def load_dataset(path: Path, limit: int | None = None) -> list[DatasetItem]:
    """Read and check a JSONL dataset; every problem names the file and line."""
    seen: dict[str, int] = {}
    return [_parse_item(path, line, obj, seen) for line, obj in read_json_lines(path, limit)]


def _parse_item(path: Path, line: int, obj: dict[str, Any], seen: dict[str, int]) -> DatasetItem:
    here = where(path, line)
    unknown = set(obj) - {"custom_id", "prompt", "messages", "max_tokens", "reference"}
    if unknown:
        raise DatasetError(f"{here}: unknown field(s) {', '.join(sorted(unknown))}")
    custom_id = obj.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        raise DatasetError(f"{here}: 'custom_id' must be a non-empty string")
    if custom_id in seen:
        raise DatasetError(
            f"{here}: duplicate custom_id {custom_id!r} (first on line {seen[custom_id]})"
        )
    seen[custom_id] = line
    prompt, messages = obj.get("prompt"), obj.get("messages")
    if (prompt is None) == (messages is None):
        raise DatasetError(f"{here}: give exactly one of 'prompt' or 'messages'")
    if prompt is not None and not isinstance(prompt, str):
        raise DatasetError(f"{here}: 'prompt' must be a string")
    if messages is not None and not _valid_messages(messages):
        raise DatasetError(f"{here}: 'messages' must be a list of {{role, content}} strings")
    max_tokens = obj.get("max_tokens")
    if max_tokens is not None and (
        not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1
    ):
        raise DatasetError(f"{here}: 'max_tokens' must be a positive integer, got {max_tokens!r}")
    reference = obj.get("reference")
    if reference is not None and not isinstance(reference, str):
        raise DatasetError(f"{here}: 'reference' must be a string")
    return DatasetItem(
        custom_id,
        prompt,
        tuple(messages) if messages is not None else None,
        max_tokens,
        reference,
        line,
    )


def _valid_messages(messages: object) -> bool:
    return (
        isinstance(messages, list)
        and bool(messages)
        and all(
            isinstance(m, dict)
            and isinstance(m.get("role"), str)
            and isinstance(m.get("content"), str)
            for m in messages
        )
    )


@dataclass(frozen=True)
class DatasetWorkload:
    """Requests from a JSONL dataset (format in the module docstring).

    The file is found (a relative `path` as `suite.arguments.dataset_path` says; `path`
    then holds the file found) and read when the workload is made (a copy with a grid's
    overrides reads it again), so that a missing file or a bad line stops the test before
    any engine starts."""

    path: Path
    limit: int | None = None
    default_max_tokens: int = 64
    sampling: SamplingParams = field(default_factory=SamplingParams)
    _items: tuple[DatasetItem, ...] = field(init=False, repr=False, compare=False, default=())

    def __post_init__(self) -> None:
        owner = "DatasetWorkload"
        object.__setattr__(self, "path", dataset_path(owner, "path", self.path))
        if self.limit is not None:
            whole(owner, "limit", self.limit, 1)
        whole(owner, "default_max_tokens", self.default_max_tokens, 1)
        if not isinstance(self.sampling, SamplingParams):
            raise bad(owner, "sampling", self.sampling, "must be a SamplingParams")
        object.__setattr__(self, "_items", tuple(load_dataset(self.path, self.limit)))

    def items(self) -> list[DatasetItem]:
        return list(self._items)

    def build(self, tokenizer: Tokenizer) -> list[GenerationRequest]:
        del tokenizer  # prompts are sent as written; the engine counts their tokens
        return [
            GenerationRequest(
                custom_id=item.custom_id,
                prompt=item.prompt,
                messages=item.messages,
                reference=item.reference,
                sampling=replace(
                    self.sampling, max_tokens=item.max_tokens or self.default_max_tokens
                ),
            )
            for item in self.items()
        ]

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "dataset",
            "path": str(self.path),
            "limit": self.limit,
            "default_max_tokens": self.default_max_tokens,
        }

    def with_overrides(self, settings: Mapping[str, Any]) -> DatasetWorkload:
        if "max_new_tokens" in settings:
            return replace(self, default_max_tokens=int(settings["max_new_tokens"]))
        return self


def check_responses(requests: Sequence[GenerationRequest], answered: Sequence[str]) -> list[str]:
    """Problems with the mapping from responses back to requests (empty when fine)."""
    expected = {r.custom_id for r in requests}
    problems = [f"no response for custom_id {cid!r}" for cid in sorted(expected - set(answered))]
    problems += [
        f"response for unknown custom_id {cid!r}" for cid in sorted(set(answered) - expected)
    ]
    return problems


def offline_tokenizer(engine_config: Any) -> Tokenizer | None:
    """The tokenizer an engine would build prompts with, loaded without the engine
    (for dry runs): its `tokenizer` setting or its model, when that is local; else None."""
    name = engine_config.setting("tokenizer") or engine_config.model
    try:
        return local_tokenizer(str(name))
    except LLMPerfUsageError:
        return None


def prompt_length(tokenizer: Tokenizer, request: GenerationRequest) -> int:
    """A request's prompt in tokens (chat messages: their contents, without the template)."""
    if request.prompt_token_ids is not None:
        return len(request.prompt_token_ids)
    if request.messages is not None:
        return sum(len(tokenizer.encode(m.get("content", ""))) for m in request.messages)
    return len(tokenizer.encode(request.prompt or ""))
