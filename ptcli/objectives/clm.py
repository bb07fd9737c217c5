"""Causal language modelling: predict each next token (GPT-2, Llama)."""

from __future__ import annotations

from ptcli.objectives.base import LossOutput, Objective, summed_cross_entropy


class CausalLM(Objective):
    """Next-token prediction over packed blocks; documents are separated by the end-of-text token."""

    head = "causal_lm"
    tokenizer_kind = "bpe"

    def packing(self, tokenizer) -> tuple[int, int | None]:
        return tokenizer.eos_token_id, None

    def collate(self, blocks, generator=None) -> dict:
        return {"input_ids": blocks}

    def loss(self, model, batch) -> LossOutput:
        input_ids = batch["input_ids"]
        import torch.nn.functional as F

        logits = model(input_ids=input_ids).logits
        # Position t predicts token t+1. Shift the labels, not the logits: slicing the (batch, seq, vocab)
        # logits would copy the largest tensor of the step (transformers' own loss does the same).
        labels = F.pad(batch.get("labels", input_ids)[:, 1:], (0, 1), value=-100)
        return summed_cross_entropy(logits, labels)
