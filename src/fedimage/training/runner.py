"""``train(store, config, out)``: one benchmark run from store to metrics, checkpoint and summary."""

from __future__ import annotations

import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from fedimage._version import __version__
from fedimage.errors import OptionError
from fedimage.extras import require
from fedimage.privacy.keys import StoreKey
from fedimage.store.opening import open_store
from fedimage.store.reader import FederatedStore
from fedimage.training.evaluation import evaluate, split_targets
from fedimage.training.metrics import prevalence_baseline
from fedimage.training.models import build_model
from fedimage.training.options import TrainOptions
from fedimage.training.outputs import (
    CHECKPOINT_FILE,
    load_checkpoint,
    plot_curves,
    prepare_output,
    read_metrics,
    write_summary,
)
from fedimage.training.privacy import PrivacyCalibration, calibrate, epsilon_spent
from fedimage.training.tracking import ValidationTracker
from fedimage.training.transforms import resize_to

torch = require("torch")

ENGINES = ("pfl", "flower")


def default_crop(store_image_size: int) -> int:
    """FLAIR's 224 of 256: 7/8 of the store's side."""
    return max(8, round(store_image_size * 7 / 8))


def _require_split(store: FederatedStore, split: str) -> None:
    if split not in store.splits or not store.users(split):
        raise OptionError(
            f"{store.path.name} has no users in a {split!r} split (splits: {', '.join(store.splits)}); "
            "training needs one"
        )


def _optional_split(store: FederatedStore, split: str) -> str | None:
    return split if split in store.splits and store.users(split) else None


def train(
    store_path: str | Path,
    config: TrainOptions,
    out: str | Path,
    *,
    engine: str = "pfl",
    overwrite: bool = False,
    log: Callable[[str], None] = print,
    key: StoreKey | None = None,
    progress: bool = False,
    partition: str | Path | None = None,
) -> dict[str, Any]:
    """Train on a store, validate every ``config.eval_every`` rounds, test the best round, return the summary.

    Writes ``metrics.jsonl``, ``checkpoint.pt`` (best round), ``summary.json`` and ``curves.png``
    under ``out``. ``key`` opens an encrypted store (Flower's simulated clients get a copy);
    ``partition`` trains on a partition overlay's clients (``fedimage repartition``).
    """
    if engine not in ENGINES:
        raise OptionError(f"unknown engine {engine!r}; available: {', '.join(ENGINES)}")
    _check_engine_options(engine, config)
    with open_store(store_path, key=key, partition=partition) as store:
        _require_split(store, "train")
        val_split, test_split = _optional_split(store, "val"), _optional_split(store, "test")
        if val_split is None and not config.no_validation:
            raise OptionError(
                f"{store.path.name} has no users in a 'val' split, so no round can be chosen as the best:"
                " convert it with a val ratio (`split` 0.8,0.1,0.1), or pass `no_validation` to keep"
                " the last round"
            )
        out = prepare_output(Path(out), overwrite)
        torch.manual_seed(config.seed)
        np.random.seed(config.seed)
        label_names = store.label_names_of(config.labels)
        crop = config.image_size or default_crop(store.image_size)
        if resize_to(crop) > store.image_size:
            log(
                f"warning: {crop} px crops resize the store's {store.image_size} px images up to "
                f"{resize_to(crop)} px (upsampling adds no detail; the default crop for this store is "
                f"{default_crop(store.image_size)} px)"
            )
        model = build_model(config.model, len(label_names), crop)
        population = len(store.users("train"))
        cohort = min(config.cohort_size, population)
        mode = "central" if config.central else f"federated ({engine})"
        log(
            f"{store.path.name}: {population} train users, {store.num_images('train')} images, "
            f"{len(label_names)} {config.labels} labels; {config.model} at {crop} px; {mode}"
        )
        if not config.central and cohort < config.cohort_size:
            log(f"cohort size {config.cohort_size} capped to the {population} train users")
        calibration = _calibrate(config, cohort, population, log)
        secure = _secure_aggregation(config, store, log) if engine == "pfl" else None
        checkpoint_info = {"model": config.model, "num_outputs": len(label_names), "crop": crop}
        tracker = ValidationTracker(
            out,
            store,
            val_split,
            config.labels,
            config.eval_batch_size,
            checkpoint_info,
            log,
            rounds=config.rounds,
            progress=progress,
        )
        start = time.perf_counter()
        try:
            rounds_done = _run_engine(engine, model, store, config, cohort, tracker, calibration, secure, log)
        finally:
            tracker.close()
        train_seconds = time.perf_counter() - start
        model.load_state_dict(load_checkpoint(out / CHECKPOINT_FILE)["state_dict"])
        test_metrics = baseline = None
        if test_split is not None:
            test_metrics = evaluate(model, store, test_split, config.labels, config.eval_batch_size)
            baseline = prevalence_baseline(
                split_targets(store, "train", config.labels), split_targets(store, test_split, config.labels)
            )
        val_baseline = None
        if val_split is not None:
            val_baseline = prevalence_baseline(
                split_targets(store, "train", config.labels), split_targets(store, val_split, config.labels)
            )
        privacy = _privacy_summary(calibration, rounds_done, log)
        summary = {
            "fedimage_version": __version__,
            "store": str(Path(store_path).resolve()),
            "partition": None if partition is None else str(Path(partition).resolve()),
            "engine": "central" if config.central else engine,
            "config": config.to_json(),
            "crop": crop,
            "train_users": population,
            "cohort_size": None if config.central else cohort,
            "label_names": label_names,
            "rounds_run": rounds_done,
            "best_round": tracker.best_round,
            "best_val_macro_ap": tracker.best_value if val_split is not None else None,
            "validation": val_split or "none: no val users (no_validation); the last round is kept",
            "test": test_metrics,
            "test_prevalence_baseline": baseline,
            "val_prevalence_baseline": val_baseline,
            "privacy": privacy,
            "secure_aggregation": secure.summary(train_seconds) if secure is not None else None,
            **tracker.extra,
            "wall_time_s": round(train_seconds, 3),
            "seconds_per_round": round(train_seconds / max(rounds_done, 1), 4),
            "torch": torch.__version__,
            "python": platform.python_version(),
        }
    write_summary(out, summary)
    records = [record for record in read_metrics(out) if "val" in record]
    if records:
        plot_curves(out, records, val_baseline, f"{config.model}, {mode}" + (" + DP" if config.dp else ""))
    if test_metrics is not None and baseline is not None:
        log(
            f"test (round {tracker.best_round}): macro AP {test_metrics['macro AP']:.4f} "
            f"(prevalence baseline {baseline['macro AP']:.4f}), micro AP {test_metrics['micro AP']:.4f} "
            f"(baseline {baseline['micro AP']:.4f})"
        )
    log(f"wrote {out}: metrics.jsonl, summary.json, curves.png, checkpoint.pt ({train_seconds:.1f} s)")
    return summary


