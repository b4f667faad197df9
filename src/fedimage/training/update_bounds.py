"""The per-coordinate bound of a client update, which secure aggregation's quantization needs."""

from __future__ import annotations

import math

from fedimage.errors import OptionError
from fedimage.training.options import TrainOptions


def clip_range_for(config: TrainOptions, largest_user_images: int) -> tuple[float, str]:
    """The per-coordinate bound of every update, and where it comes from.

    With DP, the L2 clip C bounds every coordinate by C. Otherwise ``--secagg-range`` if given,
    else the bound local training guarantees: each SGD step moves a coordinate by at most
    ``local_lr * local_max_grad_norm`` (the gradient is clipped to that L2 norm first), and a
    user takes at most ``local_epochs * ceil(images / batch)`` steps (``largest_user_images``: the
    most images a train user holds).
    """
    secagg = config.secure_aggregation
    if secagg is None:
        raise OptionError("secure aggregation is not enabled in this configuration")
    if secagg.clip_range is not None:
        return secagg.clip_range, "`secure_aggregation.clip_range`"
    if config.dp is not None:
        return config.dp.clip, "DP clipping bound (L2 clip bounds each coordinate)"
    if config.local_max_grad_norm is None:
        raise OptionError(
            "`secure_aggregation` needs a bound on each coordinate of an update: give "
            "`secure_aggregation.clip_range`, DP's `dp.clip`, or keep `local_max_grad_norm` on"
        )
    largest = max(largest_user_images, 1)
    if config.max_images_per_user is not None:
        largest = min(largest, config.max_images_per_user)
    steps = config.local_epochs * math.ceil(largest / config.local_batch_size)
    return config.local_lr * config.local_max_grad_norm * steps, "local lr x grad clip x max local steps"
