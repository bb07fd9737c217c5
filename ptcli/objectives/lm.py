"""What causal and masked language modelling share: a tokenizer trained on the text, documents packed into blocks
(cached on disk), a model built from config or loaded, and the held-out blocks or named text to evaluate on."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ptcli.data import records
from ptcli.errors import PtcliError
from ptcli.objectives.base import Context, Objective, Prepared


def documents(source, split: str, log):
    """The non-empty texts of a source's records (``dataset.text_column``), in order; an error if there are none."""
    empty = True
    for where, record in source.records(split, log):
        text = records.text_field(record, source.text_column, "dataset.text_column", where)
        if text.strip():
            empty = False
            yield text
    if empty:
        raise PtcliError(f"dataset is empty: the {split} split has no documents", where=source.describe(split),
                         fix="check dataset.text_column / dataset.document / the files")


class LanguageModelling(Objective):
    """Packed blocks of ``dataset.seq_len`` tokens with a separator after every document (and a prefix token
    before every block for BERT-style models)."""

    abstract = True
    tokenizer_kind = "bpe"  # the tokenizer trained when none is given
    needs_shape = "decoder"  # families.shape() of the models this objective trains

    @classmethod
    def config_problems(cls, cfg: dict, model_config: dict | None) -> list[str]:
        from ptcli.objectives.checks import text_model_problems

        return text_model_problems(cfg, model_config, cls.needs_shape, cls.name)

    def packing(self, tokenizer) -> tuple[int, int | None]:
        """(separator id, block prefix id or None)."""
        raise NotImplementedError

    def block_len(self, seq_len: int) -> int:
        """The length of the packed blocks for ``dataset.seq_len`` (span corruption packs longer raw blocks that
        its noise shortens to exactly ``seq_len``)."""
        return seq_len

    def seeded_rows(self, blocks, seed: int) -> list[dict]:
        """Each block collated alone with a generator seeded by its content (``row_seed``): validation noise that
        is the same in training's validation and in ``evaluate``, whatever the batch size."""
        import zlib

        import numpy as np
        import torch

        from ptcli.data.loader import row_seed

        rows = []
        for block in blocks:
            block = torch.tensor(np.asarray(block, dtype=np.int64))
            key = zlib.crc32(block.numpy().astype("<i8").tobytes())
            rows.append(self.collate(block[None], torch.Generator().manual_seed(row_seed(seed, key))))
        return rows

    def bind(self, tokenizer) -> None:
        """Keep what collation needs from the tokenizer (special-token ids)."""
        self.tokenizer = tokenizer

    def load_processors(self, ctx: Context):
        from ptcli.processing.loading import Processors, resolve_tokenizer

        tokenizer = resolve_tokenizer(ctx.cfg.tokenizer, ctx.cfg.model, lambda: documents(ctx.source, "train", ctx.log),
                                      ctx.source.fingerprint("train"), self.tokenizer_kind, ctx.cache, ctx.dist,
                                      ctx.log)
        self.bind(tokenizer)
        return Processors(tokenizer=tokenizer)

    def prepare(self, ctx: Context, processors) -> Prepared:
        from ptcli.data.loader import Blocks
        from ptcli.processing.loading import rank0_first

        source, tokenizer, seq_len = ctx.source, processors.tokenizer, ctx.source.seq_len
        train = rank0_first(ctx.dist, lambda: self.packed(source, "train", tokenizer, ctx.cache, ctx.log))
        n = train.n_blocks
        if n == 0:
            raise PtcliError(f"the training text has {train.n_tokens} tokens, fewer than one block of "
                             f"dataset.seq_len={seq_len}", fix="Lower dataset.seq_len or add more text")
        if source.has_split("val"):
            val = rank0_first(ctx.dist, lambda: self.packed(source, "val", tokenizer, ctx.cache, ctx.log)).blocks()
            train_blocks = train.blocks()
        else:  # a fixed split: the last val_fraction of the blocks, so every run validates on the same text
            n_val = min(n - 1, math.ceil(n * source.val_fraction)) if source.val_fraction > 0 else 0
            train_blocks, val = train.blocks()[:n - n_val], train.blocks()[n - n_val:]
        if len(train_blocks) < ctx.cfg.train.batch_size:
            ctx.log(f"warning: only {len(train_blocks)} training blocks for a batch of {ctx.cfg.train.batch_size}; "
                    "blocks repeat within a step")
        ctx.log(f"data: {len(train_blocks)} training and {len(val)} validation blocks of {seq_len} tokens")
        entropy = getattr(source, "entropy_bits_per_char", None)
        facts = {"train_blocks": len(train_blocks), "val_blocks": len(val),
                 "corpus_entropy_bits_per_char": entropy() if entropy else None,
                 "val_tokens_per_char": tokens_per_char(tokenizer, val)}
        return Prepared(Blocks(train_blocks), Blocks(val), units_per_example=seq_len, facts=facts)

    def packed(self, source, split: str, tokenizer, cache: Path, log):
        """The packed corpus of one split, from the cache when the inputs, tokenizer and settings are unchanged."""
        from ptcli.data.cache import load_or_build_packed, packed_cache_key, tokenizer_fingerprint
        from ptcli.data.packing import pack_into_blocks, token_dtype, tokenize_documents, write_token_file

        sep, prefix = self.packing(tokenizer)
        block_len = self.block_len(source.seq_len)
        key = packed_cache_key(source.fingerprint(split), tokenizer_fingerprint(tokenizer), block_len,
                               {"sep": sep, "prefix": prefix})
        dtype = token_dtype(len(tokenizer))

        def build(tmp: Path) -> dict:
            counts = {"docs": 0, "tokens": 0}

            def counted(docs):
                for ids in docs:
                    counts["docs"] += 1
                    counts["tokens"] += len(ids) + 1
                    yield ids

            docs = counted(tokenize_documents(tokenizer, documents(source, split, log)))
            n_blocks = write_token_file(pack_into_blocks(docs, block_len, sep, prefix), tmp / "tokens.bin",
                                        block_len, dtype)
            return {"n_blocks": n_blocks, "block_len": block_len, "dtype": np.dtype(dtype).name,
                    "n_docs": counts["docs"], "n_tokens": counts["tokens"]}

        corpus, _ = load_or_build_packed(key, cache, build, log=log)
        return corpus

    def build_model(self, ctx: Context, processors):
        from ptcli.models.build import build_model

        return build_model(ctx.cfg.model, self.auto_class, processors.tokenizer, log=ctx.log)

    def collate(self, blocks, generator=None) -> dict:
        return {"input_ids": blocks}

    def units(self, batch: dict) -> int:
        return int(batch["input_ids"].numel())

    # ---- what evaluate measures on
    def eval_documents(self, ctx: Context, split: str):
        return documents(ctx.source, split, ctx.log)

    def heldout_blocks(self, ctx: Context, tokenizer):
        """The validation blocks pretraining held out: the last ``val_fraction`` of the packed training blocks
        (read from the packed-corpus cache when the run's tokenizer and data are unchanged)."""
        corpus = self.packed(ctx.source, "train", tokenizer, ctx.cache, ctx.log)
        n = corpus.n_blocks
        n_val = min(n - 1, math.ceil(n * ctx.source.val_fraction)) if n > 1 else 0
        if n_val < 1:
            raise PtcliError(f"the data holds {n} block(s) of {ctx.source.seq_len} tokens, too few to hold any out",
                             fix="Evaluate on named files: dataset=text dataset.files=[valid.txt]")
        return corpus.blocks()[n - n_val:]


def tokens_per_char(tokenizer, blocks, sample: int = 64) -> float | None:
    """Tokens per character of the validation text (from a sample of blocks), to report bits per character."""
    if len(blocks) == 0:
        return None
    ids = np.asarray(blocks[:sample]).reshape(-1).tolist()
    chars = len(tokenizer.decode(ids, skip_special_tokens=True))
    return len(ids) / chars if chars else None
