"""Prompts and responses of a test, as a Parquet table people can open in pandas.

With `--llmperf-responses` every test that generates writes
`results/<run>/responses/<test>.parquet` when it finishes: one row per measured request
(every round), with what was asked and what came back beside its latencies. Off by
default: a large run's texts can outweigh everything else it writes.

Columns: `test_id`, `custom_id`, `round`, `prompt` (text, or the chat messages as
JSON, or null for token-id prompts), `prompt_token_ids` (when the prompt was given as
token ids), `reference`, `response`, `finish_reason`, `prompt_tokens`,
`output_tokens`, `ttft_ms`, `tpot_ms`, `e2e_ms`, `queue_ms`, `error`.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pytest_llmperf.engines.base import GenerationRequest
from pytest_llmperf.errors import LLMPerfUsageError
from pytest_llmperf.measure.metrics import RequestRecord


def responses_available() -> None:
    """Raise a usage error when pyarrow, which writes Parquet, is missing."""
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        raise LLMPerfUsageError(
            "--llmperf-responses: writing Parquet needs pyarrow: "
            "pip install 'pytest-llmperf[report]'"
        ) from None


def file_name(test_key: str) -> str:
    """A file name for a test id: readable, and unique through a short hash."""
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", test_key.rpartition("/")[2])[:120]
    digest = hashlib.sha256(test_key.encode()).hexdigest()[:8]
    return f"{readable}-{digest}.parquet"


def _prompt(request: GenerationRequest) -> str | None:
    if request.messages is not None:
        return json.dumps([dict(m) for m in request.messages], ensure_ascii=False)
    return request.prompt


def write_responses(
    run_dir: Path,
    test_key: str,
    requests: Sequence[GenerationRequest] | Callable[[int], Sequence[GenerationRequest]],
    records: Sequence[RequestRecord],
) -> Path:
    """Write the table; returns its path relative to `run_dir`. `requests` are what every
    round sent, or, for a workload that sends fresh requests each round (whose custom ids
    repeat from round to round), a function of the measured round's index giving its own."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rounds: dict[int, dict[str, GenerationRequest]] = {}

    def sent(record: RequestRecord) -> GenerationRequest | None:
        if not callable(requests):
            return by_id.get(record.custom_id)
        if record.round not in rounds:
            rounds[record.round] = {r.custom_id: r for r in requests(record.round)}
        return rounds[record.round].get(record.custom_id)

    by_id = {} if callable(requests) else {r.custom_id: r for r in requests}
    rows: list[dict[str, Any]] = []
    for record in records:
        request = sent(record)
        rows.append(
            {
                "test_id": test_key,
                "custom_id": record.custom_id,
                "round": record.round,
                "prompt": _prompt(request) if request else None,
                "prompt_token_ids": list(request.prompt_token_ids)
                if request and request.prompt_token_ids is not None
                else None,
                "reference": request.reference if request else None,
                "response": record.output_text,
                "finish_reason": record.finish_reason,
                "prompt_tokens": record.prompt_tokens,
                "output_tokens": record.output_tokens,
                "ttft_ms": record.ttft_ms,
                "tpot_ms": record.tpot_ms,
                "e2e_ms": record.e2e_ms,
                "queue_ms": record.queue_ms,
                "error": record.error,
            }
        )
    schema = pa.schema(
        [
            ("test_id", pa.string()),
            ("custom_id", pa.string()),
            ("round", pa.int32()),
            ("prompt", pa.string()),
            ("prompt_token_ids", pa.list_(pa.int64())),
            ("reference", pa.string()),
            ("response", pa.string()),
            ("finish_reason", pa.string()),
            ("prompt_tokens", pa.int64()),
            ("output_tokens", pa.int64()),
            ("ttft_ms", pa.float64()),
            ("tpot_ms", pa.float64()),
            ("e2e_ms", pa.float64()),
            ("queue_ms", pa.float64()),
            ("error", pa.string()),
        ]
    )
    relative = Path("responses") / file_name(test_key)
    path = run_dir / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), tmp)
    tmp.replace(path)  # never a half-written table under the real name
    return relative
