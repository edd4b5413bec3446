"""The Triton kernels of the batch-1 decode step (see `decode` for what each computes and
why a layer is five kernels). Launched by `decode`'s functions; tiles by `tuning`."""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def matvec_kernel(
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
def attention_kernel(
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
    `combine_kernel`."""
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
def combine_kernel(
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
def pick_kernel(logits_ptr, bias_ptr, best_ptr, where_ptr, vocab, WIDTH: tl.constexpr):
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
def advance_kernel(
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
