"""pytest-llmperf: LLM-inference benchmarks as pytest test suites.

Importing this package stays light (no torch, transformers or vllm) so that
`pytest --help` is fast and GPUs can be pinned before CUDA starts.
"""

from __future__ import annotations

from pytest_llmperf.engines.base import (
    Engine,
    EngineConfig,
    GenerationRequest,
    SamplingParams,
    StreamChunk,
)
from pytest_llmperf.measure.metrics import MetricSpec
from pytest_llmperf.measure.prefill_decode import pp_metrics, tg_metrics
from pytest_llmperf.models.gguf import gguf_model
from pytest_llmperf.suite.accuracy import ChoiceTask, GenerationTask
from pytest_llmperf.suite.conversation import ConversationWorkload
from pytest_llmperf.suite.grid import Config, Grid, grid_params
from pytest_llmperf.suite.load import SLO, Arrivals
from pytest_llmperf.suite.scaling import ScalingSeries, Speedups, workers_config
from pytest_llmperf.suite.shared_prefix import SharedPrefixWorkload
from pytest_llmperf.suite.split import LoadShare, split_load
from pytest_llmperf.suite.trace import TraceWorkload
from pytest_llmperf.suite.workload import DatasetWorkload, SyntheticWorkload, Workload
from pytest_llmperf.suite.workload_stats import coverage, covering_limit, reference_lengths
from pytest_llmperf.version import __version__

__all__ = [
    "SLO",
    "Arrivals",
    "ChoiceTask",
    "Config",
    "ConversationWorkload",
    "DatasetWorkload",
    "Engine",
    "EngineConfig",
    "GenerationRequest",
    "GenerationTask",
    "Grid",
    "LoadShare",
    "MetricSpec",
    "SamplingParams",
    "ScalingSeries",
    "SharedPrefixWorkload",
    "Speedups",
    "StreamChunk",
    "SyntheticWorkload",
    "TraceWorkload",
    "Workload",
    "__version__",
    "coverage",
    "covering_limit",
    "gguf_model",
    "grid_params",
    "pp_metrics",
    "reference_lengths",
    "split_load",
    "tg_metrics",
    "workers_config",
]
