"""Streaming metrics equal their reference implementations, however the examples are chunked, merged or saved."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
import sacrebleu
import scipy.stats
from rouge_score.rouge_scorer import RougeScorer
from seqeval.metrics import accuracy_score as seqeval_accuracy
from seqeval.metrics import f1_score as seqeval_f1
from seqeval.metrics import precision_score as seqeval_precision
from seqeval.metrics import recall_score as seqeval_recall
from seqeval.metrics.sequence_labeling import get_entities
from sklearn import metrics as sk

from ptcli.metrics import (
    ClassificationMetrics,
    EntityF1,
    RegressionMetrics,
    _sentence_entities,
)
from ptcli.metrics.text import TextGenerationMetrics


def uneven_chunks(items, rng):
    """``items`` cut at random points into consecutive chunks, some of them empty."""
    cuts = np.sort(rng.integers(0, len(items) + 1, size=rng.integers(1, 6)))
    bounds = [0, *cuts.tolist(), len(items)]
    return [items[start:end] for start, end in zip(bounds, bounds[1:])]


def fed(metric, predictions, references, rng=None):
    """``metric`` after an update per chunk (one update of everything when rng is None)."""
    if rng is None:
        metric.update(predictions, references)
        return metric
    for indices in uneven_chunks(list(range(len(predictions))), rng):
        metric.update([predictions[i] for i in indices], [references[i] for i in indices])
    return metric


def round_tripped(metric, fresh):
    """``fresh`` loaded with ``metric``'s state after a trip through JSON."""
    fresh.load_state_dict(json.loads(json.dumps(metric.state_dict())))
    return fresh


def assert_close(got: dict, expected: dict, tolerance: float) -> None:
    assert got.keys() == expected.keys()
    for name, value in expected.items():
        assert got[name] == pytest.approx(value, abs=tolerance, nan_ok=True), name


# ---------------------------------------------------------------- classification


def sklearn_classification(predictions, references, num_labels):
    labels = list(range(num_labels))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = {
            "accuracy": sk.accuracy_score(references, predictions),
            "f1_macro": sk.f1_score(references, predictions, labels=labels, average="macro"),
            "f1_micro": sk.f1_score(references, predictions, labels=labels, average="micro"),
            "mcc": sk.matthews_corrcoef(references, predictions),
        }
        if num_labels == 2:
            expected["f1"] = sk.f1_score(references, predictions, average="binary")
    return {**expected, "count": len(references)}


def random_labels(rng, num_labels, size):
    """Label ids drawn from a random subset of the classes, so some classes are missing."""
    present = rng.choice(num_labels, size=rng.integers(1, num_labels + 1), replace=False)
    return rng.choice(present, size=size)


@pytest.mark.parametrize("num_labels", [2, 3, 7])
@pytest.mark.parametrize("seed", range(25))
def test_classification_matches_sklearn(num_labels, seed):
    rng = np.random.default_rng(seed)
    size = int(rng.integers(1, 80))
    predictions, references = random_labels(rng, num_labels, size), random_labels(rng, num_labels, size)
    expected = sklearn_classification(predictions, references, num_labels)

    one_shot = fed(ClassificationMetrics(num_labels), predictions, references)
    assert_close(one_shot.compute(), expected, 1e-9)
    streamed = fed(ClassificationMetrics(num_labels), predictions.tolist(), references.tolist(), rng)
    assert streamed.compute() == one_shot.compute()

    half = size // 2
    merged = fed(ClassificationMetrics(num_labels), predictions[:half], references[:half])
    merged.merge(fed(ClassificationMetrics(num_labels), predictions[half:], references[half:]))
    assert merged.compute() == one_shot.compute()
    assert round_tripped(one_shot, ClassificationMetrics(num_labels)).compute() == one_shot.compute()


@pytest.mark.parametrize("num_labels", [2, 3])
def test_classification_single_class(num_labels):
    metric = fed(ClassificationMetrics(num_labels), [1, 1, 1], [1, 1, 1])
    assert_close(metric.compute(), sklearn_classification([1, 1, 1], [1, 1, 1], num_labels), 1e-12)
    assert metric.compute()["mcc"] == 0.0  # undefined: scikit-learn's 0.0


def test_classification_empty_state_is_nan():
    result = ClassificationMetrics(2).compute()
    assert result["count"] == 0
    assert set(result) == {"accuracy", "f1_macro", "f1_micro", "mcc", "f1", "count"}
    assert all(math.isnan(value) for name, value in result.items() if name != "count")
    assert "f1" not in ClassificationMetrics(3).compute()


