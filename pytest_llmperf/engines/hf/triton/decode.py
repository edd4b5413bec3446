"""Hand-written Triton kernels for the batch-1 decode step of Llama-structured models.

Why: at batch 1 a decode step reads every weight once and does little else, so its time
is bytes over bandwidth plus the cost of each kernel's launch and tail. The compiled step
(`hf_graph` + Inductor) ran a 1B Llama's step as about 14 kernels a layer: the norms'
variances, the rotary embedding, the cache writes and attention as their own kernels, the
small Q/K/V and output products at half the bandwidth (BENCHMARKS.md, second pass). Here
a layer is five kernels:

1. `matvec` with the input RMS norm in its prologue: Q/K/V = W_qkv @ norm(hidden)
   (each program recomputes the norm's scale from the 2-8 KB hidden vector, in L2,
   instead of a separate variance kernel);
2. `attention`: rotary embedding of the new query and key, the key and value written to
   the cache slot, and grouped-query attention over the filled slots, in one kernel
   (or split over the cache, flash-decoding style, plus a kernel folding the splits:
   at batch 1 a 1B Llama has 8 KV heads, 8 programs for 132 SMs unless split);
3. `matvec` with the residual add in its epilogue: hidden + W_o @ attended;
4. `matvec` with the post-attention norm in its prologue and SwiGLU in its epilogue:
   silu(gate) * up from the fused gate/up matrix;
5. `matvec` with the residual add: hidden + W_down @ activation.

After the lm head (a `matvec` with the final norm), `pick_and_advance` takes the greedy
token and does the step's bookkeeping (positions, cache slot, mask) in two kernels
instead of about a dozen small ones.

Rounding follows transformers' eager arithmetic where it rounds to the model's dtype
(the norm's output, each projection's output, the rotary products, silu and the
products before residual adds), so bf16 results differ from eager by accumulation order
only. Each product's tile and attention's split are timed once per GPU and shape
(candidates timed at the first call, which is inside a graph build, so outside measured
rounds) and kept in the cache folder (`triton-tiles-<triton version>.json`), so a later
run on the same GPU does not time them again. Products under 4 MB and small caches take a
fixed tile: their launch, not their shape, sets their time.

The kernels run on CPU tensors under Triton's interpreter (TRITON_INTERPRET=1 set before
triton is imported), which is how CI checks them (tests/kernel_checks/).
"""

from __future__ import annotations

import os
from typing import Any

import torch
import triton
import triton.language as tl

from pytest_llmperf.engines.hf.llama_step import FusedLlamaStep
from pytest_llmperf.engines.hf.llama_step import supports as fusable

#: Rotary embeddings whose cos/sin depend on the position only (a table per graph).
_STATIC_ROPE = ("default", "llama3", "linear")
_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def supports(model: Any) -> bool:
    """Whether the batch-1 Triton step reproduces `model`'s decode step."""
    if not fusable(model):
        return False
    config = model.config
    rope = (getattr(config, "rope_parameters", None) or {}).get("rope_type", "default")
    head_dim = int(model.model.layers[0].self_attn.head_dim)
    power_of_two = head_dim >= 16 and head_dim & (head_dim - 1) == 0
    dtype = model.dtype
    norms_match = all(layer.input_layernorm.weight.dtype == dtype for layer in model.model.layers)
    # Each product's reduction length splits into power-of-two chunks (tl.arange's rule).
    reductions = (config.hidden_size, _attention_width(model), config.intermediate_size)
    chunkable = all(_chunkable(int(k)) for k in reductions)
    return rope in _STATIC_ROPE and power_of_two and norms_match and chunkable and dtype in _DTYPES


def _attention_width(model: Any) -> int:
    attention = model.model.layers[0].self_attn
    return int(model.config.num_attention_heads) * int(attention.head_dim)


def _chunkable(k: int) -> bool:
    return k % 256 == 0 or (k >= 16 and k & (k - 1) == 0)


