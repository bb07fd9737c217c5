"""What the denoising-autoencoder objectives share (T5 span corruption, BART denoising): packed blocks that an
encoder-decoder learns to restore, a tokenizer with the objective's special tokens (sentinels, a mask), the loss
over the target tokens, and noise fixed per block for validation and ``evaluate``."""

from __future__ import annotations

import types

from ptcli.errors import PtcliError
from ptcli.objectives.base import LOSS, Context, EvalData, Evaluator, LossOutput, Metric, summed_cross_entropy
from ptcli.objectives.lm import LanguageModelling

EVAL_SEED = 0  # the noise of validation blocks during training: evaluate's default seed, so both agree


class DenoisingObjective(LanguageModelling):
    """Blocks of the packed text are noised in ``collate`` (from the step's generator); the decoder predicts the
    ``labels`` (its inputs are the labels shifted right, as transformers' seq2seq models make them)."""

    abstract = True
    auto_class = "AutoModelForSeq2SeqLM"
    inference = "seq2seq"
    metrics = (LOSS, Metric("ppl", higher_is_better=False))
    peft_config = {"task_type": "SEQ_2_SEQ_LM"}
    tokenizer_kind = "bpe"
    needs_shape = "encoder-decoder"

    @classmethod
    def config_problems(cls, cfg: dict, model_config: dict | None) -> list[str]:
        from ptcli.models.families import shape

        problems = super().config_problems(cfg, model_config)
        arch = (model_config or {}).get("model_type") or (cfg.get("model") or {}).get("arch")
        if shape(arch) == "decoder":
            problems = [p for p in problems if "needs an encoder-decoder" not in p]
            problems.append(f"objective {cls.name} needs an encoder-decoder model (its decoder restores the noised "
                            f"text), but model.arch is '{arch}', a decoder-only model; use model=t5-tiny, "
                            "model=bart-tiny or a T5/BART model.path")
        return problems

    # ---- processors
    def special_tokens(self) -> dict:
        """The special tokens the objective needs, as ``tokenizer.add_special_tokens`` takes them."""
        raise NotImplementedError

    def extra_tokens(self) -> int:
        toks = self.special_tokens()
        return len(toks.get("extra_special_tokens", [])) + sum(1 for k in toks if k != "extra_special_tokens")

    def load_processors(self, ctx: Context):
        """The tokenizer (loaded, or trained with room for the special tokens within the vocabulary), with the
        objective's special tokens added where it lacks them."""
        from ptcli.objectives.lm import documents
        from ptcli.processing.loading import Processors, resolve_tokenizer

        tok_cfg = ctx.cfg.tokenizer
        if not tok_cfg.path and not ctx.cfg.model.path:  # trained: leave room for the added tokens
            vocab = tok_cfg.vocab_size or ctx.cfg.model.vocab_size
            tok_cfg = types.SimpleNamespace(path=None, kind=tok_cfg.kind, lowercase=tok_cfg.lowercase,
                                            vocab_size=vocab - self.extra_tokens())
        tokenizer = resolve_tokenizer(tok_cfg, ctx.cfg.model, lambda: documents(ctx.source, "train", ctx.log),
                                      ctx.source.fingerprint("train"), self.tokenizer_kind, ctx.cache, ctx.dist,
                                      ctx.log)
        add_special_tokens(tokenizer, self.special_tokens())
        self.bind(tokenizer)
        return Processors(tokenizer=tokenizer)

    def bind(self, tokenizer) -> None:
        super().bind(tokenizer)
        if tokenizer.eos_token_id is None:
            raise PtcliError(f"objective {self.name} needs a tokenizer with an end-of-text token",
                             fix="Use a BPE tokenizer (tokenizer.kind=bpe) or a T5/BART tokenizer")

    def packing(self, tokenizer) -> tuple[int, int | None]:
        return tokenizer.eos_token_id, None  # after every document; the targets end with it too

    def model_settings(self, tokenizer, arch: str | None) -> dict:
        """Config settings of a model built from scratch: the decoder starts from the pad token (T5) or from EOS
        (BART, as fairseq), and BART's generation forces our EOS (its config's default ids are another vocabulary's)."""
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        eos = tokenizer.eos_token_id
        if arch in ("bart", "mbart"):
            return {"decoder_start_token_id": eos, "forced_eos_token_id": eos, "forced_bos_token_id": None}
        return {"decoder_start_token_id": pad}

    def build_model(self, ctx: Context, processors):
        from ptcli.models.build import build_model

        extra = {} if ctx.cfg.model.path else self.model_settings(processors.tokenizer, ctx.cfg.model.arch)
        return build_model(ctx.cfg.model, self.auto_class, processors.tokenizer, log=ctx.log, **extra)

    # ---- every step
    def eval_collate(self, blocks, generator=None) -> dict:
        """Validation: each block noised by its own generator, seeded by its content (``row_seed``), so that
        training's validation and ``evaluate`` see the same noise whatever the batch size."""
        return self.fixed_noise(blocks, EVAL_SEED)

    def fixed_noise(self, blocks, seed: int) -> dict:
        rows = self.seeded_rows(blocks, seed)
        return self.join(rows)

    def join(self, rows: list[dict]) -> dict:
        """Batches of rows of different lengths: inputs padded (attention mask 0), labels padded with -100."""
        import torch

        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        fill = {"input_ids": pad, "attention_mask": 0, "labels": -100}
        out = {}
        for key, value in fill.items():
            width = max(r[key].shape[1] for r in rows)
            out[key] = torch.cat([torch.nn.functional.pad(r[key], (0, width - r[key].shape[1]), value=value)
                                  for r in rows])
        return out

    def loss(self, model, batch) -> LossOutput:
        from ptcli.models.modules import unwrap

        labels = batch["labels"]
        decoder_input_ids = unwrap(model).prepare_decoder_input_ids_from_labels(labels=labels)
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                       decoder_input_ids=decoder_input_ids).logits
        return summed_cross_entropy(logits, labels)

    # ---- the evaluate verb
    def setup_evaluation(self, ctx: Context, loaded) -> EvalData:
        """The held-out blocks (or the named text packed, its tail kept), each noised by a generator seeded by
        (seed, the block): the noise training's validation used when ``seed`` is 0."""
        import math

        tokenizer = loaded.processors.tokenizer
        add_special_tokens(tokenizer, self.special_tokens())
        self.bind(tokenizer)
        if ctx.cfg.batch_size < 1:
            raise PtcliError(f"batch_size must be at least 1, got {ctx.cfg.batch_size}", fix="Set batch_size=8")
        seq_len = ctx.source.seq_len
        blocks = list(self.eval_blocks(ctx, tokenizer))
        size = ctx.cfg.batch_size
        starts = list(range(0, len(blocks), size))
        if ctx.cfg.max_batches:
            starts = starts[:ctx.cfg.max_batches]
        seed = ctx.cfg.seed

        def batches():
            for s in starts:
                yield self.fixed_noise(blocks[s:s + size], seed)

        def finish(evaluator) -> dict:
            out = evaluator.compute()
            out.pop("ppl", None)
            return out | {"perplexity": math.exp(min(out["loss"], 700)), "target_tokens": int(evaluator.count),
                          "blocks": min(len(blocks), len(starts) * size), "seed": seed, "seq_len": seq_len}

        return EvalData(batches(), f"blocks of {seq_len} tokens", finish, len(starts))

    def eval_blocks(self, ctx: Context, tokenizer):
        from ptcli.data.packing import pack_into_blocks, tokenize_documents

        if ctx.split == "heldout":
            return iter(self.heldout_blocks(ctx, tokenizer))
        sep, prefix = self.packing(tokenizer)
        docs = tokenize_documents(tokenizer, self.eval_documents(ctx, ctx.split))
        # full blocks only: span corruption's lengths are exact for the raw block length
        return pack_into_blocks(docs, self.block_len(ctx.source.seq_len), sep, prefix)

    def evaluator(self):
        return LossPerplexity(self)


def add_special_tokens(tokenizer, tokens: dict) -> int:
    """Add what the tokenizer lacks of ``tokens`` (``mask_token``, ``extra_special_tokens``), keeping its own."""
    wanted: dict = {}
    extras = [t for t in tokens.get("extra_special_tokens", []) if t not in tokenizer.get_vocab()]
    if extras:
        wanted["extra_special_tokens"] = extras
    for role, token in tokens.items():
        if role != "extra_special_tokens" and getattr(tokenizer, role, None) is None:
            wanted[role] = token
    if not wanted:
        return 0
    return tokenizer.add_special_tokens(wanted, replace_extra_special_tokens=False)


class LossPerplexity(Evaluator):
    """The loss per target token and its perplexity (counts only)."""

    def compute(self) -> dict:
        import math

        loss = self.loss_sum / max(self.count, 1)
        return {"loss": loss, "ppl": math.exp(min(loss, 50))}
