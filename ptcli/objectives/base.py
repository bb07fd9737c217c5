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


def summed_cross_entropy(logits, labels) -> LossOutput:
    """Sum of cross-entropy over positions whose label is not -100, and their count."""
    import torch.nn.functional as F

    flat_labels = labels.reshape(-1)
    total = F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), flat_labels, ignore_index=-100,
                            reduction="sum")
    return LossOutput(total, (flat_labels != -100).sum())
