"""A client's work in one round: FLAIR's local SGD recipe, its model update, DP clipping, evaluation.

Shared by every engine that runs fedimage's ClientApp (Flower's simulation and a deployment):
the same code gives the same update from the same model, data and seed wherever it runs.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from fedimage.extras import require
from fedimage.federation.protocol import Recipe
from fedimage.training.transforms import model_images

torch = require("torch")


def client_seed(seed: int, server_round: int, client: str) -> int:
    """The seed of one client's work in one round: fixed by the run seed, the round and the client id.

    It depends on the client's id, not on a position or node id, so a client trains the same
    way in a simulation and in a deployment, whatever the order of the nodes.
    """
    digest = hashlib.sha256(client.encode("utf-8")).digest()
    words = [int.from_bytes(digest[i : i + 4], "big") for i in range(0, 16, 4)]
    return int(np.random.SeedSequence([seed, server_round, *words]).generate_state(1)[0])


def local_train(
    model: Any, images: np.ndarray, targets: np.ndarray, recipe: Recipe, seed: int
) -> tuple[float, int]:
    """pfl-research's local loop: shuffle once, ``local_epochs`` passes of SGD in batches, grad-norm clip.

    Augmentation and the shuffle draw from ``seed`` only (torch's global generator is restored
    afterwards). Returns the mean training loss and the number of SGD steps. ``images`` are uint8,
    or a 16-bit store's uint16 (:func:`~fedimage.training.transforms.model_images` scales them).
    """
    order = np.random.default_rng(seed).permutation(len(images))
    images_t, targets_t = model_images(images[order]), torch.from_numpy(targets[order])
    optimizer = torch.optim.SGD(model.parameters(), lr=recipe.lr)
    total, steps = 0.0, 0
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model.train()
        for _ in range(recipe.local_epochs):
            for start in range(0, len(images_t), recipe.batch_size):
                optimizer.zero_grad()
                batch = slice(start, start + recipe.batch_size)
                loss = model.loss(images_t[batch], targets_t[batch])
                loss.backward()
                if recipe.max_grad_norm is not None:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.max_grad_norm)
                optimizer.step()
                total += loss.item()
                steps += 1
    return total / max(steps, 1), steps


def model_update(before: dict[str, Any], after: dict[str, Any]) -> dict[str, np.ndarray]:
    """``after - before`` for every floating-point entry of a state dict, as float32 arrays."""
    return {
        name: (after[name].detach().float() - tensor.detach().float()).numpy()
        for name, tensor in before.items()
        if tensor.is_floating_point()
    }


def clip_update(update: dict[str, np.ndarray], clip: float) -> tuple[dict[str, np.ndarray], float]:
    """The update scaled to L2 norm at most ``clip`` (DP's per-user clipping), and its norm before."""
    norm = float(np.sqrt(sum(float(np.sum(np.square(part, dtype=np.float64))) for part in update.values())))
    if norm <= clip or norm == 0.0:
        return update, norm
    scale = clip / norm
    return {name: (part * scale).astype(np.float32) for name, part in update.items()}, norm


def flatten(update: dict[str, np.ndarray]) -> np.ndarray:
    """An update as one float64 vector, entries in state-dict order."""
    return np.concatenate([np.asarray(part, dtype=np.float64).ravel() for part in update.values()])


def unflatten(vector: np.ndarray, like: dict[str, Any]) -> dict[str, np.ndarray]:
    """The inverse of :func:`flatten` for the floating entries of state dict ``like``."""
    parts: dict[str, np.ndarray] = {}
    offset = 0
    for name, tensor in like.items():
        if not tensor.is_floating_point():
            continue
        size = tensor.numel()
        parts[name] = vector[offset : offset + size].reshape(tuple(tensor.shape)).astype(np.float32)
        offset += size
    if offset != len(vector):
        raise ValueError(f"a vector of {len(vector)} values does not fit a model of {offset} parameters")
    return parts


@torch.no_grad()
def predict_logits(model: Any, images: np.ndarray, batch_size: int) -> np.ndarray:
    """The model's logits (eval mode) for a client's images, float32 [N, L]."""
    model.eval()
    chunks = [
        model(model_images(images[start : start + batch_size])).float().numpy()
        for start in range(0, len(images), batch_size)
    ]
    return np.concatenate(chunks) if chunks else np.zeros((0, 0), dtype=np.float32)
