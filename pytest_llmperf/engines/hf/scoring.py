"""Log-likelihood scoring for the hf engine: many continuations in one forward pass.

Rows are context tokens followed by continuation tokens, right-padded into one batch
with an attention mask, so every row's positions are what they would be alone; the
log-probability of each continuation token is read at the position before it. Equal to
scoring each row alone within float error (tested to 1e-4).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from pytest_llmperf.engines.base import ScoreResult


def pad_batch(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right padding: (input ids, attention mask), each row starting at position 0."""
    width = max(len(row) for row in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, : len(row)] = 1
    return ids, mask


def score_rows(
    model: Any,
    pairs: Sequence[tuple[Sequence[int], Sequence[int]]],
    *,
    pad_id: int,
    device: str,
    batch_rows: int,
) -> list[ScoreResult]:
    """(context ids, continuation ids) pairs -> one `ScoreResult` each, in order."""
    results: list[ScoreResult] = []
    for start in range(0, len(pairs), batch_rows):
        batch = pairs[start : start + batch_rows]
        ids, mask = pad_batch([[*context, *cont] for context, cont in batch], pad_id)
        with torch.inference_mode():
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
        logprobs = torch.log_softmax(logits.float(), dim=-1).cpu()
        for row, (context, cont) in enumerate(batch):
            where = logprobs[row, len(context) - 1 : len(context) + len(cont) - 1]
            targets = torch.tensor(cont, dtype=torch.long)
            picked = where.gather(1, targets[:, None]).squeeze(1)
            results.append(
                ScoreResult(
                    logprob=float(picked.sum()),
                    tokens=len(cont),
                    greedy=bool((where.argmax(dim=-1) == targets).all()),
                )
            )
    return results
