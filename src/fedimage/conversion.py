"""The conversion pipeline: source -> plan -> parallel standardization -> store."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures.process import BrokenProcessPool
from contextlib import closing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from fedimage._version import __version__
from fedimage.errors import FedimageError, OptionError
from fedimage.imaging import ImageOptions, ImageRejected, standardize_bytes, standardize_file
from fedimage.parallel import WorkerPool, default_workers
from fedimage.plan import ConversionPlan, PlanOptions, make_plan
from fedimage.records import ImageRecord, Reject
from fedimage.rejects import write_rejects
from fedimage.sources import Source
from fedimage.store import layout
from fedimage.store.writer import StoreWriter, check_output
from fedimage.taxonomy import Taxonomy

BATCH_SIZE = 32


@dataclass(frozen=True, slots=True)
class ConvertOptions:
    """Everything that shapes a conversion. ``workers``/``quiet`` do not change the output."""

    image: ImageOptions = field(default_factory=ImageOptions)
    plan: PlanOptions = field(default_factory=PlanOptions)
    workers: int | None = None
    overwrite: bool = False
    quiet: bool = False

    def __post_init__(self) -> None:
        if self.workers is not None and self.workers < 1:
            raise OptionError(f"--workers must be at least 1, got {self.workers}")


@dataclass
class ConvertReport:
    """What a conversion did: every input is either written or rejected."""

    output: Path
    rejects_path: Path
    inputs: int
    written: int
    rejects: list[Reject]
    splits: dict[str, dict[str, int]]
    seconds: float

    @property
    def rejected(self) -> int:
        return len(self.rejects)


ImageInput = tuple[str, bytes | None]  # (path to read, or the bytes themselves)


def _standardize_batch(
    batch: tuple[tuple[ImageInput, ...], ImageOptions],
) -> list[tuple[bool, bytes | str]]:
    """Worker: standardize each image; a failure becomes (False, reason), never an exception."""
    inputs, options = batch
    results: list[tuple[bool, bytes | str]] = []
    for path, data in inputs:
        try:
            if data is not None:
                results.append((True, standardize_bytes(data, options)))
            elif path:
                results.append((True, standardize_file(path, options)))
            else:
                results.append((False, "the row holds neither image bytes nor an image path"))
        except ImageRejected as rejection:
            results.append((False, str(rejection)))
        except Exception as error:
            results.append((False, f"unexpected error while decoding: {type(error).__name__}: {error}"))
    return results


def _batches(
    plan: ConversionPlan, source: Source, options: ImageOptions
) -> Iterator[tuple[tuple[ImageInput, ...], ImageOptions]]:
    """Batches of worker inputs in store order; sources holding bytes are read here."""
    for start in range(0, plan.planned_images, BATCH_SIZE):
        batch = plan.records(start, min(start + BATCH_SIZE, plan.planned_images))
        payloads = source.read_images(batch)
        yield (
            tuple((payload, None) if isinstance(payload, str) else ("", payload) for payload in payloads),
            options,
        )


def convert(
    source: Source,
    output: str | Path,
    options: ConvertOptions | None = None,
    taxonomy: Taxonomy | None = None,
) -> ConvertReport:
    """Convert ``source`` into the store ``output``; see :class:`ConvertReport`."""
    options = options or ConvertOptions()
    started = time.perf_counter()
    output = Path(output)
    rejects_path = Path(layout.rejects_path_for(str(output)))
    check_output(output, options.overwrite)
    plan = make_plan(source.metadata(), options.plan, has_users=source.has_users, taxonomy=taxonomy)
    rejects = list(plan.rejects)
    written = 0
    with (
        WorkerPool(options.workers or default_workers()) as pool,
        StoreWriter(
            output,
            storage=options.image.storage,
            image_size=options.image.size,
            coarse_labels=plan.coarse_labels,
            fine_labels=plan.fine_labels,
            overwrite=options.overwrite,
        ) as writer,
    ):
        batch_results = pool.ordered_map(_standardize_batch, _batches(plan, source, options.image))
        results = (result for batch in batch_results for result in batch)
        with (
            closing(batch_results),
            tqdm(total=plan.planned_images, unit="img", disable=options.quiet, desc="converting") as bar,
        ):
            for user in plan.users:
                group = writer.user(user.split, user.user_id)
                for record in plan.user_records(user):
                    try:
                        ok, payload = next(results)
                    except BrokenProcessPool:
                        raise FedimageError(
                            f"a worker process died while converting {record.origin} ({record.path}): "
                            "out of memory, or a decoder crashed on that file; rerun with --workers 1 "
                            "to see which"
                        ) from None
                    if ok:
                        group.add(payload, record.image_id, record.labels, record.fine_labels)
                    else:
                        rejects.append(_image_reject(record, str(payload)))
                    bar.update()
                written += group.close()
        splits = {
            split: {"users": len(users), "images": sum(u["images"] for u in users.values())}
            for split, users in writer.users.items()
        }
        writer.finish(_metadata(source, plan, options, taxonomy, writer, splits, written, rejects))
    write_rejects(rejects_path, rejects)
    return ConvertReport(
        output=output,
        rejects_path=rejects_path,
        inputs=plan.inputs,
        written=written,
        rejects=rejects,
        splits=splits,
        seconds=time.perf_counter() - started,
    )


def _image_reject(record: ImageRecord, reason: str) -> Reject:
    return Reject(
        origin=record.origin,
        reason=reason,
        image_id=record.image_id,
        path=record.path,
        user_id=record.user_id,
        stage="image",
    )


def _metadata(
    source: Source,
    plan: ConversionPlan,
    options: ConvertOptions,
    taxonomy: Taxonomy | None,
    writer: StoreWriter,
    splits: dict[str, dict[str, int]],
    written: int,
    rejects: list[Reject],
) -> dict[str, Any]:
    plan_options = asdict(options.plan)
    plan_options["split"] = dict(zip(options.plan.split.names, options.plan.split.ratios, strict=True))
    manifest = {
        "format": layout.FORMAT_NAME,
        "format_version": layout.FORMAT_VERSION,
        "fedimage_version": __version__,
        "storage": options.image.storage,
        "image_size": options.image.size,
        "source": {"format": source.kind, "name": source.name},
        "options": {**asdict(options.image), **plan_options},
        "users_assigned": plan.users_assigned,
        "counts": {
            "inputs": plan.inputs,
            "written": written,
            "rejected": len(rejects),
            "ignored": dict(source.ignored),
        },
        "splits": splits,
        "users": writer.users,
    }
    return {
        layout.TAXONOMY: taxonomy.fine_to_coarse if taxonomy else {},
        layout.MANIFEST: manifest,
    }
