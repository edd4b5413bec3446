"""Tile and split choice for the decode kernels: each product's tile and attention's cache
split are timed once per GPU and shape (triton's do_bench) and kept in the cache folder
(`triton-tiles-<triton version>.json`); small products, small caches and the CPU take fixed
ones (their launch, not their shape, sets their time)."""

from __future__ import annotations

import os
from typing import Any

import torch
import triton

_CANDIDATES = [
    (block_n, block_k, warps)
    for block_n in (1, 2, 4, 8, 16)
    for block_k in (256, 512, 1024, 2048)
    for warps in (4, 8)
    if 1024 <= block_n * block_k <= 16384 and (warps == 4 or block_n * block_k >= 4096)
]
#: The tile of products too small to be worth timing (their launch dominates).
_SMALL_TILE = (4, 256, 4)
_SMALL_BYTES = 4 << 20
#: The tuned tile per key (see `_tile_key`); loaded from and saved to `_tiles_file()`.
_TUNED: dict[str, tuple[int, int, int]] = {}
#: Every candidate's time (ms) per key, for bench/triton_kernels.py.
TIMINGS: dict[str, dict[tuple[int, int, int], float]] = {}


def interpreted() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


def tuned_tiles() -> dict[str, tuple[int, int, int]]:
    """The tiles chosen so far: "<gpu> <flags> <columns>x<reduction> rows=<r> <dtype>" ->
    (columns per program, reduction chunk, warps)."""
    return dict(_TUNED)


def product_tile(
    launch: Any, x: torch.Tensor, weight: torch.Tensor, flags: str, n: int, k: int
) -> tuple[int, int, int]:
    """The tile for this product: timed once per GPU and shape (at the first call, in a
    graph build's warm-up), remembered on disk; small products and the CPU take a fixed one."""
    if not x.is_cuda or interpreted() or weight.numel() * weight.element_size() < _SMALL_BYTES:
        return _SMALL_TILE
    usable = [tile for tile in _CANDIDATES if k % min(tile[1], k) == 0]
    return remembered(x, f"{flags} {n}x{k} rows={x.shape[0]}", usable, launch)


def remembered(
    on: torch.Tensor, shape: str, candidates: list[tuple[int, int, int]], launch: Any
) -> tuple[int, int, int]:
    """The fastest of `candidates` for `shape` on `on`'s GPU and dtype: from the tiles
    file or this process when timed before, else timed now (`_fastest`) and saved."""
    gpu = torch.cuda.get_device_name(on.device)
    key = f"{gpu} {shape} {str(on.dtype).removeprefix('torch.')}"
    if not _TUNED:
        _TUNED.update(_load_tiles())
    if key not in _TUNED:
        _TUNED[key] = _fastest(key, candidates, launch)
        _save_tiles()
    return _TUNED[key]


def _fastest(key: str, candidates: list[tuple[int, int, int]], launch: Any) -> tuple[int, int, int]:
    """The candidate whose `launch(candidate)` is fastest (triton's do_bench: median over
    repeats, L2 flushed between them); every time kept in TIMINGS[key]. A candidate the
    GPU cannot run (too many registers or too much shared memory) is left out."""
    from triton.testing import do_bench

    _compile_in_parallel(candidates, launch)
    timings: dict[tuple[int, int, int], float] = {}
    failure: Exception | None = None
    for candidate in candidates:
        try:
            timings[candidate] = do_bench(lambda c=candidate: launch(c), warmup=5, rep=20)
        except Exception as error:  # triton's resource errors have no common base class
            failure = error
    if not timings:
        raise RuntimeError(f"no candidate of {key} ran") from failure
    TIMINGS[key] = timings
    return min(timings, key=timings.__getitem__)


def _compile_in_parallel(candidates: list[tuple[int, int, int]], launch: Any) -> None:
    """Compile the candidates' kernels on a thread pool first (in turn, about a second
    each: two minutes for a 1B Llama's products). Best effort: triton versions without
    AsyncCompileMode, or any failure here, leave each to compile when first timed."""
    from concurrent.futures import ThreadPoolExecutor

    try:
        with (
            ThreadPoolExecutor(max_workers=min(16, os.cpu_count() or 1)) as pool,
            triton.AsyncCompileMode(pool),
        ):
            for candidate in candidates:
                launch(candidate, compile_only=True)
    except Exception:  # an optimisation only: timing compiles whatever is missing
        pass


def _tiles_file() -> Any:
    from pytest_llmperf.models.cache import default_cache_dir

    return default_cache_dir() / f"triton-tiles-{triton.__version__}.json"


def _load_tiles() -> dict[str, tuple[int, int, int]]:
    import json

    try:
        saved = json.loads(_tiles_file().read_text())
        return {str(k): (int(v[0]), int(v[1]), int(v[2])) for k, v in saved.items()}
    except (OSError, ValueError, TypeError, IndexError, AttributeError):
        return {}  # none yet, or unreadable: tune again


def _save_tiles() -> None:
    """Write the tiles (merged with what another process saved meanwhile) atomically."""
    import json

    path = _tiles_file()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        merged = {**_load_tiles(), **_TUNED}
        scratch = path.with_suffix(f".{os.getpid()}.tmp")
        scratch.write_text(json.dumps({k: list(v) for k, v in sorted(merged.items())}, indent=1))
        scratch.replace(path)
    except OSError:
        pass  # a read-only cache: the tiles are re-timed next run


_SPLITS = [(splits, block, 4) for splits in (1, 2, 4, 8, 16) for block in (32, 64, 128)]
_ONE_SPLIT = (1, 64, 4)
_SMALL_CACHE_BYTES = 512 << 10


def attention_split(
    launch: Any, qkv: torch.Tensor, keys: torch.Tensor, heads: int
) -> tuple[int, int, int]:
    """Timed once per GPU and shape like the products' tiles, at the cache's middle slot
    (with a scratch counter; the slot written is past the prompt, masked, and rewritten
    when decoding reaches it). Small caches and the CPU take one split."""
    rows, kv_heads, length, dim = keys.shape
    cache_bytes = 2 * keys.numel() * keys.element_size()
    if not qkv.is_cuda or interpreted() or cache_bytes < _SMALL_CACHE_BYTES:
        return _ONE_SPLIT
    scratch: list[torch.Tensor] = []  # made only if timing runs (not in a graph capture)

    def at_middle(chosen: tuple[int, int, int], compile_only: bool = False) -> None:
        if not scratch:
            scratch.append(torch.full((1,), length // 2, dtype=torch.long, device=qkv.device))
            scratch.append(torch.zeros((), dtype=torch.long, device=qkv.device))
        launch(chosen, *scratch, compile_only)

    shape = f"attention {heads}/{kv_heads}x{dim} length={length} rows={rows}"
    return remembered(qkv, shape, _SPLITS, at_middle)
