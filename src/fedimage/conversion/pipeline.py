"""The conversion pipeline: source -> plan -> shards (standardized in parallel) -> store.

:func:`convert` runs three steps: :func:`prepare` (plan, run settings, work folder, the
shards a resumed run can reuse), :func:`write_store` (an executor writes the pending shards
while the store writer takes each one in) and :func:`finish` (the rejects report).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from fedimage._version import __version__
from fedimage.analysis.heterogeneity import split_balance
from fedimage.conversion.executors import Executor, ShardJob, executor
from fedimage.conversion.frames import expand_frames
from fedimage.conversion.metadata import (
    MetadataOptions,
    check_identifiers,
    dicom_columns,
    exif_columns,
    partition_key,
    pseudonymize_columns,
    read_metadata,
)
from fedimage.conversion.options import ConvertOptions, ConvertReport
from fedimage.conversion.pixels import PIXEL_SHARD_BYTES, PixelJournal
from fedimage.conversion.plan import ConversionPlan, make_plan
from fedimage.conversion.shard import ShardFormat, shard_key
from fedimage.conversion.workdir import ShardInfo, ShardSpec, WorkDir, shard_specs
from fedimage.errors import OptionError, StoreError
from fedimage.imaging.probe import PROBE_IMAGES, native_size, probe_images
from fedimage.imaging.standardize import NATIVE_SIZE, ImageOptions
from fedimage.labels import Taxonomy, load_taxonomy
from fedimage.privacy import new_store_cipher
from fedimage.privacy.pseudonyms import PseudonymizedSource
from fedimage.records import Reject, write_rejects
from fedimage.sources import Source, open_source
from fedimage.sources.metadata import table_column
from fedimage.store import schema
from fedimage.store.writer import DIRECT_ALIGNMENT, StoreWriter, check_output, partial_path_for


@dataclass
class PreparedRun:
    """A conversion planned and ready to write: what :func:`write_store` needs."""

    source: Source
    output: Path
    options: ConvertOptions
    taxonomy: Taxonomy | None
    plan: ConversionPlan
    pseudonymized: PseudonymizedSource | None
    shard_format: ShardFormat
    work: WorkDir
    specs: list[ShardSpec]
    reused: dict[int, ShardInfo]
    #: What was decided or noticed about the images (a native size, a gray source), one line each.
    notes: list[str] = field(default_factory=list)


def convert(
    source: Source | str | os.PathLike[str],
    output: str | os.PathLike[str],
    options: ConvertOptions | None = None,
    *,
    taxonomy: Taxonomy | None = None,
) -> ConvertReport:
    """Convert ``source`` into the store ``output``; every input is written or rejected.

    Parameters:
        source: a :class:`~fedimage.sources.Source` (see :func:`fedimage.open_source` for its
            options), or a path whose format is detected (folder tree, manifest, FLAIR folder,
            Hugging Face data).
        output: the store file to write (``.h5``); ``output.rejects.jsonl`` lists the rejects.
        options: images, plan, workers, executor, privacy, metadata (:class:`ConvertOptions`).
            Without options, a source that states its image size and metadata columns (a fedimage
            Parquet export) keeps them.
        taxonomy: fine -> coarse label pairs; by default the source's own (a FLAIR folder's
            ``label_relationship.txt``), else none.

    Example::

        report = fedimage.convert("photos/", "out.h5", ConvertOptions(workers=2))
        print(report.written, report.rejected)
    """
    started = time.perf_counter()
    output = Path(output)
    given = options or ConvertOptions()
    if given.resume and output.exists() and not given.overwrite:
        raise StoreError(f"{output} already exists: that conversion finished, there is nothing to resume")
    check_output(output, given.overwrite)
    with _opened(source) as opened:
        if options is None:
            stated = MetadataOptions(keep_columns=opened.stated_metadata_columns)
            options = ConvertOptions(image=stated_image_options(opened), metadata=stated)
        default = opened.default_taxonomy if taxonomy is None else None
        if default is not None:
            taxonomy = default if isinstance(default, Taxonomy) else load_taxonomy(default)
        run = prepare(opened, output, options, taxonomy)
        try:
            rejects, splits = write_store(run)
        except Exception as error:  # an interrupted run (Ctrl-C) keeps its folder for `resume`
            if not run.work.has_finished_shards():  # nothing a resume could reuse
                run.work.remove()
            if is_disk_full(error):
                raise disk_full_error(run) from None
            raise
    return finish(run, rejects, splits, time.perf_counter() - started)


def stated_image_options(source: Source, **overrides: Any) -> ImageOptions:
    """Image options with the size, colour, storage and bit depth a source states (a fedimage export
    does), then ``overrides``.

    An override of None keeps the stated (or default) value. A stated bit depth of 16 is dropped
    when the overrides choose a storage or colour that cannot hold it (not lossless, not gray).
    """
    stated: dict[str, Any] = {
        "size": source.stated_image_size,
        "color": source.stated_color,
        "storage": source.stated_storage,
        "bit_depth": source.stated_bit_depth,
    }
    chosen = {**stated, **{name: value for name, value in overrides.items() if value is not None}}
    if overrides.get("bit_depth") is None and (chosen["storage"], chosen["color"]) != ("lossless", "gray"):
        chosen["bit_depth"] = None
    return ImageOptions(**{name: value for name, value in chosen.items() if value is not None})


def is_disk_full(error: BaseException) -> bool:
    """True when ``error`` (or what caused it) says the disk is full, however HDF5 worded it."""
    while error is not None:
        if isinstance(error, OSError) and error.errno == errno.ENOSPC:
            return True
        if "No space left on device" in str(error) or "errno = 28" in str(error):
            return True
        error = error.__cause__ or error.__context__
    return False


def disk_full_error(run: PreparedRun) -> StoreError:
    """One line naming the output, the space free there and about what the store needs."""
    free = shutil.disk_usage(run.output.parent).free
    return StoreError(
        f"no space left on the device of {run.output} ({_megabytes(free)} free; the store needs about"
        f" {_megabytes(_expected_bytes(run))}): free some space or write elsewhere; nothing was published"
    )


def _expected_bytes(run: PreparedRun) -> int:
    """About the bytes of the finished store: exact pixels for raw stores, ~1/10 of them for JPEG."""
    pixels = run.options.image.side**2 * run.options.image.channels
    per_image = pixels if run.options.image.storage == "raw" else pixels // 10
    return run.plan.planned_images * per_image


def _megabytes(count: int) -> str:
    return f"{count / 1e6:,.0f} MB" if count >= 1e6 else f"{count / 1e3:,.0f} kB"


@contextlib.contextmanager
def _opened(source: Source | str | os.PathLike[str]) -> Iterator[Source]:
    """The source itself (left open for its owner), or the source at a path (closed after)."""
    if isinstance(source, Source):
        yield source
        return
    with open_source(Path(source)) as opened:
        yield opened


def prepare(source: Source, output: Path, options: ConvertOptions, taxonomy: Taxonomy | None) -> PreparedRun:
    """Plan the conversion and set up its work folder (reusing finished shards when resuming)."""
    key = partition_key(options.plan.partition)
    check_identifiers(source, options, key)
    metadata, columns = read_metadata(source, options.metadata, key)
    if options.image.dicom_frames == "all" and not source.expands_frames:
        metadata = expand_frames(metadata)  # rows naming multi-frame DICOM files: one per frame
    pseudonymized = None
    if options.pseudonyms is not None:
        image_ids = options.pseudonymize_image_ids or source.identifying_ids  # a DICOM source's paths
        pseudonymized = PseudonymizedSource(metadata, options.pseudonyms, image_ids)
        metadata = pseudonymized.metadata
    metadata, columns = pseudonymize_columns(
        metadata, columns, options.metadata.pseudonymize_columns, options.pseudonyms
    )
    plan = make_plan(metadata, options.plan, has_users=source.has_users, taxonomy=taxonomy)
    kept = set(options.metadata.kept_names)
    unkept = [table_column(column.name) for column in columns if column.name not in kept]
    if unkept:  # the partition key, read to make the clients: not stored
        plan.table = plan.table.drop_columns(unkept)
    stored_columns = (
        *(column for column in columns if column.name in kept),
        *exif_columns(options.metadata),
        *(column for column in dicom_columns(options.image) if column.name not in kept),  # kept: an export's
    )
    names = [column.name for column in stored_columns]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise OptionError(
            f"two metadata columns would be named {repeated[0]!r} (a kept column, an EXIF field or a 16-bit"
            " store's DICOM field): keep the column under another name"
        )
    image, notes = resolve_image_options(source, plan, options.image)
    options = replace(options, image=image)
    settings = _run_settings(source, options, taxonomy, plan)
    cipher = None
    if options.encrypt_key is not None:  # keys derived from the key and the run: same inputs, same bytes
        cipher = new_store_cipher(options.encrypt_key, json.dumps(settings, sort_keys=True).encode("utf-8"))
        settings["encryption"] = cipher.header
    runner = executor(options.executor)
    shard_format = ShardFormat(
        storage=options.image.storage,
        image_size=options.image.side,
        color=options.image.color,
        coarse_labels=tuple(plan.coarse_labels),
        fine_labels=tuple(plan.fine_labels),
        run_key=hashlib.sha256(json.dumps(settings, sort_keys=True).encode("utf-8")).hexdigest(),
        cipher=cipher,
        metadata_columns=stored_columns,
        pixels_in_store=options.image.storage == "raw" and cipher is None and runner.writes_pixels_once(),
    )
    work = WorkDir(output)
    resuming = work.prepare(settings, resume=options.resume, overwrite=options.overwrite)
    # pixels in shared memory: shards small enough that the slots of those in flight stay modest
    most = PIXEL_SHARD_BYTES // shard_format.image_bytes if shard_format.pixels_in_store else None
    specs = shard_specs([user.size for user in plan.users], most=most)
    reused: dict[int, ShardInfo] = {}
    if resuming:
        reused = _reusable_shards(work, specs, plan, shard_format)
    return PreparedRun(
        source, output, options, taxonomy, plan, pseudonymized, shard_format, work, specs, reused, notes
    )


def _reusable_shards(
    work: WorkDir, specs: list[ShardSpec], plan: ConversionPlan, shard_format: ShardFormat
) -> dict[int, ShardInfo]:
    """The finished shards of an interrupted run that this run takes over (checked; a damaged one is
    made again). Shards without pixels need theirs intact in that run's partial store."""
    journal = None
    pixel_shape = None
    if shard_format.pixels_in_store:
        journal = PixelJournal(work.path)
        journal.adopt(partial_path_for(work.output))  # the killed run's partial store: its pixels
        pixel_shape = (shard_format.image_size, shard_format.image_size, shard_format.channels)
    reused: dict[int, ShardInfo] = {}
    for spec in specs:
        info = work.finished(spec, shard_key(plan, spec, shard_format.run_key), pixel_shape)
        if (
            info is not None
            and journal is not None
            and info.pixels
            and not journal.holds(spec.index, info.pixels)
        ):
            work.shard_path(spec).unlink()  # its pixels are gone: made again (none: in the shard itself)
            info = None
        if info is not None:
            reused[spec.index] = info
    return reused


