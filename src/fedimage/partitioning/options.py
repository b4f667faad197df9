"""The settings of a partition: scheme, number of clients, minimum size, seed and scheme parameters."""

from __future__ import annotations

import math
from dataclasses import dataclass

from fedimage.errors import OptionError

#: Schemes and whether they need a label per image.
SCHEMES: dict[str, bool] = {
    "iid": False,
    "dirichlet": True,
    "shards": True,
    "quantity": False,
    "pathological": True,
}
SIZE_DISTRIBUTIONS = ("lognormal", "powerlaw")


@dataclass(frozen=True, slots=True)
class PartitionOptions:
    """How to deal images into ``num_clients`` clients.

    ``min_per_client`` holds for every scheme; ``alpha`` is the Dirichlet concentration
    (``dirichlet``), ``shards_per_client`` the label-sorted shards per client (``shards``),
    ``classes_per_client`` the labels per client (``pathological``), and ``size_distribution``
    with ``size_sigma`` (lognormal sigma) or ``size_exponent`` (Pareto shape) the client
    sizes of ``quantity``.
    """

    scheme: str = "iid"
    num_clients: int = 10
    min_per_client: int = 1
    seed: int = 0
    alpha: float = 0.5
    shards_per_client: int = 2
    classes_per_client: int = 2
    size_distribution: str = "lognormal"
    size_sigma: float = 1.0
    size_exponent: float = 1.5

    def __post_init__(self) -> None:
        if self.scheme not in SCHEMES:
            choices = ", ".join(SCHEMES)
            raise OptionError(f"unknown partition scheme {self.scheme!r}; choose one of: {choices}")
        _at_least("num_clients", self.num_clients, 1)
        _at_least("min_per_client", self.min_per_client, 0)
        _at_least("shards_per_client", self.shards_per_client, 1)
        _at_least("classes_per_client", self.classes_per_client, 1)
        if not (math.isfinite(self.alpha) and self.alpha > 0):
            raise OptionError(f"alpha must be a positive number, got {self.alpha}")
        if self.size_distribution not in SIZE_DISTRIBUTIONS:
            raise OptionError(
                f"unknown size distribution {self.size_distribution!r}; "
                f"choose one of: {', '.join(SIZE_DISTRIBUTIONS)}"
            )
        if not (math.isfinite(self.size_sigma) and self.size_sigma >= 0):
            raise OptionError(f"size_sigma must be a non-negative number, got {self.size_sigma}")
        if not (math.isfinite(self.size_exponent) and self.size_exponent > 0):
            raise OptionError(f"size_exponent must be a positive number, got {self.size_exponent}")

    @property
    def needs_labels(self) -> bool:
        """Whether the scheme skews labels (and so needs one label per image)."""
        return SCHEMES[self.scheme]


def _at_least(name: str, value: int, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise OptionError(f"{name} must be an integer >= {minimum}, got {value!r}")
