"""The built-in model "tiny-trained": the tiny model taught one-digit sums, on the CPU.

Accuracy checks need a model that knows something, and no model can be downloaded.
"tiny-trained" has tiny's configuration and tokenizer (so the same speed) and weights
trained here, deterministically (fixed seeds, one thread), for a few seconds, on every
sum of two digits written as text: `3 + 4 = 7`. The multiple-choice and generation
datasets in `suites/data/` (`write_datasets`) ask the same hundred facts, so a working
engine scores near 100% where chance is 25% (four choices) or about 5% (a free answer),
and a broken one (wrong padding, wrong positions, a bad kernel) falls far below.

Each training sequence is one fact followed by end-of-sequence, half of them after a
beginning-of-sequence token and half without: engines differ in whether they add one.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

TRAINED_DIRNAME = "tiny-trained-v1"
_SEED = 4321
_STEPS = 600
_BATCH = 64
_LEARNING_RATE = 3e-3


def facts() -> list[tuple[int, int, int]]:
    """Every (a, b, a + b) with a and b in 0..9."""
    return [(a, b, a + b) for a in range(10) for b in range(10)]


def question(a: int, b: int) -> str:
    return f"{a} + {b} ="


def build_trained_model(dest: Path) -> None:
    """Write tiny's files into `dest`, then replace its weights with trained ones."""
    import torch
    from safetensors.torch import save_file
    from transformers import AutoTokenizer, LlamaForCausalLM

    from pytest_llmperf.models.tiny import build_tiny_model

    build_tiny_model(dest)
    tokenizer = AutoTokenizer.from_pretrained(dest)
    sequences = _training_sequences(tokenizer)
    threads = torch.get_num_threads()
    # fork_rng: seeding must not leak into the caller's global torch RNG; one thread:
    # the same sums in the same order on every machine.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_SEED)
        torch.set_num_threads(1)
        try:
            model = LlamaForCausalLM.from_pretrained(dest, dtype=torch.float32)
            _train(model, sequences, tokenizer.pad_token_id)
        finally:
            torch.set_num_threads(threads)
    state = {
        name: t.detach().to(torch.float32).contiguous() for name, t in model.state_dict().items()
    }
    save_file(state, str(dest / "model.safetensors"), metadata={"format": "pt"})


def _training_sequences(tokenizer: Any) -> list[list[int]]:
    sequences = []
    for a, b, total in facts():
        ids = tokenizer.encode(f"{question(a, b)} {total}", add_special_tokens=False)
        ids.append(tokenizer.eos_token_id)
        sequences.append(ids)
        sequences.append([tokenizer.bos_token_id, *ids])
    return sequences


def _train(model: Any, sequences: list[list[int]], pad_id: int) -> None:
    import torch

    rng = random.Random(_SEED)
    optimizer = torch.optim.AdamW(model.parameters(), lr=_LEARNING_RATE, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 - step / _STEPS)
    model.train()
    for _ in range(_STEPS):
        batch = rng.sample(sequences, _BATCH)
        width = max(len(s) for s in batch)
        # Right padding: positions start at 0 in every row; padded labels are ignored.
        ids = torch.tensor([s + [pad_id] * (width - len(s)) for s in batch])
        mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in batch])
        labels = ids.masked_fill(mask == 0, -100)
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    model.eval()


def datasets() -> dict[str, list[dict[str, Any]]]:
    """The multiple-choice and generation datasets over the trained facts.

    Multiple choice: four choices, the sum and three other numbers from 0..18 (seeded),
    in a seeded order. Generation: the question, the sum as the reference, stop at a
    new line.
    """
    rng = random.Random(_SEED)
    choice_rows, generation_rows = [], []
    for a, b, total in facts():
        wrong = rng.sample([n for n in range(19) if n != total], 3)
        choices = [total, *wrong]
        rng.shuffle(choices)
        choice_rows.append(
            {
                "id": f"sum-{a}-{b}",
                "question": question(a, b),
                "choices": [f" {c}" for c in choices],
                "answer": choices.index(total),
            }
        )
        generation_rows.append(
            {
                "id": f"sum-{a}-{b}",
                "prompt": question(a, b),
                "reference": f" {total}",
                "stop": ["\n"],
            }
        )
    return {"sums_choice.jsonl": choice_rows, "sums_generation.jsonl": generation_rows}


def write_datasets(directory: Path) -> list[Path]:
    """Write `datasets()` as JSONL files into `directory` (the shipped copies are these)."""
    written = []
    for name, rows in datasets().items():
        path = directory / name
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
        written.append(path)
    return written
