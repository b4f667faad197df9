"""The ``fedimage`` command line: convert, inspect, verify, demo."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from fedimage._version import __version__
from fedimage.analysis.summary import format_summary, summarize
from fedimage.cli import train as train_cli
from fedimage.conversion.pipeline import ENGINES, ConvertOptions, ConvertReport, convert
from fedimage.conversion.plan import PlanOptions
from fedimage.conversion.splits import SplitRatios
from fedimage.errors import FedimageError, OptionError
from fedimage.exports import EXPORT_FORMATS, ExportOptions, export
from fedimage.imaging.standardize import DEFAULT_MAX_PIXELS, RESIZE_MODES, STORAGE_MODES, ImageOptions
from fedimage.labels import load_taxonomy
from fedimage.partitioning import SCHEMES, SIZE_DISTRIBUTIONS, SKEW_STRATEGIES, PartitionOptions
from fedimage.privacy.keys import StoreKey, add_key_options, key_from_options
from fedimage.privacy.pseudonyms import Pseudonymizer
from fedimage.records import reason_counts
from fedimage.sources import FOLDER_LAYOUTS, SOURCE_FORMATS, ManifestColumns, open_source
from fedimage.sources.sample import sample_manifest, sample_taxonomy
from fedimage.store.reader import FederatedStore
from fedimage.store.verify import verify_store
from fedimage.store.writer import check_output

EXIT_FAILED = 1
EXIT_USAGE = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fedimage",
        description="Turn image collections into federated-learning stores (FLAIR-compatible HDF5).",
    )
    parser.add_argument("--version", action="version", version=f"fedimage {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    conv = commands.add_parser("convert", help="convert an image collection into a store")
    conv.add_argument(
        "source",
        type=Path,
        help="folder tree, manifest (CSV/JSONL/JSON/Parquet), FLAIR folder, or Hugging Face dataset",
    )
    conv.add_argument("-o", "--output", type=Path, required=True, help="store file to write (.h5)")
    _add_convert_options(conv)

    demo = commands.add_parser("demo", help="convert the embedded Open Clip Art sample and summarize it")
    demo.add_argument("-o", "--output", type=Path, default=Path("out/sample.h5"))
    demo.add_argument("--storage", choices=STORAGE_MODES, default="jpeg")
    demo.add_argument("--workers", type=int, default=None)
    demo.add_argument("--quiet", action="store_true")

    insp = commands.add_parser("inspect", help="summarize a store")
    insp.add_argument("store", type=Path)
    insp.add_argument("--json", action="store_true", help="print the summary as JSON")
    add_key_options(insp)

    ver = commands.add_parser("verify", help="re-check a store's structure and checksums")
    ver.add_argument("store", type=Path)
    ver.add_argument("--decode", action="store_true", help="also decode every stored JPEG")
    add_key_options(ver)

    key = commands.add_parser(
        "keygen", help="write a new 256-bit key file for pseudonyms or encryption (mode 0600)"
    )
    key.add_argument("path", type=Path, help="key file to create (never overwritten)")
    key.add_argument("--raw", action="store_true", help="32 raw bytes instead of 64 hex digits")

    rep = commands.add_parser("report", help="heterogeneity report of stores: stats.json, PNGs, report.html")
    rep.add_argument("stores", type=Path, nargs="+", help="one or more stores, shown side by side")
    rep.add_argument("-o", "--output", type=Path, required=True, help="folder to write into")
    rep.add_argument("--split", action="append", dest="splits", help="only this split (repeatable)")
    rep.add_argument("--labels", choices=("coarse", "fine"), default="coarse", help="label vocabulary")
    rep.add_argument("--top-clients", type=int, default=30, help="clients in the heatmap (default 30)")

    exp = commands.add_parser("export", help="export a store (ml-flair HDF5/TFRecords, folders, Parquet)")
    exp.add_argument("store", type=Path)
    exp.add_argument("--to", required=True, choices=EXPORT_FORMATS, help="format to write")
    exp.add_argument("destination", type=Path, help="file (flair-central) or folder to create")
    exp.add_argument("--quality", type=int, default=95, help="JPEG quality for raw stores (default 95)")
    exp.add_argument("--overwrite", action="store_true", help="replace an existing destination")
    exp.add_argument("--quiet", action="store_true", help="no progress bar")
    add_key_options(exp)
    train_cli.add_parser(commands)
    return parser


def _store_key(args: argparse.Namespace) -> StoreKey | None:
    return key_from_options(args.key, args.passphrase_env)


def _add_convert_options(parser: argparse.ArgumentParser) -> None:
    src = parser.add_argument_group("source")
    src.add_argument("--source-format", choices=SOURCE_FORMATS, help="default: detected")
    src.add_argument(
        "--allow-download",
        action="store_true",
        help="with --source-format hf: fetch a Hub dataset that is not in the local cache",
    )
    src.add_argument("--layout", choices=FOLDER_LAYOUTS, help="folder tree layout")
    src.add_argument("--image-column")
    src.add_argument("--user-column")
    src.add_argument("--label-column")
    src.add_argument("--fine-label-column")
    src.add_argument("--partition-column")
    src.add_argument("--image-id-column")
    src.add_argument("--label-delimiter", default="|", help="separator of labels joined in one cell")
    src.add_argument("--taxonomy", type=Path, help="fine -> coarse label pairs (text) or JSON object")

    img = parser.add_argument_group("images")
    img.add_argument("--size", type=int, default=256, help="side of the square images (default 256)")
    img.add_argument("--resize", choices=RESIZE_MODES, default="crop")
    img.add_argument("--storage", choices=STORAGE_MODES, default="jpeg")
    img.add_argument("--quality", type=int, default=90, help="JPEG quality (default 90)")
    img.add_argument(
        "--max-pixels",
        type=int,
        default=DEFAULT_MAX_PIXELS,
        help="reject larger images as decompression bombs",
    )

    fed = parser.add_argument_group("users and splits")
    fed.add_argument("--split", default="0.8,0.1,0.1", help="train,val,test user ratios")
    fed.add_argument("--seed", type=int, default=0)
    fed.add_argument("--max-images-per-user", type=int)
    fed.add_argument("--num-clients", type=int, default=10, help="clients to deal images into (default 10)")
    fed.add_argument(
        "--partition",
        choices=("natural", *SCHEMES),
        help="natural: the source's users (default when it has some, else iid); the other schemes "
        "deal images into --num-clients clients",
    )
    fed.add_argument("--alpha", type=float, default=0.5, help="dirichlet: label concentration (default 0.5)")
    fed.add_argument(
        "--shards-per-client", type=int, default=2, help="shards: label-sorted shards per client"
    )
    fed.add_argument("--classes-per-client", type=int, default=2, help="pathological: labels per client")
    fed.add_argument("--size-distribution", choices=SIZE_DISTRIBUTIONS, default="lognormal", help="quantity")
    fed.add_argument("--size-sigma", type=float, default=1.0, help="quantity, lognormal: sigma (default 1)")
    fed.add_argument("--size-exponent", type=float, default=1.5, help="quantity, powerlaw: Pareto shape")
    fed.add_argument("--min-per-client", type=int, default=1, help="images every client gets at least")
    fed.add_argument(
        "--skew-label",
        choices=SKEW_STRATEGIES,
        default="rarest",
        help="which label of a multi-label image label-skew schemes follow (default: its rarest)",
    )
    fed.add_argument("--group-size", type=int, help="merge the source's users into groups of this many")

    private = parser.add_argument_group("privacy")
    private.add_argument(
        "--pseudonymize-key",
        type=Path,
        metavar="KEYFILE",
        help="replace user ids by keyed HMAC-SHA256 pseudonyms (key from `fedimage keygen`)",
    )
    private.add_argument(
        "--pseudonymize-image-ids",
        action="store_true",
        help="with --pseudonymize-key: image ids too (they default to source paths, which may name users)",
    )

    sealed = parser.add_argument_group("encryption at rest (AES-256-GCM per user; needs the privacy extra)")
    sealed.add_argument(
        "--encrypt-key", type=Path, metavar="KEYFILE", help="encrypt the store under this key file (keygen)"
    )
    sealed.add_argument(
        "--encrypt-passphrase-env",
        metavar="VARIABLE",
        help="encrypt the store under the passphrase in this environment variable (scrypt)",
    )

    run = parser.add_argument_group("run")
    run.add_argument("--workers", type=int, help="processes (default: all cores)")
    run.add_argument("--overwrite", action="store_true", help="replace an existing output")
    run.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted conversion from the shards it finished (same inputs and options)",
    )
    run.add_argument(
        "--engine",
        choices=ENGINES,
        default="local",
        help="local: worker processes here; ray: shards as Ray tasks, linked from the output",
    )
    run.add_argument("--ray-address", help="with --engine ray: the cluster to join (default: start one here)")
    run.add_argument("--strict", action="store_true", help="exit non-zero when any input is rejected")
    run.add_argument("--quiet", action="store_true", help="no progress bar")


def _convert_command(args: argparse.Namespace) -> int:
    if not args.resume:
        check_output(args.output, args.overwrite)
    pseudonyms = _pseudonymizer(args)  # a bad key file is reported before the source is read
    taxonomy = load_taxonomy(args.taxonomy) if args.taxonomy else None
    columns = ManifestColumns(
        image=args.image_column,
        user=args.user_column,
        labels=args.label_column,
        fine_labels=args.fine_label_column,
        partition=args.partition_column,
        image_id=args.image_id_column,
    )
    source = open_source(
        args.source,
        args.source_format,
        layout=args.layout,
        columns=columns,
        label_delimiter=args.label_delimiter,
        taxonomy=taxonomy,
        allow_download=args.allow_download,
    )
    if taxonomy is None and source.default_taxonomy is not None:
        taxonomy = load_taxonomy(source.default_taxonomy)
    options = ConvertOptions(
        image=ImageOptions(
            size=args.size,
            resize=args.resize,
            storage=args.storage,
            quality=args.quality,
            max_pixels=args.max_pixels,
        ),
        plan=PlanOptions(
            split=SplitRatios.parse(args.split),
            seed=args.seed,
            max_images_per_user=args.max_images_per_user,
            num_clients=args.num_clients,
            partition=_partition_options(args, source.has_users),
            skew_label=args.skew_label,
            group_size=args.group_size,
        ),
        workers=args.workers,
        overwrite=args.overwrite,
        quiet=args.quiet,
        resume=args.resume,
        engine=args.engine,
        ray_address=args.ray_address,
        pseudonyms=pseudonyms,
        pseudonymize_image_ids=args.pseudonymize_image_ids,
        encrypt_key=key_from_options(args.encrypt_key, args.encrypt_passphrase_env),
    )
    if options.pseudonyms is not None and not options.pseudonymize_image_ids:
        print(
            "warning: image ids are kept as given (by default the source file path, which may name the"
            " user); add --pseudonymize-image-ids to replace them too",
            file=sys.stderr,
        )
    if not args.quiet:
        print(f"reading {source.describe()}", file=sys.stderr)
    with source:
        report = convert(source, args.output, options, taxonomy=taxonomy)
    print(_report_text(report))
    if report.written == 0:
        print("error: no image was converted", file=sys.stderr)
        return EXIT_FAILED
    if args.strict and report.rejected:
        print(f"error: {report.rejected} inputs rejected (--strict)", file=sys.stderr)
        return EXIT_FAILED
    return 0


def _pseudonymizer(args: argparse.Namespace) -> Pseudonymizer | None:
    if args.pseudonymize_key is None:
        if args.pseudonymize_image_ids:
            raise OptionError("--pseudonymize-image-ids needs --pseudonymize-key KEYFILE")
        return None
    return Pseudonymizer.from_file(args.pseudonymize_key)


def _partition_options(args: argparse.Namespace, has_users: bool) -> PartitionOptions | None:
    """The partition scheme asked for, or None for the source's own users (IID if it has none)."""
    if args.partition in (None, "natural"):
        if args.partition == "natural" and not has_users:
            schemes = "|".join(SCHEMES)
            raise OptionError(
                f"--partition natural: this source has no user ids; choose --partition {schemes}"
            )
        return None
    return PartitionOptions(
        args.partition,
        num_clients=args.num_clients,
        min_per_client=args.min_per_client,
        seed=args.seed,
        alpha=args.alpha,
        shards_per_client=args.shards_per_client,
        classes_per_client=args.classes_per_client,
        size_distribution=args.size_distribution,
        size_sigma=args.size_sigma,
        size_exponent=args.size_exponent,
    )


