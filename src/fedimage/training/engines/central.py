"""The non-federated baseline: the same model trained on all train images pooled."""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np

from fedimage.extras import require
from fedimage.store.reader import FederatedStore
from fedimage.training.divergence import check_model
from fedimage.training.evaluation import iter_batches
from fedimage.training.options import TrainOptions
from fedimage.training.tracking import ValidationTracker
from fedimage.training.transforms import model_images

torch = require("torch")
F = torch.nn.functional

#: Images mixed in the shuffle buffer: memory stays bounded for any split.
SHUFFLE_BUFFER = 4096


def shuffled_batches(
    store: FederatedStore, labels: str, batch_size: int, rng: np.random.Generator
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """One epoch of train batches: users in random order, images mixed in a shuffle buffer."""
    users = list(store.users("train"))
    order = [users[i] for i in rng.permutation(len(users))]
    for images, targets in iter_batches(store, "train", labels, SHUFFLE_BUFFER, user_ids=order):
        mix = rng.permutation(len(images))
        for start in range(0, len(mix), batch_size):
            index = mix[start : start + batch_size]
            yield images[index], targets[index]


def training_device() -> torch.device:
    """pfl-research's rule, so both modes agree: ``PFL_PYTORCH_DEVICE``, else CUDA if present, else CPU."""
    chosen = os.environ.get("PFL_PYTORCH_DEVICE")
    return torch.device(chosen or ("cuda" if torch.cuda.is_available() else "cpu"))


def run_central(
    model: torch.nn.Module, store: FederatedStore, config: TrainOptions, tracker: ValidationTracker
) -> int:
    """Adam on minibatches for ``config.rounds`` epochs; validation every ``eval_every`` epochs."""
    device = training_device()
    model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.central_lr)
    rng = np.random.default_rng(config.seed)
    for epoch in range(1, config.rounds + 1):
        model.train()
        total, count = 0.0, 0
        for images, targets in shuffled_batches(store, config.labels, config.local_batch_size, rng):
            optimizer.zero_grad()
            loss = model.loss(model_images(images).to(device), torch.from_numpy(targets).to(device))
            loss.backward()
            if config.local_max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.local_max_grad_norm)
            optimizer.step()
            total += loss.item() * len(images)
            count += len(images)
        check_model(model, epoch)
        tracker.round_done(epoch)
        if epoch % config.eval_every == 0 or epoch == config.rounds:
            tracker(epoch, model, {"train loss": total / max(count, 1)})
    return config.rounds
