"""Seed 001: an evaluation against an inference HTTP server, sped up by sending more
samples per request, token ids instead of text and several requests at once, in samples/s
against the in-process Hugging Face baseline.

pytest suites/test_http_eval.py --engine vllm-server            # starts vLLM's server
pytest suites/test_http_eval.py --engine openai --base-url URL  # a server you started

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

from pytest_llmperf import GenerationTask, Grid, Speedups

HERE = Path(__file__).parent
ROWS = Grid.from_yaml(HERE / "grids" / "http_eval_seed001.yaml")
HTTP_ENGINES = ("openai", "vllm-server")


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
