"""Masked language modelling (BERT): dynamic masking, fresh every step, optionally of whole words."""

from __future__ import annotations

from ptcli.objectives.base import LossOutput, Objective, summed_cross_entropy


class MaskedLM(Objective):
    """Mask ``mask_prob`` of the tokens: ``replace_mask`` of those become [MASK], ``replace_random`` a random
    token, the rest stay; the model predicts the originals. ``whole_word`` masks every piece of a word."""

    head = "masked_lm"
    tokenizer_kind = "wordpiece"

    def __init__(self, mask_prob: float = 0.15, replace_mask: float = 0.8, replace_random: float = 0.1,
                 whole_word: bool = False):
        if not 0 < mask_prob < 1 or replace_mask + replace_random > 1:
            from ptcli.errors import PtcliError

            raise PtcliError("objective.mask_prob must be in (0, 1) and replace_mask + replace_random <= 1",
                             fix="Use e.g. objective.mask_prob=0.15 objective.replace_mask=0.8")
        self.mask_prob, self.replace_mask, self.replace_random = mask_prob, replace_mask, replace_random
        self.whole_word = whole_word

    def bind(self, tokenizer) -> None:
        import torch

        from ptcli.errors import PtcliError
        from ptcli.tokenizer import continuation_mask

        super().bind(tokenizer)
        if tokenizer.mask_token_id is None:
            raise PtcliError("the tokenizer has no mask token, which masked-LM training needs",
                             fix="Use a WordPiece/BERT tokenizer (tokenizer.kind=wordpiece)")
        self.mask_id = tokenizer.mask_token_id
        self.vocab = len(tokenizer)
        special = torch.zeros(self.vocab, dtype=torch.bool)
        special[[i for i in tokenizer.all_special_ids if i < self.vocab]] = True
        self.special = special
        self.continuation = torch.from_numpy(continuation_mask(tokenizer)[: self.vocab]).bool()

    def packing(self, tokenizer) -> tuple[int, int | None]:
        return tokenizer.sep_token_id, tokenizer.cls_token_id

    def collate(self, blocks, generator=None) -> dict:
        import torch

        input_ids = blocks.clone()
        special = self.special[input_ids]
        if self.whole_word:
            # A word starts at every non-continuation piece; all pieces of a word share one coin flip.
            starts = ~self.continuation[input_ids] | special
            word = starts.long().cumsum(dim=1)
            coin = torch.rand(word.shape[0], word.shape[1] + 1, generator=generator) < self.mask_prob
            masked = coin.gather(1, word) & ~special
        else:
            masked = (torch.rand(input_ids.shape, generator=generator) < self.mask_prob) & ~special
        labels = torch.where(masked, blocks, torch.full_like(blocks, -100))
        r = torch.rand(input_ids.shape, generator=generator)
        to_mask = masked & (r < self.replace_mask)
        to_random = masked & (r >= self.replace_mask) & (r < self.replace_mask + self.replace_random)
        random_ids = torch.randint(self.vocab, input_ids.shape, generator=generator)
        input_ids[to_mask] = self.mask_id
        input_ids[to_random] = random_ids[to_random]
        return {"input_ids": input_ids, "labels": labels}

    def loss(self, model, batch) -> LossOutput:
        logits = model(input_ids=batch["input_ids"]).logits
        return summed_cross_entropy(logits, batch["labels"])
