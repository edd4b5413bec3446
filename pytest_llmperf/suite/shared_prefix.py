"""Shared-prefix workloads: where a server's prefix cache pays.

`SharedPrefixWorkload` is vLLM's and SGLang's `generated-shared-prefix` shape: `groups`
groups of `prompts_per_group` requests; the requests of a group share one prefix of
`prefix_tokens` tokens (a system prompt) and each has a suffix of its own of
`suffix_tokens` tokens (a question). Prompts are sent as token ids, so the prefix is the
same ids in every request of its group and every length is exact in the model's tokens.

Prefix caching on/off is an A/B of one workload on two engine configurations. With
`fresh_each_round`, every round (warm-up rounds included) gets prefixes and suffixes it
has never sent before, so a cache kept from an earlier round cannot help: the same load
with nothing to reuse across rounds, the baseline the shared case is compared with.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from pytest_llmperf.engines.base import GenerationRequest, SamplingParams, Tokenizer
from pytest_llmperf.suite import arguments
from pytest_llmperf.suite.arguments import whole
from pytest_llmperf.suite.workload import exact_length_prompt


def token_block(tokenizer: Tokenizer, n_tokens: int, rng: random.Random) -> tuple[int, ...]:
    """`n_tokens` token ids of plain words (text that the tokenizer gives back as exactly
    these ids), drawn from `rng`."""
    return tuple(tokenizer.encode(exact_length_prompt(tokenizer, n_tokens, rng)))


@dataclass(frozen=True)
class SharedPrefixWorkload:
    """`groups` x `prompts_per_group` prompts: a group's prefix, then a suffix of their own."""

    groups: int = 4
    prompts_per_group: int = 4
    prefix_tokens: int = 64
    suffix_tokens: int = 16
    output_tokens: int = 16
    seed: int = 0
    fresh_each_round: bool = False
    temperature: float = 0.0

    def __post_init__(self) -> None:
        owner = "SharedPrefixWorkload"
        whole(owner, "groups", self.groups, 1)
        whole(owner, "prompts_per_group", self.prompts_per_group, 1)
        whole(owner, "prefix_tokens", self.prefix_tokens, 1)
        whole(owner, "suffix_tokens", self.suffix_tokens, 1)
        whole(owner, "output_tokens", self.output_tokens, 1)
        whole(owner, "seed", self.seed)
        if not isinstance(self.fresh_each_round, bool):
            raise arguments.bad(owner, "fresh_each_round", self.fresh_each_round, "must be a bool")
        arguments.number(owner, "temperature", self.temperature, minimum=0)

    def build(self, tokenizer: Tokenizer) -> list[GenerationRequest]:
        return self.build_round(tokenizer, 0)

    def build_round(self, tokenizer: Tokenizer, round_index: int) -> list[GenerationRequest]:
        """The requests of round `round_index` (from 0, warm-up rounds counted): the same
        for every round unless `fresh_each_round`."""
        # A string seed: random.Random hashes it the same way in every process.
        salt = round_index if self.fresh_each_round else 0
        rng = random.Random(f"shared-prefix/{self.seed}/{salt}")
        requests = []
        for g in range(self.groups):
            prefix = token_block(tokenizer, self.prefix_tokens, rng)
            for j in range(self.prompts_per_group):
                suffix = token_block(tokenizer, self.suffix_tokens, rng)
                requests.append(
                    GenerationRequest(
                        custom_id=f"prefix-g{g}-{j}",
                        prompt_token_ids=prefix + suffix,
                        sampling=SamplingParams.fixed_length(
                            self.output_tokens, temperature=self.temperature, seed=self.seed
                        ),
                    )
                )
        # Groups interleaved, as a server meets them in production (SGLang shuffles too);
        # the order is the seed's, the same every round.
        random.Random(f"shared-prefix-order/{self.seed}").shuffle(requests)
        return requests

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "shared_prefix",
            "groups": self.groups,
            "prompts_per_group": self.prompts_per_group,
            "prefix_tokens": self.prefix_tokens,
            "suffix_tokens": self.suffix_tokens,
            "output_tokens": self.output_tokens,
            "seed": self.seed,
            "fresh_each_round": self.fresh_each_round,
            "temperature": self.temperature,
        }

    def with_overrides(self, settings: Mapping[str, Any]) -> SharedPrefixWorkload:
        if "max_new_tokens" in settings:
            return replace(self, output_tokens=int(settings["max_new_tokens"]))
        return self
