"""Causal language modelling: predict each next token (GPT-2, Llama); evaluated by sliding-window perplexity."""

from __future__ import annotations

from dataclasses import dataclass

from ptcli.errors import PtcliError
from ptcli.objectives.base import LOSS, Context, EvalData, Evaluator, LossOutput, Metric
from ptcli.objectives.lm import LanguageModelling


@dataclass(eq=False)
class CausalLM(LanguageModelling):
    """Next-token prediction over packed blocks; documents are separated by the end-of-text token."""

    chunked_loss: bool = True  # the loss a chunk of positions at a time: never all the logits (linear_ce.py)

    name = "clm"
    auto_class = "AutoModelForCausalLM"
    inference = "causal"
    metrics = (LOSS, Metric("ppl", higher_is_better=False))
    peft_config = {"task_type": "CAUSAL_LM"}
    tokenizer_kind = "bpe"

    def packing(self, tokenizer) -> tuple[int, int | None]:
        return tokenizer.eos_token_id, None

    def lm_inputs(self, batch) -> tuple:
        """(labels, model inputs): position t predicts token t+1. Shift the labels, not the logits: slicing the
        (batch, seq, vocab) logits would copy the largest tensor of the step (transformers' own loss does the same)."""
        import torch.nn.functional as F

        input_ids = batch["input_ids"]
        return F.pad(batch.get("labels", input_ids)[:, 1:], (0, 1), value=-100), {"input_ids": input_ids}

    def loss(self, model, batch) -> LossOutput:
        from ptcli.objectives.linear_ce import causal_lm_loss

        labels, inputs = self.lm_inputs(batch)
        return causal_lm_loss(model, labels, self.chunked_loss and not self.full_logits, **inputs)

    def evaluator(self) -> Evaluator:
        return PerplexityEvaluator(self)

    def setup_evaluation(self, ctx: Context, loaded) -> EvalData:
        """Sliding windows of ``dataset.seq_len`` tokens every ``stride`` over the evaluation text (Hugging Face's
        perplexity guide), as one token stream with the end-of-text token between documents."""
        from ptcli.objectives.perplexity import window_batches, window_count, windows

        tokenizer = loaded.processors.tokenizer
        self.bind(tokenizer)
        seq_len = ctx.source.seq_len
        if loaded.context and seq_len > loaded.context:
            raise PtcliError(f"dataset.seq_len ({seq_len}) exceeds the model's maximum positions ({loaded.context})",
                             fix=f"Set dataset.seq_len={loaded.context} (or lower)")
        stride = ctx.cfg.stride or seq_len
        if not 1 <= stride <= seq_len:
            raise PtcliError(f"stride must be between 1 and dataset.seq_len ({seq_len}), got {stride}",
                             fix=f"Set stride={seq_len // 2} (overlapping windows) or leave it null")
        stream = self.token_stream(ctx, tokenizer)
        if len(stream.ids) < 2:
            raise PtcliError("the evaluation text has fewer than 2 tokens", fix="Evaluate on more text")
        ctx.log(f"{len(stream.ids):,} tokens, windows of {seq_len} every {stride}")
        total_windows = sum(1 for _ in windows(len(stream.ids), seq_len, stride))

        def finish(evaluator) -> dict:
            from ptcli.objectives.perplexity import clm_metrics

            done = evaluator.windows
            return clm_metrics(evaluator.loss_sum, int(evaluator.count), stream.n_bytes, seq_len, stride, done,
                               done == total_windows)

        batches = window_batches(stream.ids, seq_len, stride, ctx.cfg.batch_size, ctx.cfg.max_batches)
        total = window_count(len(stream.ids), seq_len, stride, ctx.cfg.batch_size)
        if ctx.cfg.max_batches:
            total = min(total, ctx.cfg.max_batches)
        return EvalData(batches, f"{len(stream.ids):,} tokens", finish, total)

    def token_stream(self, ctx: Context, tokenizer):
        """The evaluation text as one token stream (perplexity.TokenStream)."""
        import numpy as np

        from ptcli.objectives.perplexity import TokenStream, token_stream

        sep, _ = self.packing(tokenizer)
        if ctx.split != "heldout":
            ctx.source.exact = True  # count the text as given: a file's final newline is a byte too
            return token_stream(self.eval_documents(ctx, ctx.split), tokenizer, sep)
        ids = np.asarray(self.heldout_blocks(ctx, tokenizer), dtype=np.int64).reshape(-1)
        # bytes of the held-out text: its decoded text (exact for byte-level BPE) plus one per separator
        text = tokenizer.decode(ids.tolist(), skip_special_tokens=True)
        return TokenStream(ids, len(text.encode("utf-8")) + int((ids == sep).sum()), 0)


class PerplexityEvaluator(Evaluator):
    """Summed NLL over exactly the scored tokens of each batch: packed blocks (all but the first token) during
    training, sliding windows (``score_from``) in ``evaluate``. Reports the loss and its perplexity."""

    def __init__(self, objective):
        super().__init__(objective)
        self.windows = 0

    def update(self, model, batch) -> None:
        from ptcli.objectives.perplexity import scored_nll

        total, count = scored_nll(model, batch)
        self.loss_sum += float(total)
        self.count += count
        self.windows += batch["input_ids"].shape[0]

    def compute(self) -> dict:
        import math

        loss = self.loss_sum / max(self.count, 1)
        return {"loss": loss, "ppl": math.exp(min(loss, 50))}
