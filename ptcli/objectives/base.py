"""The objective interface the loop relies on, and the token-weighted loss it returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class LossOutput:
    """A summed loss and how many targets it covers, so the loop can take a token-weighted mean over
    accumulation steps and processes (a mean of means is biased when batches hold different counts)."""

    sum: Any  # scalar tensor
    count: Any  # scalar tensor (number of predicted tokens/labels)
    logs: dict = field(default_factory=dict)


class Objective:
    """Base class: ``head`` names the model head; subclasses implement the rest.

    - ``packing(tokenizer)`` -> (separator id, block prefix id or None) for pretraining corpora;
    - ``collate(blocks, generator)`` -> model inputs for one micro-batch (fresh randomness per step);
    - ``loss(model, batch)`` -> LossOutput(sum, count).
    """

    head: str = ""
    tokenizer_kind: str = "bpe"  # the tokenizer trained when none is given

    def bind(self, tokenizer) -> None:
        """Called once the tokenizer is known (special-token ids, vocab size)."""
        self.tokenizer = tokenizer

    def packing(self, tokenizer) -> tuple[int, int | None]:
        raise NotImplementedError

    def collate(self, blocks, generator) -> dict:
        raise NotImplementedError

    def loss(self, model, batch) -> LossOutput:
        raise NotImplementedError

    def evaluator(self) -> Evaluator:
        """Streaming validation state; the default scores the loss only."""
        return Evaluator(self)

    def head_kwargs(self) -> dict:
        """Extra keyword arguments for building/loading the model (num_labels, id2label, ...)."""
        return {}


class LabelledObjective(Objective):
    """An objective trained on labelled records (rows, sentences, pairs) instead of packed blocks.

    ``setup(dataset_cfg, train_records, log)`` reads what it needs from the training records (the label map);
    ``encode(record, where)`` turns one record into token ids (None: an empty row, skipped or refused by the
    caller as ``dataset.empty_rows`` says); ``collate`` pads a list of encoded examples.
    """

    labelled = True

    def setup(self, data_cfg, train_records: list, log) -> None:
        self.data = data_cfg
        self.max_len = data_cfg.seq_len

    def restore(self, data_cfg, model_config) -> None:
        """Set up for evaluating a fine-tuned model: what ``setup`` learns from training data (the label map)
        comes from the model's config instead."""
        self.setup(data_cfg, [], lambda _m: None)

    def encode(self, records: list, wheres: list) -> list:
        """Encode a chunk of records (None for an empty row)."""
        raise NotImplementedError

    def pad(self, rows: list, value: int, left: bool = False):
        """Right-pad (or left-pad) lists of ints into a LongTensor."""
        import torch

        width = max(len(r) for r in rows)
        out = torch.full((len(rows), width), value, dtype=torch.long)
        for i, r in enumerate(rows):
            if r:
                if left:
                    out[i, width - len(r):] = torch.tensor(r)
                else:
                    out[i, :len(r)] = torch.tensor(r)
        return out

    def finish_model(self, model) -> None:
        """Write what the objective learned about the data (label maps) into the model's config."""


class Evaluator:
    """Streaming validation state: ``update(model, batch)`` per micro-batch, ``state()``/``merge`` across
    processes, ``compute()`` at the end. Only counts are kept, never logits."""

    def __init__(self, objective):
        self.objective = objective
        self.loss_sum = 0.0
        self.count = 0.0

    def update(self, model, batch) -> None:
        out = self.objective.loss(model, batch)
        self.add_loss(out)

    def add_loss(self, out: LossOutput) -> None:
        self.loss_sum += float(out.sum)
        self.count += float(out.count)

    def state(self) -> dict:
        return {"loss_sum": self.loss_sum, "count": self.count}

    def merge(self, state: dict) -> None:
        self.loss_sum += state["loss_sum"]
        self.count += state["count"]

    def compute(self) -> dict:
        return {"loss": self.loss_sum / max(self.count, 1)}


def summed_cross_entropy(logits, labels) -> LossOutput:
    """Sum of cross-entropy over positions whose label is not -100, and their count."""
    import torch.nn.functional as F

    flat_labels = labels.reshape(-1)
    total = F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), flat_labels, ignore_index=-100,
                            reduction="sum")
    return LossOutput(total, (flat_labels != -100).sum())
