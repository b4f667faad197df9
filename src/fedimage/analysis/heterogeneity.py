"""How heterogeneous a federation is: per-client sizes, label histograms and divergences.

A client's *label histogram* counts, for each label, its images that carry the label
(multi-label images count once per label); normalized to sum 1 it is the client's label
distribution p, compared with the federation's q (all clients' histograms summed):

``hellinger``       sqrt(1 - sum_l sqrt(p_l q_l)), in [0, 1]
``jensen_shannon``  Jensen-Shannon *distance* with base-2 logarithms, in [0, 1]
                    (the square root of the divergence, as ``scipy.spatial.distance.jensenshannon``)
``emd``             earth mover's distance with the 0-1 ground metric (moving mass between two
                    different labels costs 1), which equals the total variation 0.5 * sum |p - q|,
                    in [0, 1]. Label indices are alphabetical, not ordinal, so a distance over
                    indices (scipy's ``wasserstein_distance``) would measure nothing real.
``effective_labels`` exp(Shannon entropy of p): 1 for a single-label client, L for uniform.

A client without any label has NaN divergences; summaries ignore NaN. Everything works on
sparse (client, label, count) triplets, so FLAIR's 51k users x 1,628 fine labels stay small.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedimage.labels import LabelLevel
from fedimage.partitioning.labels import LabelInput, label_pairs
from fedimage.store.reader import FederatedStore

QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


@dataclass(frozen=True)
class LabelHistograms:
    """Per-client label counts as sparse triplets sorted by (client, label)."""

    num_clients: int
    label_names: list[str]
    client: np.ndarray  # int64 [nnz]
    label: np.ndarray  # int64 [nnz]
    count: np.ndarray  # int64 [nnz]

    @classmethod
    def from_occurrences(
        cls, client_of_label: np.ndarray, label: np.ndarray, num_clients: int, label_names: list[str]
    ) -> LabelHistograms:
        """From one (client, label) entry per labelled image."""
        width = max(len(label_names), 1)
        keys, counts = np.unique(client_of_label.astype(np.int64) * width + label, return_counts=True)
        return cls(num_clients, label_names, keys // width, keys % width, counts.astype(np.int64))

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    def global_counts(self) -> np.ndarray:
        """Images per label over all clients."""
        return np.bincount(self.label, weights=self.count, minlength=self.num_labels).astype(np.int64)

    def client_totals(self) -> np.ndarray:
        """Label occurrences per client."""
        return np.bincount(self.client, weights=self.count, minlength=self.num_clients).astype(np.int64)

    def dense(self, clients: np.ndarray) -> np.ndarray:
        """Counts [len(clients), L] for a few clients (e.g. the largest, for a heatmap)."""
        clients = np.asarray(clients, dtype=np.int64)
        position = np.full(self.num_clients, -1, dtype=np.int64)
        position[clients] = np.arange(len(clients))
        keep = position[self.client] >= 0
        out = np.zeros((len(clients), self.num_labels), dtype=np.int64)
        out[position[self.client[keep]], self.label[keep]] = self.count[keep]
        return out

    def measures(self, sizes: np.ndarray) -> dict[str, np.ndarray]:
        """Per-client measures (see the module docstring), float64 [K] each."""
        totals = self.client_totals().astype(np.float64)
        grand = totals.sum()
        q_all = self.global_counts() / grand if grand else np.zeros(self.num_labels)
        with np.errstate(divide="ignore", invalid="ignore"):
            p = self.count / totals[self.client]
            q = q_all[self.label]
            m = (p + q) / 2

            def per_client(values: np.ndarray) -> np.ndarray:
                return np.bincount(self.client, weights=values, minlength=self.num_clients)

            q_covered = per_client(q)  # mass of q on the client's labels; the rest has p = 0
            bhattacharyya = per_client(np.sqrt(p * q))
            js = per_client(0.5 * p * np.log2(p / m) + 0.5 * q * np.log2(q / m)) + 0.5 * (1 - q_covered)
            tv = 0.5 * (per_client(np.abs(p - q)) + 1 - q_covered)
            entropy = -per_client(p * np.log(p))
            empty = totals == 0
            result = {
                "hellinger": np.sqrt(np.clip(1 - bhattacharyya, 0, 1)),
                "jensen_shannon": np.sqrt(np.clip(js, 0, 1)),
                "emd": np.clip(tv, 0, 1),
                "effective_labels": np.exp(entropy),
                "labels_present": np.bincount(self.client, minlength=self.num_clients).astype(np.float64),
                "labels_per_image": totals / np.maximum(sizes, 1),
            }
        for name in ("hellinger", "jensen_shannon", "emd", "effective_labels"):
            result[name][empty] = np.nan
        return result


@dataclass(frozen=True)
class LevelStats:
    """One label vocabulary (coarse or fine): its histograms and per-client measures."""

    histograms: LabelHistograms
    measures: dict[str, np.ndarray]

    def summary(self) -> dict[str, Any]:
        global_counts = self.histograms.global_counts()
        total = global_counts.sum()
        q = global_counts[global_counts > 0] / total if total else np.zeros(0)
        shares = global_counts / total if total else np.zeros(len(global_counts))
        return {
            "num_labels": self.histograms.num_labels,
            "global_effective_labels": float(np.exp(-(q * np.log(q)).sum())) if q.size else None,
            #: Each label's share of all label occurrences: the distribution clients diverge from.
            "global_distribution": {
                name: round(float(share), 6)
                for name, share in zip(self.histograms.label_names, shares, strict=True)
            },
            **{name: describe(values) for name, values in self.measures.items()},
        }


@dataclass(frozen=True)
class Heterogeneity:
    """Per-client statistics of a federation, for its ``coarse`` and (when known) ``fine`` labels."""

    client_ids: list[str]
    sizes: np.ndarray  # int64 [K]
    levels: dict[str, LevelStats]

    @property
    def num_clients(self) -> int:
        return len(self.client_ids)

    def frequencies(self, level: str, clients: np.ndarray) -> np.ndarray:
        """Share of each client's images carrying each label, [len(clients), L]."""
        counts = self.levels[level].histograms.dense(clients)
        return counts / np.maximum(self.sizes[np.asarray(clients)], 1)[:, None]

    def largest(self, count: int) -> np.ndarray:
        """Indices of the ``count`` largest clients, largest first (ties: lower index)."""
        return np.lexsort((np.arange(self.num_clients), -self.sizes))[:count]

    def summary(self) -> dict[str, Any]:
        """Federation-level numbers: sizes and, per label level, mean and quantiles of each measure."""
        return {
            "clients": self.num_clients,
            "images": int(self.sizes.sum()),
            "images_per_client": describe(self.sizes),
            **{level: stats.summary() for level, stats in self.levels.items()},
        }

    def per_client(self) -> dict[str, Any]:
        """Per-client values as JSON-able lists (NaN becomes None)."""
        out: dict[str, Any] = {"client_id": self.client_ids, "size": self.sizes.tolist()}
        for level, stats in self.levels.items():
            for name, values in stats.measures.items():
                out[f"{level}_{name}"] = [None if np.isnan(v) else round(float(v), 6) for v in values]
        return out


