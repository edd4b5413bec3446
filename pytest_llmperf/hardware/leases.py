"""GPU leases: k GPUs from the run's set, never shared between workers or runs.

Each GPU has a lock file in a host-wide folder (`$LLMPERF_LOCK_DIR`, default
`<tmp>/llmperf-gpu-locks`), named by the machine's GPU index (not the CUDA index,
which depends on `CUDA_VISIBLE_DEVICES`). A lease holds an exclusive `flock` on each
of its GPUs' files, so two pytest-xdist workers, or two runs on one host, never get
the same GPU; the kernel drops the locks of a process that dies, so a crashed worker
leaks no lease. Leasing is all-or-nothing (a test that needs two GPUs never sits on
one while waiting for a second), and every wait is bounded.

Isolation check: before an engine starts on its leased GPUs, NVML must show no process
of anyone else on them and memory no higher than the GPU's baseline (what it used when
the run started) plus a slack; otherwise the lease waits, and past its bound fails
with the processes and memory it saw.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from pytest_llmperf.hardware.gpus import physical_indices

SLACK_BYTES = 512 * 1024**2


class LeaseError(RuntimeError):
    """No lease could be had within the bound, or the GPUs were not clean."""


def lock_dir() -> Path:
    path = Path(
        os.environ.get("LLMPERF_LOCK_DIR") or Path(tempfile.gettempdir()) / "llmperf-gpu-locks"
    )
    path.mkdir(parents=True, exist_ok=True)
    return path


@dataclass
class Lease:
    """GPUs held by this process: CUDA indices as this process numbers them.

    A lease owns the lock of each GPU in `_handles` (CUDA index -> its lock file); one
    made by `borrow` shares GPUs another lease holds and owns none until `hand_over`
    gives it their locks (a test's GPUs, kept by the engine started on them)."""

    gpus: tuple[int, ...]
    physical: tuple[int, ...]
    _handles: dict[int, IO[str]] = field(default_factory=dict, repr=False)

    def borrow(self, count: int) -> Lease:
        """A lease of this one's first `count` GPUs that owns no lock (yet)."""
        gpus = self.gpus[:count]
        return Lease(gpus, self.physical[:count])

    def hand_over(self, to: Lease) -> None:
        """Give `to` the locks of its GPUs that this lease holds."""
        for gpu in to.gpus:
            handle = self._handles.pop(gpu, None)
            if handle is not None:
                to._handles[gpu] = handle

    def release(self) -> None:
        for handle in self._handles.values():
            with contextlib.suppress(OSError):
                fcntl.flock(handle, fcntl.LOCK_UN)
            handle.close()
        self._handles.clear()


def _try_lock(physical_index: int) -> IO[str] | None:
    handle = open(lock_dir() / f"gpu-{physical_index}.lock", "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()}\n")
    handle.flush()
    return handle


def lease(
    count: int, candidates: Iterable[int], timeout_s: float = 3600.0, poll_s: float = 0.5
) -> Lease:
    """Lease `count` of the `candidates` (CUDA indices), waiting at most `timeout_s`."""
    pool = tuple(candidates)
    if count > len(pool):
        raise LeaseError(f"needs {count} GPU(s); the run has {len(pool)}")
    deadline = time.monotonic() + timeout_s
    while True:
        held: list[tuple[int, IO[str]]] = []
        for index in pool:
            handle = _try_lock(physical_indices((index,))[0])
            if handle is not None:
                held.append((index, handle))
                if len(held) == count:
                    gpus = tuple(i for i, _ in held)
                    return Lease(gpus, physical_indices(gpus), dict(held))
        for _, handle in held:  # all or nothing: give back a partial set before waiting
            fcntl.flock(handle, fcntl.LOCK_UN)
            handle.close()
        if time.monotonic() >= deadline:
            raise LeaseError(
                f"no {count} free GPU(s) among {list(pool)} after {timeout_s:.0f} s "
                f"(held by other workers or runs; see {lock_dir()})"
            )
        time.sleep(poll_s)


def gpu_processes(physical: Iterable[int]) -> dict[int, list[tuple[int, int]]]:
    """Every NVML compute process (pid, bytes) on each GPU."""
    return foreign_processes(physical, ours=set())


def foreign_processes(physical: Iterable[int], ours: set[int]) -> dict[int, list[tuple[int, int]]]:
    """NVML compute processes (pid, bytes) on each GPU that are not in `ours`."""
    try:
        import pynvml  # type: ignore[import-not-found, unused-ignore]

        pynvml.nvmlInit()
    except Exception:
        return {}
    try:
        found: dict[int, list[tuple[int, int]]] = {}
        for index in physical:
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            procs = pynvml.nvmlDeviceGetComputeRunningProcesses(handle)
            others = [(p.pid, int(p.usedGpuMemory or 0)) for p in procs if p.pid not in ours]
            if others:
                found[index] = others
        return found
    finally:
        pynvml.nvmlShutdown()


def wait_until_clean(
    physical: tuple[int, ...],
    baseline: dict[int, int] | None,
    timeout_s: float,
    ours: Callable[[int], bool] | None = None,
) -> None:
    """Wait until the GPUs run nobody else's processes and memory is back at baseline;
    `ours` tells the pids of this run's own processes besides this one (its engines')."""
    from pytest_llmperf.hardware.gpus import gpu_memory_used

    mine_too = ours or (lambda pid: False)
    deadline = time.monotonic() + timeout_s
    while True:
        used = gpu_memory_used(physical)
        procs = gpu_processes(physical)
        here = {
            i: [p for p in ps if p[0] == os.getpid() or mine_too(p[0])] for i, ps in procs.items()
        }
        others = {i: [p for p in ps if p not in here[i]] for i, ps in procs.items()}
        others = {i: ps for i, ps in others.items() if ps}
        # This run's own memory (a CUDA context an in-process engine keeps) is not
        # someone else's: compare what the others use with the baseline.
        mine = {i: sum(b for _, b in ps) for i, ps in here.items()}
        high = {
            i: u
            for i, u in (used or {}).items()
            if baseline is not None and u - mine.get(i, 0) > baseline.get(i, 0) + SLACK_BYTES
        }
        if not others and not high:
            return
        if time.monotonic() >= deadline:
            raise LeaseError(
                f"GPU(s) {list(physical)} not clean after {timeout_s:.0f} s: "
                f"other processes (gpu: [(pid, bytes)]) {others or 'none'}; "
                f"memory above baseline (bytes) {high or 'none'} (baseline {baseline})"
            )
        time.sleep(0.5)
