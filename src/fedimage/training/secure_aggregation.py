"""Secure aggregation in pfl training: the server sees only the SecAgg+ sum of each round's user updates.

pfl's ``SimulatedBackend`` runs, for each user of a cohort, local training and then every
postprocessor's ``postprocess_one_user`` in list order; the results go to an ``Aggregator``;
then the postprocessors' ``postprocess_server`` run in reverse order on the aggregate.
:class:`SecureAggregation` is the last postprocessor and pairs with :class:`WithheldAggregator`:

- per user (the client side), after FedAvg's reweighting and DP clipping, the update is
  flattened and kept for the round as the client's private input; the backend and its
  aggregator get an all-zero placeholder, so no plaintext update is ever summed by the server;
- on the server (first of the server steps), one real SecAgg+ round of
  :mod:`fedimage.privacy.secagg` runs among the cohort: fresh X25519 keys, Shamir shares,
  ChaCha20 masks, quantization into Z_(2^b); the server object sees masked inputs only and
  unmasks their sum, which replaces the placeholder. DP noise (the privacy postprocessor's
  server step, next in line) is then added to that unmasked sum, and FedAvg's fixed
  denominator divides it.

Keys are derived from the run seed and the round (``SeedSequence([seed, round])``) so a run
is reproducible, as in :func:`fedimage.privacy.secagg.simulate_round`; that makes this a
faithful simulation of the protocol's computation and of its result, not a deployment.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fedimage.errors import FedimageError, OptionError
from fedimage.extras import require
from fedimage.training.divergence import check_update
from fedimage.training.options import SecAggOptions

torch = require("torch")
_pfl_aggregate = require("pfl.aggregate.base")
_pfl_metrics = require("pfl.metrics")
_pfl_postprocessor = require("pfl.postprocessor.base")
_pfl_stats = require("pfl.stats")

STAGES = 4  # advertise keys, share keys, masked input, unmask


def stage_dropout(rate: float) -> float:
    """The per-stage dropout probability that makes a client drop during a round with probability ``rate``."""
    return 1 - (1 - rate) ** (1 / STAGES)


def round_seed(seed: int, round_index: int) -> int:
    """The seed of one round's secrets and graph: fresh per round, fixed by the run seed."""
    return int(np.random.SeedSequence([seed, round_index]).generate_state(1, np.uint64)[0])


@dataclass
class RoundCost:
    """What one secure round cost and who took part."""

    seconds: float
    client_seconds: float
    server_seconds: float
    bytes_up: int
    bytes_down: int
    clients: int
    degree: int
    threshold: int
    contributors: int
    dropped: int
    clipped: int


@dataclass
class _Round:
    """The cohort's withheld updates (the clients' private inputs) and the shape of the statistics."""

    vectors: list[np.ndarray] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    shapes: list[tuple[int, ...]] = field(default_factory=list)
    clipped: int = 0  # coordinates beyond the quantization range (simulation telemetry, not a server view)


