"""Seed 004's own code: multiple-choice scoring by log-likelihood, one forward pass per
choice against all of a question's choices in one batched pass (`compute_logprobs_for_all
_choices_batched`), written as plain transformers code, not through an engine.

    pytest suites/test_own_code.py -m smoke                # the built-in tiny model, CPU
    pytest suites/test_own_code.py -m smoke --gpus 0       # leases GPU 0 (llmperf_gpus)

An A/B test of own code (`llmperf.compare_functions`): A one at a time, B batched, called
round by round in turns (ABBA), so that a drift of the machine does not land in their ratio;
their scores must agree. `speedup` is each round's one-at-a-time seconds over its batched
seconds (B/A of calls per second) with its paired interval; `thresholds/<hardware>/own.yaml`
bounds it and each side's questions per second (`a.questions_per_s`, `b.questions_per_s`).
The seed claims 3-4x per question with 4 choices.
"""

from __future__ import annotations

import random

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

QUESTIONS = 8
CHOICES = 4


def make_questions(count: int = QUESTIONS) -> list[tuple[str, list[str]]]:
    """Deterministic questions in the seed's shape: a context and four continuations."""
    rng = random.Random(4)
    questions = []
    for index in range(count):
        a, b = rng.randint(1, 50), rng.randint(1, 50)
        answers = [a + b, a + b + 1, a + b - 1, a * b]
        questions.append(
            (f"Question {index}: what is {a} plus {b}? Answer:", [f" {n}" for n in answers])
        )
    return questions


class Scorer:
    """Summed log-probabilities of each choice's tokens after its context."""

    def __init__(self, model: object, tokenizer: object, device: str) -> None:
        self.model, self.tokenizer, self.device = model, tokenizer, device

    def _pairs(self, context: str, choices: list[str]) -> list[tuple[list[int], list[int]]]:
        # Context and continuation tokenized apart and joined as ids, as lm-eval does.
        ctx = self.tokenizer(context, add_special_tokens=False)["input_ids"]
        return [(ctx, self.tokenizer(c, add_special_tokens=False)["input_ids"]) for c in choices]

    @torch.inference_mode()
    def _score(self, pairs: list[tuple[list[int], list[int]]]) -> list[float]:
        rows = [ctx + cont for ctx, cont in pairs]
        width = max(map(len, rows))
        pad = self.tokenizer.pad_token_id or 0
        ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows], device=self.device)
        mask = torch.tensor(
            [[1] * len(r) + [0] * (width - len(r)) for r in rows], device=self.device
        )
        logits = self.model(input_ids=ids, attention_mask=mask).logits.float()
        logprobs = torch.log_softmax(logits, dim=-1)
        scores = []
        for row, (ctx, cont) in enumerate(pairs):
            # The token at position p is predicted by the logits at p - 1.
            positions = torch.arange(len(ctx) - 1, len(ctx) + len(cont) - 1, device=self.device)
            targets = torch.tensor(cont, device=self.device)
            scores.append(float(logprobs[row, positions, targets].sum()))
        return scores

    def one_at_a_time(self, questions: list[tuple[str, list[str]]]) -> list[list[float]]:
        """The seed's "before": one forward pass per choice."""
        return [
            [self._score([pair])[0] for pair in self._pairs(context, choices)]
            for context, choices in questions
        ]

    def batched(self, questions: list[tuple[str, list[str]]]) -> list[list[float]]:
        """The seed's "after": all of a question's choices in one forward pass."""
        return [self._score(self._pairs(context, choices)) for context, choices in questions]


@pytest.mark.smoke
@pytest.mark.gpu(allow_cpu=True)
def test_batched_scoring(llmperf, llmperf_model, llmperf_gpus):
    device = llmperf_gpus.devices[0]
    tokenizer = llmperf_model.tokenizer()
    model = transformers.AutoModelForCausalLM.from_pretrained(
        llmperf_model.path, dtype=torch.float32
    ).to(device)
    model.eval()
    scorer, questions = Scorer(model, tokenizer, device), make_questions()

    def one_at_a_time():
        return scorer.one_at_a_time(questions)

    def batched():
        return scorer.batched(questions)

    result = llmperf.compare_functions(
        one_at_a_time,
        batched,
        rounds=6,
        warmup_rounds=1,
        count={"questions": len(questions)},
    )
    # Same scores either way: padding on the right is masked and never scored.
    for one, other in zip(result.a.result, result.b.result, strict=True):
        assert one == pytest.approx(other, abs=1e-3)
