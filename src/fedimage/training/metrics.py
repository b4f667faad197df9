"""FLAIR's evaluation metrics for multi-label classification, from targets and logits.

As ml-flair and pfl-research report them: macro and micro averaged precision (AP,
sklearn's step-wise ``sum((R_n - R_{n-1}) * P_n)``), macro and micro precision, recall and
F1 at threshold 0.5, and the binary cross-entropy. Macro values are unweighted means over
*all* labels of the vocabulary: a label with no positive example in the evaluated set
counts as AP 0, precision 0 and recall 0, exactly as both reference implementations do
(their ``divide_no_nan``); ``macro AP present`` averages over the labels that do occur.
F1 is the harmonic mean of the (macro or micro) precision and recall, as in ml-flair.

The references compute AP from 200 score buckets; here it is exact (every distinct
score is a threshold), which is what scikit-learn's ``average_precision_score`` gives.
"""

from __future__ import annotations

import numpy as np

THRESHOLD = 0.5


def binary_average_precision(targets: np.ndarray, scores: np.ndarray) -> float:
    """AP of one binary problem; 0.0 when ``targets`` has no positive."""
    positives = float(targets.sum())
    if positives == 0:
        return 0.0
    order = np.argsort(-scores, kind="mergesort")
    sorted_scores = scores[order]
    true_positives = np.cumsum(targets[order], dtype=np.float64)
    # one threshold per distinct score: the last position of each run of ties
    ends = np.r_[np.flatnonzero(np.diff(sorted_scores)), len(scores) - 1]
    true_positives = true_positives[ends]
    precision = true_positives / (ends + 1)
    recall = true_positives / positives
    return float(np.sum(np.diff(recall, prepend=0.0) * precision))


def average_precision_per_label(targets: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """AP of every label (column), float64 [L]."""
    _check_shapes(targets, scores)
    return np.array([binary_average_precision(targets[:, j], scores[:, j]) for j in range(targets.shape[1])])


def binary_cross_entropy(targets: np.ndarray, logits: np.ndarray) -> float:
    """Mean BCE over images and labels, computed stably from logits."""
    x = logits.astype(np.float64)
    losses = np.maximum(x, 0) - x * targets + np.log1p(np.exp(-np.abs(x)))
    return float(losses.mean())


def _ratio(numerator: np.ndarray | float, denominator: np.ndarray | float) -> np.ndarray:
    """numerator / denominator with 0 where the denominator is 0 (TensorFlow's divide_no_nan)."""
    num = np.asarray(numerator, dtype=np.float64)
    den = np.asarray(denominator, dtype=np.float64)
    return np.divide(num, den, out=np.zeros(np.broadcast(num, den).shape), where=den != 0)


def _f1(precision: float, recall: float) -> float:
    return float(_ratio(2 * precision * recall, precision + recall))


def multilabel_metrics(targets: np.ndarray, logits: np.ndarray) -> dict[str, float]:
    """FLAIR's metrics of multi-hot ``targets`` [N, L] against model ``logits`` [N, L]."""
    _check_shapes(targets, logits)
    targets = (np.asarray(targets) > 0.5).astype(np.float64)
    scores = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
    predicted = scores > THRESHOLD
    positive = targets > 0.5
    tp = np.sum(predicted & positive, axis=0)
    fp = np.sum(predicted & ~positive, axis=0)
    fn = np.sum(~predicted & positive, axis=0)
    per_label_ap = average_precision_per_label(targets, scores)
    present = positive.any(axis=0)
    macro_precision = float(_ratio(tp, tp + fp).mean())
    macro_recall = float(_ratio(tp, tp + fn).mean())
    micro_precision = float(_ratio(tp.sum(), tp.sum() + fp.sum()))
    micro_recall = float(_ratio(tp.sum(), tp.sum() + fn.sum()))
    extra = {}
    if targets.shape[0] and (positive.sum(axis=1) == 1).all():  # single-label data: top-1 is meaningful
        extra["top-1 accuracy"] = float((scores.argmax(axis=1) == positive.argmax(axis=1)).mean())
    return {
        "loss": binary_cross_entropy(targets, logits),
        "macro AP": float(per_label_ap.mean()),
        "micro AP": binary_average_precision(targets.ravel(), scores.ravel()),
        "macro AP present": float(per_label_ap[present].mean()) if present.any() else 0.0,
        "macro precision": macro_precision,
        "macro recall": macro_recall,
        "macro F1": _f1(macro_precision, macro_recall),
        "micro precision": micro_precision,
        "micro recall": micro_recall,
        "micro F1": _f1(micro_precision, micro_recall),
        "labels present": int(present.sum()),
        "images": int(targets.shape[0]),
        # Precision, recall and F1 are at a 0.5 score: 0 when no score reaches it (early rounds of
        # multi-label training, where every label is rarer than one image in two); this says so.
        "predicted positives": int(predicted.sum()),
        **extra,
    }


def prevalence_baseline(train_targets: np.ndarray, eval_targets: np.ndarray) -> dict[str, float]:
    """Metrics of a constant predictor that scores every image with the train label prevalence.

    Its per-label AP equals the label's prevalence in the evaluated set: the floor a trained
    model must clear. Prevalences of 0 or 1 are nudged to keep the logits finite.
    """
    prevalence = np.clip(np.asarray(train_targets, dtype=np.float64).mean(axis=0), 1e-6, 1 - 1e-6)
    logits = np.broadcast_to(np.log(prevalence / (1 - prevalence)), eval_targets.shape)
    return multilabel_metrics(eval_targets, np.ascontiguousarray(logits))


def _check_shapes(targets: np.ndarray, scores: np.ndarray) -> None:
    if targets.shape != scores.shape or targets.ndim != 2:
        raise ValueError(f"targets {targets.shape} and scores {scores.shape} must both be [images, labels]")
