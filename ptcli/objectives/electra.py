"""ELECTRA (replaced-token detection): a small masked-LM generator fills masked positions with samples, and the
discriminator, which becomes ``model/``, tells which tokens were replaced. Both are one ``ModelSet``: one optimizer,
one checkpoint, one DDP wrap; they share one embeddings module (word, position and token-type embeddings and their
LayerNorm: the same ``nn.Parameter`` objects), and the generator's output layer is its own (not tied to its input).
Under FSDP the shared module stays with the root unit (only transformer blocks are sharded on their own), so it is
one sharded parameter set there too (tested: FSDP equals DDP).

The loss of a global batch is ``gen_ce / n_masked + disc_weight * disc_bce / n_tokens``. The loop divides the summed
``LossOutput.sum`` of every micro-batch and process by the summed ``count``; with two denominators that is only
exact if their ratio is fixed. So every row masks exactly ``round(mask_prob * row length)`` of its non-special tokens
(as the original ELECTRA masks a fixed number per sequence): with packed blocks of one length, ``n_masked / n_tokens``
is the same constant in every micro-batch, and ``sum = gen_ce + disc_weight * disc_bce * n_masked / n_tokens`` over
``count = n_masked`` gives the global definition exactly, however the batch is split (tested)."""

from __future__ import annotations

from dataclasses import dataclass

from ptcli.errors import PtcliError
from ptcli.objectives.base import LOSS, Context, EvalData, Evaluator, LossOutput, Metric
from ptcli.objectives.lm import LanguageModelling

EVAL_SEED = 0  # the masks and sampling noise of validation blocks during training: evaluate's default seed
AUC_BINS = 1000  # the histogram of discriminator probabilities the streaming AUC is computed from


