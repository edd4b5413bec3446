"""The tests a killed run was measuring when it died, rebuilt from their request records.

A test's record is appended when its measurement ends (`writer`); its requests are
appended round by round. A run killed in the middle of a test leaves that test's measured
rounds in `requests.jsonl` and no line in `tests.jsonl`, so it read as a run of 0 tests
while holding dozens of request records. `cut_short_tests` makes a record for each such
test from its requests: counts, failures and the latency distributions of the rounds it
finished. Its throughputs are null (the rounds' durations are not in the request records),
its workload says `cut short`, no threshold was checked, and it is unreliable as a whole
(`measure.reliability`'s `*`), so that no bound or baseline is ever made of it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pytest_llmperf.measure.metrics import AggregateMetrics, RequestRecord, flatten
from pytest_llmperf.measure.reliability import EVERY_METRIC
from pytest_llmperf.results.record import (
    ConfigRecord,
    EngineConfigRecord,
    EngineInfoRecord,
    TestRecord,
    ThresholdsRecord,
)

#: The workload `kind` of a rebuilt test.
CUT_SHORT = "cut short"
#: Metrics a rebuilt test cannot know: rates need the rounds' durations.
_NEEDS_DURATIONS = ("duration_s", "output_tok_per_s", "total_tok_per_s", "requests_per_s")
_REQUEST_FIELDS = tuple(RequestRecord.__dataclass_fields__)


def is_cut_short(test: TestRecord) -> bool:
    return test.workload.get("kind") == CUT_SHORT


def cut_short_tests(
    requests: Sequence[Mapping[str, Any]],
    finished: Sequence[TestRecord],
    settings: Mapping[str, Any],
    finished_at: str,
) -> list[TestRecord]:
    """A record for each test with request records and no test record, in the order its
    requests were written; `settings` is the run's (`run.json`), for engine and model."""
    done = {t.test_id for t in finished}
    by_test: dict[str, list[Mapping[str, Any]]] = {}
    for request in requests:
        test_id = request.get("test_id")
        if isinstance(test_id, str) and test_id not in done:
            by_test.setdefault(test_id, []).append(request)
    return [_record(t, rs, settings, finished_at) for t, rs in by_test.items()]


def _record(
    test_id: str,
    requests: Sequence[Mapping[str, Any]],
    settings: Mapping[str, Any],
    finished_at: str,
) -> TestRecord:
    records = [read_request(r) for r in requests]
    metrics = AggregateMetrics.from_records(records, []).as_dict()
    metrics.update(dict.fromkeys(_NEEDS_DURATIONS))
    rounds = len({r.round for r in records})
    engine, model = str(settings.get("engine") or "?"), str(settings.get("model") or "?")
    return TestRecord(
        test_id=test_id,
        threshold_key=test_id,
        config=ConfigRecord("?", None, {}, {}, ()),
        engine=engine,
        engine_config=EngineConfigRecord(engine, model, (), {}),
        engine_info=EngineInfoRecord(engine, model, "?", None, {}),
        engine_load_s=None,
        workload={
            "kind": CUT_SHORT,
            "note": f"the run ended during this test: {len(records)} request record(s) of "
            f"{rounds} measured round(s) rebuilt; throughputs unknown",
        },
        rounds=rounds,
        warmup_rounds=0,
        worker=None,
        worker_pid=None,
        gpus=None,
        finished_at=finished_at,
        metrics=metrics,
        metrics_flat=flatten(metrics),
        thresholds=ThresholdsRecord(passed=True, checked=()),
        baseline=None,
        responses=None,
        unreliable={EVERY_METRIC: "cut short: the test did not finish"},
    )


def read_request(data: Mapping[str, Any]) -> RequestRecord:
    """A request record as written (`RequestRecord.as_dict`), read back; a record that is
    not one is a TypeError or ValueError the caller names the run for."""
    fields = {k: v for k, v in data.items() if k in _REQUEST_FIELDS}
    fields["itl_ms"] = tuple(fields.get("itl_ms") or ())
    record = RequestRecord(**fields)
    if not isinstance(record.round, int) or not isinstance(record.output_tokens, int):
        raise ValueError(f"request {record.custom_id!r}: round and output_tokens must be numbers")
    return record
