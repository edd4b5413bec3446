"""The batch-1 Triton decode step (`engines/triton_decode.py`): which models take it, and
its kernels against transformers' arithmetic (tests/kernel_checks/, run in a child pytest:
compiled on a CUDA GPU, under Triton's interpreter on the CPU)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_decode_step import random_llama

from pytest_llmperf.engines.hf.triton import decode as triton_decode

CHECKS = Path(__file__).parent / "kernel_checks" / "check_triton_decode.py"


def test_the_kernels_compute_what_transformers_computes() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_XDIST")}
    if not torch.cuda.is_available():
        env["TRITON_INTERPRET"] = "1"  # read when triton is imported: hence a child run
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(CHECKS)],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        cwd=Path(__file__).parents[1],
    )
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    assert "25 passed" in done.stdout


@pytest.mark.parametrize(
    "extra, takes",
    [
        ({}, True),
        ({"attention_bias": True}, False),  # biases: not in the kernels
        ({"hidden_act": "gelu"}, False),
        ({"rope_parameters": {"rope_type": "dynamic", "factor": 2.0}}, False),  # length-dependent
        ({"head_dim": 12}, False),  # tl.arange needs a power of two
        ({"intermediate_size": 96}, False),  # reductions in power-of-two chunks
    ],
)
def test_which_models_take_the_kernel_step(extra: dict[str, object], takes: bool) -> None:
    assert triton_decode.supports(random_llama(1, **extra)) is takes


def test_a_bfloat16_model_with_a_float32_norm_does_not() -> None:
    model = random_llama(1).to(torch.bfloat16)
    assert triton_decode.supports(model)
    model.model.layers[1].input_layernorm.float()
    assert not triton_decode.supports(model)
