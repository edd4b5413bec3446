"""GPU leases across real pytest-xdist workers and processes, with the real file locks.

GPU indices need no CUDA: a lease is a lock on a file named by the GPU's index, so the
coordinator is tested here on a CPU machine exactly as it runs on a GPU host.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pytest_llmperf.hardware.leases import LeaseError, lease
from pytest_llmperf.hardware.telemetry import NULL_TELEMETRY, Sampler


@pytest.fixture(autouse=True)
def private_lock_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LLMPERF_LOCK_DIR", str(tmp_path / "locks"))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    return tmp_path / "locks"


def test_all_or_nothing_and_release() -> None:
    first = lease(1, (0, 1), timeout_s=1)
    assert first.gpus == (0,)
    with pytest.raises(LeaseError, match="no 2 free GPU"):
        lease(2, (0, 1), timeout_s=0.5, poll_s=0.1)
    second = lease(1, (0, 1), timeout_s=1)
    assert second.gpus == (1,)  # GPU 1 was not left locked by the failed attempt
    first.release()
    third = lease(1, (0, 1), timeout_s=1)
    assert third.gpus == (0,)
    second.release()
    third.release()
    with pytest.raises(LeaseError, match="needs 3 GPU"):
        lease(3, (0, 1))


def test_a_killed_holder_leaks_no_lease(private_lock_dir: Path) -> None:
    code = (
        "import time; from pytest_llmperf.hardware.leases import lease; "
        "l = lease(2, (0, 1)); print('held', flush=True); time.sleep(60)"
    )
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    with pytest.raises(LeaseError):
        lease(1, (0, 1), timeout_s=0.3, poll_s=0.1)
    holder.kill()
    holder.wait()
    both = lease(2, (0, 1), timeout_s=2)
    assert both.gpus == (0, 1)
    both.release()
    holder.stdout.close()


def test_xdist_workers_never_share_a_gpu(pytester: pytest.Pytester, private_lock_dir: Path) -> None:
    log = pytester.path / "leases.jsonl"
    pytester.makepyfile(
        test_lease=f"""
        import json, os, time
        import pytest
        from pytest_llmperf.hardware.leases import lease

        @pytest.mark.parametrize("i", range(8))
        def test_hold(i):
            held = lease(1, (0, 1), timeout_s=60, poll_s=0.02)
            start = time.monotonic()
            time.sleep(0.2)
            end = time.monotonic()
            held.release()
            with open({str(log)!r}, "a") as f:
                f.write(json.dumps({{"gpu": held.gpus[0], "start": start, "end": end,
                                    "worker": os.environ["PYTEST_XDIST_WORKER"]}}) + "\\n")
    """
    )
    result = pytester.runpytest("-n", "3", "-p", "no:llmperf")
    result.assert_outcomes(passed=8)
    spans = [json.loads(line) for line in log.read_text().splitlines()]
    assert {s["worker"] for s in spans} == {"gw0", "gw1", "gw2"}
    assert {s["gpu"] for s in spans} == {0, 1}
    for gpu in (0, 1):
        mine = sorted((s["start"], s["end"]) for s in spans if s["gpu"] == gpu)
        assert all(a_end <= b_start for (_, a_end), (b_start, _) in itertools.pairwise(mine))


def test_telemetry_is_null_without_nvml() -> None:
    for gpus in ((), (0,)):
        sampler = Sampler(gpus)
        sampler.start()
        time.sleep(0.05)
        assert sampler.stop(output_tokens=100) == NULL_TELEMETRY
