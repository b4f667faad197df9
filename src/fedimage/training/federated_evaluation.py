"""FLAIR's metrics over a federation where the server holds no images.

Each val/test client evaluates the global model on its own data and returns a summary; the
server combines the summaries. Two kinds of summary:

* :func:`client_statistics`: *additive* statistics (counts, a loss sum, sparse score
  histograms) whose sum over the clients gives :func:`pooled_metrics`, the metrics of
  :func:`~fedimage.training.metrics.multilabel_metrics` on the concatenation of every
  client's data. Only value types Flower's ``MetricRecord`` accepts are emitted (plain
  ``int``, ``float``, non-empty ``list[int]``), so the dict can be returned as one as it
  is, although this module does not import Flower. Flower's default evaluation aggregation
  (a weighted average of every key) would mix them up: the server passes the clients'
  records to :func:`pooled_metrics` itself (a strategy's ``evaluate_metrics_aggr_fn``).
* :func:`client_metrics`: the client's own figures, whose spread across clients
  :func:`summarize_clients` reports (mean, 10th/50th/90th percentiles, worst).

What is equal and what is approximate. The loss (a float64 sum of per-element BCE, divided
once on the server), precision, recall and F1 at 0.5 (macro and micro), labels present,
images, predicted positives and top-1 accuracy come from sums of per-image terms: pooled,
they equal the central figures, exactly for the counts and up to the rounding of a float sum for
the loss. Average precision is not additive: it ranks every score of the evaluated set, and
a client cannot send its scores (that would be a per-image record). It sends, per label, how
many of its positives and of its negatives score in each of ``bins`` equal bins of [0, 1];
the server then computes AP with each bin as one threshold, scores within a bin counting as
tied, which is how scikit-learn (and ``multilabel_metrics``) treat equal scores. That AP is
exact when no bin holds two different scores of one label (for micro AP: of any label) and
otherwise differs from the exact one by at most what :func:`average_precision_error_bounds`
returns, a bound computed from the same histograms (for each positive, the widest gap
between the bin's tied precision and any precision an order within the bin could give).
Measured with 4,096 bins on FLAIR-shaped synthetic data (1,628 labels of skewed prevalence,
logits around each label's prior, 30 clients, 4 seeds): micro AP within 2e-4; macro AP within
4e-4 for a model that separates the labels (9e-4 with 300 labels) and within 2.1e-3 for a weak
early one. With ml-flair's 200 equal bins the errors are 6 to 25 times larger. Equal bins of the
score lose the ranking when one label's scores crowd into a few bins (a model still at its
prior, scores spread by less than a bin): macro AP can then be off by 0.3; the certified bound
says so.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from fedimage.training.metrics import THRESHOLD, _f1, _ratio, multilabel_metrics

Value = int | float | list[int] | list[float]
"""A value Flower's ``MetricRecord`` accepts."""

DEFAULT_BINS = 4096

COUNT_KEYS = ("images", "labels", "bins", "loss_sum", "predicted_positives", "top1_correct", "single_label")
PER_LABEL_KEYS = ("tp", "fp", "fn")
HISTOGRAM_KEYS = ("hist_label", "hist_bin", "hist_pos", "hist_neg")


def _scores(logits: np.ndarray) -> np.ndarray:
    """Sigmoid in float64, computed as ``multilabel_metrics`` does (so 0.5 decisions agree)."""
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))


def score_bins(scores: np.ndarray, bins: int) -> np.ndarray:
    """Bin index of each score in ``bins`` equal bins of [0, 1] (1.0 falls in the last); monotone."""
    return np.minimum(np.floor(scores * bins), bins - 1).astype(np.int64)


