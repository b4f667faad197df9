"""A Flower ``ClientApp`` / ``ServerApp`` pair that trains fedimage's models with FLAIR's local recipe.

Flower's Message API (``flwr>=1.41``): the ``ClientApp`` answers ``query`` (its partition id),
``train`` (local SGD on its user's images, from the global model it receives) and
``evaluate`` (loss on its images). The ``ServerApp`` runs one of Flower's own strategies
(``FedAvg`` or ``FedAdam``, optionally wrapped in ``DifferentialPrivacyServerSideFixedClipping``)
through ``Strategy.start``; fedimage only decides which nodes form each round's cohort
(:class:`CohortGrid`: seeded, the same cohorts pfl-research's engine draws) and evaluates
the global model centrally through a callback.

Aggregation is uniform over the cohort (every reply carries ``client-weight`` 1, the
strategies' ``weighted_by_key``), as in fedimage's pfl engine: it is what bounds a user's
influence for DP, and it makes the two engines comparable. ``num-examples`` is still reported.

FedAdam mapping. Flower's update is ``x + eta_t * m / (sqrt(v) + tau)`` with
``eta_t = eta * sqrt(1 - beta_2^(t+1)) / (1 - beta_1^(t+1))``: Keras' Adam (what ml-flair's
TFF benchmark ran: server Adam lr 0.1, epsilon 0.01, betas 0.9/0.99), whose epsilon is added
to the uncorrected ``sqrt(v)``, except that Flower's bias correction counts from t+1. So
FLAIR's server Adam is ``FedAdam(eta=0.1, tau=0.01, beta_1=0.9, beta_2=0.99)``, which
:func:`build_strategy` uses from ``server_lr``, ``server_eps`` and ``server_betas``. (PyTorch's
Adam in the pfl engine adds epsilon to the bias-corrected root, a difference only in the
first rounds.) ``eta_l`` is informational in Flower; the local learning rate is ``local_lr``.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedimage.errors import FedimageError, OptionError
from fedimage.extras import require
from fedimage.loaders.flower import StorePartitioner
from fedimage.training.models import build_model
from fedimage.training.options import STRATEGIES

torch = require("torch")
# Flower reports usage to its servers unless told not to, read at import: fedimage runs offline.
os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")


def require_flwr(module: str) -> Any:
    """Import a Flower module or raise ImportError naming fedimage's ``flower`` extra."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(
            "fedimage's Flower integration needs 'flwr', which is not installed: "
            "pip install 'fedimage[flower]'"
        ) from error


flwr_app = require_flwr("flwr.app")
flwr_clientapp = require_flwr("flwr.clientapp")
flwr_serverapp = require_flwr("flwr.serverapp")
flwr_strategy = require_flwr("flwr.serverapp.strategy")

#: MetricRecord key the strategies weight replies by (always 1: uniform FedAvg).
WEIGHT_KEY = "client-weight"
PARTITION_KEY = "partition-id"


@dataclass(frozen=True)
class LocalRecipe:
    """What a client needs to rebuild the model and train it: FLAIR's local SGD settings."""

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

    @classmethod
    def from_config(cls, config: Any, num_outputs: int, crop: int) -> LocalRecipe:
        """From a :class:`~fedimage.training.options.TrainOptions`."""
        return cls(
            model=config.model,
            num_outputs=num_outputs,
            crop=crop,
            labels=config.labels,
            local_epochs=config.local_epochs,
            batch_size=config.local_batch_size,
            lr=config.local_lr,
            max_grad_norm=config.local_max_grad_norm,
            max_images_per_user=config.max_images_per_user,
            seed=config.seed,
        )


def client_seed(seed: int, server_round: int, partition_id: int) -> int:
    """The seed of one client's work in one round: the same wherever and in whatever order it runs."""
    return int(np.random.SeedSequence([seed, server_round, partition_id]).generate_state(1)[0])