def test_classification_rejects_bad_input():
    metric = ClassificationMetrics(3)
    with pytest.raises(ValueError, match="outside"):
        metric.update([0, 3], [0, 1])
    with pytest.raises(ValueError, match="integer"):
        metric.update([0.0, 1.0], [0, 1])
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        metric.update([0, 1], [0])
    with pytest.raises(ValueError):
        metric.merge(ClassificationMetrics(4))


# ---------------------------------------------------------------- regression


def scipy_regression(predictions, references):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {
            "mse": sk.mean_squared_error(references, predictions),
            "pearson": scipy.stats.pearsonr(predictions, references).statistic,
            "spearman": scipy.stats.spearmanr(predictions, references).statistic,
            "count": len(references),
        }


@pytest.mark.parametrize("seed", range(25))
@pytest.mark.parametrize("ties", [True, False])
def test_regression_matches_scipy(seed, ties):
    rng = np.random.default_rng(seed)
    size = int(rng.integers(2, 60))
    if ties:
        predictions = rng.integers(0, 4, size=size).astype(float)
        references = rng.integers(0, 5, size=size) * 0.5
    else:
        references = rng.normal(3.0, 2.0, size=size)
        predictions = references + rng.normal(0.0, 1.0, size=size)
    one_shot = fed(RegressionMetrics(), predictions, references)
    assert_close(one_shot.compute(), scipy_regression(predictions, references), 1e-7)

    streamed = fed(RegressionMetrics(), predictions.tolist(), references.tolist(), rng)
    assert streamed.compute() == one_shot.compute()
    merged = fed(RegressionMetrics(), predictions[:3], references[:3])
    merged.merge(fed(RegressionMetrics(), predictions[3:], references[3:]))
    assert merged.compute() == one_shot.compute()
    assert round_tripped(one_shot, RegressionMetrics()).compute() == one_shot.compute()


def test_regression_undefined_correlations_are_nan():
    constant = fed(RegressionMetrics(), [1.0, 1.0, 1.0], [0.0, 1.0, 2.0]).compute()
    assert_close(constant, scipy_regression([1.0, 1.0, 1.0], [0.0, 1.0, 2.0]), 1e-12)
    assert math.isnan(constant["pearson"]) and math.isnan(constant["spearman"])
    empty = RegressionMetrics().compute()
    assert empty["count"] == 0 and all(math.isnan(empty[name]) for name in ("mse", "pearson", "spearman"))


# ---------------------------------------------------------------- entities


def seqeval_reference(predictions, references):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = {
            "precision": seqeval_precision(references, predictions),
            "recall": seqeval_recall(references, predictions),
            "f1": seqeval_f1(references, predictions),
            "accuracy": seqeval_accuracy(references, predictions),
        }
        types = sorted({entity[0] for entity in get_entities(references) + get_entities(predictions)})
        per_type = seqeval_f1(references, predictions, average=None)
    return {**expected, **{f"f1_{t}": f for t, f in zip(types, per_type)}, "count": len(references)}


TRICKY = {
    "I- after O": ([["O", "I-PER", "I-PER", "O"]], [["O", "B-PER", "I-PER", "O"]]),
    "type change inside a span": ([["B-PER", "I-PER", "I-LOC", "I-LOC"]], [["B-PER", "I-PER", "B-LOC", "I-LOC"]]),
    "B-X I-Y": ([["B-PER", "I-LOC", "O"]], [["B-PER", "O", "O"]]),
    "trailing entity at sentence end": (
        [["O", "B-LOC", "I-LOC"], ["I-LOC", "O"], ["B-PER"]],
        [["O", "B-LOC", "I-LOC"], ["B-LOC", "O"], ["B-PER"]],
    ),
    "two adjacent B-": ([["B-PER", "B-PER", "I-PER"]], [["B-PER", "I-PER", "I-PER"]]),
    "S- and E- tags": (
        [["S-PER", "B-LOC", "E-LOC", "E-LOC", "S-MISC", "I-MISC"], ["E-PER", "I-PER", "O"]],
        [["S-PER", "B-LOC", "I-LOC", "E-LOC", "S-MISC", "B-MISC"], ["B-PER", "E-PER", "O"]],
    ),
    "bare prefixes and empty sentence": ([["B", "I", "O", "I"], [], ["O"]], [["B", "I", "O", "B"], [], ["O"]]),
    "no entity predicted": ([["O", "O"], ["O"]], [["B-PER", "O"], ["S-LOC"]]),
}


@pytest.mark.parametrize("case", TRICKY)
def test_entity_f1_matches_seqeval_on_tricky_cases(case):
    predictions, references = TRICKY[case]
    metric = fed(EntityF1(), predictions, references)
    assert_close(metric.compute(), seqeval_reference(predictions, references), 1e-12)


