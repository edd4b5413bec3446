"""Seed 001: an evaluation against an inference HTTP server, sped up by sending more
samples per request, token ids instead of text and several requests at once, in samples/s
against the in-process Hugging Face baseline.

pytest suites/test_http_eval.py --engine vllm-server            # starts vLLM's server
pytest suites/test_http_eval.py --engine openai --base-url URL  # a server you started
pytest suites/test_http_eval.py -m longform --engine openai --base-url URL  # the A/B steps

`test_eval_step[...]` (longform) measures two of the seed's steps as A/B tests on one
server (`llmperf.compare`, the rows' rounds in turns, ABBA): batch 8 -> 64 (the seed: 0.75 ->
5.25 samples/s, "7x") and, at 64 per request, 1 -> 4 requests in flight (the seed's
NUM_CONCURRENT=4: "0-30%", uncertain behind its server's lock). `speedup` is B/A of output
tok/s with its paired interval; `ratio.requests_per_s` is the seed's samples/s column as a
ratio. They need `--engine openai`: the two sides are two client settings of one server
(under `--engine vllm-server` each side would start a server of its own).

The rows are `grids/http_eval_seed001.yaml`, measured in order in one test so that each
gets its `speedup` over the first (`original_batch8`), the seed's "Speedup" column: rows
measured one after another, not interleaved (`pytest_llmperf.measure.turns` defines speedup),
so drift between them lands in it and it has no interval.
Samples/s is `requests_per_s`: one sample is one generation request, however many of
them share an HTTP request. The questions are the hundred one-digit sums asked four
times (the seed's 400 samples), greedy, so `exact_match` shows that batching and token
ids changed no answer. With `--model tiny` (the default) the server must serve
"tiny-trained" (`python -m pytest_llmperf.tinymodel tiny-trained` prints its directory;
`--engine vllm-server` starts it on that), and the HF baseline loads the same directory;
with `--model PATH` both use PATH.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_llmperf import Config, GenerationTask, Grid, Speedups

HERE = Path(__file__).parent
ROWS = Grid.from_yaml(HERE / "grids" / "http_eval_seed001.yaml")
HTTP_ENGINES = ("openai", "vllm-server")
BATCH8, BATCH64 = ROWS.configs[0], ROWS.configs[1]
#: Seed 001's NUM_CONCURRENT=4 alone, at the first improvement's 64 samples per request (a
#: client setting: the steps run on one server, `--engine openai`).
CONCURRENT4 = Config.make("batch64_concurrency4", {"prompts_per_request": 64, "max_concurrency": 4})
STEPS = {"batch8_to_64": (BATCH8, BATCH64), "batch64_to_concurrency4": (BATCH64, CONCURRENT4)}


@pytest.mark.accuracy
def test_eval_throughput(llmperf):
    if llmperf.session.settings.engine not in HTTP_ENGINES:
        pytest.skip("an HTTP server's evaluation: run with --engine vllm-server or openai")
    task = GenerationTask.load(HERE / "data" / "sums_generation.jsonl", max_tokens=4, repeat=4)
    local_model = "tiny-trained" if llmperf.session.settings.model == "tiny" else None
    speedups = Speedups(rate="requests_per_s")
    for index, config in enumerate(ROWS):
        # The server serves its model under its own name; in process, hf loads the files.
        on_server = config.engine is None and llmperf.session.settings.engine == "openai"
        result = llmperf.measure(
            config,
            task,
            rounds=3,
            warmup_rounds=1,
            label=config.name,
            model=None if on_server else local_model,
            score=task.score,
            derived=lambda metrics, base=index == 0: speedups.metrics(metrics, is_base=base),
        )
        assert result.metrics.failures == 0
        assert result.metrics.requests == 3 * len(task.items)


@pytest.mark.longform
@pytest.mark.parametrize("step", list(STEPS))
def test_eval_step(llmperf, step):
    if llmperf.session.settings.engine != "openai":
        pytest.skip("A/B steps on one server: run with --engine openai --base-url URL")
    task = GenerationTask.load(HERE / "data" / "sums_generation.jsonl", max_tokens=4, repeat=4)
    a, b = STEPS[step]
    result = llmperf.compare(a, b, task, rounds=3, warmup_rounds=1)
    assert result.a.failures == result.b.failures == 0
    assert result.a.requests == result.b.requests == 3 * len(task.items)
