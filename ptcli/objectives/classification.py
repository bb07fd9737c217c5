"""Sequence classification (cross-entropy) and regression (``num_labels: 1``, mean squared error).

Single sentences or pairs (``dataset.text_pair_column``). Labels may be strings or integers: the label map
is discovered from the training data (integers in numeric order, strings alphabetically) and written into the
saved model's ``id2label``/``label2id``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

from ptcli.data.records import column, text_field
from ptcli.errors import PtcliError
from ptcli.objectives.base import LOSS, Evaluator, LossOutput, Metric, MetricEvaluator
from ptcli.objectives.labelled import LabelledObjective
from ptcli.objectives.labels import LabelMap


@dataclass(eq=False)
class SequenceClassification(LabelledObjective):
    """One label (or one number) per sentence or sentence pair."""

    num_labels: Optional[int] = None  # null: discovered from the training labels; 1: regression
    # what the head reads: the architecture's own (BERT's [CLS] pooler, a decoder's last token) or the mean of the
    # last layer's tokens, folded into a BERT encoder as one frozen block (sentence encoders such as MiniLM)
    pooling: Literal["model", "mean"] = "model"

    name = "classification"
    auto_class = "AutoModelForSequenceClassification"
    inference = "classify"
    peft_config = {"task_type": "SEQ_CLS"}
    metrics = (LOSS, Metric("accuracy"), Metric("f1"), Metric("f1_macro", shown=False),
               Metric("f1_micro", shown=False), Metric("mcc"), Metric("mse", higher_is_better=False),
               Metric("pearson"), Metric("spearman"))

    def __post_init__(self):
        if self.num_labels is not None and self.num_labels < 1:
            raise PtcliError(f"objective.num_labels must be at least 1, got {self.num_labels}",
                             fix="Use objective.num_labels=1 for regression, >= 2 for classes, or null to discover")
        self.labels: LabelMap | None = None

    @classmethod
    def config_problems(cls, cfg: dict, model_config: dict | None) -> list[str]:
        from ptcli.models.pooling import mean_pooling_problem

        problems = super().config_problems(cfg, model_config)
        if (cfg.get("objective") or {}).get("pooling") == "mean":
            arch = (model_config or {}).get("model_type") or (cfg.get("model") or {}).get("arch")
            problems += [p for p in [mean_pooling_problem(arch)] if p]
        return problems

    @property
    def regression(self) -> bool:
        return self.num_labels == 1

    @property
    def label_column(self) -> str:
        return self.data.label_column or "label"

    def learn(self, train_rows, log) -> None:
        if self.regression:
            return
        self.labels = LabelMap.discover(
            ((record, where) for where, record in train_rows if _has_text(record, self.data)), self.label_column)
        self.labels.check_count(self.num_labels, self.label_column)
        self.num_labels = len(self.labels)
        log(f"labels: {self.labels.describe()}")

    def restore(self, model_config) -> None:
        if model_config.problem_type == "regression" or model_config.num_labels == 1:
            self.num_labels = 1
            return
        self.labels = LabelMap.from_config(model_config.id2label)
        self.num_labels = len(self.labels)

    def encode(self, records: list, wheres: list) -> list:
        data = self.data
        texts, pairs, keep = [], [], []
        for record, where in zip(records, wheres):
            text = text_field(record, data.text_column, "dataset.text_column", where)
            pair = (text_field(record, data.text_pair_column, "dataset.text_pair_column", where)
                    if data.text_pair_column else None)
            if not text.strip() or (pair is not None and not pair.strip()):
                keep.append(None)
                continue
            keep.append(self._label(record, where))
            texts.append(text)
            pairs.append(pair)
        if not texts:
            return keep
        enc = self.tokenizer(texts, pairs if data.text_pair_column else None, truncation=True,
                             max_length=self.max_len, return_token_type_ids=bool(data.text_pair_column))
        out, j = [], 0
        for label in keep:
            if label is None:
                out.append(None)
                continue
            example = {"input_ids": enc["input_ids"][j], "label": label}
            if "token_type_ids" in enc:
                example["token_type_ids"] = enc["token_type_ids"][j]
            out.append(example)
            j += 1
        return out

    def _label(self, record: dict, where: str):
        value = column(record, self.label_column, "dataset.label_column", where)
        if self.regression:
            try:
                return float(value)
            except (TypeError, ValueError):
                raise PtcliError(f"regression label {value!r} is not a number", where=where,
                                 fix="objective.num_labels=1 means regression; use null to discover classes"
                                 ) from None
        return self.labels.id_of(value, where)

    def collate(self, examples, generator=None) -> dict:
        import torch

        pad = self.tokenizer.pad_token_id or 0
        batch = {"input_ids": self.pad([e["input_ids"] for e in examples], pad),
                 "attention_mask": self.pad([[1] * len(e["input_ids"]) for e in examples], 0)}
        if "token_type_ids" in examples[0]:
            batch["token_type_ids"] = self.pad([e["token_type_ids"] for e in examples], 0)
        dtype = torch.float if self.regression else torch.long
        batch["labels"] = torch.tensor([e["label"] for e in examples], dtype=dtype)
        return batch

    def logits(self, model, batch):
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        if "token_type_ids" in inputs and not _takes_token_types(model):
            del inputs["token_type_ids"]  # e.g. Llama: the separator token alone marks the pair
        return model(**inputs).logits

    def loss_from_logits(self, logits, labels) -> LossOutput:
        import torch.nn.functional as F

        if self.regression:
            total = F.mse_loss(logits.float().squeeze(-1), labels.float(), reduction="sum")
        else:
            total = F.cross_entropy(logits.float(), labels, reduction="sum")
        return LossOutput(total, labels.new_tensor(labels.numel(), dtype=total.dtype))

    def loss(self, model, batch) -> LossOutput:
        return self.loss_from_logits(self.logits(model, batch), batch["labels"])

    def evaluator(self) -> Evaluator:
        return ClassificationEvaluator(self)

    def build_model(self, ctx, processors):
        model = super().build_model(ctx, processors)
        if self.pooling == "mean":
            from ptcli.models.pooling import fold_mean_pooling

            fold_mean_pooling(model, ctx.log)
        return model

    def head_kwargs(self) -> dict:
        if self.regression:
            return {"num_labels": 1, "problem_type": "regression"}
        return {"num_labels": self.num_labels, "id2label": self.labels.id2label(),
                "label2id": self.labels.label2id(), "problem_type": "single_label_classification"}


class ClassificationEvaluator(MetricEvaluator):
    """Loss plus accuracy / F1 / MCC (classes) or MSE / Pearson / Spearman (regression), streamed."""

    def __init__(self, objective):
        from ptcli import metrics

        super().__init__(objective, metrics.RegressionMetrics() if objective.regression
                         else metrics.ClassificationMetrics(objective.num_labels))

    def update(self, model, batch) -> None:
        logits = self.objective.logits(model, batch)
        self.add_loss(self.objective.loss_from_logits(logits, batch["labels"]))
        preds = logits.float().squeeze(-1) if self.objective.regression else logits.argmax(-1)
        self.metric.update(preds.cpu().numpy(), batch["labels"].cpu().numpy())


def _takes_token_types(model) -> bool:
    import inspect

    from ptcli.models.modules import unwrap

    return "token_type_ids" in inspect.signature(unwrap(model).forward).parameters


def _has_text(record: dict, data) -> bool:
    """Rows skipped as empty do not contribute labels (a missing column is reported by encode)."""
    value = record.get(data.text_column, "?")
    return not isinstance(value, str) or bool(value.strip())
