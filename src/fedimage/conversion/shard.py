"""Standardizing images and writing them into shard files: the per-user work of a conversion.

A worker (a process of the local engine's pool, or a Ray task) standardizes and
writes one whole shard (:func:`convert_shard`), so HDF5 writing runs in parallel
too and the main process only plans, hands out shards and assembles the store.
A shard that holds a large user (:data:`LARGE_USER_IMAGES` or more) would keep
one worker busy alone: both engines spread its images over all workers in
batches, and the main process (Ray's driver) writes that shard itself.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm import tqdm

from fedimage.conversion.pixels import SlotWriter, lent_slot
from fedimage.conversion.plan import ConversionPlan, UserPlan
from fedimage.conversion.workdir import ShardInfo, ShardSpec
from fedimage.errors import FedimageError
from fedimage.imaging.dicom import DICOM_FIELDS, read_dicom_fields
from fedimage.imaging.exif import read_exif
from fedimage.imaging.standardize import (
    FRAME_SEPARATOR,
    ImageOptions,
    ImageRejected,
    standardize_bytes,
    standardize_file,
)
from fedimage.records import ImageRecord, Reject
from fedimage.sources import Source
from fedimage.store import schema
from fedimage.store.metadata import MetadataColumn
from fedimage.store.writer import StoreWriter

if TYPE_CHECKING:
    from fedimage.store.sealing import Sealing

BATCH_SIZE = 64
#: Metadata columns a worker reads from the image file itself (see :func:`read_fields`).
IMAGE_FIELD_ORIGINS = ("exif", "dicom")
LARGE_USER_IMAGES = 256
SHARDS_IN_FLIGHT_PER_WORKER = 2

ImageInput = tuple[str, bytes | None]  # (path to read, or the bytes themselves)
#: (True, standardized bytes, EXIF values) or (False, why it was rejected, EXIF values).
Result = tuple[bool, bytes | str, tuple[Any, ...]]
BatchItem = tuple[tuple[ImageInput, ...], ImageOptions, tuple[str, ...]]
ShardUsers = list[tuple[UserPlan, list[ImageRecord]]]


@dataclass(frozen=True, slots=True)
class ShardTask:
    """Everything a worker needs to write one shard: its users' rows and image payloads."""

    path: str
    spec: ShardSpec
    users: ShardUsers | None  # None: the worker takes them from the inherited plan
    payloads: list[bytes | str | None] | None  # None: the worker reads them from the inherited source
    image_options: ImageOptions
    shard_format: ShardFormat
    #: The shared buffer slot its pixels go to (a raw store written once, see fedimage.conversion.pixels).
    pixel_slot: int | None = None


@dataclass(frozen=True, slots=True)
class ShardFormat:
    """What every shard of one store shares."""

    storage: str
    image_size: int
    color: str
    coarse_labels: tuple[str, ...]
    fine_labels: tuple[str, ...]
    run_key: str
    cipher: Sealing | None = None  # an encrypted store's: user groups are sealed in the shards
    #: The per-image metadata columns: the kept source columns (each record's ``metadata``), then EXIF fields.
    metadata_columns: tuple[MetadataColumn, ...] = ()
    #: A raw store whose pixels the main process writes once from shared memory: shards hold none.
    pixels_in_store: bool = False

    @property
    def channels(self) -> int:
        return 1 if self.color == "gray" else 3

    @property
    def image_bytes(self) -> int:
        """Bytes of one image's raw pixels."""
        return self.image_size * self.image_size * self.channels

    @property
    def worker_fields(self) -> tuple[str, ...]:
        """The columns a worker reads from each image file (EXIF fields, a 16-bit store's DICOM fields)."""
        return tuple(column.name for column in self.metadata_columns if column.origin in IMAGE_FIELD_ORIGINS)


class RowsDigest:
    """The key of a shard: the run's settings and, in order, each row's id, user, split and labels."""

    def __init__(self, run_key: str):
        self._hash = hashlib.sha256(run_key.encode("utf-8"))

    def update(self, records: Iterable[ImageRecord]) -> None:
        for record in records:
            fields = (record.image_id, record.user_id, record.split or "", *record.labels, "")
            metadata = (repr(value) for value in record.metadata)
            self._hash.update("\0".join((*fields, *record.fine_labels, *metadata)).encode("utf-8") + b"\n")

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


def shard_key(plan: ConversionPlan, spec: ShardSpec, run_key: str) -> str:
    digest = RowsDigest(run_key)
    for start in range(spec.first_image, spec.stop_image, 1024):
        digest.update(plan.records(start, min(start + 1024, spec.stop_image)))
    return digest.hexdigest()


