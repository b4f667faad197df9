"""The numbers ``fedimage inspect`` shows: users and images per split, label statistics."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from fedimage.analysis.heterogeneity import split_balance
from fedimage.labels import LabelLevel
from fedimage.store import schema
from fedimage.store.reader import FederatedStore
from fedimage.store.sealing import StoreKey

TOP_LABELS = 10


def summarize(store: str | Path | FederatedStore, *, key: StoreKey | None = None) -> dict[str, Any]:
    """Summary statistics of a store (what ``fedimage inspect`` prints), as plain JSON-able values.

    ``split_balance`` gives, per split, its images, their share and the Hellinger distance of its
    coarse labels from the whole store's (the manifest's record, or computed for older stores).

    Parameters:
        store: a store path, or a :class:`~fedimage.store.reader.FederatedStore` already open.
        key: the key of an encrypted store (when ``store`` is a path).

    Example::

        summary = fedimage.summarize("out.h5")
        print(summary["splits"]["train"]["users"])
    """
    if not isinstance(store, FederatedStore):
        with FederatedStore(store, key=key) as opened:
            return summarize(opened)
    splits: dict[str, Any] = {}
    coarse_per_image: list[np.ndarray] = []
    fine_per_image: list[np.ndarray] = []
    for split in store.splits:
        users = store.users(split)
        counts = np.fromiter(users.values(), dtype=np.int64, count=len(users))
        splits[split] = {"users": len(users), "images": int(counts.sum()), "images_per_user": _stats(counts)}
    split_labels = {split: np.zeros(len(store.label_mapping), dtype=np.int64) for split in store.splits}
    for level, per_image in ((LabelLevel.COARSE, coarse_per_image), (LabelLevel.FINE, fine_per_image)):
        for user in store.iter_user_labels(level):
            per_image.append(np.bincount(user.rows, minlength=user.count))
            if level is LabelLevel.COARSE:
                np.add.at(split_labels[user.split], user.cols, 1)
    manifest = store.manifest
    # Recorded by the conversion; computed here for stores written before it was, and for overlays.
    recorded = manifest.get("split_balance") if store.partition is None else None
    balance = recorded or split_balance(
        {split: info["images"] for split, info in splits.items()}, split_labels
    )
    size_bytes = store.path.stat().st_size
    images = store.num_images()
    return {
        "path": str(store.path),
        "partition": None if store.partition is None else str(store.partition),
        "storage": store.storage,
        "color": store.color,
        "encryption": _encryption(store),
        "image_size": store.image_size,
        "file_bytes": size_bytes,
        "bytes_per_image": size_bytes / images if images else 0.0,
        "fedimage_version": manifest.get("fedimage_version"),
        "source": manifest.get("source"),
        "counts": manifest.get("counts"),
        "splits": splits,
        "split_balance": balance,
        "labels_per_image": _stats(_concat(coarse_per_image)),
        "fine_labels_per_image": _stats(_concat(fine_per_image)),
        "num_labels": len(store.label_mapping),
        "num_fine_labels": len(store.fine_label_mapping),
        "top_labels": _top(store, schema.LABEL_COUNTER),
        "top_fine_labels": _top(store, schema.FINE_LABEL_COUNTER),
        "image_metadata": [column.to_json() for column in store.metadata_columns],
    }


def _encryption(store: FederatedStore) -> dict[str, Any] | None:
    """What an encrypted store shows in the clear (scheme, key kind, store id); None for a plain store."""
    if store.encryption is None:
        return None
    header = store.encryption
    return {"scheme": header["scheme"], "key": header["key"], "store_id": header["store_id"]}


def _concat(parts: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def _stats(values: np.ndarray) -> dict[str, float]:
    if values.size == 0:
        return {}
    p25, median, p75 = np.percentile(values, [25, 50, 75])
    return {
        "min": float(values.min()),
        "p25": float(p25),
        "median": float(median),
        "mean": float(values.mean()),
        "p75": float(p75),
        "max": float(values.max()),
    }


def _top(store: FederatedStore, counter_name: str) -> list[tuple[str, int]]:
    counter = Counter(store.read_metadata(counter_name))
    return [(label, count) for label, count in counter.most_common(TOP_LABELS) if count]


def format_summary(summary: dict[str, Any]) -> str:
    """A human-readable rendering of :func:`summarize`'s result."""
    size, color = summary["image_size"], summary.get("color", "rgb")
    lines = [
        f"store    {summary['path']}"
        + (f" (clients of the overlay {summary['partition']})" if summary.get("partition") else ""),
        f"format   {summary['storage']} {size}x{size} {color}, {_human_bytes(summary['file_bytes'])} "
        f"({_human_bytes(summary['bytes_per_image'])} per image), fedimage {summary['fedimage_version']}",
    ]
    encryption = summary.get("encryption")
    if encryption:
        lines.append(
            f"sealed   {encryption['scheme']} under a {encryption['key']}, store id {encryption['store_id']}"
        )
    source = summary.get("source") or {}
    counts = summary.get("counts") or {}
    if source:
        lines.append(f"source   {source.get('format')} {source.get('name')}")
    if counts:
        ignored = sum((counts.get("ignored") or {}).values())
        note = f" ({ignored} hidden files ignored)" if ignored else ""
        lines.append(
            f"inputs   {counts['inputs']} = {counts['written']} written + {counts['rejected']} rejected{note}"
        )
    columns = summary.get("image_metadata") or []
    if columns:
        lines.append(
            "metadata "
            + ", ".join(
                f"{column['name']} ({column['type']}{', pseudonyms' if column.get('pseudonymized') else ''})"
                for column in columns
            )
        )
    lines.append("")
    header = f"{'split':<8}{'users':>7}{'images':>8}   images/user: min  p25  median   mean   p75    max"
    lines.append(header)
    for split, info in summary["splits"].items():
        s = info["images_per_user"]
        lines.append(
            f"{split:<8}{info['users']:>7}{info['images']:>8}   {'':>12}{s['min']:>4.0f}"
            f"{s['p25']:>5.0f}{s['median']:>8.1f}{s['mean']:>7.2f}{s['p75']:>6.0f}{s['max']:>7.0f}"
        )
    balance = summary.get("split_balance") or {}
    if balance:
        lines.append("")
        lines.append(
            f"{'split':<8}{'images':>8}{'share':>8}{'hellinger':>11}   (coarse labels vs the whole store)"
        )
        for split, info in balance.items():
            distance = "-" if info["hellinger"] is None else f"{info['hellinger']:.4f}"
            lines.append(f"{split:<8}{info['images']:>8}{info['image_share']:>8.1%}{distance:>11}")
    lines.append("")
    for key, name, count_key in (
        ("labels_per_image", "coarse", "num_labels"),
        ("fine_labels_per_image", "fine", "num_fine_labels"),
    ):
        s = summary[key]
        if s:
            lines.append(
                f"{name} labels: {summary[count_key]} in vocabulary; per image mean {s['mean']:.2f}, "
                f"median {s['median']:.0f}, max {s['max']:.0f}"
            )
    for key, name in (("top_labels", "top coarse labels"), ("top_fine_labels", "top fine labels")):
        if summary[key]:
            lines.append(f"{name}: " + ", ".join(f"{label} {count}" for label, count in summary[key]))
    return "\n".join(lines)


def _human_bytes(value: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GB"
