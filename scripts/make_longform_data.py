"""Write suites/data/longform_answers.jsonl: questions whose reference answers have long,
spread-out lengths, for the output-length scenarios of suites/test_output_lengths.py.

The answers are plain English-like filler; only their lengths matter. Lengths (in the
built-in tiny model's tokens) follow seed 003's shape scaled down 8x for CPUs: 75% of
answers within 128 tokens, 90% within 256, 99% within 512 (the seed: 1024, 2048, 4096).
Deterministic: run it again and the file is the same.

    python scripts/make_longform_data.py
"""

from __future__ import annotations

import itertools
import json
import math
import random
from pathlib import Path

from transformers import AutoTokenizer

from pytest_llmperf.tinymodel import resolve_model

OUT = Path(__file__).resolve().parent.parent / "suites" / "data" / "longform_answers.jsonl"
ITEMS = 200
#: (quantile, length in tokens): the answer at quantile q is interpolated in log length.
SHAPE = ((0.0, 12), (0.5, 64), (0.75, 128), (0.9, 256), (0.99, 512), (1.0, 600))
WORDS = (
    "the engine keeps a cache of every sequence and the scheduler decides which request "
    "runs next while memory holds the weights of each layer so a batch moves through "
    "attention then the feed forward block and a token comes out at the end of a step"
).split()
TOPICS = ("caching", "batching", "scheduling", "attention", "memory", "quantization")


def target_length(index: int) -> int:
    q = (index + 0.5) / ITEMS
    for (q0, n0), (q1, n1) in itertools.pairwise(SHAPE):
        if q0 <= q <= q1:
            t = (q - q0) / (q1 - q0)
            return round(math.exp(math.log(n0) + t * (math.log(n1) - math.log(n0))))
    raise AssertionError(q)


def answer(tokenizer: object, rng: random.Random, tokens: int) -> str:
    words: list[str] = []
    while len(tokenizer.encode(" " + " ".join(words), add_special_tokens=False)) < tokens:
        words.append(rng.choice(WORDS))
    return " " + " ".join(words)


def main() -> None:
    tokenizer = AutoTokenizer.from_pretrained(resolve_model("tiny"))
    rng = random.Random(3)
    lengths = [target_length(i) for i in range(ITEMS)]
    rng.shuffle(lengths)
    with OUT.open("w", encoding="utf-8") as out:
        for index, tokens in enumerate(lengths):
            topic = TOPICS[index % len(TOPICS)]
            row = {
                "custom_id": f"longform-{index:03d}",
                "prompt": f"Explain {topic} in an LLM server, in as much detail as it needs.",
                "reference": answer(tokenizer, rng, tokens),
            }
            out.write(json.dumps(row) + "\n")
    print(f"wrote {OUT} ({ITEMS} items)")


if __name__ == "__main__":
    main()
