"""T5 span corruption: spans of the packed text (``noise_density`` of the tokens, spans of ``mean_noise_span_length``
on average) are each replaced by one sentinel (``<extra_id_0>``, ``<extra_id_1>``, ...); the target is every sentinel
followed by the span it hides, then EOS (t5.data.preprocessors.span_corruption; HF's run_t5_mlm_flax).

The raw blocks are longer than ``dataset.seq_len`` by exactly what the noise removes (t5's ``random_spans_helper``,
HF's ``compute_input_and_target_lengths``), so every input is ``seq_len`` tokens and no batch needs padding."""

from __future__ import annotations

from dataclasses import dataclass

from ptcli.errors import PtcliError
from ptcli.objectives.noising import DenoisingObjective


def span_counts(length: int, noise_density: float, mean_noise_span_length: float) -> tuple[int, int]:
    """(noise tokens, noise spans) of a block of ``length`` raw tokens: t5's ``random_spans_noise_mask`` counts, at
    least one noise token, one kept token and one span, and no more spans than either kind of token can fill."""
    noise = min(max(int(round(length * noise_density)), 1), length - 1)
    spans = max(int(round(noise / mean_noise_span_length)), 1)
    return noise, min(spans, noise, length - noise)


def lengths_of(tokens_length: int, noise_density: float, mean_noise_span_length: float) -> tuple[int, int]:
    """(input length, target length) for ``tokens_length`` raw tokens: kept tokens + a sentinel per span + EOS, and
    noise tokens + a sentinel per span + EOS."""
    noise, spans = span_counts(tokens_length, noise_density, mean_noise_span_length)
    return tokens_length - noise + spans + 1, noise + spans + 1


def input_and_target_lengths(inputs_length: int, noise_density: float,
                             mean_noise_span_length: float) -> tuple[int, int]:
    """(raw tokens per block, target length) whose noised inputs are at most ``inputs_length`` tokens, as long as
    possible (t5's ``random_spans_helper``): 512 -> (568, 114) at density 0.15 and mean span 3."""
    tokens = 2  # the input length grows by 0 or 1 per raw token from 3 at 2 raw tokens, so it meets inputs_length
    while lengths_of(tokens + 1, noise_density, mean_noise_span_length)[0] <= inputs_length:
        tokens += 1
    return tokens, lengths_of(tokens, noise_density, mean_noise_span_length)[1]


def random_spans_noise_mask(rows: int, length: int, noise_density: float, mean_noise_span_length: float,
                            generator=None):
    """(rows, length) bools, True at noise: t5's ``random_spans_noise_mask`` for every row at once. The noise and
    the kept tokens are each cut into ``spans`` segments by a random partition (a random choice of ``spans - 1`` of
    the gaps between items) and interleaved, kept first, so every row starts with kept tokens and ends in noise."""
    import torch

    noise, spans = span_counts(length, noise_density, mean_noise_span_length)

    def segmentation(items: int):
        first = torch.zeros(rows, items, dtype=torch.long)
        if spans > 1:
            gaps = torch.rand(rows, items - 1, generator=generator).argsort(dim=1)[:, :spans - 1] + 1
            first.scatter_(1, gaps, 1)
        segment = first.cumsum(dim=1)
        return torch.zeros(rows, spans, dtype=torch.long).scatter_add_(1, segment, torch.ones_like(segment))

    noise_lengths = segmentation(noise)
    kept_lengths = segmentation(length - noise)
    interleaved = torch.stack([kept_lengths, noise_lengths], dim=2).reshape(rows, 2 * spans)
    starts = interleaved.cumsum(dim=1)[:, :-1]
    indicator = torch.zeros(rows, length, dtype=torch.long).scatter_(1, starts, 1)
    return indicator.cumsum(dim=1) % 2 == 1


def corrupt(blocks, noise, sentinels, eos: int) -> tuple:
    """(inputs, targets): in the inputs each noise span becomes its sentinel; the targets are each sentinel then the
    span it replaced; both end with ``eos``. Every row of ``noise`` must hold the same number of spans."""
    import torch
    import torch.nn.functional as F

    rows = blocks.shape[0]

    def replaced(spans):  # each run of True in ``spans`` becomes the sentinel of its number; the rest is kept
        start = spans & ~F.pad(spans[:, :-1], (1, 0), value=False)
        number = (start.long().cumsum(dim=1) - 1).clamp(min=0)
        full = torch.where(start, sentinels[number.clamp(max=len(sentinels) - 1)], blocks)
        return full[~spans | start].reshape(rows, -1)

    end = torch.full((rows, 1), eos, dtype=blocks.dtype)
    # the k-th kept run precedes the k-th noise span, so replacing kept runs numbers the targets' sentinels alike
    return torch.cat([replaced(noise), end], dim=1), torch.cat([replaced(~noise), end], dim=1)