@dataclass(eq=False)
class Electra(LanguageModelling):
    """Mask ``mask_prob`` of every row's tokens (never special ones), all as [MASK]; the generator (hidden size
    ``generator_size_ratio`` of the discriminator's, same depth) predicts them and samples replacements; the
    discriminator labels every token original or replaced. Loss: generator MLM + ``disc_weight`` x discriminator
    BCE."""

    mask_prob: float = 0.15
    disc_weight: float = 50.0
    generator_size_ratio: float = 0.25

    name = "electra"
    auto_class = "AutoModelForPreTraining"
    inference = None  # evaluate loads the discriminator and its generator/; generate reports replaced tokens
    metrics = (LOSS, Metric("gen_loss", higher_is_better=False), Metric("disc_loss", higher_is_better=False),
               Metric("disc_accuracy"), Metric("disc_auc"), Metric("replaced_accuracy", shown=False))
    tokenizer_kind = "wordpiece"
    needs_shape = "encoder"
    peft_config = None

    def __post_init__(self):
        problems = []
        if not 0 < self.mask_prob < 1:
            problems.append(f"objective.mask_prob must be in (0, 1), got {self.mask_prob}")
        if not self.disc_weight > 0:
            problems.append(f"objective.disc_weight must be > 0, got {self.disc_weight}")
        if not 0 < self.generator_size_ratio <= 1:
            problems.append(f"objective.generator_size_ratio must be in (0, 1], got {self.generator_size_ratio}")
        if problems:
            raise PtcliError("; ".join(problems), fix="Use e.g. objective.mask_prob=0.15 objective.disc_weight=50 "
                                                      "objective.generator_size_ratio=0.25")

    @classmethod
    def config_problems(cls, cfg: dict, model_config: dict | None) -> list[str]:
        problems = super().config_problems(cfg, model_config)
        model = cfg.get("model") or {}
        if model.get("path"):
            problems.append("objective electra pretrains a generator and a discriminator from the model section's "
                            "sizes and does not load model.path; fine-tune an ELECTRA run's model/ with "
                            "ptcli finetune objective=classification model.path=<run>")
        elif model.get("arch") not in (None, "bert", "electra"):
            problems.append(f"objective electra builds ELECTRA models from a BERT-style model section (model.arch "
                            f"bert or electra), not model.arch '{model.get('arch')}'; use model=bert-tiny")
        return problems

    # ---- set-up
    def bind(self, tokenizer) -> None:
        import torch

        super().bind(tokenizer)
        if tokenizer.mask_token_id is None:
            raise PtcliError("the tokenizer has no mask token, which ELECTRA's generator needs",
                             fix="Use a WordPiece/BERT tokenizer (tokenizer.kind=wordpiece)")
        self.mask_id = tokenizer.mask_token_id
        special = torch.zeros(len(tokenizer), dtype=torch.bool)
        special[[i for i in tokenizer.all_special_ids if i < len(tokenizer)]] = True
        self.special = special

    def packing(self, tokenizer) -> tuple[int, int | None]:
        return tokenizer.sep_token_id, tokenizer.cls_token_id

    def build_model(self, ctx: Context, processors):
        return build_pair(ctx.cfg.model, processors.tokenizer, self.generator_size_ratio, ctx.log)

    # ---- every step
    def collate(self, blocks, generator=None) -> dict:
        """Exactly ``round(mask_prob * length)`` non-special positions per row (fewer only if the row has fewer),
        all [MASK]; ``noise``: one uniform per position, the inverse-CDF draw of the generator's sample there."""
        import torch

        blocks = torch.as_tensor(blocks, dtype=torch.long)
        rows, length = blocks.shape
        candidate = ~self.special[blocks.clamp(max=len(self.special) - 1)] & (blocks < len(self.special))
        scores = torch.rand(blocks.shape, generator=generator).masked_fill(~candidate, 2.0)
        rank = scores.argsort(dim=1).argsort(dim=1)
        k = max(1, round(self.mask_prob * length))
        masked = (rank < k) & candidate
        noise = torch.rand(blocks.shape, generator=generator)
        return {"input_ids": blocks.masked_fill(masked, self.mask_id), "original_ids": blocks, "masked": masked,
                "noise": noise}

    def eval_collate(self, blocks, generator=None) -> dict:
        """Validation: each block masked and noised by its own generator, seeded by its content, so that training's
        validation and ``evaluate`` see the same masks and samples whatever the batch size."""
        return self.fixed_noise(blocks, EVAL_SEED)

    def fixed_noise(self, blocks, seed: int) -> dict:
        import torch

        rows = self.seeded_rows(blocks, seed)
        return {k: torch.cat([r[k] for r in rows]) for k in rows[0]}

    def units(self, batch: dict) -> int:
        return int(batch["input_ids"].numel())

    def terms(self, members, batch) -> dict:
        """One pass through both models (called inside the ModelSet's forward): the summed generator CE over masked
        positions, the summed discriminator BCE over all tokens, their counts, and what the evaluator needs."""
        import torch
        import torch.nn.functional as F

        original, masked = batch["original_ids"], batch["masked"]
        logits = members["generator"](input_ids=batch["input_ids"]).logits
        picked = logits[masked].float()
        gen_sum = F.cross_entropy(picked, original[masked], reduction="sum")
        with torch.no_grad():  # sampling: no gradient, deterministic given the batch's noise
            samples = sample_from(picked.detach(), batch["noise"][masked])
        disc_ids = original.masked_scatter(masked, samples)
        replaced = (disc_ids != original).float()
        disc_logits = members["discriminator"](input_ids=disc_ids).logits.float()
        disc_sum = F.binary_cross_entropy_with_logits(disc_logits, replaced, reduction="sum")
        return {"gen_sum": gen_sum, "n_masked": masked.sum(), "disc_sum": disc_sum,
                "n_tokens": torch.tensor(float(original.numel()), device=original.device),
                "disc_logits": disc_logits.detach(), "replaced": replaced, "samples": samples}

    def loss(self, model, batch) -> LossOutput:
        t = model(self.terms, batch)  # one forward through the wrappers (DDP) for both models
        n_masked, n_tokens = t["n_masked"], t["n_tokens"]
        ratio = n_masked.float() / n_tokens  # the same in every micro-batch (see the module's docstring)
        total = t["gen_sum"] + self.disc_weight * t["disc_sum"] * ratio
        correct = ((t["disc_logits"] > 0).float() == t["replaced"]).sum()
        return LossOutput(total, n_masked, logs={"gen_loss": (t["gen_sum"], n_masked),
                                                 "disc_loss": (t["disc_sum"], n_tokens),
                                                 "disc_acc": (correct, n_tokens)})

    def evaluator(self) -> Evaluator:
        return ElectraEvaluator(self)

    # ---- the end of a run
    def export(self, model, processors, folder):
        """``model/``: the discriminator (ElectraForPreTraining); the generator beside it as its own folder,
        ``generator/`` (``<name>-generator/`` for another folder name, e.g. ``best-generator/``)."""
        from pathlib import Path

        from ptcli.models.export import save_folder
        from ptcli.models.modules import unwrap

        module = unwrap(model)
        folder = Path(folder)
        gen_folder = folder.parent / ("generator" if folder.name == "model" else f"{folder.name}-generator")
        save_folder(module["generator"], processors, gen_folder)
        return save_folder(module["discriminator"], processors, folder)

    # ---- the evaluate verb
    def setup_evaluation(self, ctx: Context, loaded) -> EvalData:
        """The held-out blocks (or the named text packed), each masked and noised by a generator seeded by (seed,
        the block): training's validation when ``seed`` is 0. The generator is read from ``generator/`` beside the
        discriminator's folder."""
        from ptcli.config.paths import resolve_model_dir
        from ptcli.data.packing import pack_into_blocks, tokenize_documents
        from ptcli.models.modules import ModelSet

        tokenizer = loaded.processors.tokenizer
        self.bind(tokenizer)
        if ctx.cfg.batch_size < 1:
            raise PtcliError(f"batch_size must be at least 1, got {ctx.cfg.batch_size}", fix="Set batch_size=8")
        folder = resolve_model_dir(str(ctx.cfg.model.path))
        gen_folder = folder.parent / "generator" if folder is not None else None
        if gen_folder is None or not (gen_folder / "config.json").is_file():
            raise PtcliError(f"no ELECTRA generator beside the model at '{ctx.cfg.model.path}' (generator/)",
                             fix="Evaluate an ELECTRA run directory (model.path=<run>), which holds model/ and "
                                 "generator/")
        generator = load_generator(gen_folder, loaded.placement.device)
        loaded.model = ModelSet({"generator": generator, "discriminator": loaded.model}, export="discriminator")
        share_embeddings(loaded.model)
        seq_len = ctx.source.seq_len
        if ctx.split == "heldout":
            blocks = list(self.heldout_blocks(ctx, tokenizer))
        else:
            sep, prefix = self.packing(tokenizer)
            docs = tokenize_documents(tokenizer, self.eval_documents(ctx, ctx.split))
            blocks = list(pack_into_blocks(docs, seq_len, sep, prefix))
        size = ctx.cfg.batch_size
        starts = list(range(0, len(blocks), size))[:ctx.cfg.max_batches or None]
        seed = ctx.cfg.seed

        def batches():
            for s in starts:
                yield self.fixed_noise(blocks[s:s + size], seed)

        def finish(evaluator) -> dict:
            return evaluator.compute() | {"masked_tokens": int(evaluator.n_masked), "tokens": int(evaluator.n_tokens),
                                          "blocks": min(len(blocks), len(starts) * size), "seed": seed,
                                          "seq_len": seq_len}

        return EvalData(batches(), f"blocks of {seq_len} tokens", finish, len(starts))


