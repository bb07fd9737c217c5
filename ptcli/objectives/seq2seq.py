"""Encoder-decoder training (T5/BART style): input text -> target text, for summarization or translation.

Validation reports the loss and, with ``generate_metrics``, ROUGE-1/2/L(sum) and BLEU on generated outputs.
"""

from __future__ import annotations

from ptcli.errors import PtcliError
from ptcli.objectives.base import Evaluator, LabelledObjective, LossOutput, summed_cross_entropy
from ptcli.objectives.labels import text_value


class Seq2Seq(LabelledObjective):
    head = "seq2seq_lm"
    tokenizer_kind = "bpe"

    def __init__(self, max_target_len: int = 128, source_prefix: str = "", generate_metrics: bool = True,
                 num_beams: int = 1, max_new_tokens: int = 64):
        self.max_target_len, self.source_prefix = max_target_len, source_prefix
        self.generate_metrics, self.num_beams, self.max_new_tokens = generate_metrics, num_beams, max_new_tokens

    def setup(self, data_cfg, train_records, log) -> None:
        super().setup(data_cfg, train_records, log)
        if not data_cfg.label_column:
            raise PtcliError("objective=seq2seq needs the target text column",
                             fix="set dataset.label_column (e.g. dataset.label_column=summary)")

    def encode(self, records: list, wheres: list) -> list:
        sources, targets, keep = [], [], []
        for record, where in zip(records, wheres):
            source = text_value(record, self.data.text_column, "dataset.text_column", where)
            target = text_value(record, self.data.label_column, "dataset.label_column", where)
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

    def collate(self, examples, generator=None) -> dict:
        pad = self.tokenizer.pad_token_id or 0
        return {"input_ids": self.pad([e["input_ids"] for e in examples], pad),
                "attention_mask": self.pad([[1] * len(e["input_ids"]) for e in examples], 0),
                "labels": self.pad([e["labels"] for e in examples], -100)}

    def logits(self, model, batch):
        from ptcli.training.distributed import unwrap

        decoder_input_ids = unwrap(model).prepare_decoder_input_ids_from_labels(labels=batch["labels"])
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                     decoder_input_ids=decoder_input_ids).logits

    def loss(self, model, batch) -> LossOutput:
        return summed_cross_entropy(self.logits(model, batch), batch["labels"])

    def evaluator(self) -> Evaluator:
        return GenerationEvaluator(self)


class GenerationEvaluator(Evaluator):
    """Loss, plus ROUGE and BLEU of generated text against the references (streamed)."""

    def __init__(self, objective):
        from ptcli.metrics import TextGenerationMetrics

        super().__init__(objective)
        self.metric = TextGenerationMetrics() if objective.generate_metrics else None

    def update(self, model, batch) -> None:
        from ptcli.training.distributed import is_fsdp, unwrap

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
        return super().state() | ({"metric": self.metric.state_dict()} if self.metric else {})

    def merge(self, state: dict) -> None:
        from ptcli.metrics import TextGenerationMetrics

        super().merge(state)
        if self.metric is not None:
            other = TextGenerationMetrics()
            other.load_state_dict(state["metric"])
            self.metric.merge(other)

    def compute(self) -> dict:
        out = super().compute()
        if self.metric is not None:
            out |= {k: v for k, v in self.metric.compute().items() if k != "count"}
        return out
