"""``fedimage convert SOURCE -o STORE``: a thin wrapper over :func:`fedimage.convert`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fedimage.cli.flags import add_scheme_options, as_flags, default, key_from_options, scheme_options
from fedimage.conversion import ConvertOptions, ConvertReport, PlanOptions, SplitRatios, convert
from fedimage.conversion.executors import EXECUTORS
from fedimage.conversion.metadata import MetadataOptions
from fedimage.conversion.pipeline import stated_image_options
from fedimage.conversion.splits import SPLIT_LEVELS, STRATIFY_LEVELS
from fedimage.errors import OptionError
from fedimage.imaging.exif import EXIF_FIELDS
from fedimage.imaging.standardize import (
    BIT_DEPTHS,
    COLOR_MODES,
    DICOM_FRAMES,
    NATIVE_SIZE,
    RESIZE_MODES,
    STORAGE_MODES,
    ImageOptions,
)
from fedimage.labels import load_taxonomy
from fedimage.partitioning import SCHEMES, SKEW_STRATEGIES, PartitionOptions
from fedimage.privacy.pseudonyms import Pseudonymizer
from fedimage.records import reason_counts
from fedimage.sources import FOLDER_LAYOUTS, SOURCE_FORMATS, ManifestColumns, open_source
from fedimage.store.writer import check_output

HELP = "convert an image collection into a store"
EXIT_FAILED = 1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``convert`` options (defaults from the library's option classes)."""
    parser.add_argument(
        "source",
        type=Path,
        help="folder tree, manifest (CSV/JSONL/JSON/Parquet), FLAIR folder, or Hugging Face dataset",
    )
    parser.add_argument("-o", "--output", type=Path, required=True, help="store file to write (.h5)")
    add_source_and_store_options(parser)


