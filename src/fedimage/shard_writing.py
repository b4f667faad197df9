"""Standardizing images and writing them into shard files: the per-user work of a conversion.

The same :func:`write_shard` runs in the local engine (images standardized by a
pool of worker processes, written by the main process) and in the Ray engine
(one task standardizes and writes one whole shard).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures.process import BrokenProcessPool
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from fedimage.errors import FedimageError
from fedimage.imaging import ImageOptions, ImageRejected, standardize_bytes, standardize_file
from fedimage.parallel import WorkerPool
from fedimage.plan import ConversionPlan, UserPlan
from fedimage.records import ImageRecord, Reject
from fedimage.sources import Source
from fedimage.store.shards import SHARD_INFO, ShardInfo, ShardSpec, WorkDir
from fedimage.store.writer import StoreWriter

BATCH_SIZE = 32

ImageInput = tuple[str, bytes | None]  # (path to read, or the bytes themselves)
Result = tuple[bool, bytes | str]  # (True, standardized bytes) or (False, why it was rejected)


@dataclass(frozen=True, slots=True)
class ShardFormat:
    """What every shard of one store shares."""

    storage: str
    image_size: int
    coarse_labels: tuple[str, ...]
    fine_labels: tuple[str, ...]
    run_key: str


class RowsDigest:
    """The key of a shard: the run's settings and, in order, each row's id, user, split and labels."""

    def __init__(self, run_key: str):
        self._hash = hashlib.sha256(run_key.encode("utf-8"))

    def update(self, records: Iterable[ImageRecord]) -> None:
        for record in records:
            fields = (record.image_id, record.user_id, record.partition or "", *record.labels, "")
            self._hash.update("\0".join((*fields, *record.fine_labels)).encode("utf-8") + b"\n")

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


def shard_key(plan: ConversionPlan, spec: ShardSpec, run_key: str) -> str:
    digest = RowsDigest(run_key)
    for start in range(spec.first_image, spec.stop_image, 1024):
        digest.update(plan.records(start, min(start + 1024, spec.stop_image)))
    return digest.hexdigest()


def standardize_one(path: str, data: bytes | None, options: ImageOptions) -> Result:
    """Standardize one image; a failure becomes (False, reason), never an exception."""
    try:
        if data is not None:
            return True, standardize_bytes(data, options)
        if path:
            return True, standardize_file(path, options)
        return False, "the row holds neither image bytes nor an image path"
    except ImageRejected as rejection:
        return False, str(rejection)
    except Exception as error:
        return False, f"unexpected error while decoding: {type(error).__name__}: {error}"


def standardize_batch(batch: tuple[tuple[ImageInput, ...], ImageOptions]) -> list[Result]:
    """Worker: standardize a batch of images."""
    inputs, options = batch
    return [standardize_one(path, data, options) for path, data in inputs]


def image_inputs(payloads: Sequence[bytes | str | None]) -> tuple[ImageInput, ...]:
    """What a source's ``read_images`` returned, as worker inputs."""
    return tuple((payload, None) if isinstance(payload, str) else ("", payload) for payload in payloads)


def write_shard(
    path: Path,
    spec: ShardSpec,
    users: Iterable[tuple[UserPlan, list[ImageRecord]]],
    results: Iterator[Result],
    shard_format: ShardFormat,
    progress: tqdm | None = None,
) -> ShardInfo:
    """Write one shard from its users' records and their standardized images (in the same order)."""
    rejects: list[Reject] = []
    digest = RowsDigest(shard_format.run_key)
    with StoreWriter(
        path,
        storage=shard_format.storage,
        image_size=shard_format.image_size,
        coarse_labels=shard_format.coarse_labels,
        fine_labels=shard_format.fine_labels,
    ) as writer:
        for user, records in users:
            digest.update(records)
            group = writer.user(user.split, user.user_id)
            for record in records:
                try:
                    ok, payload = next(results)
                except BrokenProcessPool:
                    raise FedimageError(
                        f"a worker process died while converting {record.origin} ({record.path}): "
                        "out of memory, or a decoder crashed on that file; rerun with --workers 1 "
                        "to see which (then --resume to keep the work done)"
                    ) from None
                if ok:
                    group.add(payload, record.image_id, record.labels, record.fine_labels)  # type: ignore[arg-type]
                else:
                    rejects.append(image_reject(record, str(payload)))
                if progress is not None:
                    progress.update()
            group.close()
        info = ShardInfo(spec.index, digest.hexdigest(), writer.users, rejects)
        writer.finish({SHARD_INFO: info.to_json()})
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


def shard_users(plan: ConversionPlan, spec: ShardSpec) -> Iterator[tuple[UserPlan, list[ImageRecord]]]:
    for user in plan.users[spec.first_user : spec.stop_user]:
        yield user, plan.user_records(user)


def run_local(
    plan: ConversionPlan,
    source: Source,
    image_options: ImageOptions,
    pending: Sequence[ShardSpec],
    work: WorkDir,
    shard_format: ShardFormat,
    workers: int,
    quiet: bool,
) -> Iterator[ShardInfo]:
    """Write the pending shards here, with images standardized by ``workers`` processes."""

    def batches() -> Iterator[tuple[tuple[ImageInput, ...], ImageOptions]]:
        for spec in pending:
            for start in range(spec.first_image, spec.stop_image, BATCH_SIZE):
                records = plan.records(start, min(start + BATCH_SIZE, spec.stop_image))
                yield image_inputs(source.read_images(records)), image_options

    todo = sum(spec.stop_image - spec.first_image for spec in pending)
    with WorkerPool(workers) as pool:
        batch_results = pool.ordered_map(standardize_batch, batches())
        results = (result for batch in batch_results for result in batch)
        with (
            closing(batch_results),
            tqdm(
                total=plan.planned_images,
                initial=plan.planned_images - todo,
                unit="img",
                disable=quiet,
                desc="converting",
            ) as bar,
        ):
            for spec in pending:
                yield write_shard(
                    work.shard_path(spec), spec, shard_users(plan, spec), results, shard_format, bar
                )
