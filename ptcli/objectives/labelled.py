"""What fine-tuning objectives share: labelled records read, split and encoded in memory (fine-tuning sets are small:
SST-2's 67k rows are a few MB of token ids; images stay paths or small arrays until collation), a label map learned
from the training rows and written into the model's config, and the same held-out slice to evaluate on later."""

from __future__ import annotations

import math

import numpy as np

from ptcli.errors import PtcliError
from ptcli.objectives.base import Context, EvalData, Objective, Prepared

ENCODE_CHUNK = 1000
VAL_SPLIT_SEED = 1234  # the carved validation split never depends on train.seed


SMALL_VALIDATION = 20  # fewer held-out examples than this make noisy metrics: said at the start of the run


def carve_split(rows: list, fraction: float) -> tuple[list, list]:
    """A fixed, seeded validation slice of ``fraction`` of the rows (the rest is training data)."""
    if fraction <= 0 or len(rows) < 2:
        return rows, []
    order = np.random.default_rng(VAL_SPLIT_SEED).permutation(len(rows))
    n_val = min(len(rows) - 1, math.ceil(len(rows) * fraction))
    val_idx = set(order[-n_val:].tolist())
    return [r for i, r in enumerate(rows) if i not in val_idx], [r for i, r in enumerate(rows) if i in val_idx]


def record_texts(rows):
    """Every piece of text in labelled records (strings, lists of strings, chat messages), for tokenizer training."""
    for _, record in rows:
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


