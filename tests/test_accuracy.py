"""Accuracy: batched log-likelihood scoring, the trained tiny model, and the accuracy suite."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pytest_llmperf.engines.base import EngineConfig, ScoreRequest
from pytest_llmperf.measure.metrics import RequestRecord
from pytest_llmperf.models.tiny_trained import datasets
from pytest_llmperf.suite.accuracy import ChoiceTask, GenerationTask, token_f1
from pytest_llmperf.suite.workload import DatasetError
from tests.suite_run import REPO, SuiteRun, run_suite

DATA = REPO / "suites" / "data"


@pytest.fixture(scope="module")
def trained_engine():
    from pytest_llmperf.engines.hf.engine import HFEngine

    engine = HFEngine(EngineConfig.make("hf", "tiny-trained", {"score_batch_size": 64}))
    engine.start()
    yield engine
    engine.close()


def test_batched_scores_equal_one_at_a_time_scores(trained_engine) -> None:
    task = ChoiceTask.load(DATA / "sums_choice.jsonl")
    # Choices of different token lengths (" 7" is one token, " 12" may be two) and a
    # longer context, so that rows of a batch are padded differently.
    requests = [*task.requests()[:40], ScoreRequest("5 + 5 = 10\n3 + 4 =", " 7")]
    batched = trained_engine.score(requests)
    alone = [trained_engine.score([r])[0] for r in requests]
    assert [b.tokens for b in batched] == [a.tokens for a in alone]
    assert max(abs(b.logprob - a.logprob) for b, a in zip(batched, alone, strict=True)) < 1e-4
    assert [b.greedy for b in batched] == [a.greedy for a in alone]


def test_the_trained_model_knows_its_sums_and_tiny_does_not(trained_engine) -> None:
    from pytest_llmperf.engines.hf.engine import HFEngine

    task = ChoiceTask.load(DATA / "sums_choice.jsonl")
    trained = task.metrics(trained_engine.score(task.requests()), 1.0)
    untrained_engine = HFEngine(EngineConfig.make("hf", "tiny", {}))
    untrained_engine.start()
    try:
        untrained = task.metrics(untrained_engine.score(task.requests()), 1.0)
    finally:
        untrained_engine.close()
    assert trained["accuracy"] >= 0.95 and trained["accuracy_norm"] >= 0.95
    assert untrained["accuracy"] < 0.5  # random weights: about chance (0.25)


def test_shipped_datasets_are_the_ones_the_trainer_writes() -> None:
    for name, rows in datasets().items():
        shipped = [json.loads(line) for line in (DATA / name).read_text().splitlines()]
        assert shipped == rows, name


def test_choice_metrics_and_their_standard_error() -> None:
    from pytest_llmperf.engines.base import ScoreResult

    task = ChoiceTask.load(DATA / "sums_choice.jsonl")
    task = ChoiceTask(task.path, task.items[:4])
    # The answer scores best on questions 0 and 1; a wrong choice wins on 2 and 3.
    results = []
    for q, item in enumerate(task.items):
        wrong_winner = (item.answer + 1) % len(item.choices)
        for c in range(len(item.choices)):
            if q < 2:
                logprob = -1.0 if c == item.answer else -30.0
            else:
                logprob = -1.0 if c == wrong_winner else -30.0
            results.append(ScoreResult(logprob, 1, c == item.answer))
    metrics = task.metrics(results, 2.0)
    assert metrics["accuracy"] == 0.5 and metrics["accuracy_norm"] == 0.5
    assert metrics["accuracy_stderr"] == pytest.approx((0.5 * 0.5 / 3) ** 0.5)
    assert metrics["questions_per_s"] == 2.0


def test_generation_scores() -> None:
    task = GenerationTask.load(DATA / "sums_generation.jsonl")

    def record(custom_id: str, text: str, finish: str = "stop") -> RequestRecord:
        return RequestRecord(custom_id, 0, 3, 1, finish, 1.0, 2.0, None, None, output_text=text)

    scores = task.score(
        [
            record("sum-3-4", " 7"),
            record("sum-0-0", "  0 "),  # spacing does not matter
            record("sum-9-9", " 17", "length"),
            record("sum-1-1", "2 2"),
        ]
    )
    assert scores["exact_match"] == 0.5
    assert scores["token_f1"] == pytest.approx((1 + 1 + 0 + 2 / 3) / 4)
    assert scores["truncation_rate"] == 0.25
    assert token_f1("the cat sat", "cat sat down") == pytest.approx(2 / 3)


@pytest.mark.parametrize(
    "line, error",
    [
        ('{"question": "q", "choices": ["a"], "answer": 0}', "two or more strings"),
        (
            '{"question": "q", "choices": ["a", "b"], "answer": 2}',
            r"index of the right choice \(0..1\)",
        ),
        ('{"choices": ["a", "b"], "answer": 0}', "'question' must be a string"),
        ("[1]", "each line must be a JSON object, got list"),
    ],
)
def test_bad_choice_lines_name_file_and_line(tmp_path: Path, line: str, error: str) -> None:
    path = tmp_path / "mc.jsonl"
    path.write_text('{"question": "q", "choices": ["a", "b"], "answer": 1}\n' + line + "\n")
    with pytest.raises(DatasetError, match=rf"mc\.jsonl: line 2: .*{error}"):
        ChoiceTask.load(path)


def check_accuracy_suite(run: SuiteRun, engine: str) -> None:
    """Both accuracy tests passed on `engine`, with accuracy bounds checked, none stale."""
    assert run.out.returncode == 0, run.output
    tests = run.tests_by_name()
    choice, generation = tests["test_sums_multiple_choice"], tests["test_sums_generation"]
    assert choice["engine"] == generation["engine"] == engine
    assert choice["metrics"]["accuracy"] >= 0.9
    assert {v["metric"] for v in choice["thresholds"]["checked"]} >= {"accuracy", "accuracy_norm"}
    assert generation["metrics"]["exact_match"] >= 0.9
    assert "exact_match" in {v["metric"] for v in generation["thresholds"]["checked"]}
    assert "thresholds:" not in run.out.stdout  # nothing stale in the shipped bounds


def test_accuracy_suite_passes_on_hf_with_accuracy_checked(tmp_path: Path) -> None:
    check_accuracy_suite(run_suite(tmp_path, "-m", "accuracy"), "hf")


#: A deliberately broken batching path, the classic one: rows padded on the left (with a
#: correct attention mask) but read as if padded on the right, so every row shorter than
#: the longest is scored at the wrong positions. Installed by a conftest, in the real engine.
BROKEN_PADDING = """
import torch
import pytest_llmperf.engines.hf.scoring as hf_score

