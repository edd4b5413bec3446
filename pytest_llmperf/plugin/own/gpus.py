"""`llmperf_gpus`: the GPUs a test's own code runs on, leased for the test and checked
before and after it.

Before the test: its `gpu(n)` mark's count (1 without one) is leased from the run's set
with the engines' host-wide leases (`hardware.leases`: never shared between xdist workers
or runs), and the GPUs must be clean: no process of anyone else's, memory at the run's
starting baseline (waiting up to `CLEAN_TIMEOUT_S`). A GPU the loaded engine holds is not
leased twice: the engine is closed first when the free GPUs are too few. Then this
process's CUDA context is started on them (with torch, where installed) and the memory in
use is taken as the test's baseline, so that the context the test's code would start is
not counted as a leak.

After the test (its other fixtures torn down): `gc.collect()`, and where this process
runs CUDA, a synchronize and `torch.cuda.empty_cache()`; then a leak is
    - a process the test started and left alive (a descendant of this process that was
      not there before, not the run's engine or server): it is ended;
    - memory on a GPU beyond the baseline, less the memory an engine started during the
      test took (NVML, before and after its start; the plugin's engines stay loaded for
      the next test of their configuration), past `LEAK_TOLERANCE_BYTES` (CUDA loads
      kernels and library workspaces lazily, so a context grows a little as it is used).
The test fails at teardown (pytest reports an error) naming each leak and, for memory,
what torch still holds in tensors. On a run without GPUs the test is skipped with the
reason, unless its mark allows the CPU (`gpu(allow_cpu=True)`): then it runs with no
GPU (`devices == ("cpu",)`), and the leftover-process check still applies.
"""

from __future__ import annotations

import gc
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pytest

from pytest_llmperf.hardware.gpus import gpu_memory_used, marker_gpu_count, physical_indices
from pytest_llmperf.hardware.leases import Lease, LeaseError, gpu_processes, lease
from pytest_llmperf.hardware.leases import wait_until_clean as wait_clean
from pytest_llmperf.procs import children
from pytest_llmperf.procs.reaper import reaper

if TYPE_CHECKING:
    from pytest_llmperf.plugin.session import LLMPerfSession

#: Memory a GPU may hold after a test beyond its baseline without it being a leak.
LEAK_TOLERANCE_BYTES = 256 * 1024**2
#: How long leased GPUs may take to become clean before the test errors.
CLEAN_TIMEOUT_S = 120.0


@dataclass
class TestGpus:
    """What `llmperf_gpus` gives a test: its GPUs three ways, and the lease behind them."""

    __test__ = False  # a class named Test*: not for pytest to collect

    #: As this process's CUDA numbers them (`torch.device(f"cuda:{i}")`).
    cuda: tuple[int, ...]
    #: As NVML (and `nvidia-smi`) numbers them.
    physical: tuple[int, ...]
    #: `torch` device strings: `("cuda:0",)`, or `("cpu",)` on a CPU run.
    devices: tuple[str, ...]
    #: The `CUDA_VISIBLE_DEVICES` value that gives a child process exactly these GPUs
    #: (physical indices; "" on a CPU run).
    visible_devices: str
    lease: Lease | None = field(default=None, repr=False)

    def env(self) -> dict[str, str]:
        """This process's environment with `CUDA_VISIBLE_DEVICES` set for a child."""
        return {**os.environ, "CUDA_VISIBLE_DEVICES": self.visible_devices}


CPU_ONLY = TestGpus((), (), ("cpu",), "")


def wanted(item: pytest.Item) -> tuple[int, bool]:
    """The GPUs a test's marks ask for (1 without a mark) and whether the CPU will do."""
    marks = list(item.iter_markers("gpu"))
    counts = [marker_gpu_count(item.nodeid, m.args, m.kwargs) for m in marks]
    allow_cpu = any(m.kwargs.get("allow_cpu") is True for m in marks)
    return max(counts, default=1), allow_cpu


