"""Evaluate a model on a store split, streaming users so any split size fits in memory."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from fedimage.extras import require
from fedimage.labels import LabelLevel
from fedimage.store.reader import FederatedStore
from fedimage.training.metrics import multilabel_metrics
from fedimage.training.transforms import model_images

torch = require("torch")


def target_field(labels: str) -> str:
    """The :class:`~fedimage.store.reader.UserData` attribute holding ``coarse`` or ``fine`` targets."""
    return LabelLevel.parse(labels).targets_field


def iter_batches(
    store: FederatedStore, split: str, labels: str, batch_size: int, user_ids: list[str] | None = None
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``(images, targets)`` batches of up to ``batch_size`` images over the users of a split, in order
    (uint8 images, uint16 in a 16-bit store: :func:`~fedimage.training.transforms.model_images` makes
    them model input).

    Small users are packed together so that a split of one-image users still runs full batches.
    """
    field = target_field(labels)
    images: list[np.ndarray] = []
    targets: list[np.ndarray] = []
    pending = 0
    for user_id in store.users(split) if user_ids is None else user_ids:
        data = store.load_user(split, user_id)
        images.append(data.images)
        targets.append(getattr(data, field))
        pending += len(data)
        while pending >= batch_size:
            all_images, all_targets = np.concatenate(images), np.concatenate(targets)
            yield all_images[:batch_size], all_targets[:batch_size]
            images, targets = [all_images[batch_size:]], [all_targets[batch_size:]]
            pending -= batch_size
    if pending:
        yield np.concatenate(images), np.concatenate(targets)


@torch.no_grad()
def predict(
    model: torch.nn.Module, store: FederatedStore, split: str, labels: str, batch_size: int = 512
) -> tuple[np.ndarray, np.ndarray]:
    """Targets and logits (float32 [N, L]) of every image of a split, in store order."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    all_targets, all_logits = [], []
    try:
        for images, targets in iter_batches(store, split, labels, batch_size):
            all_logits.append(model(model_images(images).to(device)).float().cpu().numpy())
            all_targets.append(targets)
    finally:
        model.train(was_training)
    if not all_targets:
        raise ValueError(f"split {split!r} of {store.path.name} has no images to evaluate")
    return np.concatenate(all_targets), np.concatenate(all_logits)


def evaluate(
    model: torch.nn.Module, store: FederatedStore, split: str, labels: str, batch_size: int = 512
) -> dict[str, float]:
    """FLAIR's metrics of the model on a whole split (see ``metrics.multilabel_metrics``)."""
    return multilabel_metrics(*predict(model, store, split, labels, batch_size))


def split_targets(store: FederatedStore, split: str, labels: str) -> np.ndarray:
    """All targets of a split without decoding any image."""
    rows = [store.load_targets(split, user_id, labels) for user_id in store.users(split)]
    width = len(store.label_names_of(labels))
    return np.concatenate(rows) if rows else np.zeros((0, width), dtype=np.float32)