def standardize_one(
    path: str,
    data: bytes | None,
    options: ImageOptions,
    fields: tuple[str, ...] = (),
    into: memoryview | None = None,
) -> Result:
    """Standardize one image, and read ``fields`` from its file (:func:`read_fields`); a failure
    becomes (False, reason, ...), never an exception. ``into``: room for its raw pixels (see
    :func:`~fedimage.imaging.standardize.standardize_file`)."""
    values = read_fields(data if data is not None else path, fields, options) if fields else ()
    ok, payload = _standardized(path, data, options, into)
    return ok, payload, values


def read_fields(image: str | bytes, fields: tuple[str, ...], options: ImageOptions) -> tuple[Any, ...]:
    """An image file's values of ``fields``: EXIF fields (:func:`fedimage.imaging.exif.read_exif`) and
    a 16-bit store's DICOM fields (:func:`fedimage.imaging.dicom.read_dicom_fields`)."""
    if isinstance(image, str):
        image = image.partition(FRAME_SEPARATOR)[0]  # one frame of a file: the file's header
    exif = [name for name in fields if name not in DICOM_FIELDS]
    dicom = [name for name in fields if name in DICOM_FIELDS]
    values = dict(zip(exif, read_exif(image, exif), strict=True)) if exif else {}
    if dicom:
        values.update(zip(dicom, read_dicom_fields(image, dicom, options.dicom_window), strict=True))
    return tuple(values[name] for name in fields)


def _standardized(
    path: str, data: bytes | None, options: ImageOptions, into: memoryview | None = None
) -> tuple[bool, bytes | memoryview | str]:
    try:
        if data is not None:
            return True, standardize_bytes(data, options, into=into)
        if path:
            return True, standardize_file(path, options, into)
        return False, "the row holds neither image bytes nor an image path"
    except ImageRejected as rejection:
        return False, str(rejection)
    except Exception as error:
        return False, f"unexpected error while decoding: {type(error).__name__}: {error}"


def standardize_batch(batch: BatchItem) -> list[Result]:
    """Worker: standardize a batch of images (and read their EXIF fields)."""
    inputs, options, fields = batch
    return [standardize_one(path, data, options, fields) for path, data in inputs]


def image_inputs(payloads: Iterable[bytes | str | None]) -> Iterator[ImageInput]:
    """What a source's ``read_images`` returned, as worker inputs."""
    return ((payload, None) if isinstance(payload, str) else ("", payload) for payload in payloads)


def write_shard(
    path: Path,
    spec: ShardSpec,
    users: Iterable[tuple[UserPlan, list[ImageRecord]]],
    results: Iterator[Result],
    shard_format: ShardFormat,
    progress: tqdm | None = None,
    pixels: SlotWriter | None = None,
) -> ShardInfo:
    """Write one shard from its users' records and their standardized images (in the same order).

    With ``pixels`` (a raw store written once), accepted images' pixels go there, not into the shard.
    """
    rejects: list[Reject] = []
    digest = RowsDigest(shard_format.run_key)
    with StoreWriter(
        path,
        storage=shard_format.storage,
        image_size=shard_format.image_size,
        color=shard_format.color,
        coarse_labels=shard_format.coarse_labels,
        fine_labels=shard_format.fine_labels,
        cipher=shard_format.cipher,
        seal_metadata=False,
        durable=False,  # a resume re-verifies a reused shard's checksums: no fsync on the hot path
        metadata_columns=shard_format.metadata_columns,
        pixels_elsewhere=pixels is not None,
    ) as writer:
        for user, records in users:
            digest.update(records)
            group = writer.user(user.split, user.user_id)
            for record in records:
                try:
                    ok, payload, fields = next(results)
                except BrokenProcessPool:
                    raise FedimageError(
                        f"a worker process died while converting {record.origin} ({record.path}): "
                        "out of memory, or a decoder crashed on that file; rerun with `workers` 1 "
                        "to see which (then `resume` to keep the work done)"
                    ) from None
                if ok:
                    if pixels is not None:
                        pixels.add(payload)  # type: ignore[arg-type]
                    metadata = (*record.metadata, *fields)
                    group.add(payload, record.image_id, record.labels, record.fine_labels, metadata)  # type: ignore[arg-type]
                else:
                    rejects.append(image_reject(record, str(payload)))
                if progress is not None:
                    progress.update()
            group.close()
        info = ShardInfo(spec.index, digest.hexdigest(), writer.users, rejects, writer.pixel_users)
        writer.finish({schema.SHARD_INFO: info.to_json()})
    return info


def image_reject(record: ImageRecord, reason: str) -> Reject:
    return Reject(
        origin=record.origin,
        reason=reason,
        image_id=record.image_id,
        path=record.path,
        user_id=record.user_id,
        stage="image",
    )


def shard_users(plan: ConversionPlan, spec: ShardSpec) -> ShardUsers:
    """The shard's users with their records (one table read for the whole shard)."""
    records = plan.records(spec.first_image, spec.stop_image)
    users = []
    for user in plan.users[spec.first_user : spec.stop_user]:
        start = user.start - spec.first_image
        users.append((user, records[start : start + user.size]))
    return users