def lease_for_test(session: LLMPerfSession, count: int, timeout_s: float) -> TestGpus:
    """Lease `count` GPUs of the run for one test, clean (see the module docstring)."""
    held = session.lease
    free = [g for g in session.gpus if held is None or g not in held.gpus]
    if len(free) < count and held is not None:
        session.close_engine()  # its GPUs are needed: it reloads for its next test
        free = list(session.gpus)
    got: Lease | None = None
    try:
        got = lease(count, free, timeout_s)
        timeout = min(CLEAN_TIMEOUT_S, timeout_s)
        wait_clean(got.physical, session.gpu_baseline, timeout, run_owns(session.is_controller))
    except LeaseError as exc:
        if got is not None:
            got.release()
        raise pytest.fail.Exception(f"llmperf_gpus: GPU lease: {exc}", pytrace=False) from None
    return TestGpus(
        got.gpus,
        got.physical,
        tuple(f"cuda:{i}" for i in got.gpus),
        ",".join(map(str, physical_indices(got.gpus))),
        got,
    )


def run_owns(controller: bool) -> Callable[[int], bool]:
    """Whether a pid is this run's own: its engines' and servers' groups, and under xdist
    the sibling workers (their CUDA contexts outlive their tests; their leases kept them
    off this test's GPUs meanwhile)."""
    controller_pid = None if controller else os.getppid()

    def owns(pid: int) -> bool:
        if reaper.owns(pid):
            return True
        return controller_pid is not None and children.parent_of(pid) == controller_pid

    return owns


def start_cuda(gpus: TestGpus) -> None:
    """Start this process's CUDA context on each GPU (torch, where installed), so that the
    baseline taken next includes it."""
    if not gpus.cuda:
        return
    try:
        import torch
    except ImportError:  # code without torch starts its own context, or none
        return
    for index in gpus.cuda:
        torch.zeros(1, device=f"cuda:{index}")
    release_cached()


def release_cached() -> None:
    """Drop what is unreferenced: Python's garbage, and torch's cached CUDA blocks."""
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()
        torch.cuda.empty_cache()


@dataclass(frozen=True)
class Before:
    """What the release check compares with: the test's start."""

    memory: dict[int, int] | None
    children: set[int]
    engine_starts: int


def before_test(gpus: TestGpus, engine_starts: int) -> Before:
    start_cuda(gpus)
    return Before(gpu_memory_used(gpus.physical), set(children.descendants()), engine_starts)


def leaks(gpus: TestGpus, before: Before, engine_memory: dict[int, int] | None) -> list[str]:
    """What the test left behind (see the module docstring); the processes are ended."""
    problems = []
    left = children.left_behind(before.children)
    for child in left:
        problems.append(f"process left alive: pid {child.pid} ({child.command[:200]}); ended")
    children.end(left)
    release_cached()
    now = gpu_memory_used(gpus.physical)
    if before.memory is None or now is None:
        return problems
    held = _torch_allocated(gpus)
    for cuda, physical in zip(gpus.cuda, gpus.physical, strict=True):
        engine = (engine_memory or {}).get(physical, 0)
        above = now[physical] - before.memory[physical] - engine
        if above > LEAK_TOLERANCE_BYTES:
            tensors = held.get(cuda)
            says = f"; torch still holds {format_bytes(tensors)} in tensors" if tensors else ""
            procs = gpu_processes((physical,)).get(physical, [])
            problems.append(
                f"GPU {cuda} (physical {physical}): {format_bytes(above)} more in use than "
                f"before the test (tolerance {format_bytes(LEAK_TOLERANCE_BYTES)}; "
                f"engines excluded: {format_bytes(engine)}){says}; processes (pid, bytes) "
                f"{procs or 'none'}"
            )
    return problems


def _torch_allocated(gpus: TestGpus) -> dict[int, int]:
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return {}
    return {i: int(torch.cuda.memory_allocated(i)) for i in gpus.cuda}


def format_bytes(count: int | None) -> str:
    return "0 B" if not count else f"{count / 1024**2:,.0f} MiB"
