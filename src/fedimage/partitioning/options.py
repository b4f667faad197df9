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
    "column": False,
    "continuous": False,
}
#: Schemes that follow a metadata column (``key``) rather than labels.
KEYED_SCHEMES = ("column", "continuous")
#: Schemes that deal ``num_clients`` clients by labels or sizes alone.
UNKEYED_SCHEMES = tuple(scheme for scheme in SCHEMES if scheme not in KEYED_SCHEMES)
SIZE_DISTRIBUTIONS = ("lognormal", "powerlaw")


@dataclass(frozen=True, slots=True)
class PartitionOptions:
    """How to deal images into ``num_clients`` clients.

    ``min_per_client`` holds for every scheme; ``alpha`` is the Dirichlet concentration
    (``dirichlet``), ``shards_per_client`` the label-sorted shards per client (``shards``),
    ``classes_per_client`` the labels per client (``pathological``), and ``size_distribution``
    with ``size_sigma`` (lognormal sigma) or ``size_exponent`` (Pareto shape) the client
    sizes of ``quantity``. ``column`` makes one client per distinct value of the metadata
    column ``key`` (``num_clients`` does not apply); ``continuous`` ranks images by the numeric
    (or time) column ``key`` blended with noise (``strictness`` 1: by the value alone, 0: IID)
    and cuts ``num_clients`` equal clients (see :mod:`fedimage.partitioning.by_metadata`).

        PartitionOptions("continuous", num_clients=8, key="taken", strictness=0.7)
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
    key: str | None = None
    strictness: float = 1.0

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
        if self.scheme in KEYED_SCHEMES and not self.key:
            raise OptionError(
                f"the {self.scheme} scheme follows a metadata column: name it with `partition_key`"
            )
        if self.key is not None and self.scheme not in KEYED_SCHEMES:
            raise OptionError(
                f"`partition_key` is for the {' and '.join(KEYED_SCHEMES)} schemes, not {self.scheme}"
            )
        if not (isinstance(self.strictness, int | float) and math.isfinite(self.strictness)):
            raise OptionError(f"`strictness` must be between 0 and 1, got {self.strictness!r}")
        if not 0 <= self.strictness <= 1:
            raise OptionError(f"`strictness` must be between 0 and 1, got {self.strictness!r}")

    @property
    def needs_values(self) -> bool:
        """Whether the scheme follows a metadata column (``key``)."""
        return self.scheme in KEYED_SCHEMES

    @property
    def needs_labels(self) -> bool:
        """Whether the scheme skews labels (and so needs one label per image)."""
        return SCHEMES[self.scheme]


def _at_least(name: str, value: int, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise OptionError(f"{name} must be an integer >= {minimum}, got {value!r}")
