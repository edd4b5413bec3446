"""`llmperf_gpus` on a real GPU (the lead runs these on an H100; skipped without CUDA): the
lease, the isolation check, and a tensor left on the GPU failing its test."""

from __future__ import annotations

import importlib.util

import pytest

from pytest_llmperf.hardware.gpus import visible_gpus

pytestmark = pytest.mark.skipif(not visible_gpus(), reason="needs an NVIDIA GPU (NVML)")

GPU_TESTS = """
import subprocess, sys
import pytest
import torch

KEPT = []

def test_frees_what_it_used(llmperf_gpus):
    x = torch.ones(256, 1024, 1024, device=llmperf_gpus.devices[0])  # 1 GiB
    assert float(x.sum()) == 256 * 1024 * 1024

def test_keeps_a_tensor(llmperf_gpus):
    KEPT.append(torch.ones(512, 1024, 1024, device=llmperf_gpus.devices[0]))  # 2 GiB

def test_a_child_sees_only_its_gpu(llmperf_gpus):
    out = subprocess.run(
        [sys.executable, "-c", "import torch; print(torch.cuda.device_count())"],
        env=llmperf_gpus.env(), capture_output=True, text=True, check=True,
    )
    assert out.stdout.strip() == str(len(llmperf_gpus.cuda))
    assert llmperf_gpus.visible_devices == ",".join(map(str, llmperf_gpus.physical))

def test_times_on_the_gpu(llmperf_gpus, llmperf):
    x = torch.randn(2048, 2048, device=llmperf_gpus.devices[0])
    timing = llmperf.time(torch.matmul, x, x, rounds=5)
    assert timing.metrics["call_s"] > 0
"""


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["serial", "xdist"])
def test_llmperf_gpus_on_a_gpu(pytester: pytest.Pytester, workers: list[str]) -> None:
    # Not importorskip: pytester drops modules imported during a test, and torch cannot be
    # imported twice in one process.
    if importlib.util.find_spec("torch") is None:
        pytest.skip("needs torch")
    pytester.makepyfile(test_gpu=GPU_TESTS)
    # In a child process: pytester's in-process run would import torch a second time.
    result = pytester.runpytest_subprocess("--gpus=0", *workers)
    result.assert_outcomes(passed=4, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*test_gpu.py::test_keeps_a_tensor left behind:*",
            "*GPU 0 (physical *): * MiB more in use than before the test*torch still holds "
            "2,048 MiB in tensors*",
        ]
    )
