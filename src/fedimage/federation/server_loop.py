"""fedimage's federated rounds over a Flower ``Grid``: cohorts, dropouts, secure aggregation, evaluation.

:class:`FederatedRounds` is what fedimage's ``ServerApp`` runs, in Flower's simulation and in a
deployment alike. Each round it

1. samples ``cohort_size`` of the train clients connected now (seeded: with every client
   connected, the cohorts of fedimage's pfl engine), waiting up to ``round_timeout`` while
   fewer than ``min_clients`` are connected;
2. sends them the global model and the local recipe and keeps the replies that arrive within
   ``round_timeout`` (a client that does not answer, or answers an error, is *dropped* for the
   round, with the reason); with secure aggregation the four SecAgg+ stages follow, each
   tolerating dropouts, and the server learns only the sum of the updates;
3. fails, naming the round, if fewer than ``min_clients`` contributed; otherwise adds DP noise
   to the sum (if private), divides by the cohort size, and takes the server optimizer's step.

Every ``eval_every`` rounds (and after the last) the val clients evaluate the global model on
their own data; the server pools their additive statistics (macro/micro AP, loss, precision,
recall...) and summarizes the per-client figures. After the last round the test clients
evaluate the best round's model.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import numpy as np

from fedimage.errors import FedimageError, OptionError
from fedimage.federation import protocol
from fedimage.federation.aggregation import GaussianNoise, ServerOptimizer, mean_delta
from fedimage.federation.flwr import flwr_app

log = logging.getLogger(__name__)

#: How often the server looks for replies (Flower's own ``send_and_receive`` waits 3 s).
POLL_SECONDS = 0.1
SELECTION_METRIC = "macro AP"
#: The longest wait for new nodes to say who they are (a node that does not answer is left out).
IDENTIFY_SECONDS = 60.0


class RoundFailed(FedimageError):
    """A round could not finish (too few clients within the timeout, secure aggregation aborted)."""


@dataclass(frozen=True)
class SecureAggregationSettings:
    """SecAgg+ of every round: per-coordinate bound, modulus and (optional) threshold."""

    clip_range: float
    modulus_bits: int = 32
    threshold: int | None = None


@dataclass(frozen=True)
class FederationSettings:
    """How the server runs the federation; JSON round trip for a ServerApp in another process."""

    rounds: int
    cohort_size: int
    recipe: protocol.Recipe
    seed: int = 0
    eval_every: int = 20
    strategy: str = "fedadam"
    server_lr: float = 0.1
    server_eps: float = 0.01
    server_betas: tuple[float, float] = (0.9, 0.99)
    min_clients: int = 1
    round_timeout: float = 600.0
    connect_timeout: float = 600.0
    dp_noise_multiplier: float | None = None
    #: Seed of DP noise: the run seed in a simulation (reproducible), None in a deployment (the OS).
    noise_seed: int | None = None
    secure_aggregation: SecureAggregationSettings | None = None
    validate: bool = True
    test: bool = True

    def __post_init__(self) -> None:
        if self.min_clients < 1:
            raise OptionError(f"`min_clients` must be >= 1, got {self.min_clients}")
        if self.min_clients > self.cohort_size:
            raise OptionError(
                f"`min_clients` {self.min_clients} is larger than the cohort size {self.cohort_size}"
            )
        if not self.round_timeout > 0:
            raise OptionError(f"`round_timeout` must be > 0 seconds, got {self.round_timeout}")
        if (self.dp_noise_multiplier is None) != (self.recipe.dp_clip is None):
            raise OptionError("DP needs both a noise multiplier and a clipping bound")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FederationSettings:
        values = dict(data)
        values["recipe"] = protocol.Recipe(**values["recipe"])
        values["server_betas"] = tuple(values["server_betas"])
        if values.get("secure_aggregation") is not None:
            values["secure_aggregation"] = SecureAggregationSettings(**values["secure_aggregation"])
        return cls(**values)


class RoundObserver(Protocol):
    """Told about every round and evaluation (progress, metrics file, checkpoints)."""

    def round_done(self, server_round: int, model: Any, record: dict[str, Any]) -> None: ...

    def evaluated(
        self,
        server_round: int,
        model: Any,
        pooled: dict[str, float] | None,
        clients: dict[str, Any] | None,
        train_metrics: dict[str, float],
    ) -> None: ...


@dataclass
class RunResult:
    """What a federation did: rounds finished, who took part in each, per-client evaluation."""

    completed_rounds: int = 0
    rounds: list[dict[str, Any]] = field(default_factory=list)
    best_round: int | None = None
    best_value: float | None = None
    client_evaluation: dict[str, Any] = field(default_factory=dict)
    test: dict[str, float] | None = None
    secure_aggregation: dict[str, Any] | None = None

    def summary(self) -> dict[str, Any]:
        return {
            "completed_rounds": self.completed_rounds,
            "rounds": self.rounds,
            "client_evaluation": self.client_evaluation,
        }


@dataclass
class Exchange:
    """The replies of one exchange by client, and why each missing client is missing."""

    replies: dict[str, Any]
    failed: dict[str, str]
    bytes_down: int = 0
    bytes_up: int = 0
    seconds: float = 0.0

    def timing(self, kind: str) -> dict[str, Any]:
        """What the round record keeps of this exchange."""
        return {"kind": kind, "seconds": round(self.seconds, 3), "replies": len(self.replies)}


class ClientDirectory:
    """Which Flower node is which client: given (a deployment's registered nodes) or asked (``query``).

    A deployment knows each node's identity from the key it registered, so a node cannot pose
    as another client; a simulation asks each node once.
    """

    def __init__(self, known: Mapping[int, tuple[str, str]] | None = None):
        self.known = known is not None
        self.of_node: dict[int, tuple[str, str]] = dict(known or {})
        self.failed: set[int] = set()

    def refresh(self, grid: Any, timeout: float) -> list[int]:
        """Learn the identity of newly connected nodes; returns the node ids connected now."""
        online = sorted(int(node) for node in grid.get_node_ids())
        new = [node for node in online if node not in self.of_node and node not in self.failed]
        if new and not self.known:
            log.info("asking %d new nodes who they are", len(new))
            messages = {
                str(node): flwr_app.Message(
                    flwr_app.RecordDict(), dst_node_id=node, message_type=protocol.IDENTIFY
                )
                for node in new
            }
            answered = exchange(grid, messages, min(timeout, IDENTIFY_SECONDS))
            for name, reply in answered.replies.items():
                identity = reply.content[protocol.IDENTITY]
                self.of_node[int(name)] = (str(identity["split"]), str(identity["client"]))
            self.failed.update(int(name) for name in answered.failed)
        return [node for node in online if node in self.of_node]

    def connected(self, grid: Any, split: str, timeout: float) -> dict[str, int]:
        """Client id -> node id of the connected clients of ``split``, sorted by client id."""
        nodes = self.refresh(grid, timeout)
        chosen = {self.of_node[node][1]: node for node in nodes if self.of_node[node][0] == split}
        return dict(sorted(chosen.items()))


def exchange(grid: Any, messages: Mapping[str, Any], timeout: float) -> Exchange:
    """Send one message per client and collect the replies that arrive within ``timeout`` seconds.

    A client whose reply is an error, or that has not answered by the deadline, is in ``failed``
    with the reason; the others are in ``replies``. Polls every :data:`POLL_SECONDS`.
    """
    started = time.monotonic()
    clients = list(messages)
    bytes_down = sum(_content_bytes(message) for message in messages.values())
    ids = list(grid.push_messages([messages[client] for client in clients]))
    pending = {message_id: client for message_id, client in zip(ids, clients, strict=True) if message_id}
    failed = {
        client: "the message could not be sent" for client, mid in zip(clients, ids, strict=True) if not mid
    }
    replies: dict[str, Any] = {}
    bytes_up = 0
    deadline = time.monotonic() + timeout
    while pending:
        for reply in grid.pull_messages(list(pending)):
            client = pending.pop(reply.metadata.reply_to_message_id, None)
            if client is None:
                continue
            if reply.has_error():
                failed[client] = f"error: {reply.error.reason}"
            else:
                replies[client] = reply
                bytes_up += _content_bytes(reply)
        if not pending or time.monotonic() >= deadline:
            break
        time.sleep(POLL_SECONDS)
    for client in pending.values():
        failed[client] = f"no reply within {timeout:g} s"
    return Exchange(replies, failed, bytes_down, bytes_up, time.monotonic() - started)


def _content_bytes(message: Any) -> int:
    """Payload bytes of a message's records (arrays, metrics and configs), for the bandwidth report."""
    total = 0
    content = message.content
    for record in content.array_records.values():
        total += sum(array.numpy().nbytes for array in record.values())
    for record in [*content.config_records.values(), *content.metric_records.values()]:
        for value in record.values():
            total += _value_bytes(value)
    return total


def _value_bytes(value: Any) -> int:
    if isinstance(value, bytes | str):
        return len(value)
    if isinstance(value, list):
        return sum(_value_bytes(item) for item in value)
    return 8


class FederatedRounds:
    """Runs a federation on ``grid``: see the module docstring.

    Parameters
    ----------
    grid:
        Flower's ``Grid`` (the ServerApp's first argument).
    settings:
        The run's :class:`FederationSettings`.
    model:
        The global model (a ``torch.nn.Module``); trained in place.
    directory:
        Which node is which client.
    observer:
        Told of every round and evaluation (progress, metrics, checkpoints); may be None.
    """

    def __init__(
        self,
        grid: Any,
        settings: FederationSettings,
        model: Any,
        directory: ClientDirectory,
        observer: RoundObserver | None = None,
        say: Callable[[str], None] = log.info,
    ):
        self.grid = grid
        self.settings = settings
        self.model = model
        self.directory = directory
        self.observer = observer
        self.say = say
        self._rng = np.random.default_rng(settings.seed)
        self._optimizer = ServerOptimizer(
            settings.strategy, settings.server_lr, settings.server_eps, tuple(settings.server_betas)
        )
        self._noise = (
            GaussianNoise(settings.dp_noise_multiplier, settings.recipe.dp_clip, settings.noise_seed)
            if settings.dp_noise_multiplier is not None and settings.recipe.dp_clip is not None
            else None
        )
        self._floating = [name for name, tensor in model.state_dict().items() if tensor.is_floating_point()]
        #: The parameters of the best round so far (by pooled validation macro AP; the last without val).
        self.best_vector: np.ndarray | None = None
        self._exchanges: list[dict[str, Any]] = []
        self.result = RunResult()

    # -- model <-> vector ---------------------------------------------------------------------------

    def _vector(self) -> np.ndarray:
        state = self.model.state_dict()
        return np.concatenate([state[name].detach().double().numpy().ravel() for name in self._floating])

    def load_vector(self, vector: np.ndarray) -> None:
        """Set the model's floating-point parameters from a flat vector (state-dict order)."""
        import torch

        state = self.model.state_dict()
        offset = 0
        for name in self._floating:
            tensor = state[name]
            size = tensor.numel()
            part = vector[offset : offset + size].reshape(tuple(tensor.shape))
            state[name] = torch.from_numpy(part).to(tensor.dtype)
            offset += size
        self.model.load_state_dict(state)

    def _model_record(self) -> Any:
        return flwr_app.ArrayRecord(torch_state_dict=self.model.state_dict())

    def _message(self, node: int, message_type: str, server_round: int, **extra: Any) -> Any:
        recipe = self.settings.recipe.at_round(server_round)
        content = {
            protocol.ARRAYS: self._model_record(),
            protocol.RECIPE: flwr_app.ConfigRecord(recipe.to_record()),
            **extra,
        }
        return flwr_app.Message(flwr_app.RecordDict(content), dst_node_id=node, message_type=message_type)

    # -- the run ------------------------------------------------------------------------------------

    def run(self) -> RunResult:
        """All rounds, evaluations and the final test; raises :class:`RoundFailed` naming a failed round."""
        from fedimage.training.divergence import check_model

        settings = self.settings
        self._wait_for_train_clients(
            settings.min_clients, settings.connect_timeout, "the start", wanted=settings.cohort_size
        )
        last_train: dict[str, float] = {}
        for server_round in range(1, settings.rounds + 1):
            started = time.perf_counter()
            available = self._available_train_clients(server_round)
            cohort = self._draw_cohort(available)
            self.say(f"round {server_round}: {len(cohort)} of {len(available)} connected train clients")
            if settings.secure_aggregation is not None:
                total, contributors, dropped, metrics, traffic, secure = self._secure_round(
                    server_round, cohort
                )
            else:
                total, contributors, dropped, metrics, traffic = self._plain_round(server_round, cohort)
                secure = None
            if len(contributors) < settings.min_clients:
                raise RoundFailed(
                    f"round {server_round}: only {len(contributors)} of the {len(cohort)} clients of the "
                    f"cohort contributed (min_clients {settings.min_clients}); dropped: "
                    + "; ".join(f"{client} ({why})" for client, why in sorted(dropped.items())[:5])
                )
            if self._noise is not None:
                total = self._noise.add(total, server_round)
            mean = mean_delta(total, len(contributors), len(cohort), self._noise)
            self.load_vector(self._optimizer.step(self._vector(), mean))
            check_model(self.model, server_round)
            last_train = _mean_metrics(metrics)
            record = {
                "round": server_round,
                "cohort": sorted(cohort),
                "contributors": sorted(contributors),
                "dropped": dict(sorted(dropped.items())),
                "seconds": round(time.perf_counter() - started, 3),
                "bytes_down": traffic[0],
                "bytes_up": traffic[1],
                "exchanges": self._exchanges,
            }
            if secure is not None:
                record["secure_aggregation"] = secure
            self.result.rounds.append(record)
            self.result.completed_rounds = server_round
            if dropped:
                self.say(f"round {server_round}: dropped {', '.join(sorted(dropped))}")
            if self.observer is not None:
                self.observer.round_done(server_round, self.model, record)
            if server_round % settings.eval_every == 0 or server_round == settings.rounds:
                self._validate(server_round, last_train)
        self._test()
        self._say_finished()
        return self.result

    def _wait_for_train_clients(
        self, needed: int, timeout: float, when: str, wanted: int | None = None
    ) -> dict[str, int]:
        """The connected train clients once ``needed`` are; with ``wanted``, wait for that many first.

        At the start the server waits up to ``timeout`` for a full cohort (``wanted``) and then
        goes on with what came if that is at least ``needed``; later rounds go on as soon as
        ``needed`` are connected.
        """
        deadline = time.monotonic() + timeout
        while True:
            clients = self.directory.connected(self.grid, "train", self.settings.round_timeout)
            enough = len(clients) >= (wanted or needed) or (
                len(clients) >= needed and time.monotonic() > deadline
            )
            if enough:
                return clients
            if time.monotonic() > deadline:
                raise RoundFailed(
                    f"{when}: only {len(clients)} train clients connected within {timeout:g} s "
                    f"(min_clients {needed})"
                )
            time.sleep(min(1.0, max(POLL_SECONDS, timeout / 100)))

    def _available_train_clients(self, server_round: int) -> dict[str, int]:
        return self._wait_for_train_clients(
            self.settings.min_clients, self.settings.round_timeout, f"round {server_round}"
        )

    def _draw_cohort(self, available: dict[str, int]) -> dict[str, int]:
        """``cohort_size`` of the available clients (all if fewer), seeded; client id -> node id."""
        names = list(available)
        size = min(self.settings.cohort_size, len(names))
        picks = self._rng.choice(len(names), size, replace=False).tolist()
        return {names[index]: available[names[index]] for index in sorted(picks, key=lambda i: names[i])}

    def _plain_round(
        self, server_round: int, cohort: dict[str, int]
    ) -> tuple[np.ndarray, list[str], dict[str, str], list[dict[str, float]], tuple[int, int]]:
        messages = {
            client: self._message(node, protocol.TRAIN, server_round) for client, node in cohort.items()
        }
        done = exchange(self.grid, messages, self.settings.round_timeout)
        self._exchanges = [done.timing("train")]
        dimension = sum(self.model.state_dict()[name].numel() for name in self._floating)
        total = np.zeros(dimension, dtype=np.float64)
        contributors: list[str] = []
        dropped = dict(done.failed)
        metrics: list[dict[str, float]] = []
        for client in sorted(done.replies):  # a fixed summation order: bitwise reproducible
            reply = done.replies[client]
            try:
                parts = reply.content[protocol.UPDATE].to_numpy_ndarrays()
                vector = np.concatenate([np.asarray(part, dtype=np.float64).ravel() for part in parts])
                if vector.shape != (dimension,) or not np.isfinite(vector).all():
                    raise ValueError(f"an update of {vector.size} values for {dimension} parameters")
            except (KeyError, ValueError) as error:
                dropped[client] = f"malformed update: {error}"
                continue
            total += vector
            contributors.append(client)
            metrics.append(_metric_dict(reply))
        return total, contributors, dropped, metrics, (done.bytes_down, done.bytes_up)

    def _secure_round(
        self, server_round: int, cohort: dict[str, int]
    ) -> tuple[
        np.ndarray, list[str], dict[str, str], list[dict[str, float]], tuple[int, int], dict[str, Any]
    ]:
        from fedimage.privacy.secagg import Quantizer, SecAggAbort, SecAggError, SecAggServer, Stage, wire

        secure = self.settings.secure_aggregation
        assert secure is not None
        clients = list(cohort)  # sorted by client id: index i = clients[i]
        index_of = {client: i for i, client in enumerate(clients)}
        dimension = sum(self.model.state_dict()[name].numel() for name in self._floating)
        quantizer = Quantizer.for_cohort(secure.clip_range, len(clients), secure.modulus_bits)
        graph_seed = int(np.random.SeedSequence([self.settings.seed, server_round]).generate_state(1)[0])
        try:
            server = SecAggServer(
                len(clients), quantizer, dimension, threshold=secure.threshold, graph_seed=graph_seed
            )
        except OptionError as error:
            raise RoundFailed(f"round {server_round}: secure aggregation cannot start: {error}") from None
        setup = wire.to_record(server.setup)
        dropped: dict[str, str] = {}
        survivors: dict[Stage, int] = {}
        traffic = [0, 0]
        metrics: dict[str, dict[str, float]] = {}

        self._exchanges = []

        def collect(stage: Stage, done: Exchange, expected_kind: type) -> None:
            self._exchanges.append(
                done.timing("train" if stage == Stage.ADVERTISE_KEYS else stage.name.lower())
            )
            traffic[0] += done.bytes_down
            traffic[1] += done.bytes_up
            for client, why in done.failed.items():
                dropped.setdefault(client, f"{stage.name.lower()}: {why}")
            for client, reply in sorted(done.replies.items()):
                try:
                    message = wire.from_record(dict(reply.content[protocol.SECAGG]))
                    if not isinstance(message, expected_kind) or message.sender != index_of[client]:
                        raise SecAggError(
                            f"expected a {expected_kind.__name__} from client {index_of[client]}"
                        )
                    server.receive(message)
                except (KeyError, SecAggError) as error:
                    dropped.setdefault(client, f"{stage.name.lower()}: rejected: {error}")
                    continue
                if stage == Stage.ADVERTISE_KEYS:
                    metrics[client] = _metric_dict(reply)
            survivors[stage] = len(clients) - len(dropped)

        def send(message_type: str, payloads: Mapping[int, Any]) -> Exchange:
            messages = {
                clients[index]: flwr_app.Message(
                    flwr_app.RecordDict({protocol.SECAGG: flwr_app.ConfigRecord(wire.to_record(payload))}),
                    dst_node_id=cohort[clients[index]],
                    message_type=message_type,
                )
                for index, payload in payloads.items()
                if clients[index] not in dropped
            }
            return exchange(self.grid, messages, self.settings.round_timeout)

        from fedimage.privacy.secagg.messages import AdvertiseKeys, MaskedInput, ShareKeys, UnmaskResponse

        try:
            train = {
                client: self._message(
                    node,
                    protocol.TRAIN,
                    server_round,
                    **{protocol.SECAGG: flwr_app.ConfigRecord({**setup, "secagg-index": index_of[client]})},
                )
                for client, node in cohort.items()
            }
            collect(
                Stage.ADVERTISE_KEYS, exchange(self.grid, train, self.settings.round_timeout), AdvertiseKeys
            )
            collect(Stage.SHARE_KEYS, send(protocol.SECAGG_SHARE, server.broadcast_keys()), ShareKeys)
            collect(Stage.MASKED_INPUT, send(protocol.SECAGG_MASKED, server.deliver_shares()), MaskedInput)
            request = server.request_unmask()
            collect(
                Stage.UNMASK,
                send(protocol.SECAGG_UNMASK, dict.fromkeys(request.survivors, request)),
                UnmaskResponse,
            )
            result = server.finish()
        except (SecAggAbort, SecAggError) as error:
            why = "; ".join(f"{client}: {reason}" for client, reason in sorted(dropped.items())[:5])
            raise RoundFailed(
                f"round {server_round}: {error}" + (f" (dropped: {why})" if why else "")
            ) from None
        contributors = [clients[index] for index in sorted(result.contributors)]
        for client in contributors:  # sent its masked input: in the sum even if it left at unmask
            dropped.pop(client, None)
        report = {
            "clients": len(clients),
            "threshold": server.setup.threshold,
            "degree": len(server.setup.neighbours[0]) if clients else 0,
            "modulus_bits": quantizer.modulus_bits,
            "clip_range": quantizer.clip,
            "survivors": {stage.name.lower(): count for stage, count in survivors.items()},
        }
        self._record_secure_settings(report)
        return (
            result.total,
            contributors,
            dropped,
            [metrics[client] for client in contributors if client in metrics],
            (traffic[0], traffic[1]),
            report,
        )

    def _record_secure_settings(self, report: dict[str, Any]) -> None:
        if self.result.secure_aggregation is None:
            self.result.secure_aggregation = {
                "protocol": "SecAgg+ (X25519, HKDF-SHA256, Shamir, ChaCha20 masks; keys from os.urandom)",
                "modulus_bits": report["modulus_bits"],
                "clip_range": report["clip_range"],
            }

    # -- evaluation ---------------------------------------------------------------------------------

    def _evaluate(
        self, split: str, server_round: int
    ) -> tuple[dict[str, float] | None, dict[str, Any] | None]:
        from fedimage.training.federated_evaluation import pooled_metrics, summarize_clients

        clients = self.directory.connected(self.grid, split, self.settings.round_timeout)
        if not clients:
            return None, None
        messages = {
            client: self._message(node, protocol.EVALUATE, server_round) for client, node in clients.items()
        }
        done = exchange(self.grid, messages, self.settings.round_timeout)
        statistics = []
        per_client: dict[str, dict[str, float]] = {}
        for client in sorted(done.replies):
            content = done.replies[client].content
            if protocol.STATISTICS in content.metric_records:
                statistics.append(dict(content[protocol.STATISTICS]))
                per_client[client] = {key: float(value) for key, value in content[protocol.METRICS].items()}
        if not statistics:
            return None, {"clients": 0, "missing": sorted(done.failed)}
        summary = summarize_clients(per_client)
        if done.failed:
            summary["missing"] = {client: why for client, why in sorted(done.failed.items())}
        return pooled_metrics(statistics), summary

    def _validate(self, server_round: int, train_metrics: dict[str, float]) -> None:
        pooled, clients = self._evaluate("val", server_round) if self.settings.validate else (None, None)
        value = pooled.get(SELECTION_METRIC, math.nan) if pooled else math.nan
        if pooled is None:  # no validation: the latest round is the best one
            improved = True
        else:
            improved = not math.isnan(value) and (
                self.result.best_value is None or value > self.result.best_value
            )
        if improved:
            self.result.best_round = server_round
            self.result.best_value = None if pooled is None else value
            self.best_vector = self._vector()
            if clients is not None:
                self.result.client_evaluation["val"] = {"round": server_round, **clients}
        if self.observer is not None:
            self.observer.evaluated(server_round, self.model, pooled, clients, train_metrics)

    def _test(self) -> None:
        if not self.settings.test:
            return
        current = self._vector()
        if self.best_vector is not None:
            self.load_vector(self.best_vector)
        pooled, clients = self._evaluate("test", self.result.best_round or self.result.completed_rounds)
        self.load_vector(current)
        self.result.test = pooled
        if clients is not None:
            self.result.client_evaluation["test"] = {"round": self.result.best_round, **clients}

    def _say_finished(self) -> None:
        """Tell every connected node the run is over (a deployed node's launcher then stops it)."""
        nodes = sorted(int(node) for node in self.grid.get_node_ids())  # no identity needed: every node
        self.say(f"telling {len(nodes)} nodes the run is over")
        messages = {
            str(node): flwr_app.Message(
                flwr_app.RecordDict(), dst_node_id=node, message_type=protocol.FINISHED
            )
            for node in nodes
        }
        if messages:
            exchange(self.grid, messages, min(self.settings.round_timeout, 10.0))


def _metric_dict(reply: Any) -> dict[str, float]:
    content = reply.content
    if protocol.METRICS not in content.metric_records:
        return {}
    return {key: float(value) for key, value in content[protocol.METRICS].items()}


def _mean_metrics(metrics: Iterable[dict[str, float]]) -> dict[str, float]:
    """Mean of each metric over the contributors (``num-examples`` summed)."""
    rows = list(metrics)
    if not rows:
        return {}
    keys = sorted(set().union(*rows))
    out: dict[str, float] = {}
    for key in keys:
        values = [row[key] for row in rows if key in row]
        out[key] = float(np.sum(values)) if key == "num-examples" else float(np.mean(values))
    return out
