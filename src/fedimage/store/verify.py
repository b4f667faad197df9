"""``fedimage verify``: re-check a store's structure and checksums, naming every bad group."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from fedimage.errors import StoreError
from fedimage.store import schema
from fedimage.store.checksum import checksum_of_group
from fedimage.store.metadata import nulls_dataset, values_dataset
from fedimage.store.reader import FederatedStore
from fedimage.store.sealing import StoreKey


@dataclass
class VerifyReport:
    path: Path
    users_checked: int = 0
    images_checked: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_store(path: str | Path, *, decode: bool = False, key: StoreKey | None = None) -> VerifyReport:
    """Check every user group against the manifest; with ``decode``, decode every image too.

    An encrypted store needs its ``key``: each group's sealed data is checked against its
    checksum, then decrypted (which checks its AES-GCM tag) and checked like a plain group.
    """
    report = VerifyReport(Path(path))
    try:
        store = FederatedStore(path, key=key)
    except (StoreError, KeyError, ValueError) as error:
        report.problems.append(f"cannot open store: {error}")
        return report
    with store:
        digest = schema.dataset_digest(store.format_version)
        coarse_counts: Counter[int] = Counter()
        fine_counts: Counter[int] = Counter()
        for split in store.splits:
            listed = store.manifest["users"][split]
            stored = set(store.h5[split].keys()) if split in store.h5 else set()
            expected_keys = {schema.user_key(user): user for user in listed}
            for key in sorted(stored - expected_keys.keys()):
                report.problems.append(f"{split}/{key}: group not listed in the manifest")
            for user_id, info in listed.items():
                where = f"{split}/{user_id}"
                if schema.user_key(user_id) not in stored:
                    report.problems.append(f"{where}: group missing")
                    continue
                group = store.h5[split][schema.user_key(user_id)]
                content, problems = _content(store, split, user_id, group)
                if content is not None:
                    problems = _check_group(store, content, info["images"], decode)
                if not problems and checksum_of_group(group, algorithm=digest) != info["sha256"]:
                    problems.append("checksum mismatch (content changed since it was written)")
                report.problems.extend(f"{where}: {problem}" for problem in problems)
                report.users_checked += 1
                report.images_checked += info["images"]
                if not problems and content is not None:
                    coarse_counts.update(content[schema.LABELS_COL][()].tolist())
                    fine_counts.update(content[schema.FINE_LABELS_COL][()].tolist())
        if not report.problems:  # counters are only comparable when every group is sound
            report.problems.extend(_check_counters(store, coarse_counts, fine_counts))
    return report


def _content(
    store: FederatedStore, split: str, user_id: str, group: h5py.Group
) -> tuple[h5py.Group | Mapping[str, np.ndarray] | None, list[str]]:
    """A group's datasets: the group itself, or an encrypted store's decrypted arrays (or why not)."""
    if not store.encrypted:
        return group, []
    try:
        return store.group(split, user_id), []
    except StoreError as error:
        return None, [str(error).split(": ", 1)[-1]]


def _check_group(
    store: FederatedStore, group: h5py.Group | Mapping[str, np.ndarray], count: int, decode: bool
) -> list[str]:
    expected = schema.user_datasets(store.storage, store.format_version)
    missing = [name for name in expected if name not in group]
    if missing:
        return [f"missing datasets: {', '.join(missing)}"]
    problems = []
    for name in (schema.IMAGE_IDS, schema.LABELS, schema.FINE_LABELS):
        if group[name].shape != (count,):
            problems.append(f"{name} has shape {group[name].shape}, expected ({count},)")
    images_name, offsets_name = store.image_datasets
    images = group[images_name]
    size, channels = store.image_size, store.channels
    if offsets_name is None:
        if images.shape != (count, size, size, channels) or images.dtype != np.uint8:
            problems.append(
                f"{images_name} has shape {images.shape} {images.dtype}, "
                f"expected ({count}, {size}, {size}, {channels}) uint8"
            )
    else:
        offsets = group[offsets_name][()]
        if offsets.shape != (count + 1,) or offsets[0] != 0 or np.any(np.diff(offsets) <= 0):
            problems.append(f"{offsets_name} are not increasing from 0 with one entry per image + 1")
        elif offsets[-1] != images.shape[0]:
            problems.append(
                f"{offsets_name} end at {offsets[-1]} but {images_name} holds {images.shape[0]} bytes"
            )
    for row, col, width in (
        (schema.LABELS_ROW, schema.LABELS_COL, len(store.label_mapping)),
        (schema.FINE_LABELS_ROW, schema.FINE_LABELS_COL, len(store.fine_label_mapping)),
    ):
        rows, cols = group[row][()], group[col][()]
        if rows.shape != cols.shape:
            problems.append(f"{row} and {col} differ in length")
        elif rows.size and (rows.max() >= count or cols.max() >= width):
            problems.append(f"{row}/{col} point outside the {count} x {width} label matrix")
    for column in store.metadata_columns:
        for name in (values_dataset(column.name), nulls_dataset(column.name)):
            if name not in group:
                if name == values_dataset(column.name):
                    problems.append(f"missing metadata dataset {name}")
                continue
            shape = group[name].shape
            if shape != (count,):
                problems.append(f"{name} has shape {shape}, expected ({count},)")
    if decode and not problems:
        problems.extend(_decode_all(store, group, count))
    return problems


def _decode_all(store: FederatedStore, group: h5py.Group | Mapping[str, np.ndarray], count: int) -> list[str]:
    images_name, offsets_name = store.image_datasets
    if offsets_name is None:
        return []
    blob = group[images_name][()]
    offsets = group[offsets_name][()]
    expected = (store.image_size, store.image_size, store.channels)
    for index in range(count):
        try:
            pixels = store.decode(blob[offsets[index] : offsets[index + 1]].tobytes())
        except Exception as error:
            return [f"image {index} does not decode: {error}"]
        if pixels.shape != expected or pixels.dtype != store.dtype:
            return [
                f"image {index} decodes to {pixels.shape} {pixels.dtype}, expected {expected} {store.dtype}"
            ]
    return []


def _check_counters(store: FederatedStore, coarse: Counter[int], fine: Counter[int]) -> list[str]:
    problems = []
    for name, mapping, counts in (
        (schema.LABEL_COUNTER, store.label_mapping, coarse),
        (schema.FINE_LABEL_COUNTER, store.fine_label_mapping, fine),
    ):
        recorded = store.read_metadata(name)
        actual = {label: counts.get(index, 0) for label, index in mapping.items()}
        wrong = sorted(label for label in actual if recorded.get(label, 0) != actual[label])
        if wrong:
            problems.append(f"metadata/{name}: counts differ from the user groups for {', '.join(wrong[:5])}")
    return problems