def resolve_image_options(
    source: Source, plan: ConversionPlan, image: ImageOptions
) -> tuple[ImageOptions, list[str]]:
    """``image`` with a native size resolved from the headers of a sample of the planned images,
    and notes on what was decided or noticed (a grayscale source stored as RGB)."""
    if not plan.planned_images:
        return (replace(image, size=ImageOptions().size) if image.size == NATIVE_SIZE else image), []
    probe = probe_images(source.read_images(plan.spread_records(PROBE_IMAGES)))
    notes: list[str] = []
    if image.size == NATIVE_SIZE:
        side, why = native_size(probe, image.resize)
        image = replace(image, size=side)
        notes.append(f"native size: {side} px ({why})")
    if image.color == "rgb" and probe.all_gray:
        notes.append(
            f"every sampled image is grayscale ({probe.gray} of {probe.readable}): `color` gray would store"
            " a third of the pixels"
        )
    return image, notes


def write_store(run: PreparedRun) -> tuple[list[Reject], dict[str, dict[str, int]]]:
    """Write the pending shards with the options' executor and assemble the store from all shards."""
    options, plan = run.options, run.plan
    runner: Executor = executor(options.executor)
    job = ShardJob(
        plan=plan,
        source=run.source,
        image_options=options.image,
        pending=[spec for spec in run.specs if spec.index not in run.reused],
        work=run.work,
        shard_format=run.shard_format,
        workers=options.workers,
        quiet=options.quiet,
        address=options.ray_address,
        overwrite=options.overwrite,
    )
    infos = dict(run.reused)
    # The executor starts (worker processes fork) before the store is opened: no HDF5 handle crosses a fork.
    with runner.running(job) as finished, _store_writer(run) as writer:
        for spec in run.specs:  # shards are taken in as they arrive, while workers write the next
            while spec.index not in infos:
                info = next(finished)
                infos[info.index] = info
            runner.add_shard(writer, job, spec)
        unread = [reject for spec in run.specs for reject in infos[spec.index].rejects]
        rejects = [*plan.rejects, *unread]
        if run.pseudonymized is not None:
            rejects = run.pseudonymized.scrub(rejects)
        splits = {
            split: {"users": len(users), "images": sum(u["images"] for u in users.values())}
            for split, users in writer.users.items()
        }
        if not splits:  # nothing was written: no store, only the rejects report
            writer.abort()
            return rejects, splits
        balance = split_balance(
            *plan.split_label_counts({reject.image_id for reject in unread if reject.image_id})
        )
        writer.finish(_metadata(run, writer, splits, rejects, balance))
    runner.finish(job, run.specs, options.overwrite)
    return rejects, splits