def local_train(
    model: Any, images: np.ndarray, targets: np.ndarray, recipe: LocalRecipe, seed: int
) -> tuple[float, int]:
    """pfl-research's local loop: shuffle once, ``local_epochs`` passes of SGD in batches, grad-norm clip.

    Augmentation and the shuffle draw from ``seed`` only (torch's global generator is restored
    afterwards). Returns the mean training loss and the number of SGD steps.
    """
    order = np.random.default_rng(seed).permutation(len(images))
    images_t, targets_t = torch.from_numpy(images[order]), torch.from_numpy(targets[order])
    optimizer = torch.optim.SGD(model.parameters(), lr=recipe.lr)
    total, steps = 0.0, 0
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model.train()
        for _ in range(recipe.local_epochs):
            for start in range(0, len(images_t), recipe.batch_size):
                optimizer.zero_grad()
                loss = model.loss(
                    images_t[start : start + recipe.batch_size], targets_t[start : start + recipe.batch_size]
                )
                loss.backward()
                if recipe.max_grad_norm is not None:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.max_grad_norm)
                optimizer.step()
                total += loss.item()
                steps += 1
    return total / max(steps, 1), steps


@torch.no_grad()
def local_loss(model: Any, images: np.ndarray, targets: np.ndarray, batch_size: int = 512) -> float:
    """Mean binary cross-entropy of the model (eval mode) on a client's images."""
    model.eval()
    total = 0.0
    for start in range(0, len(images), batch_size):
        logits = model(torch.from_numpy(images[start : start + batch_size]))
        target = torch.from_numpy(targets[start : start + batch_size])
        total += torch.nn.functional.binary_cross_entropy_with_logits(logits, target, reduction="sum").item()
    return total / max(targets.size, 1)


def state_to_arrays(model: Any) -> Any:
    """A model's ``state_dict`` as Flower's ``ArrayRecord``."""
    return flwr_app.ArrayRecord(model.state_dict())


def _partition_id(context: Any) -> int:
    value = context.node_config.get(PARTITION_KEY)
    if value is None:
        raise OptionError(
            f"this Flower node has no {PARTITION_KEY!r} in its node config: start it with "
            f"--node-config '{PARTITION_KEY}=N' (N = the user's partition id)"
        )
    return int(value)


def make_client_app(partitioner: StorePartitioner, recipe: LocalRecipe) -> Any:
    """A ``ClientApp`` whose node ``partition-id`` i trains user ``partitioner.user_id(i)``.

    The partitioner is pickled into each simulation worker, which opens the store once.
    """
    app = flwr_clientapp.ClientApp()
    cache: dict[str, Any] = {}

    def model_from(message: Any) -> Any:
        if "model" not in cache:
            cache["model"] = build_model(recipe.model, recipe.num_outputs, recipe.crop)
        model = cache["model"]
        model.load_state_dict(message.content["arrays"].to_torch_state_dict())
        return model

    @app.query()
    def query(message: Any, context: Any) -> Any:
        metrics = flwr_app.MetricRecord({PARTITION_KEY: _partition_id(context)})
        return flwr_app.Message(flwr_app.RecordDict({"metrics": metrics}), reply_to=message)

    @app.train()
    def train(message: Any, context: Any) -> Any:
        partition_id = _partition_id(context)
        server_round = int(message.content["config"]["server-round"])
        model = model_from(message)
        images, targets = partitioner.load_arrays(partition_id)
        loss, steps = local_train(
            model, images, targets, recipe, client_seed(recipe.seed, server_round, partition_id)
        )
        metrics = {
            WEIGHT_KEY: 1.0,
            "num-examples": len(images),
            "train loss": loss,
            "local steps": steps,
        }
        content = flwr_app.RecordDict(
            {"arrays": state_to_arrays(model), "metrics": flwr_app.MetricRecord(metrics)}
        )
        return flwr_app.Message(content, reply_to=message)

    @app.evaluate()
    def evaluate(message: Any, context: Any) -> Any:
        images, targets = partitioner.load_arrays(_partition_id(context))
        loss = local_loss(model_from(message), images, targets)
        metrics = flwr_app.MetricRecord({WEIGHT_KEY: 1.0, "num-examples": len(images), "loss": loss})
        return flwr_app.Message(flwr_app.RecordDict({"metrics": metrics}), reply_to=message)

    return app


