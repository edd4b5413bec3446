"""Which GPUs a run may use: parsing `--gpus` and finding what is visible.

Finding GPUs never imports torch (CUDA must not start before the engine's process
is pinned): it asks NVML through `nvidia-ml-py` when installed, and reads
`CUDA_VISIBLE_DEVICES` the way CUDA does.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pytest_llmperf.errors import LLMPerfUsageError


@dataclass(frozen=True)
class GpuInfo:
    index: int
    name: str
    memory_total_bytes: int
    driver: str


def parse_gpus(text: str, source: str = "--gpus") -> tuple[int, ...] | None:
    """`"0,1"` -> (0, 1); `"cpu"` or `"none"` -> (); `""` or `"auto"` -> None (visible)."""
    value = text.strip().lower()
    if value in ("", "auto"):
        return None
    if value in ("cpu", "none"):
        return ()
    indices: list[int] = []
    for part in value.split(","):
        part = part.strip()
        if not part.isdigit():
            raise LLMPerfUsageError(
                f"{source}: {text!r} is not a list of GPU indices "
                f"(expected e.g. '0,1', 'cpu' or 'auto'; bad item {part!r})"
            )
        index = int(part)
        if index in indices:
            raise LLMPerfUsageError(f"{source}: GPU {index} is listed twice in {text!r}")
        indices.append(index)
    return tuple(indices)


def _nvml_gpus() -> list[GpuInfo]:
    try:
        import pynvml  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        return []
    try:
        pynvml.nvmlInit()
    except Exception:  # no driver: a CPU machine with the package installed
        return []
    try:
        driver = pynvml.nvmlSystemGetDriverVersion()
        gpus = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            name = pynvml.nvmlDeviceGetName(handle)
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle).total
            gpus.append(GpuInfo(i, _text(name), int(memory), _text(driver)))
        return gpus
    finally:
        pynvml.nvmlShutdown()


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def visible_gpus() -> list[GpuInfo]:
    """GPUs this process may see, renumbered as CUDA will number them."""
    physical = _nvml_gpus()
    mask = os.environ.get("CUDA_VISIBLE_DEVICES")
    if mask is None:
        return physical
    visible = []
    for position, item in enumerate(p for p in mask.split(",") if p.strip()):
        item = item.strip()
        if not item.isdigit() or int(item) >= len(physical):
            break  # CUDA stops at the first invalid entry
        gpu = physical[int(item)]
        visible.append(GpuInfo(position, gpu.name, gpu.memory_total_bytes, gpu.driver))
    return visible


def select_gpus(
    requested: tuple[int, ...] | None, visible: list[GpuInfo], source: str = "--gpus"
) -> tuple[int, ...]:
    """The run's GPU set: `requested` (from `source`) checked against what is visible."""
    available = tuple(g.index for g in visible)
    if requested is None:
        return available
    missing = [i for i in requested if i not in available]
    if missing:
        shown = ",".join(map(str, available)) or "none"
        raise LLMPerfUsageError(
            f"{source}: GPU {','.join(map(str, missing))} is not visible (visible GPUs: {shown})"
        )
    return requested


def physical_indices(cuda_indices: tuple[int, ...]) -> tuple[int, ...]:
    """Map this process's CUDA indices to the machine's (NVML) indices via the mask."""
    mask = os.environ.get("CUDA_VISIBLE_DEVICES")
    if mask is None:
        return cuda_indices
    items = [p.strip() for p in mask.split(",") if p.strip()]
    return tuple(int(items[i]) for i in cuda_indices if i < len(items) and items[i].isdigit())


def gpu_memory_used(physical: tuple[int, ...]) -> dict[int, int] | None:
    """Memory in use on each GPU (bytes), or None where NVML is not available."""
    return _memory(physical, "used")


def gpu_memory_free(physical: tuple[int, ...]) -> dict[int, int] | None:
    """Memory free on each GPU (bytes), or None where NVML is not available."""
    return _memory(physical, "free")


def _memory(physical: tuple[int, ...], which: str) -> dict[int, int] | None:
    if not physical:
        return None
    try:
        import pynvml  # type: ignore[import-not-found, unused-ignore]

        pynvml.nvmlInit()
    except Exception:
        return None
    try:
        return {
            i: int(
                getattr(pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(i)), which)
            )
            for i in physical
        }
    finally:
        pynvml.nvmlShutdown()


def marker_gpu_count(nodeid: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> int:
    """The count of a `gpu(n=1)` marker, checked: one positive integer, given as `gpu(2)`
    or `gpu(n=2)`; `allow_cpu=True` (for `llmperf_gpus`) runs the test on a run without
    GPUs instead of skipping it."""
    shown = ", ".join([*map(repr, args), *(f"{k}={v!r}" for k, v in kwargs.items())])
    here = f"{nodeid}: marker gpu({shown})"
    allow = kwargs.get("allow_cpu", False)
    if not isinstance(allow, bool):
        raise LLMPerfUsageError(f"{here}: allow_cpu must be True or False")
    counted = {k: v for k, v in kwargs.items() if k != "allow_cpu"}
    if set(counted) - {"n"} or len(args) + len(counted) > 1:
        raise LLMPerfUsageError(f"{here}: takes one GPU count, e.g. gpu(2) or gpu(n=2)")
    n = args[0] if args else kwargs.get("n", 1)
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise LLMPerfUsageError(f"{here}: the GPU count must be a positive integer")
    return n
