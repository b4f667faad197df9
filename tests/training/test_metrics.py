"""FLAIR's metrics, cross-checked against scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest

from fedimage.training.metrics import (
    average_precision_per_label,
    binary_cross_entropy,
    multilabel_metrics,
    prevalence_baseline,
)

sklearn_metrics = pytest.importorskip("sklearn.metrics")


def random_problem(seed: int, images: int = 200, labels: int = 6) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    targets = (rng.random((images, labels)) < rng.uniform(0.05, 0.5, labels)).astype(np.float32)
    logits = (targets * rng.normal(1.0, 1.0, targets.shape) + rng.normal(0, 1.5, targets.shape)).astype(
        np.float32
    )
    return targets, np.round(logits, 1)  # rounding makes ties, which AP must handle like sklearn


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_average_precision_matches_sklearn(seed: int):
    targets, logits = random_problem(seed)
    scores = 1 / (1 + np.exp(-logits.astype(np.float64)))
    metrics = multilabel_metrics(targets, logits)
    expected_per_label = [
        sklearn_metrics.average_precision_score(targets[:, j], scores[:, j]) for j in range(6)
    ]
    np.testing.assert_allclose(average_precision_per_label(targets, scores), expected_per_label, rtol=1e-12)
    assert metrics["macro AP"] == pytest.approx(
        sklearn_metrics.average_precision_score(targets, scores, average="macro"), rel=1e-12
    )
    assert metrics["micro AP"] == pytest.approx(
        sklearn_metrics.average_precision_score(targets, scores, average="micro"), rel=1e-12
    )


def test_threshold_metrics_match_sklearn_and_f1_is_flair_style():
    targets, logits = random_problem(3)
    predicted = (logits > 0).astype(int)
    metrics = multilabel_metrics(targets, logits)
    for average in ("macro", "micro"):
        precision = sklearn_metrics.precision_score(targets, predicted, average=average, zero_division=0)
        recall = sklearn_metrics.recall_score(targets, predicted, average=average, zero_division=0)
        assert metrics[f"{average} precision"] == pytest.approx(precision)
        assert metrics[f"{average} recall"] == pytest.approx(recall)
        # ml-flair: F1 of the averaged precision and recall, not the mean of per-label F1
        assert metrics[f"{average} F1"] == pytest.approx(2 * precision * recall / (precision + recall))
    assert metrics["loss"] == pytest.approx(
        sklearn_metrics.log_loss(targets.ravel(), 1 / (1 + np.exp(-logits.ravel())))
    )


def test_labels_absent_from_the_evaluated_set_count_as_zero_in_macro_averages():
    targets, logits = random_problem(4)
    targets[:, 2] = 0
    logits[:, 2] = 5.0  # predicted everywhere: precision 0 for that label
    metrics = multilabel_metrics(targets, logits)
    per_label = average_precision_per_label(targets, 1 / (1 + np.exp(-logits.astype(np.float64))))
    assert per_label[2] == 0.0
    assert metrics["macro AP"] == pytest.approx(per_label.mean())
    assert metrics["macro AP present"] == pytest.approx(np.delete(per_label, 2).mean())
    assert metrics["labels present"] == 5


def test_perfect_ranking_and_prevalence_baseline():
    targets, _ = random_problem(5)
    perfect = multilabel_metrics(targets, np.where(targets > 0, 4.0, -4.0))
    assert perfect["macro AP"] == pytest.approx(1.0) and perfect["micro F1"] == pytest.approx(1.0)
    train_targets, _ = random_problem(6)
    baseline = prevalence_baseline(train_targets, targets)
    # a constant score per label ranks nothing: its AP is the label's prevalence in the evaluated set
    assert baseline["macro AP"] == pytest.approx(targets.mean(axis=0).mean())


def test_binary_cross_entropy_is_stable_for_large_logits():
    targets = np.array([[1.0, 0.0]])
    assert binary_cross_entropy(targets, np.array([[100.0, -100.0]])) == pytest.approx(0.0, abs=1e-12)
    assert binary_cross_entropy(targets, np.array([[-100.0, 100.0]])) == pytest.approx(100.0)


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="must both be"):
        multilabel_metrics(np.zeros((3, 2)), np.zeros((3, 3)))


def test_precision_at_half_is_zero_only_when_no_score_reaches_half():
    targets = np.array([[1, 0, 0], [0, 1, 1], [0, 0, 1]], dtype=np.float32)
    timid = np.full(targets.shape, -1.0)  # sigmoid 0.27 everywhere: nothing is predicted
    metrics = multilabel_metrics(targets, timid)
    assert metrics["predicted positives"] == 0
    assert metrics["micro precision"] == metrics["micro recall"] == metrics["micro F1"] == 0.0
    confident = np.where(targets > 0, 2.0, -2.0)
    assert multilabel_metrics(targets, confident)["micro F1"] == 1.0
    assert "top-1 accuracy" not in metrics  # multi-label: no top-1


def test_single_label_data_gets_top_1_accuracy():
    targets = np.eye(3, dtype=np.float32)[[0, 1, 2, 2]]
    logits = np.array([[3.0, 0, 0], [0, 0, 1.0], [0, 0, 2.0], [0, 5.0, 0]])
    assert multilabel_metrics(targets, logits)["top-1 accuracy"] == 0.5
