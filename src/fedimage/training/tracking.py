"""Periodic validation during training: one ``metrics.jsonl`` line per evaluation, best checkpoint kept."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tqdm import tqdm

from fedimage.store.reader import FederatedStore
from fedimage.training.evaluation import evaluate
from fedimage.training.outputs import append_metrics, save_checkpoint

SELECTION_METRIC = "macro AP"


class ValidationTracker:
    """Evaluates on ``val_split`` when asked, logs progress, saves the checkpoint of the best round.

    Without a validation split the latest evaluated round counts as the best one.
    """

    def __init__(
        self,
        out: Path,
        store: FederatedStore | None,
        val_split: str | None,
        labels: str,
        batch_size: int,
        checkpoint_info: dict[str, Any],
        log: Callable[[str], None],
        rounds: int | None = None,
        progress: bool = False,
    ):
        self.out = out
        self.store = store
        self.val_split = val_split
        self.labels = labels
        self.batch_size = batch_size
        self.checkpoint_info = checkpoint_info
        self.log = log
        self.start = time.perf_counter()
        self.best_round: int | None = None
        self.best_value = float("-inf")
        self.evaluations = 0
        self.rounds = rounds
        #: A per-round bar (seconds per round, ETA) on standard error, when ``progress`` is on.
        self.bar = tqdm(total=rounds, unit="round", desc="training", disable=not progress, leave=False)
        self._round_started = time.perf_counter()
        #: Engine facts for the run's ``summary.json`` (a federation's rounds, per-client evaluation).
        self.extra: dict[str, Any] = {}

    def round_done(self, round_number: int) -> None:
        """Called by the engines after every round: moves the bar; after round 1, projects the total."""
        seconds = time.perf_counter() - self._round_started
        self._round_started = time.perf_counter()
        self.bar.update(round_number - self.bar.n)
        if round_number == 1 and self.rounds and self.rounds > 1:
            projected = seconds * self.rounds
            self.log(
                f"round 1 took {seconds:.1f} s: {self.rounds} rounds will take about {_duration(projected)}"
                " (plus validations)"
            )

    def close(self) -> None:
        self.bar.close()

    def __call__(
        self,
        round_number: int,
        model: Any,
        train_metrics: dict[str, float] | None = None,
        *,
        val: dict[str, float] | None = None,
        clients: dict[str, Any] | None = None,
    ) -> None:
        """Log round ``round_number``: validate ``model`` (or take ``val``, pooled from clients), checkpoint.

        ``val`` are validation metrics computed elsewhere (a federation's val clients), used
        instead of evaluating on the store; ``clients`` summarizes the per-client figures.
        """
        elapsed = time.perf_counter() - self.start
        record: dict[str, Any] = {"round": round_number, "elapsed_s": round(elapsed, 3)}
        if val is None and self.val_split is not None:
            val = evaluate(model, self.store, self.val_split, self.labels, self.batch_size)
        val = val or {}
        if val:
            record["val"] = val
        if clients:
            record["val_clients"] = clients
        if train_metrics:
            record["train"] = train_metrics
        record["eval_s"] = round(time.perf_counter() - self.start - elapsed, 3)
        append_metrics(self.out, record)
        self.evaluations += 1
        value = val.get(SELECTION_METRIC, float("-inf")) if val else float("inf")
        if math.isnan(value):  # a NaN round is never the best one
            value = float("-inf")
        improved = self.best_round is None or value > self.best_value or not val
        if improved:
            self.best_round, self.best_value = round_number, value
            save_checkpoint(self.out, model, {**self.checkpoint_info, "round": round_number})
        shown = (
            f"val macro AP {val['macro AP']:.4f}  micro AP {val['micro AP']:.4f}  loss {val['loss']:.4f}"
            if val
            else "no val split"
        )
        if "top-1 accuracy" in val:
            shown += f"  top-1 {val['top-1 accuracy']:.4f}"
        self.log(f"round {round_number:>5}  {shown}  {elapsed:8.1f} s{'  *' if improved else ''}")


def _duration(seconds: float) -> str:
    """``42 s``, ``12.5 min`` or ``5.7 h``."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"