def client_statistics(
    targets: np.ndarray, logits: np.ndarray, *, bins: int = DEFAULT_BINS
) -> dict[str, Value]:
    """Additive statistics of one client's evaluation of multi-hot ``targets`` [N, L] against ``logits``.

    Keys (all plain Python ``int``/``float``/``list[int]``, never an empty list):

    * ``images`` (N), ``labels`` (L), ``bins``;
    * ``loss_sum``: float64 sum of the N * L binary cross-entropies;
    * ``tp``, ``fp``, ``fn``: per-label counts at score > 0.5 (lists of L);
    * ``predicted_positives``: scores > 0.5;
    * ``top1_correct``: images whose highest score is their first positive label;
    * ``single_label``: 1 when every image has exactly one positive label (vacuously so for
      a client without images), else 0; top-1 accuracy is reported when every client says 1;
    * ``hist_label``, ``hist_bin``, ``hist_pos``, ``hist_neg``: the non-empty (label, bin)
      cells of the per-label histograms of sigmoid scores, with their counts of positive and
      negative examples, sorted by label then bin; at most ``L * min(N, bins)`` cells, and
      absent when the client has no image (a list may not be empty).
    """
    targets, logits = np.asarray(targets), np.asarray(logits)
    _check_shapes(targets, logits)
    if isinstance(bins, bool) or not isinstance(bins, int | np.integer) or bins < 1:
        raise ValueError(f"bins must be a positive integer, not {bins!r}")
    bins = int(bins)
    if np.isnan(logits).any():
        raise ValueError("logits contain NaN: the model diverged or its output is broken")
    images, labels = targets.shape
    positive = targets > 0.5
    scores = _scores(logits)
    predicted = scores > THRESHOLD
    x = logits.astype(np.float64)
    losses = np.maximum(x, 0) - x * positive + np.log1p(np.exp(-np.abs(x)))
    per_image_positives = positive.sum(axis=1)
    statistics: dict[str, Value] = {
        "images": int(images),
        "labels": int(labels),
        "bins": bins,
        "loss_sum": float(losses.sum(dtype=np.float64)),
        "tp": np.sum(predicted & positive, axis=0).astype(np.int64).tolist(),
        "fp": np.sum(predicted & ~positive, axis=0).astype(np.int64).tolist(),
        "fn": np.sum(~predicted & positive, axis=0).astype(np.int64).tolist(),
        "predicted_positives": int(predicted.sum()),
        "top1_correct": int((scores.argmax(axis=1) == positive.argmax(axis=1)).sum()),
        "single_label": int(bool((per_image_positives == 1).all())),
    }
    if images:
        cells = (np.arange(labels, dtype=np.int64) * bins + score_bins(scores, bins)).ravel()
        unique, inverse = np.unique(cells, return_inverse=True)
        counts = np.bincount(inverse, minlength=len(unique))
        pos = np.bincount(inverse[positive.ravel()], minlength=len(unique))
        label, bin_ = np.divmod(unique, bins)
        statistics |= {
            "hist_label": label.tolist(),
            "hist_bin": bin_.tolist(),
            "hist_pos": pos.tolist(),
            "hist_neg": (counts - pos).tolist(),
        }
    return statistics


