"""Partitioning benchmark: fedimage's schemes against Flower Datasets and FedLab, same run.

Every (library, scheme) runs in a fresh interpreter that builds the same labels
(``--images`` labels of ``--classes`` classes, uniform, seeded), then times only the
partitioning and reports its peak memory (``VmHWM`` growth over the RSS just before the
call). Flower Datasets and FedLab run under ``--other-python``: a separate venv, because
flwr-datasets pins an older ``datasets`` and FedLab pulls a CUDA torch (FedLab's
``utils/dataset/functional.py`` needs only numpy and pandas, so it is loaded by file path and
installed with ``--no-deps``). Set that venv up with::

    python3 -m venv /tmp/partbench-venv
    /tmp/partbench-venv/bin/python -m pip install flwr-datasets
    /tmp/partbench-venv/bin/python -m pip install --no-deps fedlab

    .venv/bin/python bench/partition.py                      # 1,000,000 labels, 1,000 clients
    .venv/bin/python bench/partition.py --images 100000 --timeout 60

Flower's time is the first ``load_partition`` (it computes every partition's indices
then), with the labels already in a ``datasets.Dataset`` (building it is not timed).
A run that exceeds ``--timeout`` (FedLab's Dirichlet loop at small alpha) is reported as such.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

MIN_SIZE = 10
# name, scheme, parameter
CASES = [
    ("iid", "iid", None),
    ("quantity lognormal sigma=1", "quantity", 1.0),
    ("dirichlet alpha=100", "dirichlet", 100.0),
    ("dirichlet alpha=1", "dirichlet", 1.0),
    ("dirichlet alpha=0.1", "dirichlet", 0.1),
    ("dirichlet alpha=0.01", "dirichlet", 0.01),
    ("shards 2/client", "shards", 2),
    ("pathological 2 labels/client", "pathological", 2),
]
LIBRARIES = ("fedimage", "flwr-datasets", "fedlab")
FEDLAB_FUNCTIONAL = "fedlab/utils/dataset/functional.py"


def make_labels(images: int, classes: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, classes, images)


def lognormal_sizes(images: int, clients: int, sigma: float, seed: int) -> list[int]:
    """The same client sizes for every library's quantity run (min MIN_SIZE, rest lognormal)."""
    weights = np.random.default_rng(seed).lognormal(0.0, sigma, clients)
    exact = weights / weights.sum() * (images - clients * MIN_SIZE)
    sizes = np.floor(exact).astype(int)
    sizes[np.argsort(sizes - exact)[: images - clients * MIN_SIZE - sizes.sum()]] += 1
    return (sizes + MIN_SIZE).tolist()


def rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1])
    return 0


# -- one run, in a fresh interpreter -----------------------------------------------------------
def run_fedimage(labels: np.ndarray, scheme: str, parameter: float | None, clients: int, seed: int):
    from fedimage.partitioning import PartitionOptions, partition

    extra = {
        "dirichlet": {"alpha": parameter},
        "shards": {"shards_per_client": parameter},
        "pathological": {"classes_per_client": parameter},
        "quantity": {"size_sigma": parameter},
    }.get(scheme, {})
    options = PartitionOptions(scheme, num_clients=clients, min_per_client=MIN_SIZE, seed=seed, **extra)
    return lambda: np.bincount(partition(len(labels), options, labels), minlength=clients)


def run_flower(labels: np.ndarray, scheme: str, parameter: float | None, clients: int, seed: int):
    from datasets import Dataset
    from flwr_datasets import partitioner as fp

    if scheme == "iid":
        part = fp.IidPartitioner(num_partitions=clients)
    elif scheme == "quantity":
        part = fp.SizePartitioner(lognormal_sizes(len(labels), clients, parameter, seed))
    elif scheme == "dirichlet":
        part = fp.DirichletPartitioner(
            clients, "label", alpha=parameter, min_partition_size=MIN_SIZE, seed=seed
        )
    elif scheme == "shards":
        part = fp.ShardPartitioner(clients, "label", num_shards_per_partition=int(parameter), seed=seed)
    else:
        part = fp.PathologicalPartitioner(
            clients, "label", num_classes_per_partition=int(parameter), seed=seed
        )
    part.dataset = Dataset.from_dict({"label": labels})

    def call() -> np.ndarray:
        if scheme == "iid":  # shards the dataset lazily: load every partition
            return np.array([part.load_partition(i).num_rows for i in range(clients)])
        part.load_partition(0)  # determines every partition's indices
        indices = part._partition_id_to_indices  # sizes for the check only
        return np.array([len(indices.get(i, [])) for i in range(clients)])

    return call


