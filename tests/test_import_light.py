"""`import pytest_llmperf` and plugin start-up must not import torch, transformers or vllm."""

from __future__ import annotations

import subprocess
import sys


def test_import_and_plugin_load_import_no_heavy_packages() -> None:
    code = (
        "import sys, pytest_llmperf, pytest_llmperf.plugin.hooks;"
        "print(sorted(m for m in ('torch', 'transformers', 'vllm', 'pandas', 'pyarrow', 'matplotlib', 'streamlit') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