class _Pooled:
    """The clients' statistics summed: per-label counts and the merged sparse histogram."""

    def __init__(self, statistics: Sequence[Mapping[str, Value]]) -> None:
        if isinstance(statistics, Mapping) or len(statistics) == 0:
            raise ValueError("pooled metrics need the statistics of at least one client (a sequence of them)")
        self.labels, self.bins = _check_client(statistics[0], 0, None, None)
        for index, client in enumerate(statistics[1:], start=1):
            _check_client(client, index, self.labels, self.bins)
        self.images = sum(int(c["images"]) for c in statistics)
        self.loss_sum = math.fsum(float(c["loss_sum"]) for c in statistics)
        self.predicted_positives = sum(int(c["predicted_positives"]) for c in statistics)
        self.top1_correct = sum(int(c["top1_correct"]) for c in statistics)
        self.single_label = all(int(c["single_label"]) == 1 for c in statistics)
        self.tp, self.fp, self.fn = (
            np.sum([np.asarray(c[key], dtype=np.int64) for c in statistics], axis=0) for key in PER_LABEL_KEYS
        )
        with_cells = [c for c in statistics if "hist_label" in c]
        cells = np.concatenate(
            [np.asarray(c["hist_label"], dtype=np.int64) * self.bins + c["hist_bin"] for c in with_cells]
            or [np.zeros(0, np.int64)]
        )
        pos, neg = (
            np.concatenate(
                [np.asarray(c[key], dtype=np.int64) for c in with_cells] or [np.zeros(0, np.int64)]
            )
            for key in ("hist_pos", "hist_neg")
        )
        keep = (pos + neg) > 0
        unique, inverse = np.unique(cells[keep], return_inverse=True)
        self.cell_label, self.cell_bin = np.divmod(unique, self.bins)
        self.cell_pos = np.bincount(inverse, weights=pos[keep], minlength=len(unique)).astype(np.int64)
        self.cell_neg = np.bincount(inverse, weights=neg[keep], minlength=len(unique)).astype(np.int64)

    def per_label_average_precision(self) -> tuple[np.ndarray, np.ndarray]:
        """AP of every label with each bin as a threshold, and the bound on its error, float64 [L]."""
        # descending bins within each label: reverse the (label, bin)-sorted cells
        label = self.cell_label[::-1]
        gain, error = _binned_terms(label, self.cell_pos[::-1], self.cell_neg[::-1])
        positives = (self.tp + self.fn).astype(np.float64)
        ap = _ratio(np.bincount(label, weights=gain, minlength=self.labels), positives)
        bound = _ratio(np.bincount(label, weights=error, minlength=self.labels), positives)
        return ap, bound

    def micro_average_precision(self) -> tuple[float, float]:
        """AP of all (image, label) pairs pooled, and the bound on its error."""
        pos = np.bincount(self.cell_bin, weights=self.cell_pos, minlength=self.bins).astype(np.int64)[::-1]
        neg = np.bincount(self.cell_bin, weights=self.cell_neg, minlength=self.bins).astype(np.int64)[::-1]
        keep = (pos + neg) > 0
        gain, error = _binned_terms(np.zeros(int(keep.sum()), np.int64), pos[keep], neg[keep])
        positives = float(pos.sum())
        return float(_ratio(gain.sum(), positives)), float(_ratio(error.sum(), positives))


