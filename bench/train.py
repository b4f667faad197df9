"""Federated training throughput: fedimage's pfl path against pfl-research's own FLAIR HDF5 loading.

Usage::

    git -C /work/.mirror/apple+pfl-research/repo archive HEAD benchmarks | tar -x -C /tmp/pfl-research
    .venv/bin/python bench/train.py --pfl-research /tmp/pfl-research       # cnn and resnet18gn at 56 px
    .venv/bin/python bench/train.py --quick --json train.json              # smoke run

One FLAIR-shaped set (``_flair_shaped.py``: FLAIR's images-per-user tail and labels, real-photo
256x256 JPEGs) is converted once to a raw and a jpeg store (cached under ``--workdir``). For
each model, the same FedAvg rounds run on pfl's simulator (``SimulatedBackend`` +
``FederatedAveraging``, FLAIR's local settings: 2 epochs, batch 16, SGD lr 0.01, clip 10,
central Adam) with three ways of building each sampled user's dataset:

* ``pfl-research (raw)``: the per-user function of pfl-research's
  ``benchmarks/dataset/flair/numpy.make_federated_dataset`` (reopens the HDF5 file for
  every user, reads its whole ``images`` and the ``labels_row/col`` pairs); it reads raw
  stores only, so it is the baseline for both modes;
* ``fedimage raw`` / ``fedimage jpeg``: :class:`fedimage.loaders.pfl.StoreFederatedDataset`
  over one open store (``load_user``: one read per user, JPEG decoded with simplejpeg).

All three draw the same users (fedimage's seeded cohort sampler) and the model starts from
the same seeded weights, so local training does the same work; the user-dataset construction
and the local training are timed separately (wrappers around pfl's ``make_dataset_fn`` and
``PyTorchModel.do_multiple_epochs_of``). The first round is a warm-up and is not counted.
Ratios are within one run; on a shared 2-core machine absolute figures are noisy.
pfl-research's code is imported from ``--pfl-research`` (a checkout outside the project).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("TQDM_DISABLE", "1")  # pfl-research's user index prints a progress bar

import _flair_shaped  # bench/ helper module, not part of the package
import numpy as np

import fedimage

LOADERS = ("pfl-research (raw)", "fedimage raw", "fedimage jpeg")
MODELS = {"cnn": 56, "resnet18gn": 56}


@dataclass
class Timer:
    """Seconds and calls accumulated by :func:`timed` wrappers."""

    seconds: float = 0.0
    calls: int = 0
    laps: list[float] = field(default_factory=list)

    def wrap(self, function: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - start
                self.calls += 1

        return timed


def ensure_stores(workdir: Path, images: int, seed: int) -> dict[str, Path]:
    """The FLAIR-shaped set converted to a raw and a jpeg store (cached)."""
    flair_set = _flair_shaped.ensure_flair_set(workdir, "flair256", images, seed, jobs=2)
    stores = {}
    for storage in ("raw", "jpeg"):
        path = workdir / f"train-{flair_set.root.name}-{storage}.h5"
        if not path.is_file():
            command = [sys.executable, "-m", "fedimage", "convert", str(flair_set.root), "-o",
                       str(path), "--source-format", "flair", "--storage", storage, "--workers", "1",
                       "--quiet"]  # fmt: skip
            subprocess.run(command, check=True)
        stores[storage] = path
    return stores


def pfl_research_loader(root: Path, store: Path, max_images: int) -> Callable[[str], Any]:
    """pfl-research's own per-user dataset function for ``store``'s train split."""
    sys.path.insert(0, str(root / "benchmarks"))
    from dataset.flair.numpy import make_federated_dataset  # pfl-research's benchmark code
    from pfl.internal.ops.pytorch_ops import to_tensor

    dataset = make_federated_dataset(
        str(store), "train", False, max_images, 0.0, lambda array: to_tensor(array, dtype=None)
    )
    return dataset.make_dataset_fn


def run_rounds(
    loader: str, stores: dict[str, Path], model_name: str, crop: int, args: argparse.Namespace
) -> dict[str, Any]:
    """``args.rounds`` + 1 FedAvg rounds with one loader; timings of all but the first round."""
    import torch
    from pfl.aggregate.simulate import SimulatedBackend
    from pfl.algorithm import FederatedAveraging, NNAlgorithmParams
    from pfl.callback.base import TrainingProcessCallback
    from pfl.data import FederatedDataset
    from pfl.hyperparam import NNTrainHyperParams
    from pfl.metrics import Metrics
    from pfl.model.pytorch import PyTorchModel

    from fedimage.loaders.pfl import CohortSampler, FixedDenominator, StoreFederatedDataset
    from fedimage.training.models import build_model

    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    storage = "raw" if "raw" in loader else "jpeg"
    store = fedimage.open(stores[storage])
    users = store.users("train")
    model = build_model(model_name, len(store.label_names), crop)
    ours = StoreFederatedDataset(
        store, "train", cohort_size=args.cohort, max_images_per_user=args.max_images, seed=args.seed
    )
    if loader.startswith("pfl-research"):
        make = pfl_research_loader(args.pfl_research, stores["raw"], args.max_images)
        dataset = FederatedDataset(make, CohortSampler(sorted(users), args.cohort, args.seed))
    else:
        dataset = ours
    loading, local = Timer(), Timer()
    dataset.make_dataset_fn = loading.wrap(dataset.make_dataset_fn)
    server = torch.optim.Adam(model.parameters(), lr=0.1, eps=0.01, betas=(0.9, 0.99))
    pfl_model = PyTorchModel(model=model, local_optimizer_create=torch.optim.SGD, central_optimizer=server)
    pfl_model.do_multiple_epochs_of = local.wrap(pfl_model.do_multiple_epochs_of)
    backend = SimulatedBackend(
        training_data=dataset, val_data=None, postprocessors=[FixedDenominator(args.cohort)]
    )
    marks: list[tuple[float, float, float]] = []

    class Stopwatch(TrainingProcessCallback):
        def on_train_begin(self, *, model: Any) -> Any:
            marks.append((time.perf_counter(), loading.seconds, local.seconds))
            return Metrics()

        def after_central_iteration(
            self, aggregate_metrics: Any, model: Any, *, central_iteration: int
        ) -> Any:
            marks.append((time.perf_counter(), loading.seconds, local.seconds))
            return False, Metrics()

    FederatedAveraging().run(
        algorithm_params=NNAlgorithmParams(
            central_num_iterations=args.rounds + 1,
            evaluation_frequency=args.rounds + 10,
            train_cohort_size=args.cohort,
            val_cohort_size=None,
        ),
        backend=backend,
        model=pfl_model,
        model_train_params=NNTrainHyperParams(
            local_learning_rate=0.01, local_num_epochs=2, local_batch_size=16, local_max_grad_norm=10.0
        ),
        callbacks=[Stopwatch()],
        send_metrics_to_platform=False,
    )
    store.close()
    (start, load0, local0), (end, load1, local1) = marks[1], marks[-1]
    rounds = len(marks) - 2
    seconds = end - start
    updates = rounds * args.cohort
    return {
        "loader": loader,
        "model": model_name,
        "crop": crop,
        "rounds": rounds,
        "cohort": args.cohort,
        "seconds_per_round": seconds / rounds,
        "updates_per_second": updates / seconds,
        "loading_seconds_per_round": (load1 - load0) / rounds,
        "local_training_seconds_per_round": (local1 - local0) / rounds,
        "loading_share": (load1 - load0) / seconds,
        "round_seconds": [b[0] - a[0] for a, b in itertools.pairwise(marks[1:])],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pfl-research", type=Path, default=Path("/tmp/pfl-research"),
                        help="pfl-research checkout (its benchmarks/ folder is imported)")  # fmt: skip
    parser.add_argument("--images", type=int, default=5_000, help="FLAIR-shaped images (~600 users)")
    parser.add_argument("--models", default="cnn,resnet18gn", help=f"comma-separated: {', '.join(MODELS)}")
    parser.add_argument("--crop", type=int, default=56, help="crop side (images resized to 8/7 of it)")
    parser.add_argument("--cohort", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds after one warm-up round")
    parser.add_argument("--max-images", type=int, default=512, help="images per user (FLAIR: 512)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/fedimage-bench"))
    parser.add_argument("--quick", action="store_true", help="cnn only, cohort 5, 2 rounds")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    args = parser.parse_args(argv)
    if not (args.pfl_research / "benchmarks" / "dataset" / "flair" / "numpy.py").is_file():
        parser.error(f"no pfl-research checkout at {args.pfl_research} (see the usage in --help)")
    models = [name.strip() for name in args.models.split(",") if name.strip()]
    if unknown := set(models) - set(MODELS):
        parser.error(f"unknown model(s) {', '.join(sorted(unknown))}; choose from {', '.join(MODELS)}")
    if args.quick:
        models, args.cohort, args.rounds = ["cnn"], 5, 2
    stores = ensure_stores(args.workdir, args.images, args.seed)
    for path in stores.values():
        path.read_bytes()  # warm page cache: every loader reads from memory
    with fedimage.open(stores["raw"]) as store:
        sizes = np.array(list(store.users("train").values()))
    print(
        f"FLAIR-shaped store: {len(sizes)} train users, images/user median {np.median(sizes):.0f} "
        f"mean {sizes.mean():.1f} max {sizes.max()} (capped at {args.max_images}); cohort {args.cohort}, "
        f"{args.rounds} timed rounds after 1 warm-up, crop {args.crop}"
    )
    results = []
    for model in models:
        for loader in LOADERS:
            print(f"  {model} / {loader} ...", end="", flush=True, file=sys.stderr)
            result = run_rounds(loader, stores, model, args.crop, args)
            print(f" {result['seconds_per_round']:.2f} s/round", file=sys.stderr)
            results.append(result)
    header = (
        f"{'model':<11}{'loader':<20}{'s/round':>9}{'updates/s':>11}{'vs pfl-r':>10}"
        f"{'load s/round':>14}{'train s/round':>15}{'load share':>12}{'load vs pfl-r':>15}"
    )
    print(header)
    print("-" * len(header))
    for result in results:
        base = next(r for r in results if r["model"] == result["model"] and r["loader"] == LOADERS[0])
        speed = result["updates_per_second"] / base["updates_per_second"]
        load = base["loading_seconds_per_round"] / max(result["loading_seconds_per_round"], 1e-12)
        print(
            f"{result['model']:<11}{result['loader']:<20}{result['seconds_per_round']:>9.2f}"
            f"{result['updates_per_second']:>11.2f}{speed:>9.2f}x{result['loading_seconds_per_round']:>14.3f}"
            f"{result['local_training_seconds_per_round']:>15.2f}{result['loading_share'] * 100:>11.1f}%"
            f"{load:>14.2f}x"
        )
    if args.json:
        settings = {key: str(value) for key, value in vars(args).items()}
        args.json.write_text(json.dumps({"args": settings, "results": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
