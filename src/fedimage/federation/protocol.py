"""What fedimage's ServerApp and ClientApp say to each other: message types, record names, settings.

One protocol serves Flower's simulation and a real deployment. Every message carries what the
client needs (the global model, the local recipe, the round), so a client needs no settings of
its own beyond where its data is.

=========================  ==========================================  ============================
message type               server sends                                client answers
=========================  ==========================================  ============================
``query``                  nothing                                     ``identity``: client, split
``train``                  ``arrays`` (global model), ``recipe``       ``update`` (model delta) and
                                                                       ``metrics``; with secure
                                                                       aggregation ``secagg``
                                                                       (its public keys) instead of
                                                                       the update
``train.secagg_share``     ``secagg`` (neighbours' keys)               ``secagg`` (encrypted shares)
``train.secagg_masked``    ``secagg`` (shares for it)                  ``secagg`` (masked update)
``train.secagg_unmask``    ``secagg`` (survivors, dropped)             ``secagg`` (shares to unmask)
``evaluate``               ``arrays``, ``recipe``                      ``statistics`` (additive),
                                                                       ``metrics`` (its own figures)
``query.finished``         nothing                                     ``identity`` (then the node's
                                                                       launcher stops it)
=========================  ==========================================  ============================
"""

from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, fields
from typing import Any

from fedimage.errors import OptionError

IDENTIFY = "query"
FINISHED = "query.finished"
TRAIN = "train"
EVALUATE = "evaluate"
SECAGG_SHARE = "train.secagg_share"
SECAGG_MASKED = "train.secagg_masked"
SECAGG_UNMASK = "train.secagg_unmask"

ARRAYS = "arrays"
RECIPE = "recipe"
UPDATE = "update"
METRICS = "metrics"
STATISTICS = "statistics"
IDENTITY = "identity"
SECAGG = "secagg"

#: Node-config keys of a deployed client (``fedimage client`` sets them from its kit).
NODE_BUNDLE = "bundle"
NODE_BUNDLE_KEY = "bundle-key"
NODE_CLIENT = "client"
NODE_SPLIT = "split"
NODE_FINISHED_FILE = "finished-file"
#: Node-config key Flower's simulation sets on every node.
NODE_PARTITION = "partition-id"

_NONE = -1  # ConfigRecord has no None: optional numbers travel as -1


@dataclass(frozen=True)
class Recipe:
    """Everything a client needs to rebuild the model, train it locally and evaluate it.

    FLAIR's local recipe (SGD, ``local_epochs`` passes in batches of ``batch_size``, gradient
    clipping), the model to rebuild, the round (for the client's seed), and the privacy settings
    that act on the client: ``dp_clip`` (L2 clip of the update, DP) and ``secagg_range``
    (per-coordinate bound of the quantization, secure aggregation).
    """

    model: str
    num_outputs: int
    crop: int
    labels: str = "coarse"
    local_epochs: int = 2
    batch_size: int = 16
    lr: float = 0.01
    max_grad_norm: float | None = 10.0
    max_images_per_user: int | None = 512
    seed: int = 0
    round: int = 0
    eval_batch_size: int = 512
    dp_clip: float | None = None

    def to_record(self) -> dict[str, Any]:
        """A dict of ConfigRecord values (None as -1)."""
        return {key: _NONE if value is None else value for key, value in asdict(self).items()}

    @classmethod
    def from_record(cls, record: Any) -> Recipe:
        """The recipe of a ConfigRecord made by :meth:`to_record`; a one-line error for a bad record."""
        values: dict[str, Any] = {}
        for field in fields(cls):
            if field.name not in record:
                if field.default is not MISSING:
                    continue
                raise OptionError(f"the server's recipe has no {field.name!r}")
            value = record[field.name]
            optional = field.name in ("max_grad_norm", "max_images_per_user", "dp_clip")
            values[field.name] = None if optional and value == _NONE else value
        try:
            return cls(**values)
        except TypeError as error:
            raise OptionError(f"the server's recipe is malformed: {error}") from None

    def at_round(self, server_round: int) -> Recipe:
        return Recipe(**{**asdict(self), "round": server_round})
