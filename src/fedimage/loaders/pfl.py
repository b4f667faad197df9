"""pfl-research adapters: a store split as a pfl ``FederatedDataset``, central datasets, FedAvg's denominator.

Users are read through one open :class:`~fedimage.store.reader.FederatedStore`
(``load_user``: one HDF5 read per user, JPEG, PNG or raw), never by reopening the file. Images are
uint8 tensors, a 16-bit store's float32 in [0, 1] (:func:`fedimage.training.transforms.model_images`).
Needs the ``pfl`` extra (``pip install 'fedimage[pfl]'``).

    with fedimage.open("store.h5") as store:
        train = StoreFederatedDataset(store, "train", cohort_size=200, seed=0)
        for user_dataset, seed in train.get_cohort(200): ...
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from fedimage.errors import OptionError
from fedimage.extras import require
from fedimage.labels import LabelLevel
from fedimage.store.reader import FederatedStore
from fedimage.training.transforms import model_images

torch = require("torch")
_pfl_data = require("pfl.data")
_pfl_dataset = require("pfl.data.dataset")
_pfl_metrics = require("pfl.metrics")
_pfl_postprocessor = require("pfl.postprocessor.base")


def _targets(store: FederatedStore, labels: str) -> str:
    return LabelLevel.parse(labels).targets_field


class CohortSampler:
    """pfl user sampler: each block of ``cohort_size`` calls is one cohort of distinct users.

    Users are drawn uniformly without replacement within a cohort (as FLAIR's TFF benchmark
    does), independently across cohorts, from ``np.random.default_rng(seed)``; pfl's own
    ``random`` sampler draws with replacement, so a cohort could hold a user twice.
    """

    def __init__(self, user_ids: Sequence[str], cohort_size: int, seed: int):
        if not user_ids:
            raise OptionError("cannot sample cohorts from a split without users")
        if not 1 <= cohort_size <= len(user_ids):
            raise OptionError(f"cohort size {cohort_size} must be between 1 and the {len(user_ids)} users")
        self.user_ids = list(user_ids)
        self.cohort_size = cohort_size
        self._rng = np.random.default_rng(seed)
        self._pending: list[int] = []

    def __call__(self) -> str:
        if not self._pending:
            self._pending = self._rng.choice(len(self.user_ids), self.cohort_size, replace=False).tolist()
        return self.user_ids[self._pending.pop(0)]


class StoreFederatedDataset(_pfl_data.FederatedDataset):
    """The users of one store split as a pfl ``FederatedDataset``.

    Each sampled user becomes a pfl ``Dataset`` of ``(uint8 images [N, S, S, C] (C: 3, or 1 gray), float32
    multi-hot targets [N, L])`` torch tensors (a 16-bit store's images: float32 in [0, 1]): the first
    ``max_images_per_user`` images in
    store order (pfl-research's FLAIR rule), shuffled once per draw by a seeded generator.
    Augmentation happens in the model (:class:`~fedimage.training.transforms.ImageTransform`),
    which pfl calls with ``eval=False`` for training. ``user_id_to_weight`` (the capped image
    count) lets pfl balance users across workers in distributed simulations.
    """

    def __init__(
        self,
        store: FederatedStore,
        split: str,
        *,
        cohort_size: int,
        labels: str = "coarse",
        max_images_per_user: int | None = 512,
        seed: int = 0,
    ):
        self.store = store
        self.split = split
        self.target_field = _targets(store, labels)
        self.max_images_per_user = max_images_per_user
        counts = store.users(split)
        cap = max_images_per_user or max(counts.values(), default=0)
        self.user_weights = {user: min(count, cap) for user, count in counts.items()}
        self.sampler = CohortSampler(sorted(counts), cohort_size, seed)
        self._shuffle_rng = np.random.default_rng([seed, 1])
        super().__init__(self.load_user, self.sampler, user_id_to_weight=self.user_weights)
        # pfl seeds its per-user seeds from numpy's global generator; make them follow ``seed``.
        self._random_state = np.random.RandomState(seed)

    @property
    def population(self) -> int:
        return len(self.user_weights)

    def load_user(self, user_id: str) -> Any:
        """One user's capped, shuffled data as a pfl ``Dataset``."""
        data = self.store.load_user(self.split, user_id)
        keep = slice(0, self.max_images_per_user)
        images, targets = data.images[keep], getattr(data, self.target_field)[keep]
        order = self._shuffle_rng.permutation(len(images))
        return _pfl_dataset.Dataset(
            raw_data=(model_images(images[order]), torch.from_numpy(targets[order])),
            user_id=user_id,
            train_kwargs={"eval": False},
            eval_kwargs={"eval": True},
        )


def central_dataset(store: FederatedStore, split: str, labels: str = "coarse") -> Any:
    """Every image of a split pooled into one pfl ``Dataset`` (for pfl's ``CentralEvaluationCallback``).

    Holds the whole split in memory as uint8 (a 16-bit store's as float32 in [0, 1]);
    :func:`fedimage.training.evaluation.evaluate`
    streams users instead, for splits that do not fit.
    """
    field = _targets(store, labels)
    users = [store.load_user(split, user_id) for user_id in store.users(split)]
    if not users:
        raise OptionError(f"split {split!r} of {store.path.name} has no users")
    images = np.concatenate([user.images for user in users])
    targets = np.concatenate([getattr(user, field) for user in users])
    return _pfl_dataset.Dataset(
        raw_data=(model_images(images), torch.from_numpy(targets)),
        train_kwargs={"eval": False},
        eval_kwargs={"eval": True},
    )


class FixedDenominator(_pfl_postprocessor.Postprocessor):
    """FedAvg with a fixed denominator: the aggregate is divided by ``denominator``, not the weight sum.

    Each user's update counts with weight 1 (so its clipped norm bounds its influence),
    and the noisy sum is divided by the configured cohort size whoever took part, which
    keeps the sensitivity at C / cohort as the DP accounting assumes. Put it before the
    privacy mechanism in the postprocessor list: pfl runs server steps in reverse order,
    so the noise is added to the sum first.
    """

    def __init__(self, denominator: int):
        if denominator < 1:
            raise OptionError(f"the aggregation denominator must be >= 1, got {denominator}")
        self.denominator = denominator

    def postprocess_one_user(self, *, stats: Any, user_context: Any) -> tuple[Any, Any]:
        stats.reweight(1)
        return stats, _pfl_metrics.Metrics()

    def postprocess_server(
        self, *, stats: Any, central_context: Any, aggregate_metrics: Any
    ) -> tuple[Any, Any]:
        stats.weight = self.denominator
        return stats, _pfl_metrics.Metrics()