class SecureAggregation(_pfl_postprocessor.Postprocessor):
    """pfl postprocessor that sums each round's user updates with SecAgg+ (see the module docstring).

    Put it last in the postprocessor list and pass :class:`WithheldAggregator` to the backend.
    """

    def __init__(self, config: SecAggOptions, clip_range: float, seed: int):
        try:  # before any training: the protocol needs the ``privacy`` extra
            import fedimage.privacy.secagg  # noqa: F401
        except ImportError as error:
            raise OptionError(f"`secure_aggregation`: {error}") from None
        self.config = config
        self.clip_range = float(clip_range)
        self.seed = seed
        self.costs: list[RoundCost] = []
        self._round = _Round()
        self._rounds_done = 0

    def postprocess_one_user(self, *, stats: Any, user_context: Any) -> tuple[Any, Any]:
        names = list(stats.keys())
        tensors = [stats[name] for name in names]
        if not self._round.names:
            self._round.names = names
            self._round.shapes = [tuple(tensor.shape) for tensor in tensors]
        elif names != self._round.names:
            raise FedimageError("secure aggregation: users returned statistics of different structures")
        vector = np.concatenate([tensor.detach().cpu().double().numpy().ravel() for tensor in tensors])
        check_update(vector, self._rounds_done + 1, getattr(user_context, "user_id", None))
        self._round.vectors.append(vector)
        self._round.clipped += int(np.count_nonzero(np.abs(vector) > self.clip_range))
        placeholder = stats.apply_elementwise(torch.zeros_like)
        return placeholder, _pfl_metrics.Metrics()

    def postprocess_server(
        self, *, stats: Any, central_context: Any, aggregate_metrics: Any
    ) -> tuple[Any, Any]:
        from fedimage.privacy.secagg import (
            DropoutPlan,
            Quantizer,
            SecAggAbort,
            default_degree,
            default_threshold,
            simulate_round,
        )

        pending, self._round = self._round, _Round()
        count = len(pending.vectors)
        round_index = int(central_context.current_central_iteration)
        self._rounds_done = round_index + 1
        if count < 2:
            raise OptionError(
                f"secure aggregation needs at least 2 users a round, round {round_index + 1} has {count}"
            )
        seed = round_seed(self.seed, round_index)
        degree = default_degree(count)
        quantizer = Quantizer.for_cohort(self.clip_range, count, self.config.modulus_bits)
        ids = list(range(count))
        dropouts = None
        if self.config.dropout:
            dropouts = DropoutPlan.random(ids, [stage_dropout(self.config.dropout)] * STAGES, seed)
        started = time.perf_counter()
        try:
            report = simulate_round(
                ids,
                pending.vectors.__getitem__,
                quantizer,
                len(pending.vectors[0]),
                threshold=self.config.threshold,
                dropouts=dropouts,
                seed=seed,
            )
        except SecAggAbort as error:
            raise SecAggAbort(
                f"secure aggregation aborted in round {round_index + 1} ({count} users): {error}"
            ) from None
        seconds = time.perf_counter() - started
        costs = report.costs.values()
        self.costs.append(
            RoundCost(
                seconds=seconds,
                client_seconds=sum(cost.client_seconds for cost in costs),
                server_seconds=sum(cost.server_seconds for cost in costs),
                bytes_up=sum(cost.bytes_up for cost in costs),
                bytes_down=sum(cost.bytes_down for cost in costs),
                clients=count,
                degree=degree,
                threshold=self.config.threshold or default_threshold(degree),
                contributors=len(report.contributors),
                dropped=len(report.dropped),
                clipped=pending.clipped,
            )
        )
        total = torch.from_numpy(report.total.astype(np.float32))
        tensors = [
            part.reshape(shape)
            for part, shape in zip(_split(total, pending.shapes), pending.shapes, strict=True)
        ]
        summed = _pfl_stats.MappedVectorStatistics(
            dict(zip(pending.names, tensors, strict=True)), weight=float(len(report.contributors))
        )
        return summed, _pfl_metrics.Metrics()

    def summary(self, train_seconds: float) -> dict[str, Any]:
        """What ``summary.json`` records: the parameters and the measured cost of the secure rounds."""
        rounds = len(self.costs)
        total = sum(cost.seconds for cost in self.costs)

        def mean(values: list[float]) -> float:
            return round(float(np.mean(values)), 6) if values else 0.0

        return {
            "protocol": "SecAgg+ (fedimage.privacy.secagg), simulated in-process",
            "threshold": [cost.threshold for cost in self.costs],
            "graph_degree": [cost.degree for cost in self.costs],
            "modulus_bits": self.config.modulus_bits,
            "clip_range": self.clip_range,
            "dropout": self.config.dropout,
            "rounds": rounds,
            "seconds_per_round": mean([cost.seconds for cost in self.costs]),
            "max_seconds_per_round": round(max((cost.seconds for cost in self.costs), default=0.0), 6),
            "client_seconds_per_round": mean([cost.client_seconds for cost in self.costs]),
            "server_seconds_per_round": mean([cost.server_seconds for cost in self.costs]),
            "bytes_up_per_round": mean([cost.bytes_up for cost in self.costs]),
            "bytes_down_per_round": mean([cost.bytes_down for cost in self.costs]),
            "fraction_of_training_time": round(total / train_seconds, 4) if train_seconds > 0 else None,
            "contributors": [cost.contributors for cost in self.costs],
            "dropped": [cost.dropped for cost in self.costs],
            "coordinates_clipped": [cost.clipped for cost in self.costs],
        }


def _split(total: Any, shapes: list[tuple[int, ...]]) -> list[Any]:
    sizes = [math.prod(shape) for shape in shapes]
    return list(torch.split(total, sizes))


class WithheldAggregator(_pfl_aggregate.Aggregator):
    """The server-side aggregator of a secure round: it keeps the first placeholder and sums nothing.

    User statistics reach it as zeros (:class:`SecureAggregation` withheld the values); the sum
    comes from the SecAgg+ round. Multi-process pfl simulations are not supported.
    """

    def accumulate(self, *, accumulated: Any, user_stats: Any) -> Any:
        return user_stats if accumulated is None else accumulated

    def worker_reduce(
        self, *, aggregated_worker_stats: Any, central_context: Any, aggregated_worker_metrics: Any
    ):
        raise OptionError("`secure_aggregation` runs in a single simulation process")

    def worker_reduce_metrics_only(self, *, central_context: Any, aggregated_worker_metrics: Any) -> Any:
        raise OptionError("`secure_aggregation` runs in a single simulation process")