def _store_writer(run: PreparedRun) -> StoreWriter:
    # A store written once from shared memory keeps its partial file if interrupted: resume reads it.
    keep_partial = PixelJournal(run.work.path).adopt if run.shard_format.pixels_in_store else None
    return StoreWriter(
        run.output,
        storage=run.options.image.storage,
        image_size=run.options.image.side,
        color=run.options.image.color,
        coarse_labels=run.plan.coarse_labels,
        fine_labels=run.plan.fine_labels,
        overwrite=run.options.overwrite,
        cipher=run.shard_format.cipher,
        metadata_columns=run.shard_format.metadata_columns,
        keep_partial=keep_partial,
        # a raw store's size is known ahead: its pixels' disk is reserved, with room for each user's
        # pixels to start on a page boundary (the metadata is small)
        reserve_bytes=run.plan.planned_images * run.shard_format.image_bytes
        + len(run.plan.users) * DIRECT_ALIGNMENT
        if run.options.image.storage == "raw"
        else 0,
    )


def finish(
    run: PreparedRun, rejects: list[Reject], splits: dict[str, dict[str, int]], seconds: float
) -> ConvertReport:
    """Remove the work folder, write the rejects report, and say what was done."""
    run.work.remove()
    rejects_path = Path(schema.rejects_path_for(str(run.output)))
    write_rejects(rejects_path, rejects)
    return ConvertReport(
        output=run.output,
        rejects_path=rejects_path,
        inputs=run.plan.inputs,
        written=sum(info["images"] for info in splits.values()),
        rejects=rejects,
        splits=splits,
        seconds=seconds,
        shards_reused=len(run.reused),
        image=run.options.image,
        notes=list(run.notes),
    )