class CohortGrid:
    """A Flower ``Grid`` as a strategy sees it: only the round's cohort is online, replies come sorted.

    Cohorts are drawn like fedimage's pfl engine (``np.random.default_rng(seed)``, ``cohort``
    distinct partitions a round, independently across rounds), so both engines train the same
    users in the same rounds; Flower's strategy then samples all of them. A new cohort is drawn
    on the first ``get_node_ids`` after each training exchange. Replies are ordered by
    partition id, so aggregation sums in a fixed order (bitwise reproducible). A failed or
    missing reply is a :class:`FedimageError` (a simulation has no dropouts to tolerate).
    """

    def __init__(self, grid: Any, node_of_partition: dict[int, int], cohort_size: int, seed: int):
        if not 1 <= cohort_size <= len(node_of_partition):
            raise OptionError(
                f"cohort size {cohort_size} must be between 1 and the {len(node_of_partition)} nodes"
            )
        self.grid = grid
        self.node_of_partition = dict(sorted(node_of_partition.items()))
        self.partition_of_node = {node: partition for partition, node in self.node_of_partition.items()}
        self.cohort_size = cohort_size
        self._rng = np.random.default_rng(seed)
        self._nodes = list(self.node_of_partition.values())
        self._cohort: list[int] | None = None
        #: Partition ids of every cohort drawn so far, one list per round.
        self.cohorts: list[list[int]] = []

    def get_node_ids(self) -> Iterable[int]:
        if self._cohort is None:
            picks = self._rng.choice(len(self._nodes), self.cohort_size, replace=False).tolist()
            self._cohort = [self._nodes[index] for index in picks]
            self.cohorts.append([self.partition_of_node[node] for node in self._cohort])
        return list(self._cohort)

    def send_and_receive(self, messages: Iterable[Any], *, timeout: float | None = None) -> Iterable[Any]:
        messages = list(messages)
        replies = list(self.grid.send_and_receive(messages, timeout=timeout))
        if any(message.metadata.message_type == flwr_app.MessageType.TRAIN for message in messages):
            self._cohort = None
        for reply in replies:
            if reply.has_error():
                partition = self.partition_of_node.get(reply.metadata.src_node_id)
                raise FedimageError(f"Flower client of partition {partition} failed: {reply.error.reason}")
        if len(replies) < len(messages):
            raise FedimageError(
                f"only {len(replies)} of {len(messages)} Flower clients replied within {timeout} s"
            )
        return sorted(replies, key=lambda reply: self.partition_of_node.get(reply.metadata.src_node_id, -1))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.grid, name)


def discover_partitions(grid: Any, num_nodes: int, timeout: float = 180.0) -> dict[int, int]:
    """Wait for ``num_nodes`` nodes and ask each for its ``partition-id`` (a ``query`` message).

    Returns partition id -> node id; the ids must be exactly ``0 .. num_nodes - 1``.
    """
    deadline = time.monotonic() + timeout
    while len(nodes := list(grid.get_node_ids())) < num_nodes:
        if time.monotonic() > deadline:
            raise OptionError(
                f"only {len(nodes)} of {num_nodes} Flower nodes connected within {timeout:.0f} s"
            )
        time.sleep(0.1)
    messages = [
        flwr_app.Message(flwr_app.RecordDict(), dst_node_id=node, message_type=flwr_app.MessageType.QUERY)
        for node in nodes
    ]
    mapping: dict[int, int] = {}
    for reply in grid.send_and_receive(messages, timeout=timeout):
        if reply.has_error():
            raise OptionError(
                f"Flower node {reply.metadata.src_node_id} did not report its partition: {reply.error.reason}"
            )
        partition = int(reply.content["metrics"][PARTITION_KEY])
        if partition in mapping:
            raise OptionError(f"two Flower nodes report partition id {partition}")
        mapping[partition] = reply.metadata.src_node_id
    if sorted(mapping) != list(range(num_nodes)):
        raise OptionError(
            f"the {len(mapping)} Flower nodes report partition ids {sorted(mapping)[:10]}...; "
            f"expected exactly 0..{num_nodes - 1}"
        )
    return mapping


class MetricsRecorder:
    """Flower's default metric aggregation, remembering the last aggregate for the progress log."""

    def __init__(self) -> None:
        self.last: dict[str, float] = {}

    def __call__(self, contents: list[Any], weighted_by_key: str) -> Any:
        from flwr.serverapp.strategy.strategy_utils import aggregate_metricrecords

        record = aggregate_metricrecords(contents, weighted_by_key)
        self.last = {key: float(value) for key, value in record.items() if key != WEIGHT_KEY}
        return record


