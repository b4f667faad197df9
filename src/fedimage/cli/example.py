"""``fedimage example fashion-mnist -o DIR``: a worked example on real data, from an installed fedimage."""

from __future__ import annotations

import argparse
from pathlib import Path

from fedimage.analysis.report import heterogeneity_report
from fedimage.conversion import ConvertOptions, PlanOptions, convert
from fedimage.imaging import ImageOptions
from fedimage.partitioning import PartitionOptions
from fedimage.sources import ManifestColumns, open_source
from fedimage.sources.examples import DEBIAN_FASHION_MNIST, fashion_mnist_table

HELP = "prepare a worked example: Fashion-MNIST (Debian's dataset-fashion-mnist) as a federation"
ALPHAS = (0.1, 1.0, 100.0)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", choices=("fashion-mnist",), help="which example")
    parser.add_argument("-o", "--output", type=Path, required=True, help="folder to write into")
    parser.add_argument(
        "--source", type=Path, default=DEBIAN_FASHION_MNIST, help="folder of the IDX .gz files"
    )
    parser.add_argument(
        "--federate",
        action="store_true",
        help="also convert with Dirichlet label skew (alpha 0.1, 1, 100; 28 px gray, as the source) and"
        " write their report",
    )
    parser.add_argument("--num-clients", type=int, default=100, help="clients per federation")
    parser.add_argument("--min-per-client", type=int, default=20, help="images every client gets")
    parser.add_argument("--seed", type=int, default=0, help="seed of the partitions")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    """Run ``fedimage example``; returns the exit status."""
    table = args.output / "fashion_mnist.parquet"
    if not table.exists():
        rows = fashion_mnist_table(table, args.source)
        print(f"wrote {rows} images to {table}")
    if not args.federate:
        print(
            f"next: fedimage convert {table} -o {args.output}/fmnist.h5 --source-format hf --label-column"
            " label --size native --color gray --partition dirichlet --alpha 0.5 --num-clients 100"
        )
        return 0
    stores = []
    for alpha in ALPHAS:
        store = args.output / f"fmnist-dirichlet-{alpha:g}.h5"
        partition = PartitionOptions(
            "dirichlet", num_clients=args.num_clients, min_per_client=args.min_per_client, alpha=alpha
        )
        options = ConvertOptions(
            image=ImageOptions(size="native", color="gray"),  # 28 px, one channel
            plan=PlanOptions(seed=args.seed, partition=partition),
            overwrite=True,
            quiet=args.quiet,
        )
        with open_source(table, "hf", columns=ManifestColumns(labels="label")) as source:
            report = convert(source, store, options)
        print(f"wrote {store}: {report.written} images, alpha {alpha:g}")
        stores.append(store)
    files = heterogeneity_report(stores, args.output / "report")
    print(files.table)
    print(f"\nwrote {files.html}")
    return 0