def add_source_and_store_options(parser: argparse.ArgumentParser) -> None:
    """Every option of ``convert`` but the source and output (``demo`` shares the image ones)."""
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
    src.add_argument(
        "--split-column",
        "--partition-column",
        dest="split_column",
        help="column naming each row's split (default: 'partition' when present); none: ignore it",
    )
    src.add_argument("--image-id-column")
    src.add_argument("--label-delimiter", default="|", help="separator of labels joined in one cell")
    src.add_argument("--taxonomy", type=Path, help="fine -> coarse label pairs (text) or JSON object")

    dicom = parser.add_argument_group("DICOM (needs the dicom extra)")
    dicom.add_argument(
        "--user-tag", default="PatientID", help="DICOM folder: the tag whose value is the user"
    )
    dicom.add_argument(
        "--label-tag", metavar="KEYWORD", help="DICOM folder: the tag whose values are the labels"
    )
    dicom.add_argument(
        "--label-table",
        type=Path,
        metavar="CSV",
        help="DICOM folder: labels per file from a CSV keyed by path (relative to the folder) or"
        " SOPInstanceUID",
    )
    dicom.add_argument(
        "--dicom-frames",
        choices=DICOM_FRAMES,
        default=default(ImageOptions, "dicom_frames"),
        help="the frame of a multi-frame file that becomes the image (all: one image per frame, id file#N)",
    )
    dicom.add_argument(
        "--dicom-window",
        type=_window,
        metavar="CENTER,WIDTH",
        help="display window overriding the files' (default: the file's first window, else min-max)",
    )
    dicom.add_argument(
        "--allow-burned-in",
        action="store_true",
        help="keep images whose header flags burned-in annotation (text that may identify the patient)",
    )
    dicom.add_argument(
        "--allow-identifiers",
        action="store_true",
        help="convert patient ids, paths and identifying tags without --pseudonymize-key"
        " (de-identified data only)",
    )

    img = parser.add_argument_group("images")
    img.add_argument(
        "--size",
        type=_size,
        help=f"side of the square images, or native: the source's most common size, unscaled (default:"
        f" the size a fedimage export states, else {default(ImageOptions, 'size')})",
    )
    img.add_argument(
        "--color",
        choices=COLOR_MODES,
        help="rgb: 3 channels (FLAIR's); gray: 1 channel, a third of the bytes, read by every reader and"
        f" export (default: the colour a fedimage export states, else {default(ImageOptions, 'color')})",
    )
    img.add_argument("--resize", choices=RESIZE_MODES, default=default(ImageOptions, "resize"))
    img.add_argument(
        "--storage",
        choices=STORAGE_MODES,
        help="jpeg (small), raw (FLAIR's uint8 pixels) or lossless (PNG per image) (default: lossless for"
        f" a fedimage export of a lossless store, else {default(ImageOptions, 'storage')})",
    )
    img.add_argument(
        "--bit-depth",
        type=int,
        choices=BIT_DEPTHS,
        help="16: lossless gray images with their 16-bit values (DICOM's stored values); needs"
        " --storage lossless --color gray (default: the bit depth a fedimage export of a lossless store"
        f" states, else {default(ImageOptions, 'bit_depth')})",
    )
    img.add_argument("--quality", type=int, default=default(ImageOptions, "quality"), help="JPEG quality")
    img.add_argument(
        "--max-pixels",
        type=int,
        default=default(ImageOptions, "max_pixels"),
        help="reject larger images as decompression bombs",
    )

    fed = parser.add_argument_group("users and splits")
    fed.add_argument(
        "--split",
        help="train,val,test ratios of users (of each user's images with --split-level image)"
        " (default: 0.8,0.1,0.1), for users the source gives no split",
    )
    fed.add_argument("--seed", type=int, default=default(PlanOptions, "seed"))
    fed.add_argument(
        "--split-level",
        choices=SPLIT_LEVELS,
        default=default(PlanOptions, "split_level"),
        help="user: each user goes whole to one split (FLAIR's way); image: each user's images are split"
        " by --split, so every user holds train, val and test images",
    )
    fed.add_argument(
        "--stratify",
        choices=("none", *STRATIFY_LEVELS),
        default=default(PlanOptions, "stratify") or "none",
        help="split whole users so that each split's coarse labels (labels) or fine labels (fine-labels)"
        " and image count follow the whole; none: users split at random",
    )
    fed.add_argument(
        "--min-images-per-user",
        type=int,
        help="drop users (clients) with fewer images, counted before --max-images-per-user (default: none)",
    )
    fed.add_argument(
        "--max-users",
        type=int,
        help="keep a seeded sample of this many users (clients), after --min-images-per-user (default: all)",
    )
    fed.add_argument(
        "--max-images-per-user",
        type=int,
        help="keep a seeded sample of a larger user's images (default: all)",
    )
    add_scheme_options(fed)
    fed.add_argument(
        "--skew-label",
        choices=SKEW_STRATEGIES,
        default=default(PlanOptions, "skew_label"),
        help="which label of a multi-label image label-skew schemes follow",
    )
    fed.add_argument("--group-size", type=int, help="merge the source's users into groups of this many")

    meta = parser.add_argument_group("per-image metadata")
    meta.add_argument(
        "--keep-columns",
        "--keep-tags",
        dest="keep_columns",
        metavar="A,B:TYPE",
        help="source columns (a DICOM folder's tag keywords) kept per image; a :int, :float, :string or"
        " :timestamp suffix sets the type"
        " (default: inferred; a fedimage Parquet export's own columns are kept unless this is given)",
    )
    meta.add_argument(
        "--exif-columns",
        metavar="FIELDS",
        help=f"EXIF fields kept per image, read before the header is stripped: {', '.join(EXIF_FIELDS)}",
    )
    meta.add_argument(
        "--pseudonymize-columns",
        metavar="A,B",
        help="kept columns (or --partition-key) whose values become keyed pseudonyms"
        " (needs --pseudonymize-key)",
    )

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
    run.add_argument("--workers", type=int, help="processes")
    run.add_argument("--overwrite", action="store_true", help="replace an existing output")
    run.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted conversion from the shards it finished (same inputs and options)",
    )
    run.add_argument(
        "--executor",
        choices=EXECUTORS,
        default=default(ConvertOptions, "executor"),
        help="local: worker processes here; ray: shards as Ray tasks, linked from the output",
    )
    run.add_argument("--ray-address", help="with --executor ray: the cluster to join (default: start one)")
    run.add_argument("--strict", action="store_true", help="exit non-zero when any input is rejected")
    run.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Run ``fedimage convert``; returns the exit status."""
    if not args.resume:
        check_output(args.output, args.overwrite)
    pseudonyms = _pseudonymizer(args)  # a bad key file is reported before the source is read
    taxonomy = load_taxonomy(args.taxonomy) if args.taxonomy else None
    columns = ManifestColumns(
        image=args.image_column,
        user=args.user_column,
        labels=args.label_column,
        fine_labels=args.fine_label_column,
        split=None if args.split_column in (None, "none") else args.split_column,
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
        user_tag=args.user_tag,
        label_tag=args.label_tag,
        dicom_frames=args.dicom_frames,
        label_table=args.label_table,
    )
    options = ConvertOptions(
        image=stated_image_options(
            source,
            size=args.size,
            color=args.color,
            resize=args.resize,
            storage=args.storage,
            quality=args.quality,
            max_pixels=args.max_pixels,
            dicom_frames=args.dicom_frames,
            dicom_window=args.dicom_window,
            allow_burned_in=args.allow_burned_in,
            bit_depth=args.bit_depth,
        ),
        plan=PlanOptions(
            split=SplitRatios.parse(args.split) if args.split is not None else SplitRatios(),
            source_splits=args.split_column != "none",
            seed=args.seed,
            max_images_per_user=args.max_images_per_user,
            partition=_partition_options(args, source.has_users),
            skew_label=args.skew_label,
            group_size=args.group_size,
            split_level=args.split_level,
            stratify=None if args.stratify == "none" else args.stratify,
            min_images_per_user=args.min_images_per_user,
            max_users=args.max_users,
        ),
        workers=args.workers,
        overwrite=args.overwrite,
        quiet=args.quiet,
        resume=args.resume,
        executor=args.executor,
        ray_address=args.ray_address,
        pseudonyms=pseudonyms,
        pseudonymize_image_ids=args.pseudonymize_image_ids,
        encrypt_key=key_from_options(args.encrypt_key, args.encrypt_passphrase_env),
        allow_identifiers=args.allow_identifiers,
        metadata=MetadataOptions(
            keep_columns=source.stated_metadata_columns if args.keep_columns is None else args.keep_columns,
            exif_columns=args.exif_columns or (),
            pseudonymize_columns=args.pseudonymize_columns or (),
        ),
    )
    if options.pseudonyms is not None and not options.pseudonymize_image_ids and not source.identifying_ids:
        print(
            "warning: image ids are kept as given (by default the source file path, which may name the"
            " user); add --pseudonymize-image-ids to replace them too",
            file=sys.stderr,
        )
    if args.split is not None and source.split_column and args.split_column != "none":
        print(
            f"warning: --split applies only to users whose rows have no value in the source's split column"
            f" {source.split_column!r}; the others keep that split (--split-column none splits every user"
            " by --split)",
            file=sys.stderr,
        )
    if not args.quiet:
        print(f"reading {source.describe()}", file=sys.stderr)
    with source:
        report = convert(source, args.output, options, taxonomy=taxonomy)
    print(report_text(report))
    if report.written == 0:
        print(f"error: no image was converted; every input is in {report.rejects_path}", file=sys.stderr)
        return EXIT_FAILED
    if args.strict and report.rejected:
        print(f"error: {report.rejected} inputs rejected (--strict)", file=sys.stderr)
        return EXIT_FAILED
    return 0


def _size(text: str) -> int | str:
    """``--size``: pixels, or ``native``."""
    if text == NATIVE_SIZE:
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected pixels or {NATIVE_SIZE}, got {text!r}") from None


def _window(text: str) -> tuple[float, float]:
    """``--dicom-window``: center and width."""
    try:
        center, width = (float(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected CENTER,WIDTH (two numbers), got {text!r}") from None
    return center, width


def _pseudonymizer(args: argparse.Namespace) -> Pseudonymizer | None:
    if args.pseudonymize_key is None:
        if args.pseudonymize_image_ids:
            raise OptionError("`pseudonymize_image_ids` needs `pseudonyms`")
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
        if has_users:
            return None
    return scheme_options(args, args.seed)


def report_text(report: ConvertReport) -> str:
    splits = ", ".join(
        f"{name} {info['users']} users / {info['images']} images" for name, info in report.splits.items()
    )
    lines = [as_flags(note) for note in report.notes]
    lines += [
        f"wrote {report.output}: {splits}"
        if report.written
        else f"no store written ({report.output} not created)",
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