def _plan_options(options: ConvertOptions) -> dict[str, Any]:
    plan_options = asdict(options.plan)
    plan_options["split"] = dict(zip(options.plan.split.names, options.plan.split.ratios, strict=True))
    return plan_options


def _run_settings(
    source: Source, options: ConvertOptions, taxonomy: Taxonomy | None, plan: ConversionPlan
) -> dict[str, Any]:
    """What must not change between an interrupted run and its resumption."""
    return {
        "fedimage_version": __version__,
        "format_version": schema.FORMAT_VERSION,  # its shards' names, digests and layout
        "source": source.describe(),
        "image options": asdict(options.image),
        "plan options": _plan_options(options),
        "taxonomy": taxonomy.fine_to_coarse if taxonomy else None,
        "executor": options.executor,
        "planned images": plan.planned_images,
        "labels": [plan.coarse_labels, plan.fine_labels],
        **_pseudonym_settings(options),
        **({"metadata": options.metadata.describe()} if options.metadata else {}),
    }


def _pseudonym_settings(options: ConvertOptions) -> dict[str, Any]:
    """How ids were pseudonymized (with the key's fingerprint, never the key), when they were."""
    if options.pseudonyms is None:
        return {}
    return {"pseudonyms": options.pseudonyms.describe(options.pseudonymize_image_ids)}


def _metadata(
    run: PreparedRun,
    writer: StoreWriter,
    splits: dict[str, dict[str, int]],
    rejects: list[Reject],
    balance: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    options, plan, source = run.options, run.plan, run.source
    manifest = {
        "format": schema.FORMAT_NAME,
        "format_version": schema.FORMAT_VERSION,
        "fedimage_version": __version__,
        "storage": options.image.storage,
        "image_size": options.image.size,
        "color": options.image.color,
        "bit_depth": options.image.bit_depth,
        "source": {"format": source.kind, "name": source.name},
        "options": {**asdict(options.image), **_plan_options(options)},
        "users_assigned": plan.users_assigned,
        "counts": {
            "inputs": plan.inputs,
            "written": sum(info["images"] for info in splits.values()),
            "rejected": len(rejects),
            "ignored": dict(source.ignored),
        },
        "splits": splits,
        #: Per split: images, their share and the Hellinger distance of its coarse labels from the whole.
        "split_balance": balance,
        "users": writer.users,
        #: The per-image metadata columns of every user group (see fedimage.store.metadata).
        "image_metadata": [column.to_json() for column in run.shard_format.metadata_columns],
        **_pseudonym_settings(options),
    }
    return {
        schema.TAXONOMY: run.taxonomy.fine_to_coarse if run.taxonomy else {},
        schema.MANIFEST: manifest,
    }