def run_fedlab(labels: np.ndarray, scheme: str, parameter: float | None, clients: int, seed: int):
    import importlib.util
    import site

    path = next(
        Path(p) / FEDLAB_FUNCTIONAL for p in site.getsitepackages() if (Path(p) / FEDLAB_FUNCTIONAL).exists()
    )
    spec = importlib.util.spec_from_file_location("fedlab_functional", path)
    fl = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fl)
    np.random.seed(seed)  # FedLab draws from the global generator
    classes = int(labels.max()) + 1

    def call() -> np.ndarray:
        if scheme == "iid":
            parts = fl.homo_partition(fl.balance_split(clients, len(labels)), len(labels))
        elif scheme == "quantity":
            parts = fl.homo_partition(
                np.array(lognormal_sizes(len(labels), clients, parameter, seed)), len(labels)
            )
        elif scheme == "dirichlet":
            parts = fl.hetero_dir_partition(labels, clients, classes, parameter, min_require_size=MIN_SIZE)
        elif scheme == "shards":
            parts = fl.shards_partition(labels, clients, int(parameter) * clients)
        else:
            parts = fl.label_skew_quantity_based_partition(labels, clients, classes, int(parameter))
        return np.array([len(parts[i]) for i in range(clients)])

    return call


RUNNERS = {"fedimage": run_fedimage, "flwr-datasets": run_flower, "fedlab": run_fedlab}


def one_run(args: argparse.Namespace) -> None:
    library, case = args.run
    _, scheme, parameter = next(c for c in CASES if c[0] == case)
    labels = make_labels(args.images, args.classes, args.seed)
    call = RUNNERS[library](labels, scheme, parameter, args.clients, args.seed)
    before = rss_kib("VmRSS")
    start = time.perf_counter()
    sizes = call()
    seconds = time.perf_counter() - start
    peak = rss_kib("VmHWM")
    print(
        json.dumps(
            {
                "seconds": seconds,
                "peak_mb": max(peak - before, 0) / 1024,
                "total": int(sizes.sum()),
                "min": int(sizes.min()),
                "max": int(sizes.max()),
            }
        )
    )


# -- the driver ----------------------------------------------------------------------------------
def measure(python: str, library: str, case: str, args: argparse.Namespace) -> dict:
    command = [python, __file__, "--run", library, case, "--images", str(args.images)]
    command += ["--clients", str(args.clients), "--classes", str(args.classes), "--seed", str(args.seed)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timeout > {args.timeout:g} s"}
    if done.returncode != 0:
        return {"error": (done.stderr.strip().splitlines() or ["failed"])[-1][:80]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description="Partitioning: fedimage vs Flower Datasets vs FedLab")
    parser.add_argument("--images", type=int, default=1_000_000)
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=300)
    parser.add_argument("--other-python", default="/tmp/partbench-venv/bin/python")
    parser.add_argument("--cases", nargs="*", help="case names (default: all)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--run", nargs=2, metavar=("LIBRARY", "CASE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run:
        one_run(args)
        return 0
    other = args.other_python if Path(args.other_python).exists() else None
    print(f"{args.images:,} labels ({args.classes} classes), {args.clients:,} clients, min {MIN_SIZE}/client")
    header = ("case", "library", "seconds", "peak MB", "min", "max", "time vs fedimage")
    print("{:<30} {:<14} {:>9} {:>8} {:>6} {:>7} {:>17}".format(*header))
    results = []
    for case, _, _ in CASES:
        if args.cases and case not in args.cases:
            continue
        base = None
        for library in LIBRARIES:
            python = sys.executable if library == "fedimage" else other
            result = measure(python, library, case, args) if python else {"error": "no --other-python venv"}
            result.update(case=case, library=library)
            results.append(result)
            if "error" in result:
                print(f"{case:<30} {library:<14} {result['error']}")
                continue
            if library == "fedimage":
                base = result["seconds"]
            ratio = f"{result['seconds'] / base:.1f}x" if base else "-"
            check = "" if result["total"] == args.images else f"  (assigned {result['total']:,})"
            print(
                f"{case:<30} {library:<14} {result['seconds']:>9.3f} {result['peak_mb']:>8.1f} "
                f"{result['min']:>6} {result['max']:>7} {ratio:>17}{check}"
            )
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