def sample_from(logits, uniform):
    """One token per row of ``logits`` drawn from their softmax by inverse CDF with the given uniforms."""
    import torch

    cdf = torch.softmax(logits.float(), dim=-1).cumsum(dim=-1)
    return torch.searchsorted(cdf, uniform.to(cdf.dtype)[:, None]).squeeze(1).clamp(max=logits.shape[-1] - 1)


def generator_sizes(hidden: int, heads: int, intermediate: int, ratio: float) -> dict:
    """The generator's width, heads and feed-forward size: ``ratio`` of the discriminator's (heads dividing the
    width)."""
    width = max(1, int(round(hidden * ratio)))
    n_heads = max(1, min(width, int(round(heads * ratio))))
    while width % n_heads:
        n_heads -= 1
    return {"hidden_size": width, "num_attention_heads": n_heads,
            "intermediate_size": max(1, int(round(intermediate * ratio)))}


def build_pair(model_cfg, tokenizer, ratio: float, log=print):
    """The discriminator from the model section's sizes and the generator ``ratio`` of its width, as a ModelSet
    with one shared embeddings module (embedding_size = the discriminator's hidden size unless model.extra sets
    it; the generator projects it to its width)."""
    from transformers import ElectraConfig, ElectraForMaskedLM, ElectraForPreTraining

    from ptcli.models.build import check_vocab, hf_config_kwargs
    from ptcli.models.modules import ModelSet

    check_vocab(len(tokenizer), model_cfg.vocab_size, "model.vocab_size")
    kwargs = hf_config_kwargs(model_cfg, model_cfg.vocab_size, tokenizer)
    kwargs.setdefault("embedding_size", kwargs["hidden_size"])
    kwargs.setdefault("intermediate_size", 4 * kwargs["hidden_size"])
    kwargs.pop("tie_word_embeddings", None)
    discriminator = ElectraForPreTraining(ElectraConfig(**kwargs))
    sizes = generator_sizes(kwargs["hidden_size"], kwargs["num_attention_heads"], kwargs["intermediate_size"], ratio)
    generator = ElectraForMaskedLM(ElectraConfig(**(kwargs | sizes), tie_word_embeddings=False))
    pair = ModelSet({"generator": generator, "discriminator": discriminator}, export="discriminator")
    share_embeddings(pair)
    log(f"electra: discriminator hidden {kwargs['hidden_size']}, generator hidden {sizes['hidden_size']} "
        f"({sizes['num_attention_heads']} heads), shared embeddings of size {kwargs['embedding_size']}")
    return pair


