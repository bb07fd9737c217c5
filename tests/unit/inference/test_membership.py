"""The loss-threshold membership attack's metrics, against their definitions."""

from __future__ import annotations

import numpy as np
import pytest

from ptcli.inference.membership import auc, roc, summarize


def pairwise_auc(a, b):
    return np.mean([1.0 if x > y else 0.5 if x == y else 0.0 for x in a for y in b])


def test_auc_is_the_probability_a_member_outscores_a_non_member_ties_counting_half():
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 6, 40).astype(float), rng.integers(0, 5, 30).astype(float)  # many ties
    assert auc(a, b) == pytest.approx(pairwise_auc(a, b), abs=1e-12)
    assert auc([3, 4], [1, 2]) == 1.0 and auc([1, 2], [3, 4]) == 0.0 and auc([1, 1], [1, 1]) == 0.5
    with pytest.raises(ValueError):
        auc([], [1.0])


def test_the_summary_scores_low_loss_as_member_and_reports_advantage_and_low_fpr_tpr():
    rng = np.random.default_rng(1)
    members, others = rng.exponential(0.2, 500), rng.exponential(1.0, 500)  # members fit better
    out = summarize(members, others)
    assert 0.7 < out["membership_auc"] == pytest.approx(pairwise_auc(-members, -others), abs=1e-4)
    fpr, tpr = roc(-members, -others)
    assert fpr[0] == tpr[0] == 0 and fpr[-1] == tpr[-1] == 1 and np.all(np.diff(fpr) >= 0)
    assert out["membership_advantage"] == pytest.approx((tpr - fpr).max(), abs=1e-4)
    assert 0 <= out["tpr_at_1pct_fpr"] <= out["membership_advantage"] + 0.01
    same = summarize(others[:250], others[250:])
    assert abs(same["membership_auc"] - 0.5) < 0.06, "no leak: the same distribution"
