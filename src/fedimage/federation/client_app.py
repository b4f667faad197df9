"""fedimage's Flower ``ClientApp``: one code path for Flower's simulation and a real deployment.

The node's config says where the client's data is (:mod:`fedimage.federation.client_data`);
every message says what to do with it (:mod:`fedimage.federation.protocol`). A client:

- answers ``query`` with its id and split (its user id in the store, never a position);
- trains with FLAIR's local recipe from the global model it receives and answers the model
  delta (clipped to ``dp_clip`` when the run is private), or, with secure aggregation, keeps
  the delta in its node state and runs the four SecAgg+ stages
  (:mod:`fedimage.privacy.secagg`, keys from ``os.urandom``): the server only ever receives
  the masked delta;
- evaluates the global model on all of its images and answers additive statistics (the
  server pools them) and its own figures.

In a deployment every message runs in a new ``flwr-clientapp`` process, so the SecAgg+ client
state lives in the node's ``context.state`` between stages. torch is imported only by the
handlers that need it: the protocol stages start quickly.

``client_app`` is the app a deployment's Flower App names; :func:`make_client_app` builds the
same app with a simulation's store directory.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from fedimage.federation import protocol
from fedimage.federation.client_data import ClientData, SimulationDirectory, client_data_from_node
from fedimage.federation.flwr import flwr_app, flwr_clientapp

#: Names of the node-state records a SecAgg+ client keeps between stages.
_STATE_SECAGG = "fedimage-secagg"
_STATE_VECTOR = "fedimage-secagg-vector"


def _reply(message: Any, **records: Any) -> Any:
    return flwr_app.Message(flwr_app.RecordDict(records), reply_to=message)


def _identity(data: ClientData) -> Any:
    return flwr_app.ConfigRecord({"client": data.client, "split": data.split})


def _global_model(message: Any, recipe: protocol.Recipe) -> tuple[Any, dict[str, Any]]:
    """The model the message carries, rebuilt from the recipe, and a copy of its starting state."""
    from fedimage.training.models import build_model

    model = build_model(recipe.model, recipe.num_outputs, recipe.crop)
    state = message.content[protocol.ARRAYS].to_torch_state_dict()
    model.load_state_dict(state)
    return model, {name: tensor.clone() for name, tensor in model.state_dict().items()}


def make_client_app(simulation: SimulationDirectory | None = None) -> Any:
    """fedimage's ``ClientApp``; ``simulation`` maps Flower's simulated partition ids to a store's clients.

    Parameters
    ----------
    simulation:
        The store's clients for Flower's simulation (node config ``partition-id``); None in a
        deployment, where each node's config names its own bundle and key.

    Example::

        app = make_client_app(SimulationDirectory("store.h5"))
    """
    app = flwr_clientapp.ClientApp()

    def data_of(context: Any) -> ClientData:
        return client_data_from_node(context.node_config, simulation)

    @app.query()
    def identify(message: Any, context: Any) -> Any:
        return _reply(message, **{protocol.IDENTITY: _identity(data_of(context))})

    @app.query("finished")
    def finished(message: Any, context: Any) -> Any:
        marker = context.node_config.get(protocol.NODE_FINISHED_FILE)
        if marker:  # ``fedimage client`` watches this file and stops its SuperNode
            Path(str(marker)).write_text("finished\n")
        return _reply(message, **{protocol.IDENTITY: _identity(data_of(context))})

    @app.train()
    def train(message: Any, context: Any) -> Any:
        from fedimage.federation import local

        data = data_of(context)
        recipe = protocol.Recipe.from_record(message.content[protocol.RECIPE])
        model, before = _global_model(message, recipe)
        images, targets = data.arrays(recipe.labels, recipe.max_images_per_user)
        loss, steps = local.local_train(
            model, images, targets, recipe, local.client_seed(recipe.seed, recipe.round, data.client)
        )
        update = local.model_update(before, model.state_dict())
        metrics: dict[str, Any] = {"train loss": loss, "local steps": steps, "num-examples": len(images)}
        if recipe.dp_clip is not None:
            update, norm = local.clip_update(update, recipe.dp_clip)
            metrics["clipped"] = int(norm > recipe.dp_clip)
        if protocol.SECAGG not in message.content:
            arrays = flwr_app.ArrayRecord(numpy_ndarrays=list(update.values()))
            return _reply(
                message, **{protocol.UPDATE: arrays, protocol.METRICS: flwr_app.MetricRecord(metrics)}
            )
        from fedimage.privacy.secagg import SecAggClient, wire
        from fedimage.privacy.secagg.messages import RoundSetup

        setup_record = message.content[protocol.SECAGG]
        setup = wire.from_record(dict(setup_record), RoundSetup)
        client = SecAggClient(int(setup_record["secagg-index"]), setup)
        advertised = client.advertise_keys()
        context.state[_STATE_SECAGG] = flwr_app.ConfigRecord(client.export_state())
        context.state[_STATE_VECTOR] = flwr_app.ArrayRecord(numpy_ndarrays=[local.flatten(update)])
        return _reply(
            message,
            **{
                protocol.SECAGG: flwr_app.ConfigRecord(wire.to_record(advertised)),
                protocol.METRICS: flwr_app.MetricRecord(metrics),
            },
        )

    def secagg_stage(message: Any, context: Any, act: Any) -> Any:
        from fedimage.privacy.secagg import SecAggClient, wire

        if _STATE_SECAGG not in context.state.config_records:
            raise RuntimeError("this node has no secure-aggregation round in progress")
        client = SecAggClient.restore(dict(context.state.config_records[_STATE_SECAGG]))
        request = wire.from_record(dict(message.content[protocol.SECAGG]), setup=client.setup)
        try:
            answer = act(client, request)
        finally:  # a stage is used up once asked for, answered or not
            context.state[_STATE_SECAGG] = flwr_app.ConfigRecord(client.export_state())
        return _reply(message, **{protocol.SECAGG: flwr_app.ConfigRecord(wire.to_record(answer))})

    @app.train("secagg_share")
    def secagg_share(message: Any, context: Any) -> Any:
        return secagg_stage(message, context, lambda client, broadcast: client.share_keys(broadcast))

    @app.train("secagg_masked")
    def secagg_masked(message: Any, context: Any) -> Any:
        vector = context.state.array_records[_STATE_VECTOR].to_numpy_ndarrays()[0]

        def mask(client: Any, delivery: Any) -> Any:
            return client.masked_input(delivery, np.asarray(vector, dtype=np.float64))

        reply = secagg_stage(message, context, mask)
        del context.state[_STATE_VECTOR]  # the plaintext update is not kept past its use
        return reply

    @app.train("secagg_unmask")
    def secagg_unmask(message: Any, context: Any) -> Any:
        reply = secagg_stage(message, context, lambda client, request: client.unmask(request))
        del context.state[_STATE_SECAGG]
        return reply

    @app.evaluate()
    def evaluate(message: Any, context: Any) -> Any:
        from fedimage.federation import local
        from fedimage.training.federated_evaluation import client_metrics, client_statistics

        data = data_of(context)
        recipe = protocol.Recipe.from_record(message.content[protocol.RECIPE])
        model, _ = _global_model(message, recipe)
        images, targets = data.arrays(recipe.labels)
        if len(images) == 0:
            return _reply(message, **{protocol.METRICS: flwr_app.MetricRecord({"images": 0})})
        logits = local.predict_logits(model, images, recipe.eval_batch_size)
        own = {key: float(value) for key, value in client_metrics(targets, logits).items()}
        return _reply(
            message,
            **{
                protocol.STATISTICS: flwr_app.MetricRecord(client_statistics(targets, logits)),
                protocol.METRICS: flwr_app.MetricRecord(own),
            },
        )

    return app


os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
#: The ClientApp of a deployment (``fedimage client``): each node's config names its bundle and key.
client_app = make_client_app()