def hellinger(counts: np.ndarray, reference: np.ndarray) -> float | None:
    """Hellinger distance between two label histograms (each normalized to sum 1), in [0, 1].

    None when either has no label at all. The same measure as a client's ``hellinger``.

    Example::

        hellinger(np.array([5, 5]), np.array([9, 1]))  # 0.325
    """
    counts, reference = (np.asarray(values, dtype=np.float64) for values in (counts, reference))
    if counts.sum() <= 0 or reference.sum() <= 0:
        return None
    overlap = np.sqrt(counts / counts.sum() * reference / reference.sum()).sum()
    return float(np.sqrt(np.clip(1 - overlap, 0, 1)))


def split_balance(images: dict[str, int], label_counts: dict[str, np.ndarray]) -> dict[str, dict[str, Any]]:
    """How each split follows the whole: its images, its share of them, and the Hellinger distance of
    its label histogram from the whole's (all splits summed); what a store's manifest records.

    Parameters:
        images: images per split (in store order).
        label_counts: each split's label histogram (images per label, one vocabulary for all).

    Example::

        split_balance({"train": 8, "test": 2}, {"train": np.array([4, 4]), "test": np.array([2, 0])})
        # {"train": {"images": 8, "image_share": 0.8, "hellinger": 0.071...}, "test": {...}}
    """
    total = sum(images.values())
    histograms = [np.asarray(counts, dtype=np.float64) for counts in label_counts.values()]
    whole = np.sum(histograms, axis=0) if histograms else np.zeros(0)
    balance = {}
    for split, count in images.items():
        distance = hellinger(label_counts[split], whole) if split in label_counts else None
        balance[split] = {
            "images": int(count),
            "image_share": round(count / total, 6) if total else 0.0,
            "hellinger": None if distance is None else round(distance, 6),
        }
    return balance


