"""Causal-LM perplexity with a sliding window, as in Hugging Face's perplexity guide, and bits per byte.

The text is one token stream (documents joined by the end-of-text token). Windows of ``max_len`` tokens start
every ``stride`` tokens; in each, only the tokens not scored by an earlier window (the last ``trg_len``) are
scored, the rest is context (label -100). Unlike the guide's running mean, the negative log-likelihood is
summed over exactly the scored tokens, so the result does not depend on how windows are batched.
Only the token ids are held; each batch's logits are dropped once scored.
"""

from __future__ import annotations

import math
import re
from array import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

TOKENIZE_CHUNK = 1 << 18  # characters: a long document is tokenized in pieces cut at safe line breaks
_SAFE_CUT = re.compile(r"(?<=\S\n)(?=\S)")


@dataclass
class TokenStream:
    """The evaluation text as token ids, and its size in UTF-8 bytes (for bits per byte)."""

    ids: Any  # numpy int array
    n_bytes: int
    n_docs: int


def pieces(text: str, size: int = TOKENIZE_CHUNK) -> Iterator[str]:
    """``text`` in pieces of about ``size`` characters, each cut after a line break between two non-space
    characters: byte-level BPE and WordPiece pre-tokenize such a text into the same tokens whole or cut."""
    start = 0
    while len(text) - start > size:
        match = _SAFE_CUT.search(text, start + size)
        if match is None:
            break
        yield text[start:match.start()]
        start = match.start()
    yield text[start:]


def token_stream(docs: Iterable[str], tokenizer, sep_id: int) -> TokenStream:
    """Documents tokenized (no special tokens added) and joined by ``sep_id``; bytes counted as UTF-8, plus one
    per separator (a document boundary reads like a line break). Texts are encoded about 1 MB at a time."""
    import numpy as np

    from ptcli.data.packing import tokenize_documents

    ids = array("i")  # int32: 4 bytes a token
    n_bytes = n_docs = 0
    batch: list[tuple[bool, str]] = []  # (starts a document, text)

    def flush() -> None:
        encoded = tokenize_documents(tokenizer, [text for _, text in batch], batch_size=len(batch))
        for (starts, _), piece_ids in zip(batch, encoded):
            if starts and len(ids):
                ids.append(sep_id)
            ids.extend(piece_ids)
        batch.clear()

    chars = 0
    for doc in docs:
        n_bytes += len(doc.encode("utf-8")) + (1 if n_docs else 0)
        n_docs += 1
        for k, piece in enumerate(pieces(doc)):
            batch.append((k == 0, piece))
            chars += len(piece)
            if chars >= TOKENIZE_CHUNK or len(batch) >= 1000:
                flush()
                chars = 0
    if batch:
        flush()
    return TokenStream(np.frombuffer(ids, dtype=np.int32) if ids else np.zeros(0, dtype=np.int32), n_bytes, n_docs)


def windows(n_tokens: int, max_len: int, stride: int) -> Iterator[tuple[int, int, int]]:
    """(begin, end, trg_len) of each window, exactly as the perplexity guide's loop walks them."""
    prev_end = 0
    for begin in range(0, n_tokens, stride):
        end = min(begin + max_len, n_tokens)
        yield begin, end, end - prev_end
        prev_end = end
        if end == n_tokens:
            break


def window_batches(ids, max_len: int, stride: int, batch_size: int, max_batches: int | None = None):
    """Batches of windows (``input_ids`` plus ``score_from``, the first scored position); windows of the same shape
    are batched. Yields dicts; the last one of an early stop (``max_batches``) is marked ``partial``."""
    import numpy as np
    import torch

    spans = list(windows(len(ids), max_len, stride))
    i = n_batches = 0
    while i < len(spans):
        if max_batches is not None and n_batches >= max_batches:
            return
        length, trg = spans[i][1] - spans[i][0], spans[i][2]
        j = i
        while j < len(spans) and j - i < batch_size and (spans[j][1] - spans[j][0], spans[j][2]) == (length, trg):
            j += 1
        batch = torch.from_numpy(np.stack([ids[b:e] for b, e, _ in spans[i:j]])).long()
        yield {"input_ids": batch, "score_from": max(length - trg, 1)}  # position 0 has no prediction
        n_batches += 1
        i = j


def window_count(n_tokens: int, max_len: int, stride: int, batch_size: int) -> int:
    """How many batches ``window_batches`` yields (for the progress bar)."""
    spans = list(windows(n_tokens, max_len, stride))
    count, i = 0, 0
    while i < len(spans):
        shape = (spans[i][1] - spans[i][0], spans[i][2])
        j = i
        while j < len(spans) and j - i < batch_size and (spans[j][1] - spans[j][0], spans[j][2]) == shape:
            j += 1
        count, i = count + 1, j
    return count


def accepts_logits_to_keep(model) -> bool:
    import inspect

    from ptcli.models.modules import unwrap

    return "logits_to_keep" in inspect.signature(unwrap(model).forward).parameters


def scored_nll(model, batch) -> tuple:
    """Summed negative log-likelihood (a tensor) and the number of scored tokens of a window batch: only the
    positions that predict a scored token get logits when the model allows it (contiguous, no copy)."""
    import torch
    import torch.nn.functional as F

    from ptcli.objectives.linear_ce import causal_lm_loss, chunk_head

    ids = batch["input_ids"]
    first, length = int(batch.get("score_from", 1)), ids.shape[1]
    if chunk_head(model) is not None:  # a chunk of positions at a time through the output layer (linear_ce.py)
        labels = F.pad(ids[:, 1:], (0, 1), value=-100)
        labels[:, :first - 1] = -100
        out = causal_lm_loss(model, labels, True, input_ids=ids)
        return out.sum, int(out.count)
    if accepts_logits_to_keep(model):
        positions = torch.arange(first - 1, length - 1, device=ids.device)
        logits = model(input_ids=ids, logits_to_keep=positions).logits
    else:
        logits = model(input_ids=ids).logits[:, first - 1:length - 1]
    targets = ids[:, first:]
    total = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="sum")
    return total, targets.numel()


def clm_metrics(loss_sum: float, tokens: int, n_bytes: int | None, max_len: int, stride: int, windows_done: int,
                complete: bool) -> dict:
    """Loss, perplexity and bits per byte from the summed NLL (bits per byte only over all of the text)."""
    loss = loss_sum / max(tokens, 1)
    out = {"loss": loss, "perplexity": math.exp(min(loss, 700)), "bits_per_byte": None,
           "tokens": tokens, "windows": windows_done, "seq_len": max_len, "stride": stride}
    if n_bytes and complete:
        out["bits_per_byte"] = loss_sum / math.log(2) / n_bytes
        out["bytes"] = n_bytes
    if not complete:
        out["partial"] = True  # max_batches stopped it early
    return out
