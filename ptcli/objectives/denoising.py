"""BART denoising (fairseq's ``denoising`` task with BART's settings): the sentences of each packed block are
permuted, ``mask`` of its tokens are hidden in spans of Poisson(``poisson_lambda``) lengths, each span replaced by
ONE ``<mask>`` (a 0-length span inserts one), optionally tokens are deleted and the block rotated; the decoder
reconstructs the original block (then EOS).

Sentences: a sentence ends after a token whose text, without trailing spaces, quotes and closing brackets, ends in
'.', '!' or '?', and after the document separator (EOS); the text after the last such token is a sentence too.
With ``permute_sentences=1`` every block of two or more sentences comes out in another order.

Departures from fairseq, for exact statistics: the spans never overlap (they are laid among the kept tokens at
random gaps), so exactly ``ceil(mask * n)`` tokens are hidden; spans are of tokens, not whole words."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ptcli.errors import PtcliError
from ptcli.objectives.noising import DenoisingObjective

CLOSERS = " \t\n\"')]}»”’"


def permute_sentences(ids, ends, rng, p: float = 1.0):
    """``ids`` with ``ceil(p * sentences)`` of its sentences shuffled among themselves (fairseq's rule); ``ends``:
    True after each sentence's last token. With ``p`` = 1 the order always changes (a draw of the identity becomes
    a random rotation)."""
    import numpy as np

    n = len(ids)
    cuts = np.flatnonzero(ends[:-1]) + 1
    bounds = np.concatenate([[0], cuts, [n]])
    k = len(bounds) - 1
    if k < 2 or p <= 0:
        return ids
    chosen = rng.permutation(k)[:math.ceil(k * p)]
    order = np.arange(k)
    order[chosen] = chosen[rng.permutation(len(chosen))]
    if p >= 1 and (order == np.arange(k)).all():
        order = np.roll(order, int(rng.integers(1, k)))
    return np.concatenate([ids[bounds[i]:bounds[i + 1]] for i in order])


def span_lengths(budget: int, lam: float, rng):
    """Poisson(``lam``) span lengths whose sum is ``budget``, the last one cut to fit (fairseq's
    ``add_whole_word_mask``)."""
    import numpy as np

    draws = rng.poisson(lam, size=max(budget, 1))
    while draws.sum() < budget:
        draws = np.concatenate([draws, rng.poisson(lam, size=max(budget, 1))])
    total = draws.cumsum()
    last = int(np.searchsorted(total, budget))  # the first draw that reaches the budget
    lengths = draws[:last + 1].copy()
    lengths[last] = budget - (total[last - 1] if last else 0)
    return lengths


def infill(ids, ratio: float, lam: float, mask_id: int, rng, random_ids=None, mask_random: float = 0.0):
    """Text infilling: ``ceil(ratio * n)`` tokens hidden in Poisson spans laid at random gaps among the kept tokens,
    each span (0-length ones too) replaced by one ``mask_id`` (a random token of ``random_ids`` with probability
    ``mask_random``). Returns (noised ids, the bool mask of hidden tokens)."""
    import numpy as np

    n = len(ids)
    budget = min(math.ceil(ratio * n), n)
    hidden = np.zeros(n, dtype=bool)
    if budget == 0:
        return ids, hidden
    lengths = span_lengths(budget, lam, rng)
    gaps = np.sort(rng.integers(0, n - budget + 1, size=len(lengths)))  # kept tokens before each span
    before = np.concatenate([[0], lengths.cumsum()[:-1]])
    starts = gaps + before
    covered = np.repeat(starts, lengths) + (np.arange(budget) - np.repeat(before, lengths))
    hidden[covered] = True
    masks = np.full(len(lengths), mask_id, dtype=ids.dtype)
    if mask_random > 0 and random_ids is not None:
        swap = rng.random(len(lengths)) < mask_random
        masks[swap] = random_ids[rng.integers(0, len(random_ids), size=int(swap.sum()))]
    return np.insert(ids[~hidden], gaps, masks), hidden


@dataclass(eq=False)
class Denoising(DenoisingObjective):
    """BART's pretraining objective on packed text (``model=bart-tiny`` by default)."""

    mask: float = 0.3  # the fraction of tokens hidden by text infilling
    mask_random: float = 0.1  # of the spans, the fraction replaced by a random token instead of <mask>
    poisson_lambda: float = 3.5  # the mean span length
    permute_sentences: float = 1.0  # the fraction of each block's sentences shuffled
    rotate: float = 0.0  # the probability of rotating a block to start at a random token
    delete: float = 0.0  # the probability of deleting each token (before infilling)

    name = "denoising"

    def __post_init__(self):
        for key in ("mask", "mask_random", "permute_sentences", "rotate", "delete"):
            if not 0 <= getattr(self, key) <= 1:
                raise PtcliError(f"objective.{key} must be in [0, 1], got {getattr(self, key)}",
                                 fix=f"Use e.g. objective.{key}={getattr(type(self), key)}")
        if self.delete >= 1:
            raise PtcliError("objective.delete must be below 1 (it would delete every token)",
                             fix="Use e.g. objective.delete=0.1")
        if not self.poisson_lambda > 0:
            raise PtcliError(f"objective.poisson_lambda must be positive, got {self.poisson_lambda}",
                             fix="Use objective.poisson_lambda=3.5 (as BART)")

    @classmethod
    def config_problems(cls, cfg: dict, model_config: dict | None) -> list[str]:
        problems = super().config_problems(cfg, model_config)
        model, seq_len = cfg.get("model") or {}, (cfg.get("dataset") or {}).get("seq_len")
        limit = (model_config or {}).get("max_position_embeddings") or model.get("max_positions")
        arch = (model_config or {}).get("model_type") or model.get("arch")
        if arch != "t5" and limit and isinstance(seq_len, int) and seq_len + 1 > limit:
            problems.append(f"objective {cls.name} decodes dataset.seq_len + 1 tokens (the block, then EOS), more "
                            f"than the model's {limit} positions; lower dataset.seq_len to {limit - 1}")
        return problems

    def special_tokens(self) -> dict:
        return {"mask_token": "<mask>"}

    def bind(self, tokenizer) -> None:
        import numpy as np

        super().bind(tokenizer)
        if tokenizer.mask_token_id is None:
            raise PtcliError("the tokenizer has no mask token, which BART denoising needs",
                             fix="Use the tokenizer the run trained, or a BART tokenizer")
        self.mask_id, self.eos_id = tokenizer.mask_token_id, tokenizer.eos_token_id
        size = len(tokenizer)
        texts = tokenizer.batch_decode([[i] for i in range(size)])
        ends = np.array([t.rstrip(CLOSERS).endswith((".", "!", "?")) for t in texts], dtype=bool)
        ends[self.eos_id] = True
        special = set(tokenizer.all_special_ids)
        ends[[i for i in special if i != self.eos_id and i < size]] = False
        self.sentence_end = ends
        self.random_ids = np.array([i for i in range(size) if i not in special], dtype=np.int64)

    def noise(self, ids, rng):
        """One block's noised ids (numpy) and the number of tokens hidden by infilling."""
        import numpy as np

        ids = permute_sentences(ids, self.sentence_end[ids], rng, self.permute_sentences)
        if self.delete > 0:
            keep = rng.random(len(ids)) >= self.delete
            keep[0] |= not keep.any()
            ids = ids[keep]
        ids, hidden = infill(ids, self.mask, self.poisson_lambda, self.mask_id, rng, self.random_ids,
                             self.mask_random)
        if self.rotate > 0 and len(ids) > 1 and rng.random() < self.rotate:
            ids = np.roll(ids, -int(rng.integers(1, len(ids))))
        return ids, int(hidden.sum())

    def collate(self, blocks, generator=None) -> dict:
        import numpy as np
        import torch

        blocks = torch.as_tensor(blocks, dtype=torch.long)
        seeds = torch.randint(0, 2**62, (blocks.shape[0],), generator=generator).tolist()
        rows = []
        for block, seed in zip(blocks.numpy(), seeds):
            noised, _ = self.noise(block, np.random.default_rng(seed))
            source = torch.from_numpy(np.append(noised[:len(block)], self.eos_id))
            target = torch.from_numpy(np.append(block, self.eos_id))
            rows.append({"input_ids": source[None], "attention_mask": torch.ones_like(source)[None],
                         "labels": target[None]})
        return self.join(rows)

    def units(self, batch: dict) -> int:
        labels = batch["labels"]
        return int(labels.shape[0] * (labels.shape[1] - 1))  # the raw blocks' tokens (labels end with EOS)
