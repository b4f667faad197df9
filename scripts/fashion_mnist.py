"""Fashion-MNIST (Debian's ``dataset-fashion-mnist``) as a Hugging Face-style Parquet table, then federated.

Kept for old instructions: it runs ``fedimage example fashion-mnist`` (see
:mod:`fedimage.sources.examples`), which an installed fedimage offers too:

    apt-get install dataset-fashion-mnist
    fedimage example fashion-mnist -o out/fashion-mnist --federate
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fedimage.cli import main as fedimage_main
from fedimage.sources.examples import DEBIAN_FASHION_MNIST


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--source", type=Path, default=DEBIAN_FASHION_MNIST, help="folder of the IDX .gz files"
    )
    parser.add_argument("--out", type=Path, default=Path("out/fashion-mnist"))
    parser.add_argument("--federate", action="store_true", help="also convert (Dirichlet alphas), report")
    parser.add_argument("--num-clients", type=int, default=100)
    parser.add_argument("--min-per-client", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    argv = ["example", "fashion-mnist", "-o", str(args.out), "--source", str(args.source)]
    argv += ["--num-clients", str(args.num_clients), "--min-per-client", str(args.min_per_client)]
    argv += ["--seed", str(args.seed)] + (["--federate"] if args.federate else [])
    return fedimage_main(argv)


if __name__ == "__main__":
    sys.exit(main())