@triton.jit
def _matvec_kernel(
    x_ptr,
    norm_ptr,
    w_ptr,
    residual_ptr,
    out_ptr,
    n,
    eps,
    K: tl.constexpr,
    NORM: tl.constexpr,
    SWIGLU: tl.constexpr,
    RESIDUAL: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """out[row, cols] = epilogue(W[cols] @ prologue(x[row])) for this program's columns."""
    row = tl.program_id(1)
    cols = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    in_range = cols < n
    # Out-of-range columns read row 0 instead of a masked load: their results are dropped.
    w_rows = tl.where(in_range, cols, 0).to(tl.int64) * K
    reach = tl.arange(0, BLOCK_K)
    x_row = x_ptr + row * K
    dtype = x_ptr.dtype.element_ty
    scale = 1.0
    if NORM:
        squares = tl.zeros([BLOCK_K], dtype=tl.float32)
        for start in range(0, K, BLOCK_K):
            value = tl.load(x_row + start + reach).to(tl.float32)
            squares += value * value
        scale = tl.rsqrt(tl.sum(squares, axis=0) / K + eps)
    total = tl.zeros([BLOCK_N], dtype=tl.float32)
    total_up = tl.zeros([BLOCK_N], dtype=tl.float32)
    for start in range(0, K, BLOCK_K):
        offsets = start + reach
        x = tl.load(x_row + offsets)
        if NORM:
            # LlamaRMSNorm: (x * rsqrt(mean(x^2) + eps)) in float32, to the dtype, * weight.
            normed = (x.to(tl.float32) * scale).to(dtype).to(tl.float32)
            x = (tl.load(norm_ptr + offsets).to(tl.float32) * normed).to(dtype)
        x_wide = x.to(tl.float32)[None, :]
        w = tl.load(w_ptr + w_rows[:, None] + offsets[None, :])
        total += tl.sum(w.to(tl.float32) * x_wide, axis=1)
        if SWIGLU:
            w_up = tl.load(w_ptr + n * K + w_rows[:, None] + offsets[None, :])
            total_up += tl.sum(w_up.to(tl.float32) * x_wide, axis=1)
    result = total
    if SWIGLU:
        gate = total.to(dtype).to(tl.float32)
        up = total_up.to(dtype).to(tl.float32)
        activated = (gate / (1.0 + tl.exp(-gate))).to(dtype).to(tl.float32)
        result = activated * up
    if RESIDUAL:
        residual = tl.load(residual_ptr + row * n + cols, mask=in_range, other=0.0)
        result = result.to(dtype).to(tl.float32) + residual.to(tl.float32)
    tl.store(out_ptr + row * n + cols, result.to(dtype), mask=in_range)


@triton.jit
def _rotated(x, x_partner, sign, cos, sin, dtype: tl.constexpr):
    """transformers' `x * cos + rotate_half(x) * sin`, each product rounded to `dtype`."""
    straight = (x * cos).to(dtype).to(tl.float32)
    turned = (sign * x_partner * sin).to(dtype).to(tl.float32)
    return (straight + turned).to(dtype)


@triton.jit
def _attention_kernel(
    qkv_ptr,
    cos_ptr,
    sin_ptr,
    positions_ptr,
    slot_ptr,
    keys_ptr,
    values_ptr,
    filled_ptr,
    mask_ptr,
    out_ptr,
    partial_ptr,
    best_ptr,
    total_ptr,
    scaling,
    length,
    chunk,
    HEADS: tl.constexpr,
    KV_HEADS: tl.constexpr,
    GROUP: tl.constexpr,
    GROUP_BLOCK: tl.constexpr,
    DIM: tl.constexpr,
    BLOCK: tl.constexpr,
    SPLITS: tl.constexpr,
):
    """One (row, KV head, split of the cache): rotate the new query heads of the group
    and the new key; the split holding this step's slot writes key and value there; attend
    over this split's slots up to the current one with the additive mask. One split writes
    the result; more write their running max, sum and weighted values for
    `_combine_kernel`."""
    row = tl.program_id(0)
    kv = tl.program_id(1)
    split = tl.program_id(2)
    dtype = keys_ptr.dtype.element_ty
    HALF: tl.constexpr = DIM // 2
    WIDTH: tl.constexpr = (HEADS + 2 * KV_HEADS) * DIM
    slot = tl.minimum(tl.load(slot_ptr), length - 1)
    position = tl.minimum(tl.load(positions_ptr + row), length - 1)
    dims = tl.arange(0, DIM)
    partner = (dims + HALF) % DIM
    sign = tl.where(dims < HALF, -1.0, 1.0)
    cos = tl.load(cos_ptr + position * DIM + dims).to(tl.float32)
    sin = tl.load(sin_ptr + position * DIM + dims).to(tl.float32)
    qkv_row = qkv_ptr + row * WIDTH
    cache_row = (row * KV_HEADS + kv) * length
    first = split * chunk
    end = tl.minimum(slot + 1, first + chunk)

    if (slot >= first) & (slot < first + chunk):
        key_at = qkv_row + HEADS * DIM + kv * DIM
        key = _rotated(
            tl.load(key_at + dims).to(tl.float32),
            tl.load(key_at + partner).to(tl.float32),
            sign,
            cos,
            sin,
            dtype,
        )
        value = tl.load(qkv_row + (HEADS + KV_HEADS) * DIM + kv * DIM + dims)
        tl.store(keys_ptr + (cache_row + slot) * DIM + dims, key)
        tl.store(values_ptr + (cache_row + slot) * DIM + dims, value.to(dtype))
        if (row == 0) & (kv == 0):
            # transformers' StaticLayer counts its filled slots (cumulative_length).
            tl.store(filled_ptr, slot + 1)

    group = tl.arange(0, GROUP_BLOCK)
    real = group < GROUP
    query_at = qkv_row + (kv * GROUP + group)[:, None] * DIM
    query = _rotated(
        tl.load(query_at + dims[None, :], mask=real[:, None], other=0.0).to(tl.float32),
        tl.load(query_at + partner[None, :], mask=real[:, None], other=0.0).to(tl.float32),
        sign[None, :],
        cos[None, :],
        sin[None, :],
        dtype,
    )
    # Products in float32 (as the reduction attention of the compiled step): at batch 1
    # attention waits on memory, not on arithmetic.
    query_wide = query.to(tl.float32)
    # Every thread of the program reads the slot written above.
    tl.debug_barrier()

    best = tl.full([GROUP_BLOCK], float("-inf"), dtype=tl.float32)
    total = tl.zeros([GROUP_BLOCK], dtype=tl.float32)
    attended = tl.zeros([GROUP_BLOCK, DIM], dtype=tl.float32)
    offsets = tl.arange(0, BLOCK)
    for start in range(first, end, BLOCK):
        slots = start + offsets
        visible = slots < end
        at = (cache_row + slots)[:, None] * DIM + dims[None, :]
        keys = tl.load(keys_ptr + at, mask=visible[:, None], other=0.0)
        scores = tl.dot(query_wide, tl.trans(keys.to(tl.float32)), input_precision="ieee")
        scores = scores * scaling
        added = tl.load(mask_ptr + row * length + slots, mask=visible, other=0.0)
        scores = tl.where(visible[None, :], scores + added.to(tl.float32)[None, :], float("-inf"))
        new_best = tl.maximum(best, tl.max(scores, axis=1))
        weights = tl.exp(scores - new_best[:, None])
        shrink = tl.exp(best - new_best)
        total = total * shrink + tl.sum(weights, axis=1)
        values = tl.load(values_ptr + at, mask=visible[:, None], other=0.0)
        attended = attended * shrink[:, None] + tl.dot(
            weights, values.to(tl.float32), input_precision="ieee"
        )
        best = new_best
    if SPLITS == 1:
        attended = attended / total[:, None]
        out_at = out_ptr + row * HEADS * DIM + (kv * GROUP + group)[:, None] * DIM + dims[None, :]
        tl.store(out_at, attended.to(dtype), mask=real[:, None])
    else:
        # A split past the current slot leaves best -inf, total 0: it weighs nothing.
        part = (row * KV_HEADS + kv) * SPLITS + split
        tl.store(best_ptr + part * GROUP_BLOCK + group, best)
        tl.store(total_ptr + part * GROUP_BLOCK + group, total)
        at = (part * GROUP_BLOCK + group)[:, None] * DIM + dims[None, :]
        tl.store(partial_ptr + at, attended)


@triton.jit
def _combine_kernel(
    out_ptr,
    partial_ptr,
    best_ptr,
    total_ptr,
    HEADS: tl.constexpr,
    KV_HEADS: tl.constexpr,
    GROUP: tl.constexpr,
    GROUP_BLOCK: tl.constexpr,
    DIM: tl.constexpr,
    SPLITS: tl.constexpr,
):
    """One (row, KV head): fold the splits' softmax pieces into the attention output
    (each split's sums rescaled to the greatest max; split 0 always holds slot 0)."""
    row = tl.program_id(0)
    kv = tl.program_id(1)
    dtype = out_ptr.dtype.element_ty
    splits = tl.arange(0, SPLITS)
    group = tl.arange(0, GROUP_BLOCK)
    dims = tl.arange(0, DIM)
    parts = ((row * KV_HEADS + kv) * SPLITS + splits)[:, None] * GROUP_BLOCK + group[None, :]
    best = tl.load(best_ptr + parts)
    top = tl.max(best, axis=0)
    weight = tl.exp(best - top[None, :])
    total = tl.sum(weight * tl.load(total_ptr + parts), axis=0)
    pieces = tl.load(partial_ptr + parts[:, :, None] * DIM + dims[None, None, :])
    attended = tl.sum(weight[:, :, None] * pieces, axis=0) / total[:, None]
    out_at = out_ptr + row * HEADS * DIM + (kv * GROUP + group)[:, None] * DIM + dims[None, :]
    tl.store(out_at, attended.to(dtype), mask=(group < GROUP)[:, None])


@triton.jit
def _pick_kernel(logits_ptr, bias_ptr, best_ptr, where_ptr, vocab, WIDTH: tl.constexpr):
    """Greedy pick, first stage: the greatest biased logit of one slice of a row's
    vocabulary and its first index (one slice per program: a 128k vocabulary spreads over
    the SMs instead of one thread block)."""
    row = tl.program_id(0)
    piece = tl.program_id(1)
    pieces = tl.num_programs(1)
    columns = piece * WIDTH + tl.arange(0, WIDTH)
    inside = columns < vocab
    logits = tl.load(logits_ptr + row * vocab + columns, mask=inside, other=0.0)
    bias = tl.load(bias_ptr + row * vocab + columns, mask=inside, other=0.0)
    scores = tl.where(inside, logits.to(tl.float32) + bias, float("-inf"))
    best, where = tl.max(scores, axis=0, return_indices=True, return_indices_tie_break_left=True)
    tl.store(best_ptr + row * pieces + piece, best)
    tl.store(where_ptr + row * pieces + piece, piece * WIDTH + where)


@triton.jit
def _advance_kernel(
    best_ptr,
    where_ptr,
    tokens_ptr,
    positions_ptr,
    slot_ptr,
    mask_ptr,
    length,
    ROWS: tl.constexpr,
    ROWS_BLOCK: tl.constexpr,
    PIECES: tl.constexpr,
    PIECES_BLOCK: tl.constexpr,
):
    """Greedy pick, second stage, and the step's bookkeeping (one program, so that every
    row reads the slot before it moves): each row's token is the first index of its
    greatest slice maximum; positions and the slot advance by one; the next slot (the
    last one, once the cache is full) becomes visible in every row's mask."""
    rows = tl.arange(0, ROWS_BLOCK)
    live = rows < ROWS
    pieces = tl.arange(0, PIECES_BLOCK)
    at = rows[:, None] * PIECES + pieces[None, :]
    present = live[:, None] & (pieces < PIECES)[None, :]
    best = tl.load(best_ptr + at, mask=present, other=float("-inf"))
    top = tl.argmax(best, axis=1, tie_break_left=True)
    token = tl.load(where_ptr + rows * PIECES + top, mask=live, other=0)
    tl.store(tokens_ptr + rows, token, mask=live)
    position = tl.load(positions_ptr + rows, mask=live, other=0)
    tl.store(positions_ptr + rows, position + 1, mask=live)
    slot = tl.load(slot_ptr) + 1
    tl.store(slot_ptr, slot)
    visible = tl.minimum(slot, length - 1)
    opened = tl.zeros([ROWS_BLOCK], dtype=mask_ptr.dtype.element_ty)
    tl.store(mask_ptr + rows * length + visible, opened, mask=live)


def pick_and_advance(
    logits: torch.Tensor,
    bias: torch.Tensor,
    tokens: torch.Tensor,
    positions: torch.Tensor,
    slot: torch.Tensor,
    mask: torch.Tensor,
) -> None:
    """What `DecodeGraph._step` does after the logits, in two kernels: `tokens` [rows, 1]
    = argmax of `logits` [rows, vocab] + `bias` (float32; ties to the first index), then
    `positions` [rows, 1] and `slot` [1] + 1 and the next slot of the additive `mask`
    [rows, 1, 1, length] opened (0)."""
    rows, vocab = logits.shape
    length = mask.shape[-1]
    # Blocks of at least 16 lanes (and rows in pairs): no one-element tl.arange.
    width = max(16, triton.next_power_of_2(triton.cdiv(vocab, 64)))
    pieces = triton.cdiv(vocab, width)
    best = torch.empty((rows, pieces), dtype=torch.float32, device=logits.device)
    where = torch.empty((rows, pieces), dtype=torch.long, device=logits.device)
    _pick_kernel[(rows, pieces)](logits, bias, best, where, vocab, WIDTH=width, num_warps=4)
    _advance_kernel[(1,)](
        best, where, tokens, positions, slot, mask, length,
        ROWS=rows, ROWS_BLOCK=max(2, triton.next_power_of_2(rows)),
        PIECES=pieces, PIECES_BLOCK=max(2, triton.next_power_of_2(pieces)),
    )  # fmt: skip


# Tile shapes tried for each product: (columns per program, reduction chunk, warps).
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


def _interpreted() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


def tuned_tiles() -> dict[str, tuple[int, int, int]]:
    """The tiles chosen so far: "<gpu> <flags> <columns>x<reduction> rows=<r> <dtype>" ->
    (columns per program, reduction chunk, warps)."""
    return dict(_TUNED)


def matvec(
    x: torch.Tensor,
    weight: torch.Tensor,
    *,
    norm: torch.Tensor | None = None,
    eps: float = 0.0,
    residual: torch.Tensor | None = None,
    swiglu: bool = False,
) -> torch.Tensor:
    """`weight @ x[row]` for each row of x [rows, K]; `norm`: RMS-norm x first (weight,
    eps); `swiglu`: weight is [gate; up] and the result is silu(gate) * up; `residual`:
    add it ([rows, N]) to the result. Returns [rows, N] in x's dtype."""
    rows, k = x.shape
    n = weight.shape[0] // 2 if swiglu else weight.shape[0]
    if weight.shape[1] != k or not (x.is_contiguous() and weight.is_contiguous()):
        raise ValueError(f"matvec: x {tuple(x.shape)} and weight {tuple(weight.shape)}")
    out = torch.empty((rows, n), dtype=x.dtype, device=x.device)
    chosen = (("norm", norm is not None), ("swiglu", swiglu), ("residual", residual is not None))
    flags = "+".join(name for name, on in chosen if on) or "plain"

    def launch(tile: tuple[int, int, int], compile_only: bool = False) -> None:
        block_n, block_k, warps = tile
        grid = (triton.cdiv(n, block_n), rows)
        args = (
            x,
            norm if norm is not None else x,
            weight,
            residual if residual is not None else x,
            out,
            n,
            eps,
        )
        options = {
            "K": k,
            "NORM": norm is not None,
            "SWIGLU": swiglu,
            "RESIDUAL": residual is not None,
            "BLOCK_N": block_n,
            "BLOCK_K": min(block_k, k),
            "num_warps": warps,
        }
        if compile_only:
            _matvec_kernel.warmup(*args, grid=grid, **options)
        else:
            _matvec_kernel[grid](*args, **options)

    launch(_tile(launch, x, weight, flags, n, k))
    return out


def _tile(
    launch: Any, x: torch.Tensor, weight: torch.Tensor, flags: str, n: int, k: int
) -> tuple[int, int, int]:
    """The tile for this product: timed once per GPU and shape (at the first call, in a
    graph build's warm-up), remembered on disk; small products and the CPU take a fixed one."""
    if not x.is_cuda or _interpreted() or weight.numel() * weight.element_size() < _SMALL_BYTES:
        return _SMALL_TILE
    usable = [tile for tile in _CANDIDATES if k % min(tile[1], k) == 0]
    return _remembered(x, f"{flags} {n}x{k} rows={x.shape[0]}", usable, launch)


def _remembered(
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
    from pytest_llmperf.models.tiny import default_cache_dir

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


def attention(
    qkv: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    positions: torch.Tensor,
    slot: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    filled: torch.Tensor,
    mask: torch.Tensor,
    scaling: float,
    heads: int,
    split: tuple[int, int] | None = None,
) -> torch.Tensor:
    """Decode attention for rows of `qkv` [rows, (heads + 2 kv_heads) * dim]: rotary
    embedding from `cos`/`sin` tables [length, dim] at each row's `positions` [rows, 1],
    the new key and value written to cache `keys`/`values` [rows, kv_heads, length, dim]
    at `slot` (a 1-element tensor; `filled`, the cache's counter, set to slot + 1),
    attention over slots 0..slot with the additive `mask` [rows, 1, 1, length].
    `split`: (cache splits, slots per loop step), else tuned (see `_attention_split`).
    Returns [rows, heads * dim]."""
    rows = qkv.shape[0]
    _, kv_heads, length, dim = keys.shape
    for name, tensor in (("keys", keys), ("values", values), ("mask", mask), ("qkv", qkv)):
        if not tensor.is_contiguous():
            raise ValueError(f"attention: {name} must be contiguous")
    group = heads // kv_heads
    group_block = max(16, triton.next_power_of_2(group))
    out = torch.empty((rows, heads * dim), dtype=qkv.dtype, device=qkv.device)

    def launch(
        chosen: tuple[int, int, int],
        at: torch.Tensor = slot,
        counter: torch.Tensor = filled,
        compile_only: bool = False,
    ) -> None:
        splits, block, warps = chosen
        shape = (rows, kv_heads, splits, group_block)
        best = torch.empty(shape, dtype=torch.float32, device=qkv.device)
        total = torch.empty_like(best)
        partial = torch.empty((*shape, dim), dtype=torch.float32, device=qkv.device)
        constants = {
            "HEADS": heads,
            "KV_HEADS": kv_heads,
            "GROUP": group,
            "GROUP_BLOCK": group_block,
            "DIM": dim,
            "SPLITS": splits,
        }
        args = (
            qkv, cos, sin, positions, at, keys, values, counter, mask, out,
            partial, best, total, scaling, length, triton.cdiv(length, splits),
        )  # fmt: skip
        combine_args = (out, partial, best, total)
        if compile_only:
            grid = (rows, kv_heads, splits)
            _attention_kernel.warmup(*args, grid=grid, BLOCK=block, num_warps=warps, **constants)
            if splits > 1:
                _combine_kernel.warmup(*combine_args, grid=(rows, kv_heads), **constants)
            return
        _attention_kernel[(rows, kv_heads, splits)](
            *args, BLOCK=block, num_warps=warps, **constants
        )
        if splits > 1:
            _combine_kernel[(rows, kv_heads)](*combine_args, **constants)

    launch((*split, 4) if split is not None else _attention_split(launch, qkv, keys, heads))
    return out


#: (cache splits, slots per loop step, warps) tried for attention.
_SPLITS = [(splits, block, 4) for splits in (1, 2, 4, 8, 16) for block in (32, 64, 128)]
_ONE_SPLIT = (1, 64, 4)
_SMALL_CACHE_BYTES = 512 << 10


def _attention_split(
    launch: Any, qkv: torch.Tensor, keys: torch.Tensor, heads: int
) -> tuple[int, int, int]:
    """Timed once per GPU and shape like the products' tiles, at the cache's middle slot
    (with a scratch counter; the slot written is past the prompt, masked, and rewritten
    when decoding reaches it). Small caches and the CPU take one split."""
    rows, kv_heads, length, dim = keys.shape
    cache_bytes = 2 * keys.numel() * keys.element_size()
    if not qkv.is_cuda or _interpreted() or cache_bytes < _SMALL_CACHE_BYTES:
        return _ONE_SPLIT
    scratch: list[torch.Tensor] = []  # made only if timing runs (not in a graph capture)

    def at_middle(chosen: tuple[int, int, int], compile_only: bool = False) -> None:
        if not scratch:
            scratch.append(torch.full((1,), length // 2, dtype=torch.long, device=qkv.device))
            scratch.append(torch.zeros((), dtype=torch.long, device=qkv.device))
        launch(chosen, *scratch, compile_only)

    shape = f"attention {heads}/{kv_heads}x{dim} length={length} rows={rows}"
    return _remembered(qkv, shape, _SPLITS, at_middle)


class TritonLlamaStep:
    """The decode step of `fused`'s model through the kernels above, for one graph's
    cache length (the rotary table covers its positions)."""

    def __init__(self, fused: FusedLlamaStep, length: int) -> None:
        self.fused = fused
        model = fused.model
        inner = model.model
        self.heads = fused.heads
        with torch.no_grad():
            probe = inner.embed_tokens.weight[:1][None]
            cos, sin = inner.rotary_emb(
                probe, position_ids=torch.arange(length, device=probe.device)[None]
            )
        self.cos, self.sin = cos[0].contiguous(), sin[0].contiguous()
        self._filled = torch.zeros((), dtype=torch.long, device=probe.device)

    def step(
        self,
        tokens: torch.Tensor,
        positions: torch.Tensor,
        mask: torch.Tensor,
        cache: Any,
        slot: torch.Tensor,
        bias: torch.Tensor,
    ) -> None:
        """One greedy decode step in place: `DecodeGraph._step`'s contract (next tokens,
        positions, slot and mask updated; the cache written)."""
        logits = self.logits(tokens, positions, mask, cache, slot)
        pick_and_advance(logits, bias, tokens, positions, slot, mask)

    def logits(
        self,
        tokens: torch.Tensor,
        positions: torch.Tensor,
        mask: torch.Tensor,
        cache: Any,
        slot: torch.Tensor,
    ) -> torch.Tensor:
        """Logits [rows, vocab] after `tokens` [rows, 1] at `positions` [rows, 1], the new
        keys and values written to `cache` (a transformers StaticCache, filled by a
        prefill) at `slot`."""
        inner = self.fused.model.model
        rows = tokens.shape[0]
        hidden = inner.embed_tokens(tokens).view(rows, -1)
        for index, layer in enumerate(inner.layers):
            attention_module = layer.self_attn
            stored = cache.layers[index]
            # transformers' StaticLayer counts its filled slots; older caches do not.
            filled = getattr(stored, "cumulative_length", None)
            qkv = matvec(
                hidden,
                self.fused.qkv[index],
                norm=layer.input_layernorm.weight,
                eps=layer.input_layernorm.variance_epsilon,
            )
            attended = attention(
                qkv,
                self.cos,
                self.sin,
                positions,
                slot,
                stored.keys,
                stored.values,
                filled if isinstance(filled, torch.Tensor) else self._filled,
                mask,
                attention_module.scaling,
                self.heads,
            )
            hidden = matvec(attended, attention_module.o_proj.weight, residual=hidden)
            activated = matvec(
                hidden,
                self.fused.gate_up[index],
                norm=layer.post_attention_layernorm.weight,
                eps=layer.post_attention_layernorm.variance_epsilon,
                swiglu=True,
            )
            hidden = matvec(activated, layer.mlp.down_proj.weight, residual=hidden)
        return matvec(
            hidden,
            self.fused.model.lm_head.weight,
            norm=inner.norm.weight,
            eps=inner.norm.variance_epsilon,
        )
