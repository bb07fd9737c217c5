"""Token classification (NER): one tag per word; the first sub-word piece carries it, the others are ignored.

Input: CoNLL files (``dataset=conll``) or JSONL/HF records with a token list (``dataset.text_column``) and a tag
list (``dataset.label_column``). Validation reports entity-level precision/recall/F1 exactly as seqeval does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ptcli.data.records import column
from ptcli.errors import PtcliError
from ptcli.objectives.base import LOSS, Evaluator, LossOutput, Metric, MetricEvaluator, summed_cross_entropy
from ptcli.objectives.labelled import LabelledObjective
from ptcli.objectives.labels import LabelMap
from ptcli.objectives.tag_schemes import for_metrics


@dataclass(eq=False)
class TokenClassification(LabelledObjective):
    """A tag per word (NER); entity-level metrics as seqeval computes them."""

    label_all_tokens: bool = False  # true: every piece of a word carries its tag
    tag_scheme: Literal["auto", "IOB", "IOBES", "BILOU", "IO"] = "auto"  # IO: bare entity types, a run is one entity

    name = "token_classification"
    auto_class = "AutoModelForTokenClassification"
    inference = "classify"
    peft_config = {"task_type": "TOKEN_CLS"}
    metrics = (LOSS, Metric("precision"), Metric("recall"), Metric("f1"), Metric("accuracy"))

    def __post_init__(self):
        self.labels: LabelMap | None = None

    @property
    def tokens_col(self) -> str:
        return self.data.text_column

    @property
    def tags_col(self) -> str:
        return self.data.label_column or "tags"

    def learn(self, train_rows, log) -> None:
        from ptcli.objectives import tag_schemes

        self.labels = LabelMap.discover(((r, w) for w, r in train_rows), self.tags_col)
        self.scheme = tag_schemes.resolve(self.labels.names, self.tag_scheme)
        self.num_labels = len(self.labels)
        log(f"tags: {self.labels.describe()}")

    def restore(self, model_config) -> None:
        from ptcli.objectives import tag_schemes

        self.labels = LabelMap.from_config(model_config.id2label)
        self.scheme = tag_schemes.resolve(self.labels.names, self.tag_scheme)
        self.num_labels = len(self.labels)

    def check_processors(self, processors) -> None:
        if not getattr(processors.tokenizer, "is_fast", False):
            raise PtcliError("token classification needs a fast tokenizer (word ids per token)",
                             fix="use a model whose folder has tokenizer.json")

    def words_and_tags(self, record: dict, where: str) -> tuple[list, list]:
        words = column(record, self.tokens_col, "dataset.text_column", where)
        tags = column(record, self.tags_col, "dataset.label_column", where)
        if isinstance(words, str):
            words = words.split()
        if not isinstance(words, list) or not isinstance(tags, list):
            raise PtcliError(f"columns '{self.tokens_col}' and '{self.tags_col}' must hold lists (tokens and "
                             "their tags)", where=where, fix="write records like {\"tokens\": [...], \"tags\": [...]}")
        if len(words) != len(tags):
            raise PtcliError(f"{len(words)} tokens but {len(tags)} tags", where=where,
                             fix="give every token exactly one tag")
        return [str(w) for w in words], tags

    def encode(self, records: list, wheres: list) -> list:
        words_list, tag_ids, keep = [], [], []
        for record, where in zip(records, wheres):
            words, tags = self.words_and_tags(record, where)
            if not words:
                keep.append(False)
                continue
            keep.append(True)
            words_list.append(words)
            tag_ids.append([self.labels.id_of(t, where) for t in tags])
        if not words_list:
            return [None] * len(records)
        enc = self.tokenizer(words_list, is_split_into_words=True, truncation=True, max_length=self.max_len)
        out, j = [], 0
        for kept in keep:
            if not kept:
                out.append(None)
                continue
            word_ids = enc.word_ids(j)
            out.append({"input_ids": enc["input_ids"][j], "labels": self.align(word_ids, tag_ids[j]),
                        "first": [int(w is not None and w != p) for p, w in zip([None] + word_ids, word_ids)],
                        "word_tags": tag_ids[j]})
            j += 1
        return out

    def align(self, word_ids: list, tags: list) -> list:
        """-100 for special tokens and (unless label_all_tokens) every piece after a word's first."""
        labels, previous = [], None
        for w in word_ids:
            if w is None:
                labels.append(-100)
            elif w != previous or self.label_all_tokens:
                labels.append(tags[w])
            else:
                labels.append(-100)
            previous = w
        return labels

    def collate(self, examples, generator=None) -> dict:
        pad = self.tokenizer.pad_token_id or 0
        return {"input_ids": self.pad([e["input_ids"] for e in examples], pad),
                "attention_mask": self.pad([[1] * len(e["input_ids"]) for e in examples], 0),
                "labels": self.pad([e["labels"] for e in examples], -100),
                "first": self.pad([e["first"] for e in examples], 0),
                "word_tags": self.pad([e["word_tags"] for e in examples], -100)}

    def logits(self, model, batch):
        inputs = {k: batch[k] for k in ("input_ids", "inputs_embeds", "attention_mask") if k in batch}
        return model(**inputs).logits  # inputs_embeds: +adversarial's perturbed embeddings

    def loss(self, model, batch) -> LossOutput:
        return summed_cross_entropy(self.logits(model, batch), batch["labels"])

    def evaluator(self) -> Evaluator:
        return EntityEvaluator(self)

    def head_kwargs(self) -> dict:
        return {"num_labels": self.num_labels, "id2label": self.labels.id2label(),
                "label2id": self.labels.label2id()}


class EntityEvaluator(MetricEvaluator):
    """Loss plus seqeval-exact entity precision/recall/F1 over the words' first pieces.

    Words cut off by truncation (seq_len) count as predicted ``O``, so entity recall is never flattered."""

    def __init__(self, objective):
        from ptcli.metrics import EntityF1

        super().__init__(objective, EntityF1())

    def update(self, model, batch) -> None:
        logits = self.objective.logits(model, batch)
        labels = batch["labels"]
        self.add_loss(summed_cross_entropy(logits, labels))
        preds = logits.argmax(-1).cpu().numpy()
        first = batch["first"].cpu().numpy().astype(bool)
        word_tags = batch["word_tags"].cpu().numpy()
        names = self.objective.labels.names
        outside = "O" if "O" in names else names[0]
        pred_tags, gold_tags = [], []
        for p_row, f_row, g_row in zip(preds, first, word_tags):
            gold = [names[i] for i in g_row[g_row != -100]]
            pred = [names[i] for i in p_row[f_row]][:len(gold)]
            pred_tags.append(pred + [outside] * (len(gold) - len(pred)))  # words cut off by seq_len
            gold_tags.append(gold)
        scheme = self.objective.scheme
        self.metric.update([for_metrics(t, scheme) for t in pred_tags], [for_metrics(t, scheme) for t in gold_tags])
