"""Membership inference by loss threshold (Yeom et al. 2018): how well a model's per-example loss tells the rows it
was trained on from rows it never saw. ``ptcli evaluate +attack=membership`` runs it on a classifier's training
rows and its held-out rows; 0.5 AUC means the loss gives nothing away, 1.0 that every member is exposed.
"""

from __future__ import annotations

import numpy as np


def auc(member_scores, other_scores) -> float:
    """The probability that a random member scores above a random non-member (ties count half): the ROC AUC of
    the score as a membership test, by the Mann-Whitney U statistic."""
    a, b = np.asarray(member_scores, dtype=float), np.asarray(other_scores, dtype=float)
    if not len(a) or not len(b):
        raise ValueError("membership AUC needs scores of both members and non-members")
    scores = np.concatenate([a, b])
    order = scores.argsort(kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    i = 0
    while i < len(scores):  # average ranks over ties
        j = i
        while j + 1 < len(scores) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    u = ranks[:len(a)].sum() - len(a) * (len(a) + 1) / 2
    return float(u / (len(a) * len(b)))


def roc(member_scores, other_scores) -> tuple[np.ndarray, np.ndarray]:
    """(false positive rates, true positive rates) of "member if score >= t" over every threshold t."""
    a, b = np.asarray(member_scores, dtype=float), np.asarray(other_scores, dtype=float)
    thresholds = np.unique(np.concatenate([a, b, [np.inf]]))[::-1]
    tpr = np.array([(a >= t).mean() for t in thresholds])
    fpr = np.array([(b >= t).mean() for t in thresholds])
    return fpr, tpr


def summarize(member_losses, other_losses) -> dict:
    """The attack's metrics; the score is the negative loss (a member's loss is lower)."""
    members, others = -np.asarray(member_losses, dtype=float), -np.asarray(other_losses, dtype=float)
    fpr, tpr = roc(members, others)
    low = tpr[fpr <= 0.01]
    return {
        "membership_auc": round(auc(members, others), 4),
        "membership_advantage": round(float((tpr - fpr).max()), 4),  # the best threshold's TPR - FPR
        "tpr_at_1pct_fpr": round(float(low.max()) if len(low) else 0.0, 4),
        "member_loss": round(float(np.mean(member_losses)), 4),
        "nonmember_loss": round(float(np.mean(other_losses)), 4),
        "members": len(members),
        "nonmembers": len(others),
    }


def losses(victim, texts: list[str], labels: list[int]) -> list[float]:
    """Each example's cross-entropy loss under the classifier (``ptcli.inference.attacks.Victim``)."""
    probs = victim.probs(texts)
    picked = probs[range(len(labels)), labels].clamp(min=1e-12)
    return (-picked.log()).tolist()
