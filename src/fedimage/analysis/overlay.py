"""Writing partition overlays: a store's images dealt into other clients, as a small file
(:mod:`fedimage.store.overlay` reads it back onto the store)."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

from fedimage.analysis.repartition import read_store_labels, store_partition
from fedimage.conversion.splits import SplitRatios, assign_splits
from fedimage.errors import StoreError
from fedimage.partitioning.options import PartitionOptions
from fedimage.store.overlay import store_fingerprint, write_overlay
from fedimage.store.reader import FederatedStore
from fedimage.store.sealing import StoreKey


@dataclass(frozen=True)
class OverlayReport:
    """What :func:`repartition` wrote: the overlay file, its clients and images per split, and the time."""

    path: Path
    splits: dict[str, dict[str, int]]
    seconds: float

    def summary(self) -> str:
        parts = ", ".join(
            f"{name} {info['clients']} clients / {info['images']} images"
            for name, info in self.splits.items()
        )
        return f"wrote {self.path}: {parts} ({self.seconds:.1f} s)"


def repartition(
    store: str | Path,
    output: str | Path,
    options: PartitionOptions,
    split: SplitRatios | None = None,
    *,
    labels: str = "coarse",
    skew: str = "rarest",
    key: StoreKey | None = None,
    overwrite: bool = False,
) -> OverlayReport:
    """Write a partition overlay of ``store``: every image dealt to a client of ``options``' scheme,
    clients split by ``split`` (seeded by ``options.seed``), without reading or writing any pixel.

    Open the store with it as ``fedimage.open(store, partition=output)`` (see
    :mod:`fedimage.store.overlay` for the file).

    Parameters:
        store: the store to re-partition (an encrypted one with ``key``).
        output: the overlay file to write (Parquet).
        options: scheme, number of clients, minimum size, seed and scheme parameters.
        split: the clients' split ratios (default FLAIR's 0.8/0.1/0.1).
        labels: the label level a label-skew scheme follows (``coarse`` or ``fine``).
        skew: which of an image's labels it follows (see :func:`fedimage.partitioning.pick_label`).
        key: an encrypted store's key.
        overwrite: replace an existing ``output``.

    Example::

        report = repartition("flair.h5", "alpha-0.1.parquet", PartitionOptions("dirichlet", 500, alpha=0.1))
        with fedimage.open("flair.h5", partition=report.path) as store: ...
    """
    started = time.perf_counter()
    output = Path(output)
    if output.exists() and not overwrite:
        raise StoreError(f"{output} already exists; pass `overwrite` to replace it")
    split = split or SplitRatios()
    with FederatedStore(store, key=key) as opened:
        data = read_store_labels(opened, labels, values_of=options.key if options.needs_values else None)
        fingerprint, name = store_fingerprint(opened), opened.path.name
        clients, names = store_partition(opened, data, options, skew)
    split_of = assign_splits(names, split, options.seed)
    client_names = [names[client] for client in clients.tolist()]
    splits = [split_of[client] for client in client_names]
    info = {
        "store": {"name": name, "fingerprint": fingerprint},
        "scheme": asdict(options),
        "split": dict(zip(split.names, split.ratios, strict=True)),
        "seed": options.seed,
        "labels": labels,
        "skew": skew,
    }
    write_overlay(output, data.image_ids.tolist(), splits, client_names, info)
    counts: dict[str, dict[str, int]] = {}
    for split_name in [name for name in split.names if name in set(split_of.values())]:
        members = [client for client, chosen in split_of.items() if chosen == split_name]
        counts[split_name] = {
            "clients": len(members),
            "images": sum(1 for chosen in splits if chosen == split_name),
        }
    return OverlayReport(output, counts, time.perf_counter() - started)
