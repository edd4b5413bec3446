"""Write suites/data/longform_answers.jsonl: questions whose reference answers have long,
spread-out lengths, for the output-length scenarios of suites/test_output_lengths.py and
the closed-book task of suites/test_presets.py; and suites/data/open_book_questions.jsonl,
the first 48 of those questions each after a passage of about 320 tokens to read (the
open-book task: long prompts).

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

from pytest_llmperf.models.names import resolve_model

DATA = Path(__file__).resolve().parent.parent / "suites" / "data"
OUT = DATA / "longform_answers.jsonl"
OPEN_BOOK = DATA / "open_book_questions.jsonl"
OPEN_BOOK_ITEMS = 48
PASSAGE_TOKENS = 320
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
    rows = []
    for index, tokens in enumerate(lengths):
        topic = TOPICS[index % len(TOPICS)]
        rows.append(
            {
                "custom_id": f"longform-{index:03d}",
                "prompt": f"Explain {topic} in an LLM server, in as much detail as it needs.",
                "reference": answer(tokenizer, rng, tokens),
            }
        )
    with OUT.open("w", encoding="utf-8") as out:
        out.writelines(json.dumps(row) + "\n" for row in rows)
    with OPEN_BOOK.open("w", encoding="utf-8") as out:
        for row in rows[:OPEN_BOOK_ITEMS]:
            passage = answer(tokenizer, rng, PASSAGE_TOKENS).strip()
            prompt = f"Read this passage.\n\n{passage}\n\nUsing the passage: {row['prompt']}"
            out.write(
                json.dumps({**row, "custom_id": f"open-{row['custom_id']}", "prompt": prompt})
            )
            out.write("\n")
    print(f"wrote {OUT} ({ITEMS} items) and {OPEN_BOOK} ({OPEN_BOOK_ITEMS} items)")


if __name__ == "__main__":
    main()
