"""The attacks' machinery: character edits are one edit away and seeded; word swaps propose whole, non-stop words;
the greedy search changes at most its budget of words, stops when the prediction flips, never touches the gold
label, and repeats exactly; the metrics are TextAttack's arithmetic."""

from __future__ import annotations

import random
from types import SimpleNamespace

import pytest

from ptcli.inference.attacks import STOP_WORDS, Attack, Outcome, char_edits, summarize

torch = pytest.importorskip("torch")


def edit_distance(a: str, b: str) -> int:
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, y in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (x != y))
    return row[-1]


def is_swap(a: str, b: str) -> bool:
    diff = [i for i in range(len(a)) if a[i] != b[i]] if len(a) == len(b) else []
    return len(diff) == 2 and diff[1] == diff[0] + 1 and a[diff[0]] == b[diff[1]] and a[diff[1]] == b[diff[0]]


def test_character_edits_are_one_edit_or_one_swap_away_distinct_and_seeded():
    edits = char_edits("terrible,", 8, random.Random("0:3:1"))
    assert len(edits) == 8 == len(set(edits)) and "terrible," not in edits
    assert all(e.endswith(",") for e in edits), "punctuation around the word is kept"
    assert all(edit_distance(e[:-1], "terrible") == 1 or is_swap(e[:-1], "terrible") for e in edits)
    assert edits == char_edits("terrible,", 8, random.Random("0:3:1"))
    assert edits != char_edits("terrible,", 8, random.Random("1:3:1"))
    assert char_edits("a", 4, random.Random(0)) == [] and char_edits("--", 4, random.Random(0)) == []


class KeywordVictim:
    """A classifier that says 1 ('pos') while 'good' is in the text, else 0; probabilities are 0.9/0.1."""

    def __init__(self):
        self.queries = 0

    def probs(self, texts):
        self.queries += len(texts)
        return torch.tensor([[0.1, 0.9] if "good" in t.split() else [0.9, 0.1] for t in texts])


def settings(**over):
    return SimpleNamespace(**({"method": "chars", "importance": "loo", "max_fraction": 0.2, "candidates": 8} | over))


def test_the_search_finds_the_one_word_that_matters_and_keeps_the_gold_label():
    attack = Attack(settings(), KeywordVictim(), seed=0)
    outcome = attack.run(0, "the film was good and long", 1)
    assert outcome.result == "success" and outcome.label == 1 and outcome.attacked_prediction == 0
    assert [c[:2] for c in outcome.changed] == [(3, "good")]  # leave-one-out ranked 'good' first
    assert outcome.attacked.split()[:3] == ["the", "film", "was"] and outcome.attacked != outcome.text
    assert outcome.queries == 1 + 6 + 8  # the clean text, six deletions, eight edits of 'good'
    again = Attack(settings(), KeywordVictim(), seed=0).run(0, "the film was good and long", 1)
    assert again.record(["neg", "pos"]) == outcome.record(["neg", "pos"])
    assert outcome.record(["neg", "pos"])["label"] == "pos"


def test_a_wrong_clean_prediction_is_skipped_and_a_budget_stops_the_search():
    victim = KeywordVictim()
    assert Attack(settings(), victim).run(0, "a bad film", 1).result == "skipped"

    original = "one two three four five six seven eight"

    class Stubborn(KeywordVictim):  # each changed word makes it a little less sure, never enough to flip it
        def probs(self, texts):
            self.queries += len(texts)
            changed = [sum(w not in original.split() for w in t.split()) for t in texts]
            return torch.tensor([[0.9 - 0.05 * c, 0.1 + 0.05 * c] for c in changed])

    outcome = Attack(settings(max_fraction=0.25), Stubborn()).run(0, original, 0)
    assert outcome.result == "failed" and len(outcome.changed) == 2  # 0.25 of 8 words


def test_word_swaps_leave_stop_words_alone():
    # the candidate filter itself: stop words and non-words get no candidates for swaps
    attack = object.__new__(Attack)
    attack.settings, attack.method, attack.seed = settings(method="bae"), "bae", 0
    assert attack.candidates(["the", "film"], 0, 1, 0) == [] and "the" in STOP_WORDS
    assert attack.candidates(["it's", "film"], 0, 1, 0) == []


def test_the_metrics_are_textattacks():
    outcomes = [Outcome(0, "a", 0, 0, result="success", changed=[(0, "a", "b")], words=4, queries=10),
                Outcome(1, "a", 0, 0, result="success", changed=[(0, "a", "b"), (1, "c", "d")], words=4, queries=10),
                Outcome(2, "a", 0, 0, result="failed", words=4, queries=20),
                Outcome(3, "a", 0, 1, result="skipped", words=4, queries=0)]
    m = summarize(outcomes)
    assert m["clean_accuracy"] == 0.75 and m["attacked_accuracy"] == 0.25
    assert m["attack_success_rate"] == round(2 / 3, 4)
    assert m["perturbed_word_fraction"] == pytest.approx((0.25 + 0.5) / 2)
    assert m["queries_per_example"] == 10.0