def build_strategy(
    name: str,
    *,
    cohort_size: int,
    server_lr: float = 0.1,
    server_eps: float = 0.01,
    server_betas: tuple[float, float] = (0.9, 0.99),
    dp_noise_multiplier: float | None = None,
    dp_clip: float | None = None,
    train_metrics: Callable[[list[Any], str], Any] | None = None,
) -> Any:
    """Flower's ``FedAvg`` or ``FedAdam`` (FLAIR's server Adam, see the module docstring), uniform weights.

    With ``dp_noise_multiplier`` and ``dp_clip``, the strategy is wrapped in Flower's
    ``DifferentialPrivacyServerSideFixedClipping`` (each update clipped to ``dp_clip``, noise
    of std ``multiplier * clip / cohort`` added to the mean). Only FedAvg takes DP: Flower's
    wrapper adds the noise to what the inner strategy returns, which for FedAdam is the model
    after the Adam step, not the clipped mean, so the guarantee would not hold.
    """
    if name not in STRATEGIES:
        raise OptionError(f"unknown Flower strategy {name!r}; choose one of {', '.join(STRATEGIES)}")
    common = {
        "fraction_train": 1.0,
        "fraction_evaluate": 0.0,
        "min_train_nodes": cohort_size,
        "min_available_nodes": cohort_size,
        "weighted_by_key": WEIGHT_KEY,
        "train_metrics_aggr_fn": train_metrics,
    }
    with quiet_flower(logging.ERROR):
        if name == "fedavg":
            strategy = flwr_strategy.FedAvg(**common)
        else:
            strategy = flwr_strategy.FedAdam(
                **common, eta=server_lr, tau=server_eps, beta_1=server_betas[0], beta_2=server_betas[1]
            )
    if dp_noise_multiplier is None:
        return strategy
    if name != "fedavg":
        raise OptionError(
            "differential privacy with `engine` flower needs `strategy` fedavg: Flower's DP wrapper adds "
            "the noise after the inner strategy's step, so FedAdam's output would not be private"
        )
    if dp_clip is None:
        raise OptionError("differential privacy needs a clipping bound")
    return flwr_strategy.DifferentialPrivacyServerSideFixedClipping(
        strategy, dp_noise_multiplier, dp_clip, cohort_size
    )


class _DropDeprecation(logging.Filter):
    """Drops Flower's notice that ``run_simulation`` is deprecated in favour of ``flwr run``.

    ``flwr run`` needs a Flower App project folder; ``run_simulation`` is the Python entry to
    the same Simulation Runtime, and the notice would only confuse ``fedimage train`` users.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return "run_simulation` function is deprecated" not in record.getMessage()


@contextlib.contextmanager
def quiet_flower(level: int = logging.WARNING) -> Iterator[None]:
    """Raise Flower's log level for a block (its per-round INFO lines; fedimage logs its own progress)."""
    logger = logging.getLogger("flwr")
    previous = logger.level
    logger.setLevel(level)
    drop = _DropDeprecation()
    logger.addFilter(drop)
    try:
        yield
    finally:
        logger.removeFilter(drop)
        logger.setLevel(previous)


RoundCallback = Callable[[int, dict[str, Any], dict[str, float]], None]


def make_server_app(
    strategy: Any,
    initial_state: dict[str, Any],
    *,
    rounds: int,
    num_nodes: int,
    cohort_size: int,
    seed: int,
    on_round: RoundCallback,
    recorder: MetricsRecorder | None = None,
    timeout: float = 3600.0,
) -> Any:
    """A ``ServerApp`` that runs ``strategy`` for ``rounds`` rounds on seeded cohorts of ``num_nodes`` nodes.

    ``on_round(round, state_dict, train_metrics)`` gets the global model after every round
    (fedimage's central validation, checkpointing and progress log).
    """
    app = flwr_serverapp.ServerApp()

    @app.main()
    def main(grid: Any, context: Any) -> None:
        cohort_grid = CohortGrid(grid, discover_partitions(grid, num_nodes, timeout), cohort_size, seed)

        def evaluate(server_round: int, arrays: Any) -> None:
            if server_round >= 1:
                on_round(server_round, arrays.to_torch_state_dict(), recorder.last if recorder else {})

        strategy.start(
            grid=cohort_grid,
            initial_arrays=flwr_app.ArrayRecord(initial_state),
            num_rounds=rounds,
            timeout=timeout,
            evaluate_fn=evaluate,
        )

    return app