def _binned_terms(group: np.ndarray, pos: np.ndarray, neg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per cell (cells of a group contiguous, in descending score order): positives x precision at
    the cell's end (the AP term times the group's positives), and positives x the widest gap
    between that precision and the precision any order inside the cell could give a positive."""
    size = pos + neg
    starts = np.r_[0, np.flatnonzero(np.diff(group)) + 1]
    lengths = np.diff(np.r_[starts, len(group)])
    tp = np.cumsum(pos)
    seen = np.cumsum(size)
    if len(group):
        tp = tp - np.repeat(np.r_[0, tp][starts], lengths)
        seen = seen - np.repeat(np.r_[0, seen][starts], lengths)
    tp_before, seen_before = tp - pos, seen - size
    precision = _ratio(tp, seen)
    # best: the cell's positives first; worst: a positive after all the cell's negatives
    best = _ratio(tp, seen_before + pos)
    worst = _ratio(tp_before + 1, seen_before + neg + 1)
    error = np.where(pos > 0, pos * np.maximum(best - precision, precision - worst), 0.0)
    return pos * precision, error


def pooled_metrics(statistics: Sequence[Mapping[str, Value]]) -> dict[str, float]:
    """``multilabel_metrics`` of the concatenated data, from the clients' :func:`client_statistics`.

    Same keys. Loss, precision/recall/F1, labels present, images, predicted positives and
    top-1 accuracy equal the central figures (the loss up to float rounding); the three AP
    figures are binned (see the module docstring and :func:`average_precision_error_bounds`).
    Raises ``ValueError`` for no client, or naming the first client whose statistics are
    malformed or disagree with client 0's label count or bins.
    """
    pooled = _Pooled(statistics)
    tp, fp, fn = pooled.tp, pooled.fp, pooled.fn
    per_label_ap, _ = pooled.per_label_average_precision()
    micro_ap, _ = pooled.micro_average_precision()
    present = (tp + fn) > 0
    macro_precision = float(_ratio(tp, tp + fp).mean())
    macro_recall = float(_ratio(tp, tp + fn).mean())
    micro_precision = float(_ratio(tp.sum(), tp.sum() + fp.sum()))
    micro_recall = float(_ratio(tp.sum(), tp.sum() + fn.sum()))
    extra = {}
    if pooled.images and pooled.single_label:
        extra["top-1 accuracy"] = pooled.top1_correct / pooled.images
    return {
        "loss": pooled.loss_sum / (pooled.images * pooled.labels) if pooled.images else math.nan,
        "macro AP": float(per_label_ap.mean()),
        "micro AP": micro_ap,
        "macro AP present": float(per_label_ap[present].mean()) if present.any() else 0.0,
        "macro precision": macro_precision,
        "macro recall": macro_recall,
        "macro F1": _f1(macro_precision, macro_recall),
        "micro precision": micro_precision,
        "micro recall": micro_recall,
        "micro F1": _f1(micro_precision, micro_recall),
        "labels present": int(present.sum()),
        "images": pooled.images,
        "predicted positives": pooled.predicted_positives,
        **extra,
    }


def average_precision_error_bounds(statistics: Sequence[Mapping[str, Value]]) -> dict[str, float]:
    """Upper bounds on ``|binned AP - exact AP|`` for ``macro AP``, ``micro AP`` and ``macro AP present``.

    Computed from the histograms alone, so the server can tell how far :func:`pooled_metrics`'
    AP can be from the central one: each positive of a bin is credited the precision at the
    bin's end, whereas an exact ranking credits it ``tp_k / k`` at some position ``k`` inside
    the bin, between (``T``, ``C``: positives, examples of higher bins; ``p``, ``n``: the
    bin's) ``(T + 1) / (C + n + 1)`` and ``(T + p) / (C + p)``. The bound assumes the worst
    order inside each bin: it is 0 only where every bin with a positive has no negative and
    either one example or nothing but positives above it, and it cannot see that a bin's
    scores are all equal (when the binned AP is exact).
    """
    pooled = _Pooled(statistics)
    _, bound = pooled.per_label_average_precision()
    _, micro = pooled.micro_average_precision()
    present = (pooled.tp + pooled.fn) > 0
    return {
        "macro AP": float(bound.mean()),
        "micro AP": micro,
        "macro AP present": float(bound[present].mean()) if present.any() else 0.0,
    }


def client_metrics(targets: np.ndarray, logits: np.ndarray) -> dict[str, float]:
    """The client's own FLAIR metrics (``multilabel_metrics``); :func:`summarize_clients` reads
    ``loss``, ``macro AP``, ``micro AP`` and ``images``."""
    return multilabel_metrics(np.asarray(targets), np.asarray(logits))


def distribution(values: Sequence[float] | np.ndarray, *, higher_is_better: bool = True) -> dict[str, float]:
    """``mean``, ``p10``, ``p50``, ``p90`` (numpy's linear percentiles) and ``worst`` (the minimum,
    or the maximum when lower is better) of ``values``; all NaN for no value. NaN is an error."""
    array = np.asarray(values, dtype=np.float64).ravel()
    if np.isnan(array).any():
        raise ValueError("distribution of values containing NaN: leave those out first")
    if array.size == 0:
        return dict.fromkeys(("mean", "p10", "p50", "p90", "worst"), math.nan)
    p10, p50, p90 = np.percentile(array, [10, 50, 90])
    return {
        "mean": float(array.mean()),
        "p10": float(p10),
        "p50": float(p50),
        "p90": float(p90),
        "worst": float(array.min() if higher_is_better else array.max()),
    }


SUMMARIZED = (("macro_ap", "macro AP", True), ("micro_ap", "micro AP", True), ("loss", "loss", False))


def summarize_clients(per_client: Mapping[str, Mapping[str, float]]) -> dict[str, object]:
    """How the clients' own figures (:func:`client_metrics`, by client id) spread.

    ``{"clients": n, "skipped": k, "macro_ap": ..., "micro_ap": ..., "loss": ...}``, each
    figure a :func:`distribution` over the ``n`` clients summarised (loss: lower is better).
    A client with no images (``images`` 0) or a NaN or missing figure is skipped, and counted
    in ``skipped``.
    """
    kept: list[Mapping[str, float]] = []
    for figures in per_client.values():
        values = [figures.get(key, math.nan) for _, key, _ in SUMMARIZED]
        if figures.get("images", 1) == 0 or any(v is None or math.isnan(float(v)) for v in values):
            continue
        kept.append(figures)
    summary: dict[str, object] = {"clients": len(kept), "skipped": len(per_client) - len(kept)}
    for name, key, higher_is_better in SUMMARIZED:
        summary[name] = distribution([float(f[key]) for f in kept], higher_is_better=higher_is_better)
    return summary


def _check_shapes(targets: np.ndarray, logits: np.ndarray) -> None:
    if targets.shape != logits.shape or targets.ndim != 2:
        raise ValueError(f"targets {targets.shape} and logits {logits.shape} must both be [images, labels]")
    if targets.shape[1] == 0:
        raise ValueError("targets and logits need at least one label")


def _check_client(
    client: Mapping[str, Value], index: int, labels: int | None, bins: int | None
) -> tuple[int, int]:
    """The client's label count and bins, after checking its statistics are well formed."""
    missing = [key for key in (*COUNT_KEYS, *PER_LABEL_KEYS) if key not in client]
    if missing:
        raise ValueError(f"client {index}: statistics lack {missing}")
    own_labels, own_bins = int(client["labels"]), int(client["bins"])
    if labels is not None and own_labels != labels:
        raise ValueError(f"client {index} has {own_labels} labels, client 0 has {labels}")
    if bins is not None and own_bins != bins:
        raise ValueError(f"client {index} has {own_bins} histogram bins, client 0 has {bins}")
    if own_labels < 1 or own_bins < 1:
        raise ValueError(f"client {index}: labels and bins must be positive, not {own_labels} and {own_bins}")
    for key in PER_LABEL_KEYS:
        if len(client[key]) != own_labels:
            raise ValueError(f"client {index}: {key} has {len(client[key])} values for {own_labels} labels")
    present = [key for key in HISTOGRAM_KEYS if key in client]
    if present and len(present) != len(HISTOGRAM_KEYS):
        raise ValueError(f"client {index}: histogram keys {present} without the others of {HISTOGRAM_KEYS}")
    if present:
        lengths = {len(client[key]) for key in HISTOGRAM_KEYS}
        if len(lengths) != 1:
            raise ValueError(f"client {index}: the histogram lists differ in length")
        label, bin_ = np.asarray(client["hist_label"]), np.asarray(client["hist_bin"])
        if label.size == 0:
            raise ValueError(f"client {index}: empty histogram lists (leave the keys out instead)")
        if label.min() < 0 or label.max() >= own_labels or bin_.min() < 0 or bin_.max() >= own_bins:
            raise ValueError(
                f"client {index}: a histogram cell lies outside {own_labels} labels x {own_bins} bins"
            )
        pos, neg = np.asarray(client["hist_pos"]), np.asarray(client["hist_neg"])
        if min(pos.min(), neg.min()) < 0:
            raise ValueError(f"client {index}: a histogram count is negative")
        positives = np.bincount(label, weights=pos, minlength=own_labels)
        if not np.array_equal(positives, np.add(client["tp"], client["fn"])):
            raise ValueError(f"client {index}: the histogram's positives differ from tp + fn")
        if int(pos.sum() + neg.sum()) != int(client["images"]) * own_labels:
            raise ValueError(f"client {index}: the histogram does not count images x labels scores")
    elif int(client["images"]):
        raise ValueError(f"client {index}: {client['images']} images but no histogram")
    return own_labels, own_bins