def _report_text(report: ConvertReport) -> str:
    splits = ", ".join(
        f"{name} {info['users']} users / {info['images']} images" for name, info in report.splits.items()
    )
    lines = [
        f"wrote {report.output}: {splits or 'nothing'}",
        f"inputs {report.inputs} = written {report.written} + rejected {report.rejected}"
        f" ({report.seconds:.1f} s, {report.written / max(report.seconds, 1e-9):.0f} images/s)",
    ]
    if report.shards_reused:
        lines.append(f"resumed: {report.shards_reused} shards of the interrupted run reused")
    if report.rejected:
        lines.append(f"rejects report: {report.rejects_path}")
        for reason, count in reason_counts(report.rejects).most_common(8):
            lines.append(f"  {count:>6}  {reason}")
    return "\n".join(lines)


def _demo_command(args: argparse.Namespace) -> int:
    args.output.parent.mkdir(parents=True, exist_ok=True)
    argv = [
        "convert",
        str(sample_manifest()),
        "-o",
        str(args.output),
        "--taxonomy",
        str(sample_taxonomy()),
        "--storage",
        args.storage,
        "--overwrite",
    ]
    if args.workers:
        argv += ["--workers", str(args.workers)]
    if args.quiet:
        argv.append("--quiet")
    status = main(argv)
    if status == 0:
        print()
        with FederatedStore(args.output) as store:
            print(format_summary(summarize(store)))
    return status


