"""The CPU threads a run measures with, and how xdist workers share the cores of a CPU run.

CPU speed depends on how many threads compete for the cores: the same hf test measured
2,392 tok/s alone and 88 tok/s minutes later beside other work, and two xdist workers on
two cores each measured about a quarter of one worker alone. torch's thread pools are
per process (`torch.set_num_threads`), sized once from `OMP_NUM_THREADS` or the CPU count,
and OpenMP threads that outnumber the cores spin against each other.

What is recorded (`thread_environment`, in `run.json` under `threads` and, per xdist
worker, under `threads.workers`): `OMP_NUM_THREADS`, `MKL_NUM_THREADS`, torch's intra-op
and inter-op thread counts where torch is loaded in the process (never imported for it),
and the CPUs the process may run on (`os.sched_getaffinity`).

Under pytest-xdist on a CPU run, the controller splits the CPUs the run may use between
the workers (`cpu_shares`: contiguous, equal shares) and each worker pins itself to its
share and sizes OpenMP (and so torch) to it (`apply_share`) before any engine loads, so
two measured tests never compete for one core. With fewer CPUs than workers no split is
possible: the shares are None and the terminal summary warns that measured tests shared
cores.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any

#: Variables that size OpenMP's and MKL's thread pools (torch's intra-op pool among them).
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def usable_cpus() -> tuple[int, ...]:
    """The CPUs this process may run on (its affinity mask), else every CPU."""
    try:
        return tuple(sorted(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # no affinity API (macOS, Windows)
        return tuple(range(os.cpu_count() or 1))


def thread_environment() -> dict[str, Any]:
    """The thread settings of this process, as `run.json` records them."""
    torch = sys.modules.get("torch")  # only where torch is loaded: importing it costs seconds
    intra = inter = None
    if torch is not None and hasattr(torch, "get_num_threads"):
        intra, inter = int(torch.get_num_threads()), int(torch.get_num_interop_threads())
    cpus = usable_cpus()
    return {
        **{name.lower(): os.environ.get(name) for name in THREAD_VARIABLES},
        "torch_num_threads": intra,
        "torch_num_interop_threads": inter,
        "cpus_allowed": list(cpus),
        "cpus_allowed_count": len(cpus),
        "cpu_count": os.cpu_count(),
    }


def cpu_shares(cpus: Sequence[int], workers: int) -> list[tuple[int, ...]] | None:
    """Each of `workers` xdist workers' CPUs: equal contiguous shares of `cpus` (a
    remainder left unused, so that shares are equal and numbers comparable); None when
    there are fewer CPUs than workers, so that no split can keep them apart."""
    if workers < 1 or len(cpus) < workers:
        return None
    size = len(cpus) // workers
    return [tuple(cpus[i * size : (i + 1) * size]) for i in range(workers)]


def apply_share(cpus: Sequence[int]) -> dict[str, Any]:
    """Pin this process (and the processes it starts) to `cpus` and size OpenMP, MKL and
    torch to them, unless the user sized them (`OMP_NUM_THREADS` set is kept). Returns
    what was applied, for the record. Called in an xdist worker before any engine loads."""
    applied: dict[str, Any] = {"cpus": list(cpus)}
    try:
        os.sched_setaffinity(0, cpus)
    except (AttributeError, OSError) as exc:  # no affinity API: threads are still sized
        applied["affinity_error"] = str(exc)
    for name in THREAD_VARIABLES:
        if os.environ.get(name):
            applied[f"{name.lower()}_kept"] = os.environ[name]
        else:
            os.environ[name] = str(len(cpus))
    torch = sys.modules.get("torch")  # a conftest may have loaded it before us
    if torch is not None and hasattr(torch, "set_num_threads"):
        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    return applied
