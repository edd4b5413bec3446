"""Where each test of a run measured: its host, as its record says (`TestRecord.host`).

Under xdist a run's workers may be on several machines (`--tx ssh=...`), or in several
folders of one; the terminal summary groups tests by where they ran and says, for each
place, its workers and GPUs. A place is named by its host name alone, unless several places
share one (workers in other folders, or logged in as other users): then by
`user@host:folder`.
"""

from __future__ import annotations

from collections.abc import Sequence

from pytest_llmperf.results.record import TestRecord

#: The label of a test whose record has no host (written before records kept it).
UNKNOWN = "?"


def _place(test: TestRecord) -> tuple[str, str, str]:
    host = test.host
    return (str(host.get("hostname") or UNKNOWN), str(host.get("user")), str(host.get("cwd")))


def host_labels(tests: Sequence[TestRecord]) -> dict[str, str]:
    """Each test's place (by `test_id`), as the summary shows it."""
    places = {_place(t) for t in tests}
    hostnames = [name for name, _, _ in places]
    labels: dict[str, str] = {}
    for test in tests:
        name, user, cwd = _place(test)
        shared = hostnames.count(name) > 1 and name != UNKNOWN
        labels[test.test_id] = f"{user}@{name}:{cwd}" if shared else name
    return labels


def grouped(tests: Sequence[TestRecord]) -> list[tuple[str, list[TestRecord]]]:
    """The tests by place, places and tests in the order they first finished."""
    labels = host_labels(tests)
    groups: dict[str, list[TestRecord]] = {}
    for test in tests:
        groups.setdefault(labels[test.test_id], []).append(test)
    return list(groups.items())


def host_lines(tests: Sequence[TestRecord]) -> list[str]:
    """One line per place: its workers, tests and GPUs (and where they were chosen)."""
    lines = []
    for label, group in grouped(tests):
        workers = sorted({t.worker for t in group if t.worker})
        first = group[0].host
        gpus = ",".join(str(g) for g in first.get("run_gpus") or ()) or "none"
        source = first.get("gpus_source")
        lines.append(
            f"host {label}: {len(group)} test(s)"
            + (f" on {', '.join(workers)}" if workers else "")
            + f"; GPUs {gpus}"
            + (f" ({source})" if source else "")
        )
    return lines
