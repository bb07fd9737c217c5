"""Labelled examples for fine-tuning: records -> objective-encoded examples, a fixed validation split, batches.

Records are held in memory (fine for fine-tuning sets: SST-2's 67k rows are a few MB of token ids); the
objective reads the label map from the training records before encoding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ptcli.data.loader import BlockBatches
from ptcli.errors import PtcliError

ENCODE_CHUNK = 1000
VAL_SPLIT_SEED = 1234  # the carved validation split never depends on train.seed


@dataclass
class Examples:
    train: list
    val: list
    skipped: int = 0


def carve_split(records: list, fraction: float) -> tuple[list, list]:
    """A fixed, seeded validation slice of ``fraction`` of the records (the rest is training data)."""
    if fraction <= 0 or len(records) < 2:
        return records, []
    order = np.random.default_rng(VAL_SPLIT_SEED).permutation(len(records))
    n_val = min(len(records) - 1, math.ceil(len(records) * fraction))
    val_idx = set(order[-n_val:].tolist())
    train = [r for i, r in enumerate(records) if i not in val_idx]
    val = [r for i, r in enumerate(records) if i in val_idx]
    return train, val


def prepare_examples(cfg, objective, log) -> Examples:
    """Read, split, set up the objective (label map) and encode the training and validation records."""
    from ptcli.data.records import read_records

    data = cfg.dataset
    records = list(read_records(data, "train", log))
    if not records:
        raise PtcliError("dataset is empty: the training files hold no rows", fix="check dataset.files")
    if data.val_files:
        train_records, val_records = records, list(read_records(data, "val", log))
    else:
        train_records, val_records = carve_split(records, data.val_fraction)
    objective.setup(data, train_records, log)
    train, skipped = encode_all(objective, train_records, data.empty_rows)
    val, val_skipped = encode_all(objective, val_records, data.empty_rows)
    if hasattr(objective, "postprocess"):
        train, val = objective.postprocess(train), objective.postprocess(val)
    if skipped or val_skipped:
        log(f"warning: skipped {skipped} training and {val_skipped} validation rows with empty text "
            "(dataset.empty_rows=skip)")
    if not train:
        raise PtcliError("dataset is empty: every training row has empty text",
                         fix="check dataset.text_column and the files")
    where = "dataset.val_files" if data.val_files else f"dataset.val_fraction={data.val_fraction}"
    log(f"data: {len(train)} training and {len(val)} validation examples ({where})")
    return Examples(train, val, skipped + val_skipped)


def encode_all(objective, records: list, empty_rows: str) -> tuple[list, int]:
    """Encode in chunks (the fast tokenizer batches); empty rows are skipped and counted, or refused."""
    out, skipped = [], 0
    for start in range(0, len(records), ENCODE_CHUNK):
        chunk = records[start:start + ENCODE_CHUNK]
        encoded = objective.encode([r for _, r in chunk], [w for w, _ in chunk])
        for (where, _), example in zip(chunk, encoded):
            if example is None:
                if empty_rows == "fail":
                    raise PtcliError("row has empty text", where=where,
                                     fix="remove the row, or set dataset.empty_rows=skip to skip and count them")
                skipped += 1
            else:
                out.append(example)
    return out, skipped


class ExampleBatches(BlockBatches):
    """``BlockBatches`` over a list of encoded examples: the same seeded order, sharding and exact resume."""

    def fetch(self, chosen) -> list:
        return [self.blocks[i] for i in sorted(chosen)]


def example_batches(examples: list, batch_size: int, max_batches: int | None, rank: int = 0, world: int = 1):
    """Validation micro-batches of examples in a fixed order; each process takes every world-th batch."""
    starts = list(range(0, len(examples), batch_size))
    if max_batches:
        starts = starts[:max_batches]
    for i, start in enumerate(starts):
        if i % world == rank:
            yield examples[start:start + batch_size]