_inherited_source: Source | None = None  # the conversion's source, in this process and forked workers
_inherited_plan: ConversionPlan | None = None  # and its plan


@contextmanager
def source_for_workers(source: Source, plan: ConversionPlan | None = None) -> Iterator[None]:
    """Let workers forked inside this block read their shards' images from ``source`` themselves
    (and their shards' rows from ``plan``).

    The main process then sends rows (with ``plan``: only which shard), never image bytes: memory
    does not grow with the bytes of the shards in flight.
    """
    global _inherited_source, _inherited_plan
    source.prepare_reading()
    _inherited_source, _inherited_plan = source, plan
    try:
        yield
    finally:
        _inherited_source = _inherited_plan = None


def inherited_source() -> Source | None:
    """The source that :func:`source_for_workers` lends to forked workers, if any."""
    return _inherited_source


def shard_task(
    plan: ConversionPlan,
    source: Source | None,
    spec: ShardSpec,
    path: Path,
    image_options: ImageOptions,
    shard_format: ShardFormat,
    pixel_slot: int | None = None,
) -> ShardTask:
    """A shard's work, with the payloads read from ``source`` (file paths, or bytes for tables).

    Without a source, the worker reads them from the source it inherited (:func:`source_for_workers`),
    and the shard's rows from the plan it inherited, when that is ``plan``.
    """
    if source is None and plan is _inherited_plan:
        return ShardTask(str(path), spec, None, None, image_options, shard_format, pixel_slot)
    users = shard_users(plan, spec)
    payloads = None
    if source is not None:
        payloads = source.read_images([record for _, records in users for record in records])
    return ShardTask(str(path), spec, users, payloads, image_options, shard_format, pixel_slot)


def convert_shard(task: ShardTask) -> ShardInfo:
    """Worker: standardize a shard's images and write the shard file (its pixels into its slot, if any)."""
    users = task.users
    if users is None:
        if _inherited_plan is None:
            raise FedimageError("a shard task without rows needs the source_for_workers() block")
        users = shard_users(_inherited_plan, task.spec)
    payloads = task.payloads if task.payloads is not None else _inherited_payloads(users)
    inputs = image_inputs(payloads)
    fields = task.shard_format.worker_fields
    if task.pixel_slot is None:
        results = (standardize_one(path, data, task.image_options, fields) for path, data in inputs)
        return write_shard(Path(task.path), task.spec, users, results, task.shard_format)
    pixels = SlotWriter(lent_slot(task.pixel_slot), task.shard_format.image_bytes)
    # each image decoded into one small buffer that stays in the CPU's cache (see SlotWriter)
    scratch = memoryview(bytearray(task.shard_format.image_bytes))
    results = (standardize_one(path, data, task.image_options, fields, scratch) for path, data in inputs)
    return write_shard(Path(task.path), task.spec, users, results, task.shard_format, pixels=pixels)


def _inherited_payloads(users: ShardUsers) -> Iterator[bytes | str | None]:
    """The shard's payloads from the inherited source, read :data:`BATCH_SIZE` at a time.

    Only one batch of source bytes is held at once, not the whole shard's (4,096 photos
    of a few hundred KB each would be over a GB).
    """
    if _inherited_source is None:
        raise FedimageError("a shard task without images needs the source_for_workers() block")
    records = [record for _, user_records in users for record in user_records]
    for start in range(0, len(records), BATCH_SIZE):
        yield from _inherited_source.read_images(records[start : start + BATCH_SIZE])


def next_shard(outputs: Iterator[object], spec: ShardSpec, plan: ConversionPlan) -> ShardInfo:
    try:
        return next(outputs)  # type: ignore[return-value]
    except BrokenProcessPool:
        first = plan.users[spec.first_user]
        raise FedimageError(
            f"a worker process died while converting shard {spec.index} (users from {first.user_id!r}, "
            f"{spec.stop_image - spec.first_image} images): out of memory, or a decoder crashed on one "
            "of its files; rerun with `workers` 1 to see which (then `resume` to keep the work done)"
        ) from None


def is_large(plan: ConversionPlan, spec: ShardSpec) -> bool:
    """True when the shard holds a user of :data:`LARGE_USER_IMAGES` or more: its images go out in batches."""
    return any(user.size >= LARGE_USER_IMAGES for user in plan.users[spec.first_user : spec.stop_user])


def image_batches(
    plan: ConversionPlan,
    source: Source,
    spec: ShardSpec,
    image_options: ImageOptions,
    fields: tuple[str, ...] = (),
) -> Iterator[BatchItem]:
    """A large shard's images as :func:`standardize_batch` work items of :data:`BATCH_SIZE` images."""
    for start in range(spec.first_image, spec.stop_image, BATCH_SIZE):
        records = plan.records(start, min(start + BATCH_SIZE, spec.stop_image))
        yield tuple(image_inputs(source.read_images(records))), image_options, fields
