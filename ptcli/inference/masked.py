"""Masked-LM evaluation: masked-token accuracy and loss, with masks fixed by a seed (block by block, so the
masks do not depend on batch_size). Blocks stream in; only per-batch logits exist at any time."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator


def blocks_from_documents(docs: Iterable[list[int]], block_len: int, sep_id: int,
                          prefix_id: int | None) -> Iterator[list[int]]:
    """Like pretraining's packing (``[CLS]`` + stream, ``[SEP]`` after each document), but the final partial
    block is kept: evaluation should see all of the text."""
    from ptcli.data.packing import pack_into_blocks

    return pack_into_blocks(docs, block_len, sep_id, prefix_id, keep_tail=True)


def mlm_scores(model, objective, blocks: Iterable, batch_size: int, seed: int, placement,
               max_batches: int | None = None, progress: Callable[[int], None] | None = None) -> dict:
    """Loss (nats per masked token), accuracy and counts over ``blocks`` (sequences of token ids)."""
    import torch
    import torch.nn.functional as F

    from ptcli.inference.decoding import row_seed

    nll, correct, masked, n_blocks, n_batches = 0.0, 0, 0, 0, 0
    complete = True
    pending: list = []

    def run(group: list) -> None:
        nonlocal nll, correct, masked, n_batches
        rows = []
        for index, block in group:  # one generator per block: its masks depend on the seed and its index only
            generator = torch.Generator().manual_seed(row_seed(seed, index))
            rows.append(objective.collate(torch.as_tensor(block, dtype=torch.long)[None], generator))
        input_ids = torch.cat([r["input_ids"] for r in rows]).to(placement.device)
        labels = torch.cat([r["labels"] for r in rows]).to(placement.device)
        with torch.inference_mode(), placement.autocast():
            logits = model(input_ids=input_ids).logits
        chosen = labels != -100
        picked, targets = logits[chosen].float(), labels[chosen]
        nll += F.cross_entropy(picked, targets, reduction="sum").item() if targets.numel() else 0.0
        correct += int((picked.argmax(dim=-1) == targets).sum())
        masked += targets.numel()
        n_batches += 1

    for block in blocks:
        if pending and (len(pending) >= batch_size or len(block) != len(pending[0][1])):
            if max_batches is not None and n_batches >= max_batches:
                complete = False
                pending = []
                break
            run(pending)
            pending = []
            if progress:
                progress(n_blocks)
        pending.append((n_blocks, list(block)))
        n_blocks += 1
    if pending and (max_batches is None or n_batches < max_batches):
        run(pending)
    elif pending:
        complete = False
    loss = nll / max(masked, 1)
    out = {"loss": loss, "perplexity": math.exp(min(loss, 700)), "accuracy": correct / max(masked, 1),
           "masked_tokens": masked, "blocks": n_blocks if complete else None, "seed": seed}
    if not complete:
        out["partial"] = True
        out.pop("blocks")
    return out