def describe(values: np.ndarray) -> dict[str, float | int | None]:
    """Mean, std, min, quantiles and max, ignoring NaN; ``count`` is the number of defined values."""
    values = np.asarray(values, dtype=np.float64)
    defined = values[~np.isnan(values)]
    if defined.size == 0:
        return {"count": 0}
    quantiles = np.quantile(defined, QUANTILES)
    return {
        "count": int(defined.size),
        "mean": float(defined.mean()),
        "std": float(defined.std()),
        "min": float(defined.min()),
        **{f"p{round(q * 100)}": float(v) for q, v in zip(QUANTILES, quantiles, strict=True)},
        "max": float(defined.max()),
    }


def _build(client_ids: list[str], sizes: np.ndarray, histograms: dict[str, LabelHistograms]) -> Heterogeneity:
    levels = {name: LevelStats(h, h.measures(sizes)) for name, h in histograms.items()}
    return Heterogeneity(client_ids, sizes, levels)


def heterogeneity_from_arrays(
    clients: np.ndarray,
    labels: LabelInput,
    fine_labels: LabelInput | None = None,
    label_names: list[str] | None = None,
    fine_label_names: list[str] | None = None,
    client_ids: list[str] | None = None,
) -> Heterogeneity:
    """Statistics of raw arrays: a client index per image and multi-hot (or label-list) labels."""
    clients = np.asarray(clients, dtype=np.int64)
    num_clients = len(client_ids) if client_ids is not None else int(clients.max(initial=-1)) + 1
    sizes = np.bincount(clients, minlength=num_clients).astype(np.int64)
    ids = client_ids if client_ids is not None else [str(k) for k in range(num_clients)]
    histograms = {}
    for level, values, names in (("coarse", labels, label_names), ("fine", fine_labels, fine_label_names)):
        if values is None:
            continue
        rows, cols, num_images = label_pairs(values)
        if num_images != len(clients):
            raise ValueError(f"{level} labels have {num_images} rows for {len(clients)} client indices")
        width = values.shape[1] if isinstance(values, np.ndarray) else int(cols.max(initial=-1)) + 1
        names = names if names is not None else [str(index) for index in range(width)]
        histograms[level] = LabelHistograms.from_occurrences(clients[rows], cols, num_clients, names)
    return _build(ids, sizes, histograms)


def heterogeneity_from_store(
    store: FederatedStore | str | Path, splits: list[str] | None = None
) -> Heterogeneity:
    """Statistics of a store's users (clients) in ``splits`` (default all), from the label
    datasets only: no image is read."""
    if not isinstance(store, FederatedStore):
        with FederatedStore(store) as opened:
            return heterogeneity_from_store(opened, splits)
    client_ids: list[str] = []
    index_of: dict[str, int] = {}  # a client's parts in several splits (a within-client split) count once
    sizes: list[int] = []
    histograms = {}
    for level in LabelLevel:
        owners: list[np.ndarray] = []
        labels: list[np.ndarray] = []
        for user in store.iter_user_labels(level, splits):
            index = index_of.get(user.user_id)
            if index is None:
                index = index_of[user.user_id] = len(client_ids)
                client_ids.append(user.user_id)
                sizes.append(0)
            if level is LabelLevel.COARSE:
                sizes[index] += user.count
            owners.append(np.full(len(user.cols), index, dtype=np.int64))
            labels.append(user.cols)
        histograms[level.value] = LabelHistograms.from_occurrences(
            np.concatenate(owners) if owners else np.zeros(0, dtype=np.int64),
            np.concatenate(labels) if labels else np.zeros(0, dtype=np.int64),
            len(client_ids),
            store.label_names_of(level),
        )
    return _build(client_ids, np.asarray(sizes, dtype=np.int64), histograms)
