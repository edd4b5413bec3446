"""Accuracy in the same run as speed: multiple choice by log-likelihood, generation by match.

Multiple choice (`ChoiceTask`, scored by `llmperf.evaluate_choices`): each choice is
scored by the log-probability of its tokens given the question (the engine's
`score`); the model's answer is the best-scoring choice.

    accuracy            share of questions whose best choice, by the sum of its tokens'
                        log-probabilities, is the answer.
    accuracy_norm       the same with each sum divided by the choice's length in UTF-8
                        bytes (lm-evaluation-harness's `acc_norm`): long choices are
                        not penalised for having more tokens.
    accuracy_stderr, accuracy_norm_stderr
                        standard error of the mean over questions, sqrt(p (1 - p) /
                        (n - 1)) (the sample standard deviation over sqrt(n)).
    questions_per_s     questions / wall time of scoring all their choices.

Generation (`GenerationTask`, a workload for `llmperf.measure(..., score=task.score)`):

    exact_match         share of successful requests whose output equals the reference
                        after normalising both (strip, lower case, single spaces).
    token_f1            mean over successful requests of the F1 between the words of
                        the normalised output and reference (SQuAD's token F1).
    truncation_rate     share of successful requests that ended at max_tokens, before
                        a stop sequence or end of sequence.
    (samples per second is `requests_per_s`, successful requests / duration.)

JSONL formats, one object per line: choices `{"id", "question", "choices": [...],
"answer": index}`; generation `{"id", "prompt", "reference", "stop": [...]?,
"max_tokens": n?}`. A bad line is a usage error naming the file and line.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pytest_llmperf.engines.base import (
    GenerationRequest,
    SamplingParams,
    ScoreRequest,
    ScoreResult,
    Tokenizer,
)
from pytest_llmperf.errors import where
from pytest_llmperf.measure.metrics import RequestRecord
from pytest_llmperf.suite.arguments import bad, dataset_path, whole
from pytest_llmperf.suite.workload import DatasetError, read_json_lines


@dataclass(frozen=True)
class ChoiceItem:
    id: str
    question: str
    choices: tuple[str, ...]
    answer: int


@dataclass(frozen=True)
class ChoiceTask:
    """Multiple-choice questions from a JSONL file (see the module docstring)."""

    path: Path
    items: tuple[ChoiceItem, ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        _check_items("ChoiceTask", self.items, ChoiceItem)

    @classmethod
    def load(cls, path: Path | str) -> ChoiceTask:
        """The questions of the JSONL file `path` (a relative path is looked up as
        `suite.arguments.dataset_path` says)."""
        path = dataset_path("ChoiceTask.load", "path", path)
        items = []
        for number, row in read_json_lines(path):
            choices = row.get("choices")
            answer = row.get("answer")
            at = where(path, number)
            if not isinstance(row.get("question"), str):
                raise DatasetError(f"{at}: 'question' must be a string")
            if (
                not isinstance(choices, list)
                or len(choices) < 2
                or not all(isinstance(c, str) and c for c in choices)
            ):
                raise DatasetError(f"{at}: 'choices' must be a list of two or more strings")
            if not isinstance(answer, int) or not 0 <= answer < len(choices):
                raise DatasetError(
                    f"{at}: 'answer' must be the index of the right choice (0..{len(choices) - 1})"
                )
            items.append(
                ChoiceItem(str(row.get("id", number)), row["question"], tuple(choices), answer)
            )
        return cls(path, tuple(items))

    def requests(self) -> list[ScoreRequest]:
        return [ScoreRequest(i.question, c) for i in self.items for c in i.choices]

    def describe(self) -> dict[str, Any]:
        return {"kind": "choices", "path": str(self.path), "questions": len(self.items)}

    def metrics(self, results: Sequence[ScoreResult], duration_s: float) -> dict[str, float]:
        """Every metric of the module docstring's multiple-choice part."""
        if len(results) != sum(len(i.choices) for i in self.items):
            raise ValueError("one score per choice is needed")
        right = right_norm = 0
        position = 0
        for item in self.items:
            scores = results[position : position + len(item.choices)]
            position += len(item.choices)
            raw = [s.logprob for s in scores]
            norm = [s.logprob / len(c.encode()) for s, c in zip(scores, item.choices, strict=True)]
            right += raw.index(max(raw)) == item.answer
            right_norm += norm.index(max(norm)) == item.answer
        n = len(self.items)
        return {
            "accuracy": right / n,
            "accuracy_norm": right_norm / n,
            "accuracy_stderr": _stderr(right / n, n),
            "accuracy_norm_stderr": _stderr(right_norm / n, n),
            "questions_per_s": n / duration_s if duration_s > 0 else 0.0,
        }


