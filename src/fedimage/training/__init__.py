"""Federated training benchmark on fedimage stores (the ``train`` extra; ``pfl`` for the pfl engine).

FLAIR's recipe on any store: a ResNet-18 with GroupNorm or a small CNN, multi-label
binary cross-entropy, FedAvg with FLAIR's defaults, user-level differential privacy
calibrated by a PLD accountant, and FLAIR's metrics. Submodules import PyTorch,
dp-accounting and pfl lazily, so ``import fedimage.training`` needs none of them.

- :mod:`~fedimage.training.options`: :class:`TrainOptions`, the run's settings.
- :mod:`~fedimage.training.models`, :mod:`~fedimage.training.transforms`: networks and augmentation.
- :mod:`~fedimage.training.metrics`: averaged precision, precision/recall/F1, loss.
- :mod:`~fedimage.training.privacy`: noise calibration and the epsilon spent.
- :mod:`~fedimage.training.runner`: ``train(store, config, out)``, federated or central.
"""

from __future__ import annotations

from fedimage.training.options import DPOptions, TrainOptions

__all__ = ["DPOptions", "TrainOptions"]
