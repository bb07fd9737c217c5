"""Streaming evaluation metrics: feed batches with ``update``, read the result with ``compute``.

Every metric keeps counts (or, where a statistic needs them, one small value per example), never logits.
States gathered from several processes combine with ``merge``; ``state_dict`` / ``load_state_dict`` move a
state as plain JSON-able data. On an empty state (nothing fed yet) ``compute`` returns ``count`` 0 and NaN for
every other value: an undefined score must not pass for a real one.

The results equal the reference implementations: scikit-learn (classification), scipy (correlations),
seqeval in its default conlleval-compatible mode (entities), rouge_score and sacrebleu (text generation),
jiwer (word and character error rates). Text generation and transcripts: ``ptcli.metrics.text``.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any, Sequence

import numpy as np


def _check_same_length(predictions: Sequence, references: Sequence) -> None:
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")


def _ratio(numerator: float, denominator: float) -> float:
    """numerator / denominator, 0.0 when the denominator is 0 (scikit-learn's and seqeval's zero_division)."""
    return numerator / denominator if denominator else 0.0


class ClassificationMetrics:
    """Accuracy, macro/micro F1 and Matthews correlation from a confusion matrix of integer label ids.

    The state is a ``num_labels x num_labels`` int64 confusion matrix (rows: references, columns: predictions).
    Values equal scikit-learn's with ``labels=range(num_labels)``: classes absent from both sides count as F1 0.0
    in the macro average, and every undefined ratio is 0.0 (scikit-learn's default ``zero_division``).
    """

    def __init__(self, num_labels: int):
        if num_labels < 1:
            raise ValueError(f"num_labels must be at least 1, got {num_labels}")
        self.num_labels = num_labels
        self.confusion = np.zeros((num_labels, num_labels), dtype=np.int64)

    def update(self, predictions: Sequence[int], references: Sequence[int]) -> None:
        """Count one batch of predicted and reference label ids (lists or numpy arrays of ints)."""
        _check_same_length(predictions, references)
        predicted = np.asarray(predictions).reshape(-1)
        reference = np.asarray(references).reshape(-1)
        if predicted.size == 0:
            return
        for name, ids in (("predictions", predicted), ("references", reference)):
            if ids.dtype.kind not in "iu":
                raise ValueError(f"{name} must be integer label ids, got dtype {ids.dtype}")
            if ids.min() < 0 or ids.max() >= self.num_labels:
                raise ValueError(f"{name} holds a label id outside [0, {self.num_labels})")
        cells = reference.astype(np.int64) * self.num_labels + predicted.astype(np.int64)
        counts = np.bincount(cells, minlength=self.num_labels**2)
        self.confusion += counts.reshape(self.num_labels, self.num_labels)

    def merge(self, other: ClassificationMetrics) -> None:
        """Add ``other``'s counts into this state."""
        if not isinstance(other, ClassificationMetrics) or other.num_labels != self.num_labels:
            raise ValueError("can only merge a ClassificationMetrics with the same num_labels")
        self.confusion += other.confusion

    def state_dict(self) -> dict[str, Any]:
        return {"num_labels": self.num_labels, "confusion": self.confusion.tolist()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        confusion = np.asarray(state["confusion"], dtype=np.int64)
        if state["num_labels"] != self.num_labels or confusion.shape != (self.num_labels, self.num_labels):
            raise ValueError(f"state is not a {self.num_labels}x{self.num_labels} confusion matrix")
        self.confusion = confusion

    def compute(self) -> dict[str, float]:
        """``accuracy``, ``f1_macro``, ``f1_micro``, ``mcc``, ``count``; with two labels also ``f1`` (of class 1)."""
        total = int(self.confusion.sum())
        names = ["accuracy", "f1_macro", "f1_micro", "mcc"] + (["f1"] if self.num_labels == 2 else [])
        if total == 0:
            return {**dict.fromkeys(names, math.nan), "count": 0}
        true_sum = self.confusion.sum(axis=1).astype(np.float64)
        pred_sum = self.confusion.sum(axis=0).astype(np.float64)
        correct = np.diag(self.confusion).astype(np.float64)
        denominators = true_sum + pred_sum
        per_class_f1 = np.divide(2.0 * correct, denominators, out=np.zeros_like(correct), where=denominators > 0)
        n_correct = float(correct.sum())
        results = {
            "accuracy": n_correct / total,
            "f1_macro": float(per_class_f1.mean()),
            "f1_micro": _ratio(2.0 * n_correct, float(denominators.sum())),
            "mcc": self._matthews(true_sum, pred_sum, n_correct, float(total)),
        }
        if self.num_labels == 2:
            results["f1"] = float(per_class_f1[1])
        return {**results, "count": total}

    @staticmethod
    def _matthews(true_sum: np.ndarray, pred_sum: np.ndarray, n_correct: float, n_samples: float) -> float:
        """sklearn.metrics.matthews_corrcoef's multi-class formula, 0.0 where it is undefined."""
        cov_true_pred = n_correct * n_samples - float(np.dot(true_sum, pred_sum))
        cov_pred_pred = n_samples**2 - float(np.dot(pred_sum, pred_sum))
        cov_true_true = n_samples**2 - float(np.dot(true_sum, true_sum))
        product = cov_pred_pred * cov_true_true
        return 0.0 if product == 0 else cov_true_pred / math.sqrt(product)


class RegressionMetrics:
    """Mean squared error, Pearson and Spearman correlation of float predictions against references.

    Spearman needs the ranks of all values, so the state keeps every prediction and reference: two floats per
    example (``state_dict`` lists them in the order they were fed). Correlations are NaN where scipy's are
    undefined (fewer than two examples, a constant side, a NaN value).
    """

    def __init__(self) -> None:
        self.predictions: list[float] = []
        self.references: list[float] = []

    def update(self, predictions: Sequence[float], references: Sequence[float]) -> None:
        """Record one batch of predicted and reference values (lists or numpy arrays)."""
        predicted = np.asarray(predictions, dtype=np.float64).reshape(-1)
        reference = np.asarray(references, dtype=np.float64).reshape(-1)
        _check_same_length(predicted, reference)
        self.predictions.extend(predicted.tolist())
        self.references.extend(reference.tolist())

    def merge(self, other: RegressionMetrics) -> None:
        """Append ``other``'s values to this state."""
        if not isinstance(other, RegressionMetrics):
            raise ValueError("can only merge a RegressionMetrics")
        self.predictions.extend(other.predictions)
        self.references.extend(other.references)

    def state_dict(self) -> dict[str, Any]:
        return {"predictions": list(self.predictions), "references": list(self.references)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        _check_same_length(state["predictions"], state["references"])
        self.predictions = [float(value) for value in state["predictions"]]
        self.references = [float(value) for value in state["references"]]

    def compute(self) -> dict[str, float]:
        """``mse``, ``pearson``, ``spearman`` and ``count``."""
        count = len(self.predictions)
        if count == 0:
            return {"mse": math.nan, "pearson": math.nan, "spearman": math.nan, "count": 0}
        predicted = np.asarray(self.predictions, dtype=np.float64)
        reference = np.asarray(self.references, dtype=np.float64)
        has_nan = bool(np.isnan(predicted).any() or np.isnan(reference).any())
        return {
            "mse": float(np.mean((predicted - reference) ** 2)),
            "pearson": _pearson(predicted, reference),
            "spearman": math.nan if has_nan else _pearson(_average_ranks(predicted), _average_ranks(reference)),
            "count": count,
        }


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson's r from centred values (no running sums, so no cancellation), NaN where undefined."""
    if x.size < 2 or (x == x[0]).all() or (y == y[0]).all():
        return math.nan
    x_centred = x - x.mean()
    y_centred = y - y.mean()
    r = np.dot(x_centred, y_centred) / (np.linalg.norm(x_centred) * np.linalg.norm(y_centred))
    return float(np.clip(r, -1.0, 1.0))


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, tied values sharing the mean of their ranks (scipy.stats.rankdata's 'average')."""
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    starts_group = np.concatenate(([True], ordered[1:] != ordered[:-1]))
    group_starts = np.flatnonzero(starts_group)
    group_ends = np.append(group_starts[1:], values.size)  # exclusive
    ranks = np.empty(values.size, dtype=np.float64)
    ranks[order] = ((group_starts + 1 + group_ends) / 2.0)[np.cumsum(starts_group) - 1]
    return ranks


def _ends_chunk(prev_tag: str, tag: str, prev_type: str, type_: str) -> bool:
    """seqeval's end_of_chunk: an entity ended between the previous token and this one."""
    return (prev_tag in ("E", "S") or (prev_tag in ("B", "I") and tag in ("B", "S", "O"))
            or (prev_tag not in ("O", ".") and prev_type != type_))


def _starts_chunk(prev_tag: str, tag: str, prev_type: str, type_: str) -> bool:
    """seqeval's start_of_chunk: an entity starts at this token."""
    return (tag in ("B", "S") or (prev_tag in ("E", "S", "O") and tag in ("E", "I"))
            or (tag not in ("O", ".") and prev_type != type_))


def _sentence_entities(tags: Sequence[str]) -> set[tuple[str, int, int]]:
    """The (type, first token, last token) entities of one sentence, as seqeval's default get_entities finds them.

    Lenient conlleval chunking with IOB1/IOB2/IOBES prefixes: ``I-X`` after ``O`` or after another type starts
    an entity, a type change ends one, ``E-``/``S-`` close one.
    """
    found = set()
    prev_tag, prev_type, begin = "O", "", 0
    for position, tag_text in enumerate([*tags, "O"]):
        tag, type_ = tag_text[0], tag_text[1:].split("-", maxsplit=1)[-1] or "_"  # 'B-PER' -> B, PER; 'O' -> O, _
        if _ends_chunk(prev_tag, tag, prev_type, type_):
            found.add((prev_type, begin, position - 1))
        if _starts_chunk(prev_tag, tag, prev_type, type_):
            begin = position
        prev_tag, prev_type = tag, type_
    return found


class EntityF1:
    """Entity-level precision, recall and F1 (micro over all entities, and F1 per type) plus token accuracy.

    Equals ``seqeval.metrics`` in its default mode (``mode=None``, conlleval-compatible) on the same sentences.
    Entities are matched within their sentence; seqeval's joined sequence puts an ``O`` between sentences, so for
    tags of the form ``O``, ``B``/``I``/``E``/``S`` or ``B-X``/``I-X``/``E-X``/``S-X`` its entities never cross a
    sentence boundary either. (With malformed tags, e.g. ``X`` or ``.``, seqeval can leak a chunk across
    sentences; here each sentence is read as seqeval reads it alone.) Undefined ratios are 0.0, as in seqeval.
    The state is three counters per entity type (true positives, predicted, gold) and token/sentence counts.
    """

    def __init__(self) -> None:
        self.true_positives: Counter[str] = Counter()
        self.predicted: Counter[str] = Counter()
        self.gold: Counter[str] = Counter()
        self.correct_tokens = 0
        self.total_tokens = 0
        self.sentences = 0

    def update(self, predictions: Sequence[Sequence[str]], references: Sequence[Sequence[str]]) -> None:
        """Count one batch of sentences: a tag sequence per sentence, each the length of its reference."""
        _check_same_length(predictions, references)
        for predicted_tags, reference_tags in zip(predictions, references):
            _check_same_length(predicted_tags, reference_tags)
            predicted, gold = _sentence_entities(predicted_tags), _sentence_entities(reference_tags)
            self.predicted.update(type_ for type_, _, _ in predicted)
            self.gold.update(type_ for type_, _, _ in gold)
            self.true_positives.update(type_ for type_, _, _ in predicted & gold)
            self.correct_tokens += sum(p == r for p, r in zip(predicted_tags, reference_tags))
            self.total_tokens += len(reference_tags)
        self.sentences += len(references)

    def merge(self, other: EntityF1) -> None:
        """Add ``other``'s counts into this state."""
        if not isinstance(other, EntityF1):
            raise ValueError("can only merge an EntityF1")
        self.true_positives.update(other.true_positives)
        self.predicted.update(other.predicted)
        self.gold.update(other.gold)
        self.correct_tokens += other.correct_tokens
        self.total_tokens += other.total_tokens
        self.sentences += other.sentences

    def state_dict(self) -> dict[str, Any]:
        return {
            "true_positives": dict(self.true_positives),
            "predicted": dict(self.predicted),
            "gold": dict(self.gold),
            "correct_tokens": self.correct_tokens,
            "total_tokens": self.total_tokens,
            "sentences": self.sentences,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.true_positives = Counter(state["true_positives"])
        self.predicted = Counter(state["predicted"])
        self.gold = Counter(state["gold"])
        self.correct_tokens = int(state["correct_tokens"])
        self.total_tokens = int(state["total_tokens"])
        self.sentences = int(state["sentences"])

    def compute(self) -> dict[str, float]:
        """``precision``, ``recall``, ``f1``, ``accuracy`` (NaN without tokens), ``f1_<TYPE>``, ``count``."""
        if self.sentences == 0:
            return {"precision": math.nan, "recall": math.nan, "f1": math.nan, "accuracy": math.nan, "count": 0}
        precision, recall, f1 = _precision_recall_f1(
            sum(self.true_positives.values()), sum(self.predicted.values()), sum(self.gold.values())
        )
        accuracy = self.correct_tokens / self.total_tokens if self.total_tokens else math.nan
        results = {"precision": precision, "recall": recall, "f1": f1, "accuracy": accuracy}
        for type_ in sorted(set(self.predicted) | set(self.gold)):
            counts = self.true_positives[type_], self.predicted[type_], self.gold[type_]
            results[f"f1_{type_}"] = _precision_recall_f1(*counts)[2]
        return {**results, "count": self.sentences}


def _precision_recall_f1(true_positives: int, predicted: int, gold: int) -> tuple[float, float, float]:
    """seqeval's arithmetic: F1 from precision and recall, each 0.0 when undefined."""
    precision = _ratio(true_positives, predicted)
    recall = _ratio(true_positives, gold)
    return precision, recall, _ratio(2.0 * precision * recall, precision + recall)