class LabelledObjective(Objective):
    """Trained on labelled records (rows, sentences, pairs) rather than packed blocks.

    Subclasses say what the training rows teach (``learn``: the label map; ``restore``: the same from a trained
    model's config), how a chunk of records becomes examples (``encode``; None for an empty row, skipped or refused
    as ``dataset.empty_rows`` says) and how examples are padded into a batch (``collate``)."""

    abstract = True
    tokenizer_kind = "wordpiece"
    needs_shape: str | None = None  # families.shape() of the models it trains (None: any text model)

    @classmethod
    def config_problems(cls, cfg: dict, model_config: dict | None) -> list[str]:
        from ptcli.objectives.checks import text_model_problems

        return text_model_problems(cfg, model_config, cls.needs_shape, cls.name)

    def use(self, source, processors) -> None:
        """The data source's columns and the processors (the tokenizer), kept for encoding and collation."""
        self.data, self.max_len, self.processors = source, source.seq_len, processors
        self.tokenizer = processors.tokenizer

    def learn(self, train_rows: list, log) -> None:
        """What the training rows teach the objective (a label map)."""

    def restore(self, model_config) -> None:
        """The same, from a fine-tuned model's config (for evaluation)."""

    def encode(self, records: list, wheres: list) -> list:
        raise NotImplementedError

    def postprocess(self, examples: list) -> list:
        return examples

    def head_kwargs(self) -> dict:
        """Config values for the model's head (num_labels, id2label, ...), also written into model/'s config."""
        return {}

    # ---- the training run
    def load_processors(self, ctx: Context):
        from ptcli.processing.loading import Processors, resolve_tokenizer

        tokenizer = resolve_tokenizer(ctx.cfg.tokenizer, ctx.cfg.model,
                                      lambda: record_texts(ctx.source.records("train", ctx.log)),
                                      ctx.source.fingerprint("train") + "|records", self.tokenizer_kind, ctx.cache,
                                      ctx.dist, ctx.log)
        processors = Processors(tokenizer=tokenizer)
        self.check_processors(processors)
        return processors

    def check_processors(self, processors) -> None:
        """Refuse processors the objective cannot work with (a tokenizer without what it needs)."""

    def prepare(self, ctx: Context, processors) -> Prepared:
        source = ctx.source
        self.use(source, processors)
        rows = list(source.records("train", ctx.log))
        if not rows:
            raise PtcliError("dataset is empty: the training files hold no rows", fix="check dataset.files")
        if source.has_split("val"):
            train_rows, val_rows = rows, list(source.records("val", ctx.log))
            where = "dataset.val_files" if source.val_files else "the dataset's validation split"
        else:
            train_rows, val_rows = carve_split(rows, source.val_fraction)
            where = f"dataset.val_fraction={source.val_fraction}"
        self.learn(train_rows, ctx.log)
        train, skipped = self.encode_all(train_rows)
        val, val_skipped = self.encode_all(val_rows)
        if skipped or val_skipped:
            ctx.log(f"warning: skipped {skipped} training and {val_skipped} validation rows with empty text "
                    "(dataset.empty_rows=skip)")
        if not train:
            raise PtcliError("dataset is empty: every training row has empty text",
                             fix="check dataset.text_column and the files")
        ctx.log(f"data: {len(train)} training and {len(val)} validation examples ({where})")
        if not source.has_split("val") and 0 < len(val) < SMALL_VALIDATION:
            ctx.log(f"warning: only {len(val)} validation example(s) (dataset.val_fraction={source.val_fraction:g} of "
                    f"{len(rows)} rows): its metrics will jump from one evaluation to the next; raise "
                    "dataset.val_fraction or give dataset.val_files")
        return Prepared(train, val, facts={"train_examples": len(train), "val_examples": len(val)})

    def encode_all(self, rows: list) -> tuple[list, int]:
        """Encode in chunks (the fast tokenizer batches); empty rows are skipped and counted, or refused."""
        out, skipped = [], 0
        for start in range(0, len(rows), ENCODE_CHUNK):
            chunk = rows[start:start + ENCODE_CHUNK]
            for (where, _), example in zip(chunk, self.encode([r for _, r in chunk], [w for w, _ in chunk])):
                if example is None:
                    if self.data.empty_rows == "fail":
                        raise PtcliError("row has empty text", where=where,
                                         fix="remove the row, or set dataset.empty_rows=skip to skip and count them")
                    skipped += 1
                else:
                    out.append(example)
        return self.postprocess(out), skipped

    def build_model(self, ctx: Context, processors):
        from ptcli.models.build import build_model

        model = build_model(ctx.cfg.model, self.auto_class, processors.tokenizer, log=ctx.log, **self.head_kwargs())
        for key, value in self.head_kwargs().items():  # what the data taught, in model/'s config.json
            setattr(model.config, key, value)
        return model

    # ---- the evaluate verb
    def setup_evaluation(self, ctx: Context, loaded) -> EvalData:
        """The rows evaluate measures on (``dataset.val_files``, the same held-out slice fine-tuning validated on,
        or all of the named rows), encoded with the label map the model learned."""
        rows, where = self.evaluation_rows(ctx, loaded)
        examples, skipped = self.encode_all(rows)
        ctx.log(f"data: {len(examples)} examples from {where}"
                + (f" ({skipped} empty rows skipped)" if skipped else ""))
        size, limit = ctx.cfg.batch_size, ctx.cfg.max_batches
        starts = list(range(0, len(examples), size))[:limit] if limit else range(0, len(examples), size)

        def finish(evaluator) -> dict:
            return evaluator.compute() | {"examples": len(examples)}

        return EvalData((self.collate(examples[s:s + size], None) for s in starts), where, finish, len(starts))

    def evaluation_rows(self, ctx: Context, loaded) -> tuple[list, str]:
        """The ``(where, record)`` rows evaluate measures on, and where they come from; the objective restores the
        label map the model learned first."""
        source = ctx.source
        self.use(source, loaded.processors)
        self.check_processors(loaded.processors)
        self.restore(loaded.model.config)
        if ctx.split == "val" and source.has_split("val"):
            rows, where = list(source.records("val", ctx.log)), "dataset.val_files"
        elif ctx.split == "train":
            rows, where = list(source.records("train", ctx.log)), f"all of {source.describe('train')}"
        else:
            _, rows = carve_split(list(source.records("train", ctx.log)), source.val_fraction)
            where = f"the held-out dataset.val_fraction={source.val_fraction:g} of {source.describe('train')}"
        if not rows:
            raise PtcliError("no evaluation rows", where=where,
                             fix="set dataset.val_files=[...] or a dataset.val_fraction above 0")
        return rows, where

    def training_rows(self, ctx: Context) -> tuple[list, str]:
        """The ``(where, record)`` rows a run trained on (call ``evaluation_rows`` first): its training files less
        the held-out slice, as training carved it."""
        source = ctx.source
        rows = list(source.records("train", ctx.log))
        if not source.has_split("val"):
            rows, _ = carve_split(rows, source.val_fraction)
        return rows, f"the training rows of {source.describe('train')}"

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
