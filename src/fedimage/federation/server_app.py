"""fedimage's Flower ``ServerApp``: :class:`~fedimage.federation.server_loop.FederatedRounds` on a Grid.

:func:`make_server_app` wraps the rounds for Flower's simulation (``fedimage train --engine
flower``: callbacks into the caller's tracker). ``server_app`` is the app of a deployment
(``fedimage serve``): it runs in the ``flwr-serverapp`` process the SuperLink starts, reads
the run file ``fedimage serve`` wrote (its path is the run config's ``fedimage-run``), trains
with federated validation and test, and writes the run's outputs itself: ``metrics.jsonl``,
``checkpoint.pt``, ``summary.json``, ``curves.png``, or ``failure.json`` with a one-line
reason. The server holds no images and no bundle key: every figure comes from the clients.
"""

from __future__ import annotations

import json
import platform
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedimage._version import __version__
from fedimage.federation.flwr import flwr_serverapp
from fedimage.federation.server_loop import (
    ClientDirectory,
    FederatedRounds,
    FederationSettings,
    RoundObserver,
    RunResult,
)

#: Run-config key holding the path of the run file ``fedimage serve`` writes.
RUN_FILE_KEY = "fedimage-run"


class TrackerObserver:
    """Feeds a :class:`~fedimage.training.tracking.ValidationTracker` from the rounds (pooled val metrics)."""

    def __init__(self, tracker: Any):
        self.tracker = tracker

    def round_done(self, server_round: int, model: Any, record: dict[str, Any]) -> None:
        self.tracker.round_done(server_round)

    def evaluated(
        self,
        server_round: int,
        model: Any,
        pooled: dict[str, float] | None,
        clients: dict[str, Any] | None,
        train_metrics: dict[str, float],
    ) -> None:
        self.tracker(server_round, model, train_metrics, val=pooled, clients=clients)


@dataclass
class ServerOutcome:
    """What a ServerApp run in another thread left: its result and the error that ended it, if any."""

    result: RunResult | None = None
    error: BaseException | None = None


def make_server_app(
    settings: FederationSettings,
    model: Any,
    observer: RoundObserver | None,
    outcome: ServerOutcome,
    *,
    directory: Callable[[], ClientDirectory] = ClientDirectory,
) -> Any:
    """A ``ServerApp`` running :class:`FederatedRounds` on ``model``; its result and error go to ``outcome``.

    Parameters
    ----------
    settings:
        The federation's settings.
    model:
        The global model, trained in place.
    observer:
        Told of every round and evaluation.
    outcome:
        Receives the run's :class:`RunResult` and the exception that ended it (Flower's
        simulation runs the ServerApp in a thread and only logs its exceptions).
    directory:
        Makes the node directory (default: ask each node who it is).

    Example::

        outcome = ServerOutcome()
        app = make_server_app(settings, model, None, outcome)
    """
    app = flwr_serverapp.ServerApp()

    @app.main()
    def main(grid: Any, context: Any) -> None:
        rounds = FederatedRounds(grid, settings, model, directory(), observer)
        try:
            rounds.run()
        except BaseException as error:
            outcome.error = error
            raise
        finally:
            outcome.result = rounds.result

    return app


# -- deployment ---------------------------------------------------------------------------------------


def run_deployment(grid: Any, run_file: Path) -> dict[str, Any]:
    """What the deployed ServerApp does: train from the run file, write the outputs, return the summary."""
    import torch

    from fedimage.training.models import build_model
    from fedimage.training.outputs import plot_curves, read_metrics, save_checkpoint, write_summary
    from fedimage.training.tracking import ValidationTracker

    run = json.loads(Path(run_file).read_text())
    out = Path(run["output"])
    settings = FederationSettings.from_json(run["settings"])
    recipe = settings.recipe
    torch.manual_seed(settings.seed)
    model = build_model(recipe.model, recipe.num_outputs, recipe.crop)
    checkpoint_info = {"model": recipe.model, "num_outputs": recipe.num_outputs, "crop": recipe.crop}
    log_file = out / "server.log"

    clock = time.perf_counter()

    def log(line: str) -> None:
        with log_file.open("a") as file:
            file.write(f"[{time.perf_counter() - clock:7.1f} s] {line}\n")

    tracker = ValidationTracker(
        out, None, None, recipe.labels, recipe.eval_batch_size, checkpoint_info, log, rounds=settings.rounds
    )
    nodes = run["nodes"]  # None without node authentication (insecure): each node is asked who it is
    directory = ClientDirectory(
        None if nodes is None else {int(node): (split, client) for node, (split, client) in nodes.items()}
    )
    rounds = FederatedRounds(grid, settings, model, directory, TrackerObserver(tracker), say=log)
    started = time.perf_counter()
    result = rounds.run()
    seconds = time.perf_counter() - started
    if result.best_round is not None and rounds.best_vector is not None:
        rounds.load_vector(rounds.best_vector)
        save_checkpoint(out, model, {**checkpoint_info, "round": result.best_round})
    summary = {
        "fedimage_version": __version__,
        "engine": "flower-deployment",
        "store": run.get("store"),
        "server": run.get("address"),
        "config": run.get("config", {}),
        "settings": settings.to_json(),
        "crop": recipe.crop,
        "label_names": run.get("label_names"),
        "train_clients": len(run.get("clients", {}).get("train", [])),
        "cohort_size": settings.cohort_size,
        "rounds_run": result.completed_rounds,
        **result.summary(),
        "best_round": result.best_round,
        "best_val_macro_ap": result.best_value,
        "test": result.test,
        "privacy": run.get("privacy"),
        "secure_aggregation": result.secure_aggregation,
        "wall_time_s": round(seconds, 3),
        "seconds_per_round": round(seconds / max(result.completed_rounds, 1), 4),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    if summary["secure_aggregation"] is not None:
        summary["secure_aggregation"]["rounds"] = [
            {"round": record["round"], **record["secure_aggregation"]}
            for record in result.rounds
            if "secure_aggregation" in record
        ]
    records = [record for record in read_metrics(out) if "val" in record]
    if records:
        plot_curves(out, records, None, f"{recipe.model}, federated (deployment)")
    write_summary(out, summary)  # the last file: ``serve`` ends the processes once it exists
    return summary


def _deployed_main(grid: Any, context: Any) -> None:
    from fedimage.training.outputs import FAILURE_FILE

    run_file = Path(str(context.run_config[RUN_FILE_KEY]))
    out = Path(json.loads(run_file.read_text())["output"])
    try:
        run_deployment(grid, run_file)
    except BaseException as error:
        reason = f"{type(error).__name__}: {error}".splitlines()[0] if str(error) else type(error).__name__
        (out / FAILURE_FILE).write_text(
            json.dumps({"error": reason, "traceback": traceback.format_exc()}, indent=1) + "\n"
        )
        raise


#: The ServerApp of a deployment (``fedimage serve``).
server_app = flwr_serverapp.ServerApp()
server_app.main()(_deployed_main)