@dataclass(eq=False)
class SpanCorruption(DenoisingObjective):
    """T5's pretraining objective on packed text, for T5 or BART models (``model=t5-tiny`` by default)."""

    noise_density: float = 0.15
    mean_noise_span_length: float = 3.0
    extra_ids: int = 100  # sentinels added to the tokenizer, <extra_id_0> ... (T5 has 100)

    name = "span_corruption"

    def __post_init__(self):
        if not 0 < self.noise_density < 1:
            raise PtcliError(f"objective.noise_density must be in (0, 1), got {self.noise_density}",
                             fix="Use e.g. objective.noise_density=0.15")
        if not self.mean_noise_span_length >= 1:
            raise PtcliError(f"objective.mean_noise_span_length must be at least 1, got "
                             f"{self.mean_noise_span_length}", fix="Use e.g. objective.mean_noise_span_length=3")
        if not 1 <= self.extra_ids <= 1000:
            raise PtcliError(f"objective.extra_ids must be between 1 and 1000, got {self.extra_ids}",
                             fix="Use objective.extra_ids=100 (as T5)")

    @classmethod
    def config_problems(cls, cfg: dict, model_config: dict | None) -> list[str]:
        problems = super().config_problems(cfg, model_config)
        settings = cfg.get("objective") or {}
        density = settings.get("noise_density", cls.noise_density)
        mean = settings.get("mean_noise_span_length", cls.mean_noise_span_length)
        extra = settings.get("extra_ids", cls.extra_ids)
        seq_len = (cfg.get("dataset") or {}).get("seq_len")
        if not (isinstance(seq_len, int) and isinstance(density, float) and isinstance(mean, (int, float))
                and isinstance(extra, int) and 0 < density < 1 and mean >= 1):
            return problems
        if seq_len < 4:
            return problems + [f"objective {cls.name} needs dataset.seq_len of at least 4, got {seq_len}"]
        raw, _ = input_and_target_lengths(seq_len, density, mean)
        spans = span_counts(raw, density, mean)[1]
        if lengths_of(raw, density, mean)[0] != seq_len:
            problems.append(f"no raw block length gives inputs of exactly dataset.seq_len={seq_len} at "
                            f"noise_density={density}; try dataset.seq_len={seq_len + 1}")
        model, tokenizer = cfg.get("model") or {}, cfg.get("tokenizer") or {}
        vocab = tokenizer.get("vocab_size") or model.get("vocab_size")
        if not model.get("path") and not tokenizer.get("path") and isinstance(vocab, int) and vocab - extra < 258:
            problems.append(f"the tokenizer trained for objective {cls.name} needs {258 + extra} tokens or more "
                            f"(258 byte-level BPE tokens and objective.extra_ids={extra} sentinels), got {vocab}; "
                            "raise model.vocab_size")
        if spans > extra:
            problems.append(f"blocks of dataset.seq_len={seq_len} hold {spans} noise spans, more than "
                            f"objective.extra_ids={extra} sentinels; raise objective.extra_ids or lower "
                            "dataset.seq_len")
        return problems

    def special_tokens(self) -> dict:
        return {"extra_special_tokens": [f"<extra_id_{i}>" for i in range(self.extra_ids)]}

    def bind(self, tokenizer) -> None:
        import torch

        super().bind(tokenizer)
        ids = tokenizer.convert_tokens_to_ids(self.special_tokens()["extra_special_tokens"])
        if None in ids or (tokenizer.unk_token_id is not None and tokenizer.unk_token_id in ids):
            raise PtcliError("the tokenizer lacks the <extra_id_N> sentinels span corruption needs",
                             fix="Use the tokenizer the run trained, or a T5 tokenizer")
        self.sentinels = torch.tensor(ids, dtype=torch.long)
        self.eos_id = tokenizer.eos_token_id

    def block_len(self, seq_len: int) -> int:
        return input_and_target_lengths(seq_len, self.noise_density, self.mean_noise_span_length)[0]

    def collate(self, blocks, generator=None) -> dict:
        import torch

        blocks = torch.as_tensor(blocks, dtype=torch.long)
        noise = random_spans_noise_mask(blocks.shape[0], blocks.shape[1], self.noise_density,
                                        self.mean_noise_span_length, generator)
        inputs, targets = corrupt(blocks, noise, self.sentinels, self.eos_id)
        return {"input_ids": inputs, "attention_mask": torch.ones_like(inputs), "labels": targets}

    def units(self, batch: dict) -> int:
        return int(batch["input_ids"].numel())
