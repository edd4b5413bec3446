"""Multi-turn conversations: sessions whose history grows, a turn sent after the answer before.

`ConversationWorkload` makes `sessions` conversations of `turns` turns. Turn k (from 1)
is a chat request whose `messages` hold the whole conversation so far: k user messages
of `user_tokens` tokens each and, between them, the k - 1 answers. It is sent when turn
k - 1 has been answered and `think_time_s` has passed (`GenerationRequest.follows`), with
the answers the engine really gave in its history (`engines.turns`), so a server's prefix
cache sees the conversation it produced; every answer is `output_tokens` long (EOS
ignored), so turn k's history is (k - 1) * (user_tokens + output_tokens) tokens plus the
chat template's. The workload writes stand-in answers of that length, used where no real
answer is known (`measure`'s dry run counts them).

Each turn is a request of its own (`custom_id` `conv<s>-turn<k>`), so its TTFT is recorded
per turn: the TTFT of turn k counts from when turn k was sent. Two metrics of the test
compare the turns (`workload_metrics`), over the successful turns of the measured rounds:
    first_turn_ttft_ms_p50  median TTFT of the sessions' first turns (no history: a cold
                            prompt of `user_tokens` tokens).
    last_turn_ttft_ms_p50   median TTFT of their last turns (turn `turns`: the longest
                            history). Beside the first, it shows what the history costs:
                            close to it when a prefix cache keeps the conversation, growing
                            with the turns when every turn is prefilled whole.
Null when no such turn succeeded; with `turns` = 1 both are the same turns'. Only the
first and the last are metrics: a fixed pair of names that a thresholds file can bound
whatever `turns` is (each turn's own TTFT stays in its request record). A client engine
(`SendsTurns`: openai, vllm-server, llamacpp-server) runs every session at its own pace;
an engine that runs a batch at once gets the turns in waves (turn k of every session
together, after the wave before and its think time: `measure.harness`). With `Arrivals`,
sessions start on the schedule (its rate is sessions per second); their later turns
follow their answers.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from pytest_llmperf.engines.base import GenerationRequest, SamplingParams, Tokenizer
from pytest_llmperf.measure.metrics import RequestRecord, percentile
from pytest_llmperf.suite import arguments
from pytest_llmperf.suite.arguments import whole
from pytest_llmperf.suite.workload import exact_length_prompt


def turn_id(session: int, turn: int) -> str:
    return f"conv{session}-turn{turn}"


@dataclass(frozen=True)
class ConversationWorkload:
    """`sessions` conversations of `turns` turns each (see the module docstring)."""

    sessions: int = 4
    turns: int = 3
    user_tokens: int = 32
    output_tokens: int = 16
    think_time_s: float = 0.0
    seed: int = 0
    temperature: float = 0.0

    def __post_init__(self) -> None:
        owner = "ConversationWorkload"
        whole(owner, "sessions", self.sessions, 1)
        whole(owner, "turns", self.turns, 1)
        whole(owner, "user_tokens", self.user_tokens, 1)
        whole(owner, "output_tokens", self.output_tokens, 1)
        arguments.number(owner, "think_time_s", self.think_time_s, minimum=0)
        whole(owner, "seed", self.seed)
        arguments.number(owner, "temperature", self.temperature, minimum=0)

    def build(self, tokenizer: Tokenizer) -> list[GenerationRequest]:
        requests = []
        sampling = SamplingParams.fixed_length(
            self.output_tokens, temperature=self.temperature, seed=self.seed
        )
        for s in range(self.sessions):
            rng = random.Random(f"conversation/{self.seed}/{s}")
            history: list[Mapping[str, str]] = []
            for k in range(1, self.turns + 1):
                if k > 1:  # the stand-in for turn k - 1's answer
                    answer = exact_length_prompt(tokenizer, self.output_tokens, rng)
                    history.append({"role": "assistant", "content": answer})
                user = exact_length_prompt(tokenizer, self.user_tokens, rng)
                history.append({"role": "user", "content": user})
                requests.append(
                    GenerationRequest(
                        custom_id=turn_id(s, k),
                        messages=tuple(history),
                        sampling=sampling,
                        follows=turn_id(s, k - 1) if k > 1 else None,
                        think_time_s=self.think_time_s if k > 1 else 0.0,
                    )
                )
        return requests

    def workload_metrics(self, records: Sequence[RequestRecord]) -> dict[str, float | None]:
        """`first_turn_ttft_ms_p50` and `last_turn_ttft_ms_p50` (module docstring)."""
        return {
            "first_turn_ttft_ms_p50": _turn_ttft_p50(records, 1),
            "last_turn_ttft_ms_p50": _turn_ttft_p50(records, self.turns),
        }

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "conversation",
            "sessions": self.sessions,
            "turns": self.turns,
            "user_tokens": self.user_tokens,
            "output_tokens": self.output_tokens,
            "think_time_s": self.think_time_s,
            "seed": self.seed,
            "temperature": self.temperature,
        }

    def with_overrides(self, settings: Mapping[str, Any]) -> ConversationWorkload:
        if "max_new_tokens" in settings:
            return replace(self, output_tokens=int(settings["max_new_tokens"]))
        return self


def _turn_ttft_p50(records: Sequence[RequestRecord], turn: int) -> float | None:
    """The median TTFT of the successful records of turn `turn` of every session."""
    suffix = f"-turn{turn}"
    ttfts = sorted(
        r.ttft_ms
        for r in records
        if r.error is None and r.ttft_ms is not None and r.custom_id.endswith(suffix)
    )
    return percentile(ttfts, 50) if ttfts else None