def wrong_side_score_rows(model, pairs, *, pad_id, device, batch_rows):
    results = []
    for start in range(0, len(pairs), batch_rows):
        batch = pairs[start:start + batch_rows]
        rows = [[*c, *k] for c, k in batch]
        width = max(len(row) for row in rows)
        ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, row in enumerate(rows):
            ids[i, width - len(row):] = torch.tensor(row)
            mask[i, width - len(row):] = 1
        with torch.inference_mode():
            logits = model(input_ids=ids, attention_mask=mask).logits
        logprobs = torch.log_softmax(logits.float(), -1)
        for row, (c, k) in enumerate(batch):
            where = logprobs[row, len(c) - 1 : len(c) + len(k) - 1]  # right-padding offsets
            picked = where.gather(1, torch.tensor(k)[:, None]).squeeze(1)
            results.append(hf_score.ScoreResult(float(picked.sum()), len(k), False))
    return results

hf_score.score_rows = wrong_side_score_rows
"""


def test_a_broken_padding_path_fails_the_accuracy_threshold(tmp_path: Path) -> None:
    run = run_suite(tmp_path, "-m", "accuracy", "-k", "multiple_choice", conftest=BROKEN_PADDING)
    assert run.out.returncode == 1, run.output
    stdout = run.out.stdout
    assert "thresholds missed for suites/test_accuracy.py::test_sums_multiple_choice" in stdout
    assert "accuracy" in stdout.split("thresholds missed", 1)[1]
