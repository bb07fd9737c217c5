"""From the ``dataset`` and ``tokenizer`` configs to a tokenizer and packed train/validation blocks (cached)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ptcli.errors import PtcliError


@dataclass
class Corpus:
    """Packed blocks for training and validation (memory-mapped), and what is known about the text."""

    train_blocks: Any  # numpy memmap (n, seq_len)
    train_indices: Any
    val_blocks: Any
    val_indices: Any
    entropy_bits_per_char: float | None = None  # the embedded corpus knows its own entropy
    val_tokens_per_char: float | None = None  # turns nats per token into bits per character


def rank0_first(dist, fn):
    """Run ``fn`` on rank 0 first (it fills the cache), then on the others (they read it)."""
    if dist.is_rank0:
        result = fn()
        dist.barrier()
    else:
        dist.barrier()
        result = fn()
    return result


def resolve_tokenizer(cfg, objective, cache: Path, dist, log):
    """``tokenizer.path``, else the model's own (``model.path``), else one trained on the training data."""
    from ptcli.models import load_tokenizer

    if cfg.tokenizer.path:
        return load_tokenizer(cfg.tokenizer.path)
    if cfg.model.path:
        return load_tokenizer(cfg.model.path)
    from ptcli.data.sources import read_documents, source_fingerprint
    from ptcli.tokenizer import load_or_train_tokenizer

    kind = objective.tokenizer_kind if cfg.tokenizer.kind == "auto" else cfg.tokenizer.kind
    vocab = cfg.tokenizer.vocab_size or cfg.model.vocab_size

    def documents():
        if getattr(objective, "labelled", False):  # the text of labelled records, not their raw lines
            from ptcli.data.records import read_records

            return record_texts(read_records(cfg.dataset, "train", log))
        return read_documents(cfg.dataset, "train", log=log)

    def load():
        tokenizer, _ = load_or_train_tokenizer(
            documents, source_fingerprint(cfg.dataset, "train") + "|records" * bool(getattr(objective, "labelled", 0)),
            kind, vocab, cache, lowercase=cfg.tokenizer.lowercase, log=log)
        return tokenizer

    return rank0_first(dist, load)


def record_texts(records):
    """Every piece of text in labelled records (strings, lists of strings, chat messages), for tokenizer training."""
    for _, record in records:
        parts = []
        for value in record.values():
            if isinstance(value, str):
                parts.append(value)
            elif isinstance(value, list):
                parts += [v if isinstance(v, str) else str(v.get("content", "")) if isinstance(v, dict) else ""
                          for v in value]
        text = " ".join(p for p in parts if p)
        if text.strip():
            yield text


def prepare_corpus(cfg, objective, tokenizer, cache: Path, dist, log) -> Corpus:
    """Tokenize and pack the training (and validation) text into blocks of ``seq_len``, reusing the cache."""
    data = cfg.dataset
    train = rank0_first(dist, lambda: packed_split(cfg, "train", objective, tokenizer, cache, log))
    n = train.n_blocks
    if n == 0:
        raise PtcliError(f"the training text has {train.n_tokens} tokens, fewer than one block of "
                         f"dataset.seq_len={data.seq_len}", fix="Lower dataset.seq_len or add more text")
    if data.val_files:
        val = rank0_first(dist, lambda: packed_split(cfg, "val", objective, tokenizer, cache, log))
        val_blocks, val_indices = val.blocks(), np.arange(val.n_blocks)
        train_indices = np.arange(n)
    else:
        # A fixed split: the last val_fraction of the blocks, so every run validates on the same text.
        n_val = min(n - 1, math.ceil(n * data.val_fraction)) if data.val_fraction > 0 else 0
        val_blocks, val_indices = train.blocks(), np.arange(n - n_val, n)
        train_indices = np.arange(n - n_val)
    global_batch = cfg.train.batch_size
    if len(train_indices) < global_batch:
        log(f"warning: only {len(train_indices)} training blocks for a batch of {global_batch}; "
            "blocks repeat within a step")
    log(f"data: {len(train_indices)} training and {len(val_indices)} validation blocks of {data.seq_len} tokens")
    return Corpus(train.blocks(), train_indices, val_blocks, val_indices,
                  entropy_bits_per_char=embedded_entropy(data),
                  val_tokens_per_char=tokens_per_char(tokenizer, val_blocks, val_indices))


def packed_split(cfg, split: str, objective, tokenizer, cache: Path, log):
    """The packed corpus of one split, from the cache when the inputs, tokenizer and settings are unchanged."""
    from ptcli.data.cache import load_or_build_packed, packed_cache_key, tokenizer_fingerprint
    from ptcli.data.packing import pack_into_blocks, token_dtype, tokenize_documents, write_token_file
    from ptcli.data.sources import read_documents, source_fingerprint

    data = cfg.dataset
    sep, prefix = objective.packing(tokenizer)
    settings = {"sep": sep, "prefix": prefix, "document": data.document, "text_column": data.text_column,
                "encoding_errors": data.encoding_errors}
    key = packed_cache_key(source_fingerprint(data, split), tokenizer_fingerprint(tokenizer), data.seq_len,
                           settings)
    dtype = token_dtype(len(tokenizer))

    def build(tmp: Path) -> dict:
        counts = {"docs": 0, "tokens": 0}

        def counted(docs):
            for ids in docs:
                counts["docs"] += 1
                counts["tokens"] += len(ids) + 1
                yield ids

        docs = counted(tokenize_documents(tokenizer, read_documents(data, split, log=log)))
        n_blocks = write_token_file(pack_into_blocks(docs, data.seq_len, sep, prefix), tmp / "tokens.bin",
                                    data.seq_len, dtype)
        return {"n_blocks": n_blocks, "block_len": data.seq_len, "dtype": np.dtype(dtype).name,
                "n_docs": counts["docs"], "n_tokens": counts["tokens"]}

    corpus, _ = load_or_build_packed(key, cache, build, log=log)
    return corpus


def embedded_entropy(data) -> float | None:
    """The embedded corpus's true entropy rate (bits per character), the floor for any model's loss."""
    if data.source != "embedded":
        return None
    from ptcli.data.corpus import generate_corpus

    return generate_corpus(data.embedded_seed, data.embedded_bytes).bits_per_char


def tokens_per_char(tokenizer, blocks, indices, sample: int = 64) -> float | None:
    """Tokens per character of the validation text (from a sample of blocks), to report bits per character."""
    if len(indices) == 0:
        return None
    chosen = np.asarray(indices)[:sample]
    ids = blocks[chosen].reshape(-1).tolist()
    chars = len(tokenizer.decode(ids, skip_special_tokens=True))
    return len(ids) / chars if chars else None
