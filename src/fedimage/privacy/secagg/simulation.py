"""An in-memory driver that runs one round between a server and simulated clients, with dropouts and costs.

Used by tests and the benchmark, and by a trainer that simulates clients in one process.
``secure_sum`` is the one-call entry point.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from fedimage.errors import OptionError
from fedimage.privacy.secagg.client import SecAggClient
from fedimage.privacy.secagg.errors import SecAggAbort
from fedimage.privacy.secagg.messages import Stage
from fedimage.privacy.secagg.quantization import Quantizer
from fedimage.privacy.secagg.randomness import SecretSource
from fedimage.privacy.secagg.server import AggregationResult, SecAggServer


@dataclass(frozen=True)
class DropoutPlan:
    """Clients that vanish before sending their message of each stage (ids as given to ``secure_sum``)."""

    advertise_keys: frozenset[Hashable] = frozenset()
    share_keys: frozenset[Hashable] = frozenset()
    masked_input: frozenset[Hashable] = frozenset()
    unmask: frozenset[Hashable] = frozenset()

    def __post_init__(self) -> None:
        for name in ("advertise_keys", "share_keys", "masked_input", "unmask"):
            object.__setattr__(self, name, frozenset(getattr(self, name)))

    def at(self, stage: Stage) -> frozenset[Hashable]:
        return getattr(self, stage.name.lower())

    @classmethod
    def random(cls, client_ids: Iterable[Hashable], rates: Sequence[float], seed: int) -> DropoutPlan:
        """Each client drops at stage ``i`` with probability ``rates[i]`` (if still there), seeded."""
        if len(rates) != len(Stage) or any(not 0 <= r <= 1 for r in rates):
            raise OptionError(f"give {len(Stage)} dropout rates in [0, 1], one per stage, got {list(rates)}")
        rng = np.random.default_rng(seed)
        alive = sorted(client_ids, key=_order_key)
        stages: list[frozenset[Hashable]] = []
        for rate in rates:
            gone = rng.random(len(alive)) < rate
            stages.append(frozenset(c for c, g in zip(alive, gone, strict=True) if g))
            alive = [c for c, g in zip(alive, gone, strict=True) if not g]
        return cls(*stages)


@dataclass
class StageCost:
    """Time and bytes of one stage: client seconds summed and at most per client, server seconds, traffic."""

    client_seconds: float = 0.0
    client_max_seconds: float = 0.0
    server_seconds: float = 0.0
    bytes_up: int = 0  # clients -> server, all clients
    bytes_down: int = 0  # server -> clients, all clients

    def add_client(self, seconds: float, up: int, down: int) -> None:
        self.client_seconds += seconds
        self.client_max_seconds = max(self.client_max_seconds, seconds)
        self.bytes_up += up
        self.bytes_down += down


@dataclass
class RoundReport:
    """A finished round: the sum, who contributed, who dropped (by id and stage), and the cost per stage.

    A client that dropped at ``Stage.UNMASK`` had already sent its masked input: it is a contributor.
    """

    total: np.ndarray
    contributors: list[Hashable]
    dropped: dict[Hashable, Stage]
    costs: dict[Stage, StageCost] = field(default_factory=dict)


def simulate_round(
    client_ids: Sequence[Hashable],
    update_of: Callable[[Hashable], np.ndarray],
    quantizer: Quantizer,
    dimension: int,
    *,
    threshold: int | None = None,
    degree: int | None = None,
    dropouts: DropoutPlan | None = None,
    seed: int | None = None,
    prg: str = "chacha20",
) -> RoundReport:
    """Run one SecAgg+ round among ``client_ids``; ``update_of(id)`` is called once per contributing client.

    ``seed`` fixes the graph and, for reproducible simulations only, every key and mask seed;
    ``seed=None`` draws secrets from ``os.urandom`` and uses graph seed 0. A client that refuses a
    stage (too few live neighbours) drops out; the round aborts with ``SecAggAbort`` when the server
    is left with fewer than ``threshold`` clients at any stage.
    """
    ids = sorted(client_ids, key=_order_key)
    if len(set(ids)) != len(ids):
        raise OptionError("client ids must be unique")
    index = {client: i for i, client in enumerate(ids)}
    dropouts = dropouts or DropoutPlan()
    for stage in Stage:
        unknown = dropouts.at(stage) - index.keys()
        if unknown:
            raise OptionError(
                f"dropout plan names unknown clients at {stage.name}: {sorted(map(str, unknown))[:5]}"
            )
    secrets = SecretSource.from_seed(seed)
    costs = {stage: StageCost() for stage in Stage}
    started = time.perf_counter()
    server = SecAggServer(
        len(ids),
        quantizer,
        dimension,
        threshold=threshold,
        degree=degree,
        graph_seed=0 if seed is None else seed,
        prg=prg,
        secrets=secrets.child("server"),
    )
    setup = server.setup
    clients = {i: SecAggClient(i, setup, secrets.child(f"client {i}")) for i in range(len(ids))}
    costs[Stage.ADVERTISE_KEYS].server_seconds += time.perf_counter() - started
    dropped: dict[Hashable, Stage] = {}
    inbox: dict[int, object] = {i: None for i in clients}

    def run_stage(stage: Stage, act: Callable[[SecAggClient, object], object], close: Callable[[], object]):
        cost = costs[stage]
        for i, client in clients.items():
            if ids[i] in dropped:
                continue
            if ids[i] in dropouts.at(stage) or (stage > Stage.ADVERTISE_KEYS and inbox.get(i) is None):
                dropped[ids[i]] = stage
                continue
            message_in = inbox[i]
            tick = time.perf_counter()
            try:
                message = act(client, message_in)
            except SecAggAbort:
                dropped[ids[i]] = stage
                continue
            seconds = time.perf_counter() - tick
            down = setup.wire_bytes_for(i) if stage == Stage.ADVERTISE_KEYS else message_in.wire_bytes
            cost.add_client(seconds, message.wire_bytes, down)
            tick = time.perf_counter()
            server.receive(message)
            cost.server_seconds += time.perf_counter() - tick
        tick = time.perf_counter()
        outcome = close()
        cost.server_seconds += time.perf_counter() - tick
        return outcome

    broadcasts = run_stage(Stage.ADVERTISE_KEYS, lambda c, _: c.advertise_keys(), server.broadcast_keys)
    inbox = dict(broadcasts)
    deliveries = run_stage(Stage.SHARE_KEYS, lambda c, m: c.share_keys(m), server.deliver_shares)
    inbox = dict(deliveries)
    request = run_stage(
        Stage.MASKED_INPUT, lambda c, m: c.masked_input(m, update_of(ids[c.index])), server.request_unmask
    )
    inbox = {i: request for i in request.survivors}
    result: AggregationResult = run_stage(Stage.UNMASK, lambda c, m: c.unmask(m), server.finish)
    return RoundReport(
        total=result.total,
        contributors=[ids[i] for i in sorted(result.contributors)],
        dropped=dropped,
        costs=costs,
    )


def secure_sum(
    vectors: Mapping[Hashable, np.ndarray],
    clip_range: float,
    *,
    threshold: int | None = None,
    degree: int | None = None,
    dropouts: DropoutPlan | None = None,
    seed: int | None = None,
    modulus_bits: int = 32,
    prg: str = "chacha20",
) -> np.ndarray:
    """The sum of the clients' vectors (clipped to ``±clip_range``) as the server learns it through SecAgg+.

    Clients in ``dropouts`` vanish at the stage given; the sum covers the clients that sent a masked
    input, within ``n * step / 2`` of their clipped sum (``Quantizer.for_cohort``'s step). ``seed``:
    see ``simulate_round``.
    """
    if not vectors:
        raise OptionError("secure_sum needs at least one client vector")
    shapes = {np.shape(v) for v in vectors.values()}
    if len(shapes) != 1 or len(next(iter(shapes))) != 1:
        raise OptionError(f"client vectors must all be 1-D of the same length, got shapes {sorted(shapes)}")
    dimension = next(iter(shapes))[0]
    quantizer = Quantizer.for_cohort(clip_range, len(vectors), modulus_bits)
    report = simulate_round(
        list(vectors),
        vectors.__getitem__,
        quantizer,
        dimension,
        threshold=threshold,
        degree=degree,
        dropouts=dropouts,
        seed=seed,
        prg=prg,
    )
    return report.total


def _order_key(client: Hashable) -> tuple[str, object]:
    return (type(client).__name__, client)
