"""Seed 003's length scenarios: generation benchmarked at the max-new-tokens that covers a
share of a dataset's answers, 128-token prompts, one sequence (as llama-bench runs them).

    Conservative   ~75% of outputs   quick benchmarks       (seed: n-predict 1024)
    Recommended    ~90% of outputs   standard evaluation    (seed: n-predict 2048)
    Comprehensive  ~99% of outputs   thorough testing       (seed: n-predict 4096)

pytest suites/test_output_lengths.py -m longform [--engine vllm] [--model PATH --gpus 0]

n-predict is not a constant here: it is computed from the answers of `DATASET` in the
model's own tokens (`llmperf workload stats DATASET --coverage 0.9` prints the same
number), so the scenarios follow the data. The shipped dataset
(`scripts/make_longform_data.py`) has the seed's shape scaled down 8x for CPUs: with the
built-in model its answers cover 75%, 90% and 99% at 127, 253 and 502 tokens. Point
`DATASET` at your own answers for full-size numbers. Each test reports `tg_tok_per_s`
(generation speed at that length, `pytest_llmperf.measure.prefill_decode`) and
`output_coverage`, the share of the dataset's answers that fit in its n-predict.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_llmperf import SyntheticWorkload, coverage, covering_limit, reference_lengths
from pytest_llmperf.measure.prefill_decode import tg_metrics
from pytest_llmperf.suite.workload import load_dataset, offline_tokenizer

DATASET = Path(__file__).parent / "data" / "longform_answers.jsonl"
SCENARIOS = {"conservative": 0.75, "recommended": 0.90, "comprehensive": 0.99}
PROMPT_TOKENS = 128


@pytest.mark.longform
@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_generation_at_covering_length(llmperf, scenario):
    tokenizer = offline_tokenizer(llmperf.engine_config())
    if tokenizer is None:
        pytest.skip("answer lengths are counted in the model's tokens: give a local --model")
    lengths = reference_lengths(load_dataset(DATASET), tokenizer)
    n_predict = covering_limit(lengths, SCENARIOS[scenario])
    result = llmperf.measure(
        workload=SyntheticWorkload(
            num_requests=1, input_tokens=PROMPT_TOKENS, output_tokens=n_predict
        ),
        rounds=3,
        warmup_rounds=1,
        score=tg_metrics,
        extra_metrics={"output_coverage": coverage(lengths, n_predict)},
    )
    assert all(r.output_tokens == n_predict for r in result.records)
    assert result.metrics.extra["output_coverage"] >= SCENARIOS[scenario]
