"""Masked language modelling (BERT): dynamic masking, fresh every step, optionally of whole words; evaluated by
masked-token accuracy and loss with masks fixed per block."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ptcli.errors import PtcliError
from ptcli.objectives.base import LOSS, Context, EvalData, Evaluator, LossOutput, Metric, summed_cross_entropy
from ptcli.objectives.lm import LanguageModelling


@dataclass(eq=False)
class MaskedLM(LanguageModelling):
    """Mask ``mask_prob`` of the tokens: ``replace_mask`` of those become [MASK], ``replace_random`` a random
    token, the rest stay; the model predicts the originals. ``whole_word`` masks every piece of a word."""

    mask_prob: float = 0.15
    replace_mask: float = 0.8
    replace_random: float = 0.1
    whole_word: bool = False

    name = "mlm"
    auto_class = "AutoModelForMaskedLM"
    inference = "fill-mask"
    metrics = (LOSS, Metric("ppl", higher_is_better=False), Metric("accuracy"))
    tokenizer_kind = "wordpiece"
    needs_shape = "encoder"
    peft_config = {"modules_to_save": ["cls"]}  # no peft task type for masked LMs: the MLM head trains fully

    def __post_init__(self):
        if not 0 < self.mask_prob < 1 or self.replace_mask + self.replace_random > 1:
            raise PtcliError("objective.mask_prob must be in (0, 1) and replace_mask + replace_random <= 1",
                             fix="Use e.g. objective.mask_prob=0.15 objective.replace_mask=0.8")

    def bind(self, tokenizer) -> None:
        import torch

        from ptcli.processing.tokenizers import continuation_mask

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

    def evaluator(self) -> Evaluator:
        return MaskedEvaluator(self)

    def setup_evaluation(self, ctx: Context, loaded) -> EvalData:
        """Blocks of ``dataset.seq_len`` (the held-out ones, or the named text packed with its tail kept), each
        masked by a generator seeded by (seed, block index): the same masks whatever ``batch_size``."""
        self.bind(loaded.processors.tokenizer)
        if ctx.cfg.batch_size < 1:
            raise PtcliError(f"batch_size must be at least 1, got {ctx.cfg.batch_size}", fix="Set batch_size=8")
        seq_len = ctx.source.seq_len
        if loaded.context and seq_len > loaded.context:
            raise PtcliError(f"dataset.seq_len ({seq_len}) exceeds the model's maximum positions ({loaded.context})",
                             fix=f"Set dataset.seq_len={loaded.context} (or lower)")
        blocks = self.eval_blocks(ctx, loaded.processors.tokenizer)

        def finish(evaluator) -> dict:
            out = evaluator.compute() | {"masked_tokens": int(evaluator.count), "seed": ctx.cfg.seed,
                                         "seq_len": seq_len}
            out.pop("ppl")
            out["perplexity"] = math.exp(min(out["loss"], 700))
            if evaluator.partial:
                out["partial"] = True
            else:
                out["blocks"] = evaluator.blocks
            return out

        return EvalData(self.fixed_mask_batches(blocks, ctx.cfg.batch_size, ctx.cfg.seed, ctx.cfg.max_batches),
                        f"blocks of {seq_len} tokens", finish)

    def eval_blocks(self, ctx: Context, tokenizer):
        from ptcli.data.packing import pack_into_blocks, tokenize_documents

        if ctx.split == "heldout":
            return iter(self.heldout_blocks(ctx, tokenizer))
        sep, prefix = self.packing(tokenizer)
        docs = tokenize_documents(tokenizer, self.eval_documents(ctx, ctx.split))
        return pack_into_blocks(docs, ctx.source.seq_len, sep, prefix, keep_tail=True)

    def fixed_mask_batches(self, blocks, batch_size: int, seed: int, max_batches: int | None):
        """Batches of blocks of one length; block i masked by its own generator (row_seed(seed, i)). The last batch
        of an early stop carries ``partial``."""
        import torch

        from ptcli.data.loader import row_seed

        pending: list = []
        n_batches = 0

        def batch_of(group):
            rows = [self.collate(torch.as_tensor(block, dtype=torch.long)[None],
                                 torch.Generator().manual_seed(row_seed(seed, index))) for index, block in group]
            return {"input_ids": torch.cat([r["input_ids"] for r in rows]),
                    "labels": torch.cat([r["labels"] for r in rows]), "blocks": len(group)}

        for index, block in enumerate(blocks):
            block = list(block)
            if pending and (len(pending) >= batch_size or len(block) != len(pending[0][1])):
                if max_batches is not None and n_batches >= max_batches:
                    yield {"partial": True}
                    return
                yield batch_of(pending)
                n_batches += 1
                pending = []
            pending.append((index, block))
        if pending:
            if max_batches is not None and n_batches >= max_batches:
                yield {"partial": True}
                return
            yield batch_of(pending)


class MaskedEvaluator(Evaluator):
    """Loss (nats per masked token), its perplexity and the accuracy of the predictions at masked positions."""

    def __init__(self, objective):
        super().__init__(objective)
        self.correct, self.blocks, self.partial = 0, 0, False

    def update(self, model, batch) -> None:
        import torch.nn.functional as F

        if batch.get("partial"):
            self.partial = True
            return
        labels = batch["labels"]
        logits = model(input_ids=batch["input_ids"]).logits
        chosen = labels != -100
        picked, targets = logits[chosen].float(), labels[chosen]
        if targets.numel():
            self.loss_sum += float(F.cross_entropy(picked, targets, reduction="sum"))
            self.correct += int((picked.argmax(dim=-1) == targets).sum())
        self.count += targets.numel()
        self.blocks += int(batch.get("blocks", labels.shape[0]))

    def state(self) -> dict:
        return super().state() | {"correct": self.correct}

    def merge(self, state: dict) -> None:
        super().merge(state)
        self.correct += state["correct"]

    def compute(self) -> dict:
        loss = self.loss_sum / max(self.count, 1)
        return {"loss": loss, "ppl": math.exp(min(loss, 50)), "accuracy": self.correct / max(self.count, 1)}
