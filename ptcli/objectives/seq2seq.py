"""Encoder-decoder training (T5/BART style): input text -> target text, for summarization or translation.

Validation reports the loss and, with ``generate_metrics``, ROUGE-1/2/L(sum) and BLEU on generated outputs.
"""

from __future__ import annotations

from dataclasses import dataclass

from ptcli.data.records import text_field
from ptcli.errors import PtcliError
from ptcli.objectives.base import LOSS, Evaluator, LossOutput, Metric, MetricEvaluator, summed_cross_entropy
from ptcli.objectives.labelled import LabelledObjective


@dataclass(eq=False)
class Seq2Seq(LabelledObjective):
    """Encoder-decoder training: input text -> target text."""

    max_target_len: int = 128
    source_prefix: str = ""  # e.g. "summarize: " for T5 checkpoints
    generate_metrics: bool = True  # ROUGE/BLEU on generated text at each evaluation (slower than loss alone)
    num_beams: int = 1
    max_new_tokens: int = 64

    name = "seq2seq"
    auto_class = "AutoModelForSeq2SeqLM"
    inference = "seq2seq"
    peft_config = {"task_type": "SEQ_2_SEQ_LM"}
    tokenizer_kind = "bpe"
    needs_shape = "encoder-decoder"
    metrics = (LOSS, Metric("rouge1"), Metric("rouge2"), Metric("rougeL"), Metric("rougeLsum"), Metric("bleu"))

    @classmethod
    def config_problems(cls, cfg: dict, model_config: dict | None) -> list[str]:
        problems = super().config_problems(cfg, model_config)
        if not (cfg.get("dataset") or {}).get("label_column"):
            problems.append("objective=seq2seq needs the target text column: set dataset.label_column (e.g. "
                            "dataset.label_column=summary)")
        return problems

    def learn(self, train_rows, log) -> None:
        if not self.data.label_column:
            raise PtcliError("objective=seq2seq needs the target text column",
                             fix="set dataset.label_column (e.g. dataset.label_column=summary)")

    def encode(self, records: list, wheres: list) -> list:
        sources, targets, keep = [], [], []
        for record, where in zip(records, wheres):
            source = text_field(record, self.data.text_column, "dataset.text_column", where)
            target = text_field(record, self.data.label_column, "dataset.label_column", where)
            ok = bool(source.strip() and target.strip())
            keep.append(ok)
            if ok:
                sources.append(self.source_prefix + source)
                targets.append(target)
        if not sources:
            return [None] * len(records)
        eos = self.tokenizer.eos_token_id
        src = self.tokenizer(sources, truncation=True, max_length=self.max_len)["input_ids"]
        tgt = self.tokenizer(text_target=targets, truncation=True, max_length=self.max_target_len)["input_ids"]
        out, j = [], 0
        for ok in keep:
            if not ok:
                out.append(None)
                continue
            labels = tgt[j]
            if eos is not None and (not labels or labels[-1] != eos):  # the model must learn to stop
                labels = labels[: self.max_target_len - 1] + [eos]
            out.append({"input_ids": src[j], "labels": labels})
            j += 1
        return out

    def example_length(self, example) -> int | None:
        """Source and target tokens: a batch pads both (the encoder's inputs and the decoder's)."""
        return len(example["input_ids"]) + len(example["labels"])

    def collate(self, examples, generator=None) -> dict:
        pad = self.tokenizer.pad_token_id or 0
        return {"input_ids": self.pad([e["input_ids"] for e in examples], pad),
                "attention_mask": self.pad([[1] * len(e["input_ids"]) for e in examples], 0),
                "labels": self.pad([e["labels"] for e in examples], -100)}

    def logits(self, model, batch):
        from ptcli.models.modules import unwrap

        decoder_input_ids = unwrap(model).prepare_decoder_input_ids_from_labels(labels=batch["labels"])
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                     decoder_input_ids=decoder_input_ids).logits

    def loss(self, model, batch) -> LossOutput:
        return summed_cross_entropy(self.logits(model, batch), batch["labels"])

    def evaluator(self) -> Evaluator:
        return GenerationEvaluator(self)


class GenerationEvaluator(MetricEvaluator):
    """Loss, plus ROUGE and BLEU of generated text against the references (streamed)."""

    def __init__(self, objective):
        from ptcli.metrics.text import TextGenerationMetrics

        super().__init__(objective, TextGenerationMetrics() if objective.generate_metrics else None)

    def update(self, model, batch) -> None:
        from ptcli.models.modules import is_fsdp, unwrap

        obj = self.objective
        self.add_loss(summed_cross_entropy(obj.logits(model, batch), batch["labels"]))
        if self.metric is None:
            return
        tok = obj.tokenizer
        generated = unwrap(model).generate(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                           num_beams=obj.num_beams, max_new_tokens=obj.max_new_tokens,
                                           do_sample=False,
                                           # FSDP: every process runs as many forward passes as the longest
                                           synced_gpus=is_fsdp(model))
        labels = batch["labels"].masked_fill(batch["labels"] == -100, tok.pad_token_id or 0)
        predictions = tok.batch_decode(generated, skip_special_tokens=True)
        references = tok.batch_decode(labels, skip_special_tokens=True)
        self.metric.update([p.strip() for p in predictions], [r.strip() for r in references])

    def state(self) -> dict:
        return Evaluator.state(self) | ({"metric": self.metric.state_dict()} if self.metric else {})

    def merge(self, state: dict) -> None:
        if self.metric is not None:
            super().merge(state)
        else:
            Evaluator.merge(self, state)

    def compute(self) -> dict:
        return super().compute() if self.metric is not None else Evaluator.compute(self)