def _run_engine(
    engine: str,
    model: Any,
    store: FederatedStore,
    config: TrainOptions,
    cohort: int,
    tracker: ValidationTracker,
    calibration: PrivacyCalibration | None,
    secure: Any,
    log: Callable[[str], None],
) -> int:
    """Train with the chosen engine (central, Flower or pfl-research); returns the rounds run."""
    if config.central:
        from fedimage.training.engines.central import run_central

        return run_central(model, store, config, tracker)
    if engine == "flower":
        from fedimage.training.engines.flower import run_flower

        return run_flower(model, store, config, cohort, tracker, calibration, log=log)
    from fedimage.training.engines.pfl import run_fedavg

    return run_fedavg(model, store, config, cohort, tracker, calibration, secure)


def _check_engine_options(engine: str, config: TrainOptions) -> None:
    """Options one engine cannot honour are refused before any work starts."""
    if config.central:
        return
    if engine == "pfl" and config.strategy != "fedadam":
        raise OptionError(
            f"`strategy` {config.strategy} needs `engine` flower; the pfl engine runs FLAIR's FedAvg with "
            "central Adam (`strategy` fedadam)"
        )
    if engine == "flower":
        from fedimage.training.engines.flower import check_options

        check_options(config)


def _secure_aggregation(config: TrainOptions, store: FederatedStore, log: Callable[[str], None]) -> Any:
    """The SecAgg+ postprocessor of a ``--secure-aggregation`` run (pfl engine), else None."""
    if config.secure_aggregation is None or config.central:
        return None
    from fedimage.training.secure_aggregation import SecureAggregation
    from fedimage.training.update_bounds import clip_range_for

    clip_range, origin = clip_range_for(config, max(store.users("train").values(), default=1))
    log(
        f"secure aggregation: SecAgg+ sums each round's updates, clipped to +-{clip_range:.4g} a coordinate "
        f"({origin}), {config.secure_aggregation.modulus_bits}-bit modulus"
        + (
            f", simulated dropout {config.secure_aggregation.dropout}"
            if config.secure_aggregation.dropout
            else ""
        )
    )
    return SecureAggregation(config.secure_aggregation, clip_range, config.seed)


def _calibrate(
    config: TrainOptions, cohort: int, population: int, log: Callable[[str], None]
) -> PrivacyCalibration | None:
    if config.dp is None:
        return None
    calibration = calibrate(
        config.dp.epsilon,
        config.dp.delta,
        rounds=config.rounds,
        cohort_size=cohort,
        population=population,
        noise_cohort_size=config.dp.noise_cohort,
    )
    log(
        f"DP: noise multiplier {calibration.noise_multiplier:.4f} for (epsilon {config.dp.epsilon}, delta "
        f"{config.dp.delta}), {config.rounds} rounds, {calibration.noise_cohort_size} of {population} users "
        f"a round (q = {calibration.sampling_probability:.4g}); noise added to the cohort sum: "
        f"{calibration.applied_noise_multiplier:.4f} x clip {config.dp.clip}"
        + (
            f", adaptive clipping to quantile {config.dp.adaptive_quantile}"
            if config.dp.adaptive_quantile
            else ""
        )
    )
    return calibration


def _privacy_summary(
    calibration: PrivacyCalibration | None, rounds_done: int, log: Callable[[str], None]
) -> dict[str, Any] | None:
    if calibration is None:
        return None
    spent = (
        calibration.epsilon
        if rounds_done == calibration.rounds
        else epsilon_spent(
            calibration.noise_multiplier, calibration.sampling_probability, rounds_done, calibration.delta
        )
    )
    log(f"DP: epsilon spent {spent:.4f} at delta {calibration.delta} after {rounds_done} rounds (PLD)")
    return {**calibration.to_json(), "rounds_run": rounds_done, "epsilon_spent": spent}