def share_embeddings(pair) -> None:
    """The generator uses the discriminator's embeddings module: the same parameters (one in the optimizer, DDP
    and the checkpoint)."""
    generator, discriminator = pair["generator"], pair["discriminator"]
    if generator.config.embedding_size != discriminator.config.embedding_size:
        raise PtcliError("the ELECTRA generator's embedding_size differs from the discriminator's",
                         fix="Rebuild the generator with the discriminator's embedding_size")
    generator.electra.embeddings = discriminator.electra.embeddings


def load_generator(folder, device):
    from transformers import ElectraForMaskedLM

    from ptcli.models.build import load_pretrained

    return load_pretrained(ElectraForMaskedLM, str(folder)).to(device).eval()


class ElectraEvaluator(Evaluator):
    """Both loss terms (their own counts), the discriminator's accuracy over all tokens and on replaced ones, and its
    AUC (replaced vs original) from a histogram of its probabilities (counts, merged across processes)."""

    def __init__(self, objective):
        super().__init__(objective)
        self.gen_sum = self.disc_sum = 0.0
        self.n_masked = self.n_tokens = self.correct = self.replaced = self.replaced_correct = 0
        self.hist_pos = [0] * AUC_BINS
        self.hist_neg = [0] * AUC_BINS

    def update(self, model, batch) -> None:
        import torch

        t = model(self.objective.terms, batch)
        self.gen_sum += float(t["gen_sum"])
        self.disc_sum += float(t["disc_sum"])
        self.n_masked += int(t["n_masked"])
        self.n_tokens += int(t["n_tokens"])
        logits, replaced = t["disc_logits"].reshape(-1), t["replaced"].reshape(-1).bool()
        predicted = logits > 0
        self.correct += int((predicted == replaced).sum())
        self.replaced += int(replaced.sum())
        self.replaced_correct += int((predicted & replaced).sum())
        bins = (torch.sigmoid(logits) * AUC_BINS).long().clamp(0, AUC_BINS - 1).cpu()
        pos = torch.bincount(bins[replaced.cpu()], minlength=AUC_BINS).tolist()
        neg = torch.bincount(bins[~replaced.cpu()], minlength=AUC_BINS).tolist()
        self.hist_pos = [a + b for a, b in zip(self.hist_pos, pos)]
        self.hist_neg = [a + b for a, b in zip(self.hist_neg, neg)]

    _FIELDS = ("gen_sum", "disc_sum", "n_masked", "n_tokens", "correct", "replaced", "replaced_correct")

    def state(self) -> dict:
        return {f: getattr(self, f) for f in self._FIELDS} | {"hist_pos": self.hist_pos, "hist_neg": self.hist_neg}

    def merge(self, state: dict) -> None:
        for f in self._FIELDS:
            setattr(self, f, getattr(self, f) + state[f])
        self.hist_pos = [a + b for a, b in zip(self.hist_pos, state["hist_pos"])]
        self.hist_neg = [a + b for a, b in zip(self.hist_neg, state["hist_neg"])]

    def compute(self) -> dict:
        gen = self.gen_sum / max(self.n_masked, 1)
        disc = self.disc_sum / max(self.n_tokens, 1)
        return {"loss": gen + self.objective.disc_weight * disc, "gen_loss": gen, "disc_loss": disc,
                "disc_accuracy": self.correct / max(self.n_tokens, 1), "disc_auc": histogram_auc(
                    self.hist_pos, self.hist_neg), "replaced_accuracy": self.replaced_correct / max(self.replaced, 1)}


def histogram_auc(pos: list, neg: list) -> float:
    """P(score of a positive > score of a negative) from binned scores, ties (one bin) counted half; 0.5 (chance)
    without positives or negatives."""
    n_pos, n_neg = sum(pos), sum(neg)
    if not n_pos or not n_neg:
        return 0.5
    below, wins = 0, 0.0
    for p, n in zip(pos, neg):
        wins += p * (below + 0.5 * n)
        below += n
    return wins / (n_pos * n_neg)
