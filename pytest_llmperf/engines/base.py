"""The engine contract: what every inference engine gives the harness.

The engine yields; the harness times. An engine turns a batch of requests into a
stream of `StreamChunk`s as tokens become available on the host (after any device
sync), and the harness stamps each chunk with `time.perf_counter()` on receipt.
Engines never compute latencies themselves, with one exception: an engine that can
only report timings after the fact (vLLM's offline `LLM`, which keeps its own
per-request statistics) returns them in `StreamChunk.engine_timings`, on the same
`time.perf_counter()`-comparable clock, and the harness prefers them.

Semantics every engine keeps, so that numbers compare across engines:
- `ignore_eos` and `min_tokens` keep EOS from ending a request (the HF engine masks
  EOS; engines that let it through as a token must still not stop on it).
- A request that hits a stop string ends with "stop"; `text` is the output up to,
  not including, the stop string (vLLM's behaviour). `text` comes on the last chunk.
- `SamplingParams.seed=None` means the engine's seed setting (default 0), so runs repeat.
- GPUs are chosen by the harness before the engine starts (`CUDA_VISIBLE_DEVICES` or
  `EngineConfig.gpus`); engines use the devices they are given.

Life cycle: `Engine(config)` must be cheap (no model loaded); `start()` loads the
model and returns facts about it; `stream()` may be called many times; `close()`
frees every resource (GPU memory included) and may be called more than once.

What an engine takes and is (its settings, its traits) is its spec (`engines.spec`). What
it can do beyond `Engine` is a small Protocol it implements: `Scorer` (log-likelihoods),
`Terminable` (processes another thread can end), `KeepsLog`, `BuildsGraphs`,
`ReportsClientCost`, `SendsTurns`, `ExportsMetrics` (a server's Prometheus endpoint). The
harness asks `isinstance(engine, Scorer)`, never `getattr`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Protocol, runtime_checkable

from pytest_llmperf.engines.spec import freeze, plain

FinishReason = Literal["stop", "length", "error"]


@dataclass(frozen=True)
class SamplingParams:
    """How to decode. `temperature == 0` means greedy.

    For speed tests set `min_tokens == max_tokens` (or `ignore_eos`) so that every
    request produces exactly `max_tokens` tokens whatever the model's weights.
    """

    max_tokens: int = 64
    min_tokens: int = 0
    ignore_eos: bool = False
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    stop: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        problems = []
        if self.max_tokens < 1:
            problems.append(f"max_tokens must be at least 1, got {self.max_tokens}")
        if not 0 <= self.min_tokens <= self.max_tokens:
            problems.append(f"min_tokens must be in [0, max_tokens], got {self.min_tokens}")
        if self.temperature < 0:
            problems.append(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            problems.append(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            problems.append(f"top_k must be >= 0, got {self.top_k}")
        if problems:
            raise ValueError("SamplingParams: " + "; ".join(problems))

    @classmethod
    def fixed_length(cls, tokens: int, **kwargs: Any) -> SamplingParams:
        """Exactly `tokens` output tokens per request (greedy unless told otherwise)."""
        return cls(max_tokens=tokens, min_tokens=tokens, ignore_eos=True, **kwargs)


@dataclass(frozen=True)
class GenerationRequest:
    """One request. Exactly one of `prompt`, `prompt_token_ids` or `messages` is set."""

    custom_id: str
    sampling: SamplingParams
    prompt: str | None = None
    prompt_token_ids: tuple[int, ...] | None = None
    messages: tuple[Mapping[str, str], ...] | None = None
    reference: str | None = None
    #: Open-loop load: seconds after the round starts at which a client engine sends
    #: this request (its arrival). Engines that run a batch at once do not take it.
    send_offset_s: float = 0.0
    #: A conversation's later turn: the `custom_id` of the turn before it in its session.
    #: It is sent once that turn has been answered and `think_time_s` has passed, with
    #: the session's real answers in place of its `messages`' assistant contents (the
    #: contents the workload wrote stand in for answers not given: `engines.turns`).
    follows: str | None = None
    think_time_s: float = 0.0

    def __post_init__(self) -> None:
        given = [x is not None for x in (self.prompt, self.prompt_token_ids, self.messages)]
        if sum(given) != 1:
            raise ValueError(
                f"request {self.custom_id!r}: "
                "give exactly one of prompt, prompt_token_ids, messages"
            )


@dataclass(frozen=True)
class EngineTimings:
    """Per-request timestamps an engine measured itself (seconds, perf_counter clock)."""

    arrival: float
    scheduled: float | None
    first_token: float | None
    last_token: float | None


@dataclass(frozen=True)
class StreamChunk:
    """New tokens for one request, in the order the engine produced them.

    `index` is the request's position in the batch given to `stream()`.
    `finish_reason` is set on the request's last chunk (which may carry no tokens).
    `prompt_tokens` is set at least once per request: the engine's own count.

    Engines that receive tokens over a network (HTTP servers) know neither the token
    ids nor always the count per event, and they receive on an event loop, not on the
    harness's thread. They set `token_count` (tokens in this chunk, instead of
    `len(token_ids)`), `received_at` (when the event reached the client, on the
    `time.perf_counter()` clock: the harness uses it instead of its own receipt time),
    `sent_at` on a request's first chunk (when the request left the client: its
    arrival, so that waiting for a concurrency slot does not count as latency), and on
    the final chunk `output_tokens` (the server's own count, e.g. its usage report) with
    `token_count_source` saying where the count came from. Such an engine may also hand
    over a whole request at once, in its final chunk: `token_times` are then the receipt
    times of its token events (one per event), so nothing needs to cross threads per
    token.
    """

    index: int
    token_ids: tuple[int, ...]
    finish_reason: FinishReason | None = None
    prompt_tokens: int | None = None
    error: str | None = None
    text: str | None = None
    engine_timings: EngineTimings | None = None
    token_count: int | None = None
    received_at: float | None = None
    sent_at: float | None = None
    output_tokens: int | None = None
    token_count_source: str | None = None
    token_times: tuple[float, ...] = ()
    #: The server's own account of the request, when it gives one (Ollama's native API:
    #: `prompt_eval_ms`, `eval_ms`, `load_ms`, `total_ms`, `prompt_eval_count`,
    #: `eval_count`), recorded beside ours.
    server_timings: Mapping[str, float] | None = None


@dataclass(frozen=True)
class ScoreRequest:
    """The log-likelihood of `continuation` given `context`.

    Both are text; an engine tokenizes each on its own and scores the continuation's
    tokens after the context's, so the tokens scored are the continuation's own.
    """

    context: str
    continuation: str


@dataclass(frozen=True)
class ScoreResult:
    #: Sum over the continuation's tokens of log p(token | everything before it).
    logprob: float
    #: The continuation's length in the engine's tokens.
    tokens: int
    #: Whether every continuation token was the most likely one at its position.
    greedy: bool


class ScoringUnsupported(RuntimeError):
    """The engine (or the server behind it) cannot score log-likelihoods; says why.

    Engines that score say so in their spec (`Traits.scores`) and give `Scorer.score`, one
    result per request in order. A server found at run time not to return prompt
    log-probabilities raises this; the harness skips the test with the message.
    """


@dataclass(frozen=True)
class EngineInfo:
    """Facts about a started engine, recorded with every result."""

    engine: str
    model: str
    device: str
    dtype: str
    details: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class EngineConfig:
    """Everything that decides which engine instance serves a test.

    Two tests with equal `EngineConfig`s share one loaded engine; a different one
    closes the loaded engine before the next starts. `settings` holds engine-level
    settings only (tensor parallel size, max model length, dtype, ...), never
    per-request sampling.
    """

    engine: str
    model: str
    settings: tuple[tuple[str, Any], ...] = ()
    #: CUDA device indices (as this process numbers them) the engine runs on; empty: CPU.
    gpus: tuple[int, ...] = ()
    #: Settings the grid gave that this engine does not take (a grid meant for several
    #: engines): recorded with the test, never applied, and no part of the engine's identity.
    not_applied: tuple[str, ...] = field(default=(), compare=False)

    @classmethod
    def make(
        cls,
        engine: str,
        model: str,
        settings: Mapping[str, Any] | None = None,
        gpus: Sequence[int] = (),
        not_applied: Sequence[str] = (),
    ) -> EngineConfig:
        frozen = sorted((k, freeze(v)) for k, v in (settings or {}).items())
        return cls(engine, model, tuple(frozen), tuple(gpus), tuple(not_applied))

    def setting(self, name: str, default: Any = None) -> Any:
        return dict(self.settings).get(name, default)

    def describe(self) -> dict[str, Any]:
        return {
            "engine": self.engine,
            "model": self.model,
            "gpus": list(self.gpus),
            "settings": {k: plain(v) for k, v in self.settings},
            "settings_not_applied": list(self.not_applied),
        }


@runtime_checkable
class Tokenizer(Protocol):
    """The engine's own tokenizer: the one whose counts we report."""

    def encode(self, text: str) -> list[int]: ...

    def decode(self, token_ids: Sequence[int]) -> str: ...


@runtime_checkable
class Engine(Protocol):
    """An inference engine the harness can drive. See the module docstring."""

    name: ClassVar[str]

    def __init__(self, config: EngineConfig) -> None: ...

    def start(self) -> EngineInfo:
        """Load the model. Called once per engine instance, before `stream`."""
        ...

    @property
    def tokenizer(self) -> Tokenizer:
        """Available after `start()`."""
        ...

    def stream(self, requests: Sequence[GenerationRequest]) -> Iterator[StreamChunk]:
        """Run a batch of requests, yielding chunks as tokens reach the host.

        A request that fails yields a chunk with `error` and `finish_reason="error"`;
        the others go on. Every request ends with exactly one chunk whose
        `finish_reason` is set.
        """
        ...

    def close(self) -> None:
        """Free everything `start()` took. Safe to call twice."""
        ...


# --- optional capabilities -------------------------------------------------------------------
# An engine implements these where it can; its spec's traits say so before it exists.


@runtime_checkable
class Scorer(Protocol):
    """Scores log-likelihoods (`Traits.scores`): multiple-choice tasks run on it."""

    def score(self, requests: Sequence[ScoreRequest]) -> list[ScoreResult]:
        """One `ScoreResult` per request, in order; `ScoringUnsupported` if it cannot."""
        ...


@runtime_checkable
class Terminable(Protocol):
    """Has processes of its own (an isolated child, a managed server) that another thread
    can end (`Traits.can_terminate`); once they are gone, `death_cause` says why."""

    #: Why the engine's processes are gone; None while it is healthy.
    death_cause: str | None

    def terminate(self, reason: str) -> None:
        """End the engine's processes now; what waits on them fails with `reason`."""
        ...


@runtime_checkable
class KeepsLog(Protocol):
    """Keeps a log of its own process (an isolated child's), read when it dies."""

    def log_errors(self) -> str:
        """The log's last lines that name an error, and where the log is."""
        ...


@runtime_checkable
class BuildsGraphs(Protocol):
    """Builds decode graphs as it meets new shapes (the hf engine on CUDA)."""

    @property
    def graph_build_s(self) -> float:
        """Seconds spent building graphs so far (compile and capture)."""
        ...


@runtime_checkable
class ReportsClientCost(Protocol):
    """A client engine that measures its own cost per round (see `load.client_check`)."""

    @property
    def last_round_stats(self) -> Mapping[str, float]:
        """The last round's `client_cpu_s`, `loop_lag_ms_max`, `loop_lag_ms_p99`, and for a
        round sent on a schedule, `sends`, `scheduled_span_s` and `send_span_s`."""
        ...


@runtime_checkable
class SendsTurns(Protocol):
    """A client engine that sends each conversation turn itself, once the turn it `follows`
    has been answered, so sessions go on independently (the harness runs the turns of other
    engines in waves: `measure.harness`)."""

    #: Always True: the engine keeps `GenerationRequest.follows` and `think_time_s`.
    sends_turns: bool


@runtime_checkable
class ExportsMetrics(Protocol):
    """Drives a server whose Prometheus endpoint can be read (`measure.server`)."""

    @property
    def metrics_url(self) -> str | None:
        """The server's metrics URL (`http://host:port/metrics`); None when unknown."""
        ...


def death_cause(engine: object) -> str | None:
    """Why `engine`'s processes are gone, if it has processes of its own and they are."""
    return engine.death_cause if isinstance(engine, Terminable) else None


def log_errors(engine: object) -> str:
    """The error lines of `engine`'s own log, if it keeps one."""
    return engine.log_errors() if isinstance(engine, KeepsLog) else ""
