"""The "hf-fast" engine: the reference decoder. A transformers model, loaded, tokenized and
scored as the `hf` engine does (`hf.common`), decoded through our own loop (`hf.decode`):
what these weights can do on this GPU, read beside `mbu` and `weights_bound_tok_per_s`
(`measure/bandwidth.py`), so that transformers' `generate` (the `hf` engine) or any other
engine is read against the hardware.

Settings beyond the shared ones (declared in `engines/hf/spec.py`, `HF_FAST`):
- `attn_implementation`: unset, sdpa, and on CUDA sdpa with grouped-query decode steps that
  do not copy the KV cache per query head (`grouped_attention`; naming "sdpa" gives
  transformers' own).
- `cuda_graphs`: on CUDA, decode greedy batches through a static KV cache and one captured
  CUDA graph per step (`hf.graph`). Off, on the CPU, or for sampled batches, the eager loop
  runs.
- `compile`: compile the captured step with torch.compile first (Inductor fuses the
  layer's small kernels). Building a graph takes tens of seconds per batch bucket,
  reported as the test's `graph_build_s`, outside the measured rounds when the warm-up
  round saw the same shapes.
- `fuse_projections`: on the CUDA-graph path, decode Llama-structured models through one
  Q/K/V and one gate/up matrix per layer (`llama_step`; the weights are re-pointed, not
  copied). Other models, or off, decode through transformers' forward.
- `triton_kernels`: with `fuse_projections`, batch-1 graphs of Llama-structured models run
  hand-written Triton kernels (`triton_decode`: five a layer, norms, rotary embedding,
  cache writes, SwiGLU and residual adds fused in) instead of the compiled step.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

from pytest_llmperf.engines.base import EngineConfig, StreamChunk
from pytest_llmperf.engines.hf import grouped_attention
from pytest_llmperf.engines.hf.common import HFEngineBase, flash_fallback
from pytest_llmperf.engines.hf.decode import decode_batch
from pytest_llmperf.engines.hf.graph import GraphCache
from pytest_llmperf.engines.hf.rows import Row
from pytest_llmperf.engines.hf.spec import HF_FAST
from pytest_llmperf.engines.spec import EngineSpec


class HFFastEngine(HFEngineBase):
    """The reference decoder on one device. See the module docstring for settings."""

    name: ClassVar[str] = "hf-fast"
    spec: ClassVar[EngineSpec] = HF_FAST

    def __init__(self, config: EngineConfig) -> None:
        super().__init__(config)
        self._graphs: GraphCache | None = None

    def _attention(self, asked: str | None) -> tuple[str | None, str | None]:
        if asked is None:
            on_cuda = self._device.startswith("cuda")
            return (grouped_attention.register() if on_cuda else "sdpa"), None
        if asked == grouped_attention.NAME:
            return grouped_attention.register(), None
        return flash_fallback(asked, self._device, self.name)

    def _prepare(self, model: Any) -> dict[str, Any]:
        settings = self.settings
        if self._device.startswith("cuda") and settings["cuda_graphs"]:
            self._graphs = GraphCache(
                model,
                compile_step=settings["compile"],
                fuse_projections=settings["fuse_projections"],
                triton_kernels=settings["triton_kernels"],
            )
        return {"decode_path": _decode_path(self._graphs)}

    def _decode(self, rows: list[Row]) -> Iterator[StreamChunk]:
        assert self._tokenizer is not None
        return decode_batch(
            self._model,
            rows,
            pad_id=self._pad_id,
            eos_ids=self._eos_ids,
            decode=self._tokenizer.decode,
            graphs=self._graphs,
        )

    def _release(self) -> None:
        if self._graphs is not None:
            self._graphs.clear()
            self._graphs = None

    @property
    def graph_build_s(self) -> float:
        """Seconds spent building decode graphs so far (compile and capture)."""
        return self._graphs.build_s if self._graphs is not None else 0.0


def _decode_path(graphs: GraphCache | None) -> str:
    """How greedy batches decode, for EngineInfo.details: "eager", or "cuda_graph" with
    "+compile", "+fused_projections" and "+triton_batch1" as they apply."""
    if graphs is None:
        return "eager"
    compiled = "+compile" if graphs.compile_step else ""
    fused = "+fused_projections" if graphs.fused else ""
    return f"cuda_graph{compiled}{fused}{'+triton_batch1' if graphs.triton_kernels else ''}"
