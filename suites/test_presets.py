"""Seed 002's presets (throughput, quality, stretch) for local inference with llama.cpp
and Ollama: each preset's quantization, context, max tokens and concurrency, on its
closed-book task (short questions, long answers) and open-book task (a passage of about 320
tokens, then the question).

pytest suites/test_presets.py -m longform --engine llamacpp                # tiny as GGUF
pytest suites/test_presets.py -m longform --engine llamacpp --model 8b-f16.gguf --gpus 0
pytest suites/test_presets.py -m longform --engine llamacpp-server         # llama-server
pytest suites/test_presets.py -m longform --engine openai --base-url http://127.0.0.1:11434 \
    --model llama3.1:8b-instruct-q4_K_M                                    # Ollama

Presets are `grids/presets_seed002.yaml`. With llama.cpp the quantization is applied here (the
model, written to GGUF or given as an F16 GGUF, is quantized to the preset's type, cached);
through Ollama it is part of the model's tag, so `--model` picks it. Each test asks the
first 16 questions of its task, answers free to end early (EOS) or at the preset's max
tokens: `length_stop_fraction` is the seed's truncation rate (`finish_reason=length`), beside
output tok/s and latency. Engines other than llama.cpp's and Ollama's are skipped.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_llmperf import DatasetWorkload, grid_params

DATA = Path(__file__).parent / "data"
TASKS = {
    "closed_book": DATA / "longform_answers.jsonl",
    "open_book": DATA / "open_book_questions.jsonl",
}
ENGINES = ("llamacpp", "llamacpp-server", "openai")
QUESTIONS = 16


@pytest.mark.longform
@pytest.mark.parametrize("config", grid_params("grids/presets_seed002.yaml"))
def test_preset(llmperf, config):
    if llmperf.session.settings.engine not in ENGINES:
        pytest.skip(
            "seed 002's presets are llama.cpp and Ollama settings: run with --engine "
            "llamacpp, llamacpp-server or openai (Ollama)"
        )
    task = next(kind for kind in TASKS if config.name.endswith(kind))
    result = llmperf.measure(
        config,
        DatasetWorkload(TASKS[task], limit=QUESTIONS),
        rounds=2,
        warmup_rounds=1,
    )
    assert result.metrics.failures == 0
    limit = dict(config.workload_settings)["max_new_tokens"]
    assert all(0 < r.output_tokens <= limit for r in result.records)