def random_tagging(rng, tags, sentences):
    """Reference sentences of random tags and predictions that copy them with ~30% of tags redrawn."""
    references, predictions = [], []
    for _ in range(sentences):
        reference = rng.choice(tags, size=rng.integers(0, 13)).tolist()
        predicted = [rng.choice(tags) if rng.random() < 0.3 else tag for tag in reference]
        references.append(reference)
        predictions.append([str(tag) for tag in predicted])
    return predictions, references


IOB = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]
IOBES = [*IOB, "E-PER", "S-PER", "E-LOC", "S-LOC"]


@pytest.mark.parametrize("tags", [IOB, IOBES], ids=["IOB", "IOBES"])
@pytest.mark.parametrize("seed", range(10))
def test_entity_f1_matches_seqeval_on_random_tags(tags, seed):
    rng = np.random.default_rng(seed)
    predictions, references = random_tagging(rng, tags, sentences=30)
    for sentence in predictions + references:
        assert _sentence_entities(sentence) == set(get_entities(sentence))

    one_shot = fed(EntityF1(), predictions, references)
    assert_close(one_shot.compute(), seqeval_reference(predictions, references), 1e-12)
    assert fed(EntityF1(), predictions, references, rng).compute() == one_shot.compute()
    merged = fed(EntityF1(), predictions[:11], references[:11])
    merged.merge(fed(EntityF1(), predictions[11:], references[11:]))
    assert merged.compute() == one_shot.compute()
    assert round_tripped(one_shot, EntityF1()).compute() == one_shot.compute()


def test_entity_f1_empty_state_and_length_mismatch():
    empty = EntityF1().compute()
    assert empty["count"] == 0 and all(math.isnan(empty[name]) for name in ("precision", "recall", "f1", "accuracy"))
    with pytest.raises(ValueError):
        EntityF1().update([["O"]], [["O", "O"]])


# ---------------------------------------------------------------- text generation

PREDICTIONS = [
    "the cat sat on the mat",
    "a quick brown fox jumps over the lazy dog",
    "Hello world.\nThis is a second sentence.",
    "",
    "running runners ran quickly",
    "The weather is nice today, isn't it?",
    "It was the best of times, it was the worst of times.",
]
REFERENCES = [
    "the cat is on the mat",
    "the quick brown fox jumped over the lazy dog",
    "Hello there, world.\nThis was the second sentence.",
    "nothing here",
    "the runner runs quickly",
    "Today the weather is nice.",
    "It was the best of times; it was the worst of times.",
]


@pytest.mark.parametrize("use_stemmer", [True, False])
def test_text_generation_matches_rouge_score_and_sacrebleu(use_stemmer):
    scorer = RougeScorer(list(TextGenerationMetrics.ROUGE_TYPES), use_stemmer=use_stemmer)
    scores = [scorer.score(reference, prediction) for prediction, reference in zip(PREDICTIONS, REFERENCES)]
    expected = {name: float(np.mean([s[name].fmeasure for s in scores])) for name in TextGenerationMetrics.ROUGE_TYPES}
    bleu = sacrebleu.corpus_bleu(PREDICTIONS, [REFERENCES]).score

    streamed = fed(TextGenerationMetrics(use_stemmer), PREDICTIONS, REFERENCES, np.random.default_rng(0))
    result = streamed.compute()
    assert_close(result, {**expected, "bleu": bleu, "count": len(PREDICTIONS)}, 1e-12)
    assert result["bleu"] == bleu  # summed sufficient statistics reproduce corpus BLEU exactly
    assert 0.0 < result["rougeLsum"] < 1.0 and 1.0 < result["bleu"] < 100.0

    merged = fed(TextGenerationMetrics(use_stemmer), PREDICTIONS[:4], REFERENCES[:4])
    merged.merge(fed(TextGenerationMetrics(use_stemmer), PREDICTIONS[4:], REFERENCES[4:]))
    assert_close(merged.compute(), result, 1e-12)
    assert merged.compute()["bleu"] == bleu
    assert round_tripped(streamed, TextGenerationMetrics(use_stemmer)).compute() == result


def test_text_generation_empty_state_and_mismatched_merge():
    empty = TextGenerationMetrics().compute()
    assert empty["count"] == 0 and all(math.isnan(value) for name, value in empty.items() if name != "count")
    with pytest.raises(ValueError):
        TextGenerationMetrics(use_stemmer=True).merge(TextGenerationMetrics(use_stemmer=False))
