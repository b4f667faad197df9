"""A run whose model or updates stop being finite ends at once, naming the round (and the user).

Without this a diverged run would go on computing NaN, keep a NaN round as "best" and save its
checkpoint; with secure aggregation a NaN update cannot even be quantized.

    check_model(model, round_number=12)   # TrainingDiverged: training diverged in round 12 ...
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fedimage.errors import FedimageError
from fedimage.extras import require

HINT = "lower `local_lr` or `server_lr`, or keep `local_max_grad_norm` on"


class TrainingDiverged(FedimageError):
    """The global model or a user's update holds NaN or infinite values."""


def check_model(model: Any, round_number: int) -> None:
    """Raise :class:`TrainingDiverged` when any parameter or buffer of ``model`` is not finite."""
    torch = require("torch", "training")
    with torch.no_grad():
        for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                raise TrainingDiverged(
                    f"training diverged in round {round_number}: the global model's {name} holds NaN or "
                    f"infinite values after aggregation; {HINT}"
                )


def check_update(vector: np.ndarray, round_number: int, user_id: Any) -> None:
    """Raise :class:`TrainingDiverged` when a user's model update is not finite."""
    if not np.all(np.isfinite(vector)):
        user = f"user {user_id!r}" if user_id is not None else "a user"
        raise TrainingDiverged(
            f"training diverged in round {round_number}: {user}'s model update holds NaN or infinite "
            f"values; {HINT}"
        )