def _inspect_command(args: argparse.Namespace) -> int:
    with FederatedStore(args.store, key=_store_key(args)) as store:
        summary = summarize(store)
    print(json.dumps(summary, indent=2) if args.json else format_summary(summary))
    return 0


def _verify_command(args: argparse.Namespace) -> int:
    report = verify_store(args.store, decode=args.decode, key=_store_key(args))
    for problem in report.problems:
        print(f"BAD {problem}")
    status = "OK" if report.ok else f"FAILED ({len(report.problems)} problems)"
    print(
        f"{status}: {report.path}: {report.users_checked} user groups, {report.images_checked} images checked"
    )
    return 0 if report.ok else EXIT_FAILED


def _keygen_command(args: argparse.Namespace) -> int:
    from fedimage.privacy.pseudonyms import generate_key_file

    path = generate_key_file(args.path, raw=args.raw)
    print(f"wrote a 256-bit key to {path} (mode 0600); keep it secret, no copy is kept")
    return 0


def _report_command(args: argparse.Namespace) -> int:
    from fedimage.analysis.report import write_report  # matplotlib (the `report` extra) only when asked for

    files = write_report(args.stores, args.output, args.splits, args.labels, args.top_clients)
    print(f"wrote {files.html} ({len(files.plots)} plots, statistics in {files.stats})")
    return 0


def _export_command(args: argparse.Namespace) -> int:
    options = ExportOptions(overwrite=args.overwrite, quiet=args.quiet, quality=args.quality)
    with FederatedStore(args.store, key=_store_key(args)) as store:
        print(export(store, args.to, args.destination, options).summary())
    return 0


COMMANDS = {
    "convert": _convert_command,
    "demo": _demo_command,
    "inspect": _inspect_command,
    "verify": _verify_command,
    "keygen": _keygen_command,
    "report": _report_command,
    "export": _export_command,
    "train": train_cli.run,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``fedimage`` command; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except FedimageError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        resume = " (rerun with --resume to keep the shards already written)"
        print(f"interrupted{resume if args.command == 'convert' else ''}", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `fedimage inspect store.h5 | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