def _stderr(p: float, n: int) -> float:
    return math.sqrt(p * (1 - p) / (n - 1)) if n > 1 else 0.0


@dataclass(frozen=True)
class GenerationItem:
    id: str
    prompt: str
    reference: str
    stop: tuple[str, ...]
    max_tokens: int


@dataclass(frozen=True)
class GenerationTask:
    """Prompts with reference answers from a JSONL file; a workload for `llmperf.measure`."""

    path: Path
    items: tuple[GenerationItem, ...] = field(default=(), compare=False)
    max_tokens: int = 16

    def __post_init__(self) -> None:
        _check_items("GenerationTask", self.items, GenerationItem)
        whole("GenerationTask", "max_tokens", self.max_tokens, 1)

    @classmethod
    def load(cls, path: Path | str, max_tokens: int = 16, repeat: int = 1) -> GenerationTask:
        """Read `path` (a relative path is looked up as `suite.arguments.dataset_path`
        says); `repeat` > 1 asks every item that many times (ids `ID#2`, ...), as a
        harness's repeats do, for a workload longer than the file."""
        whole("GenerationTask.load", "max_tokens", max_tokens, 1)
        whole("GenerationTask.load", "repeat", repeat, 1)
        path = dataset_path("GenerationTask.load", "path", path)
        items = []
        for number, row in read_json_lines(path):
            at = where(path, number)
            if not isinstance(row.get("prompt"), str) or not row["prompt"]:
                raise DatasetError(f"{at}: 'prompt' must be a non-empty string")
            if not isinstance(row.get("reference"), str):
                raise DatasetError(f"{at}: 'reference' must be a string")
            stop = row.get("stop", [])
            if not isinstance(stop, list) or not all(isinstance(s, str) and s for s in stop):
                raise DatasetError(f"{at}: 'stop' must be a list of non-empty strings")
            limit = row.get("max_tokens", max_tokens)
            if not isinstance(limit, int) or limit < 1:
                raise DatasetError(f"{at}: 'max_tokens' must be a positive integer")
            items.append(
                GenerationItem(
                    str(row.get("id", number)), row["prompt"], row["reference"], tuple(stop), limit
                )
            )
        repeats = [
            replace(item, id=f"{item.id}#{k}") if k > 1 else item
            for k in range(1, repeat + 1)
            for item in items
        ]
        return cls(path, tuple(repeats), max_tokens)

    def build(self, tokenizer: Tokenizer) -> list[GenerationRequest]:
        return [
            GenerationRequest(
                item.id,
                SamplingParams(max_tokens=item.max_tokens, temperature=0.0, stop=item.stop),
                prompt=item.prompt,
            )
            for item in self.items
        ]

    def describe(self) -> dict[str, Any]:
        return {"kind": "generation", "path": str(self.path), "samples": len(self.items)}

    def with_overrides(self, settings: Mapping[str, Any]) -> GenerationTask:
        return self

    def score(self, records: Sequence[RequestRecord]) -> dict[str, float | None]:
        """Every metric of the module docstring's generation part."""
        references = {item.id: item.reference for item in self.items}
        ok = [r for r in records if r.error is None]
        if not ok:
            return {"exact_match": None, "token_f1": None, "truncation_rate": None}
        exact = [_normalise(r.output_text or "") == _normalise(references[r.custom_id]) for r in ok]
        f1 = [token_f1(r.output_text or "", references[r.custom_id]) for r in ok]
        return {
            "exact_match": sum(exact) / len(ok),
            "token_f1": sum(f1) / len(ok),
            "truncation_rate": sum(r.finish_reason == "length" for r in ok) / len(ok),
        }


def _check_items(owner: str, items: object, kind: type) -> None:
    if not isinstance(items, tuple) or not all(isinstance(i, kind) for i in items):
        raise bad(owner, "items", items, f"must be a tuple of {kind.__name__} (use {owner}.load)")


def _normalise(text: str) -> str:
    return " ".join(text.lower().split())


def token_f1(output: str, reference: str) -> float:
    """SQuAD's F1 over the words of the normalised texts (1.0 when both are empty)."""
    got, want = _normalise(output).split(), _normalise(reference).split()
    if not got or not want:
        return float(got == want)
    common = sum((Counter(got) & Counter(want)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(got), common / len(want)
    return 2 * precision * recall / (precision + recall)
