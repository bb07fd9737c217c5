"""Metrics of generated text: ROUGE and BLEU against a reference (``TextGenerationMetrics``), and word and
character error rates of transcripts (``ErrorRates``). The conventions are those of ``ptcli.metrics``."""

from __future__ import annotations

import math
from typing import Any, Sequence

from ptcli.metrics import _check_same_length


class TextGenerationMetrics:
    """ROUGE F-measures averaged over examples and corpus BLEU, for generated text against one reference each.

    ROUGE (``rouge1``, ``rouge2``, ``rougeL``, ``rougeLsum``) is rouge_score's RougeScorer F-measure, a fraction
    in [0, 1]; ``rougeLsum`` treats newlines as sentence breaks. BLEU is ``sacrebleu.corpus_bleu`` over every
    example fed, on sacrebleu's 0-100 scale, rebuilt from summed sufficient statistics (matched and total n-gram
    counts, hypothesis and reference lengths). The state is four ROUGE sums, those BLEU statistics and a count.
    """

    ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")

    def __init__(self, use_stemmer: bool = True):
        from rouge_score.rouge_scorer import RougeScorer
        from sacrebleu.metrics import BLEU

        self.use_stemmer = use_stemmer
        self._scorer = RougeScorer(list(self.ROUGE_TYPES), use_stemmer=use_stemmer)
        self._bleu = BLEU()
        self.rouge_sums = dict.fromkeys(self.ROUGE_TYPES, 0.0)
        self.bleu_matches = [0] * self._bleu.max_ngram_order
        self.bleu_totals = [0] * self._bleu.max_ngram_order
        self.hypothesis_length = 0
        self.reference_length = 0
        self.count = 0

    def update(self, predictions: Sequence[str], references: Sequence[str]) -> None:
        """Score one batch of generated texts against their references (one reference per prediction)."""
        _check_same_length(predictions, references)
        if not predictions:
            return
        for prediction, reference in zip(predictions, references):
            scores = self._scorer.score(reference, prediction)
            for rouge_type in self.ROUGE_TYPES:
                self.rouge_sums[rouge_type] += scores[rouge_type].fmeasure
        batch = self._bleu.corpus_score(list(predictions), [list(references)])
        self.bleu_matches = [total + new for total, new in zip(self.bleu_matches, batch.counts)]
        self.bleu_totals = [total + new for total, new in zip(self.bleu_totals, batch.totals)]
        self.hypothesis_length += batch.sys_len
        self.reference_length += batch.ref_len
        self.count += len(predictions)

    def merge(self, other: TextGenerationMetrics) -> None:
        """Add ``other``'s sums and BLEU statistics into this state."""
        if not isinstance(other, TextGenerationMetrics) or other.use_stemmer != self.use_stemmer:
            raise ValueError("can only merge a TextGenerationMetrics with the same use_stemmer")
        for rouge_type in self.ROUGE_TYPES:
            self.rouge_sums[rouge_type] += other.rouge_sums[rouge_type]
        self.bleu_matches = [mine + theirs for mine, theirs in zip(self.bleu_matches, other.bleu_matches)]
        self.bleu_totals = [mine + theirs for mine, theirs in zip(self.bleu_totals, other.bleu_totals)]
        self.hypothesis_length += other.hypothesis_length
        self.reference_length += other.reference_length
        self.count += other.count

    def state_dict(self) -> dict[str, Any]:
        return {
            "use_stemmer": self.use_stemmer,
            "rouge_sums": dict(self.rouge_sums),
            "bleu_matches": list(self.bleu_matches),
            "bleu_totals": list(self.bleu_totals),
            "hypothesis_length": self.hypothesis_length,
            "reference_length": self.reference_length,
            "count": self.count,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["use_stemmer"] != self.use_stemmer:
            raise ValueError(f"state has use_stemmer={state['use_stemmer']}, this metric {self.use_stemmer}")
        self.rouge_sums = {rouge_type: float(state["rouge_sums"][rouge_type]) for rouge_type in self.ROUGE_TYPES}
        self.bleu_matches = [int(value) for value in state["bleu_matches"]]
        self.bleu_totals = [int(value) for value in state["bleu_totals"]]
        self.hypothesis_length = int(state["hypothesis_length"])
        self.reference_length = int(state["reference_length"])
        self.count = int(state["count"])

    def compute(self) -> dict[str, float]:
        """``rouge1``, ``rouge2``, ``rougeL``, ``rougeLsum`` (fractions), ``bleu`` (0-100) and ``count``."""
        if self.count == 0:
            return {**dict.fromkeys(self.ROUGE_TYPES, math.nan), "bleu": math.nan, "count": 0}
        results = {rouge_type: total / self.count for rouge_type, total in self.rouge_sums.items()}
        bleu = self._bleu.compute_bleu(  # copies: compute_bleu adds its add-k smoothing into the lists it gets
            list(self.bleu_matches), list(self.bleu_totals), self.hypothesis_length, self.reference_length,
            smooth_method=self._bleu.smooth_method, smooth_value=self._bleu.smooth_value,
            effective_order=self._bleu.effective_order, max_ngram_order=self._bleu.max_ngram_order,
        )
        return {**results, "bleu": float(bleu.score), "count": self.count}



def edit_distance(hypothesis: Sequence, reference: Sequence) -> int:
    """Levenshtein distance (substitutions, deletions and insertions, each costing 1) between two sequences."""
    previous = list(range(len(reference) + 1))
    for i, h in enumerate(hypothesis, 1):
        current = [i]
        for j, r in enumerate(reference, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (h != r)))
        previous = current
    return previous[-1]


class ErrorRates:
    """Word and character error rates of transcripts against their references, and the exact-match rate.

    Corpus-level, as jiwer computes them for a list of sentences: the edits (substitutions + deletions +
    insertions) summed over every pair, divided by the summed reference lengths, in words (``wer``) or characters
    (``cer``, spaces included). Whitespace is normalised first (stripped, runs of spaces made one), the texts are
    compared as they are otherwise (normalise case before if it should not count). Lower is better; a hypothesis
    longer than its reference can make a rate exceed 1. The state is four sums and a count."""

    def __init__(self) -> None:
        self.word_edits = self.words = self.char_edits = self.chars = self.exact = self.count = 0

    def update(self, predictions: Sequence[str], references: Sequence[str]) -> None:
        _check_same_length(predictions, references)
        for prediction, reference in zip(predictions, references):
            hyp, ref = prediction.split(), reference.split()
            self.word_edits += edit_distance(hyp, ref)
            self.words += len(ref)
            self.char_edits += edit_distance(" ".join(hyp), " ".join(ref))
            self.chars += len(" ".join(ref))
            self.exact += hyp == ref
            self.count += 1

    def merge(self, other: ErrorRates) -> None:
        for key in ("word_edits", "words", "char_edits", "chars", "exact", "count"):
            setattr(self, key, getattr(self, key) + getattr(other, key))

    def state_dict(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in ("word_edits", "words", "char_edits", "chars", "exact", "count")}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key, value in state.items():
            setattr(self, key, int(value))

    def compute(self) -> dict[str, float]:
        """``wer``, ``cer``, ``exact`` (the fraction of transcripts equal to their reference) and ``count``."""
        if self.count == 0:
            return {"wer": math.nan, "cer": math.nan, "exact": math.nan, "count": 0}
        return {"wer": self.word_edits / self.words if self.words else math.nan,
                "cer": self.char_edits / self.chars if self.chars else math.nan,
                "exact": self.exact / self.count, "count": self.count}
