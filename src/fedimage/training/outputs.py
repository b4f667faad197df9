"""A run's files: ``metrics.jsonl``, ``summary.json``, ``curves.png`` and ``checkpoint.pt``."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from fedimage.errors import OptionError
from fedimage.extras import require

METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"
CURVES_FILE = "curves.png"
CHECKPOINT_FILE = "checkpoint.pt"
#: Written by a deployed ServerApp that failed: {"error": one line, "traceback": ...}.
FAILURE_FILE = "failure.json"
CURVE_METRICS = ("macro AP", "micro AP", "loss")


def prepare_output(out: Path, overwrite: bool) -> Path:
    """Create ``out``; refuse to mix a new run into an old one's files unless ``overwrite``."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OptionError(f"`output` {out} exists and is not a folder")
    existing = [name for name in (METRICS_FILE, SUMMARY_FILE) if (out / name).exists()]
    if existing and not overwrite:
        raise OptionError(
            f"{out} already holds a run ({', '.join(existing)}); use `overwrite` or another `output`"
        )
    out.mkdir(parents=True, exist_ok=True)
    (out / METRICS_FILE).write_text("")
    return out


def _finite(value: Any) -> Any:
    """JSON has no NaN/inf: write them as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value


def append_metrics(out: Path, record: dict[str, Any]) -> None:
    with (out / METRICS_FILE).open("a") as file:
        file.write(json.dumps(_finite(record)) + "\n")


def read_metrics(out: Path) -> list[dict[str, Any]]:
    lines = (Path(out) / METRICS_FILE).read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def write_summary(out: Path, summary: dict[str, Any]) -> None:
    (out / SUMMARY_FILE).write_text(json.dumps(_finite(summary), indent=2) + "\n")


def save_checkpoint(out: Path, model: Any, info: dict[str, Any]) -> None:
    """The model's ``state_dict`` and what rebuilds it (``info``: model name, outputs, crop, round)."""
    torch = require("torch")
    torch.save({**info, "state_dict": model.state_dict()}, out / CHECKPOINT_FILE)


def load_checkpoint(path: Path) -> dict[str, Any]:
    torch = require("torch")
    return torch.load(path, map_location="cpu", weights_only=True)


def plot_curves(
    out: Path, records: list[dict[str, Any]], baseline: dict[str, float] | None, title: str
) -> None:
    """Validation macro/micro AP and loss against rounds, with the prevalence baseline's AP dashed."""
    matplotlib = require("matplotlib")
    matplotlib.use("Agg")
    pyplot = require("matplotlib.pyplot")
    rounds = [record["round"] for record in records]
    figure, axes = pyplot.subplots(1, 2, figsize=(10, 4))
    for name in CURVE_METRICS[:2]:
        line = axes[0].plot(rounds, [record["val"].get(name) for record in records], marker="o", label=name)
        if baseline is not None:
            axes[0].axhline(
                baseline[name], linestyle="--", color=line[0].get_color(), label=f"{name}, prevalence"
            )
    axes[0].set_xlabel("round")
    axes[0].set_ylabel("validation AP")
    axes[0].legend(fontsize=8)
    axes[1].plot(rounds, [record["val"].get("loss") for record in records], marker="o")
    axes[1].set_xlabel("round")
    axes[1].set_ylabel("validation loss")
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(out / CURVES_FILE, dpi=100)
    pyplot.close(figure)
