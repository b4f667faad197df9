"""The ``local`` executor: worker processes on this machine write whole shard files in parallel."""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator, Sequence
from concurrent.futures import Future
from contextlib import ExitStack, closing, contextmanager
from functools import partial
from typing import ClassVar

from tqdm import tqdm

from fedimage.conversion import shard
from fedimage.conversion.executors.base import ShardJob
from fedimage.conversion.executors.pool import WorkerPool, default_workers
from fedimage.conversion.pixels import MAX_SLOT_BYTES, PixelBuffers, PixelJournal, lend_buffers
from fedimage.conversion.plan import ConversionPlan
from fedimage.conversion.shard import Result, ShardTask
from fedimage.conversion.workdir import ShardInfo, ShardSpec
from fedimage.errors import StoreError
from fedimage.store.writer import PixelRunRow, StoreWriter


class LocalExecutor:
    """Shards written by ``workers`` processes here (all cores by default); the store copies them in.

    A raw store's pixels skip the shards: workers decode them into shared memory and the store
    writer writes them from there, once (see :mod:`fedimage.conversion.pixels`).
    """

    keeps_shards: ClassVar[bool] = False

    def __init__(self) -> None:
        self._buffers: PixelBuffers | None = None
        self._journal: PixelJournal | None = None
        self._slots: dict[int, int] = {}  # shard index -> its pixel slot
        self._writing: dict[int, Future[None]] = {}  # slot -> the write of the pixels it holds
        self._sent = 0  # shards given a slot so far
        self._image_bytes = 0

    @staticmethod
    def writes_pixels_once() -> bool:
        """True when workers can share memory with this process (they fork): a raw store's pixels
        then go from the workers to the store without shard files."""
        return "fork" in multiprocessing.get_all_start_methods()

    @contextmanager
    def running(self, job: ShardJob) -> Iterator[Iterator[ShardInfo]]:
        workers = job.workers or default_workers()
        with ExitStack() as stack:
            if job.shard_format.pixels_in_store:
                self._image_bytes = job.shard_format.image_bytes
                sizes = [self._pixel_bytes(spec) for spec in job.pending]
                largest = max((size for size in sizes if size <= MAX_SLOT_BYTES), default=0)
                slots = workers * shard.SHARDS_IN_FLIGHT_PER_WORKER
                self._buffers = PixelBuffers(slots, largest)
                stack.callback(self._buffers.close)
                self._journal = PixelJournal(job.work.path)
                self._journal.start()
                stack.callback(self._journal.close)
            stack.enter_context(lend_buffers(self._buffers))  # before the workers fork
            stack.enter_context(shard.source_for_workers(job.source, job.plan))
            pool = stack.enter_context(WorkerPool(workers, shard.SHARDS_IN_FLIGHT_PER_WORKER))
            yield run_local(job, pool, self._pixel_slot)

    def _pixel_bytes(self, spec: ShardSpec) -> int:
        """The most pixel bytes a shard can hold (all its images accepted)."""
        return (spec.stop_image - spec.first_image) * self._image_bytes

    def _pixel_slot(self, spec: ShardSpec) -> int | None:
        """The buffer slot of the next shard sent out (slots are reused in turn, one per shard in flight);
        None for a shard too large for one (its pixels stay in its file)."""
        if self._buffers is None or self._pixel_bytes(spec) > self._buffers.capacity:
            return None
        slot = self._slots[spec.index] = self._sent % self._buffers.slots
        self._sent += 1
        writing = self._writing.pop(slot, None)
        if writing is not None:  # its previous shard's pixels are in the store before new ones go in
            writing.result()
        return slot

    def add_shard(self, writer: StoreWriter, job: ShardJob, spec: ShardSpec) -> None:
        path = job.work.shard_path(spec)
        if self._buffers is None or self._journal is None:
            writer.add_shard(path)
            return
        slot = self._slots.pop(spec.index, None)
        journal = self._journal
        info = ShardInfo.read(path)
        if not info.pixels:  # its pixels are in the shard file (a very large user), or it has none
            writer.add_shard(path)
            return
        if slot is None:  # a shard of an interrupted run: its pixels are in that run's partial store
            pixels = journal.recover(spec.index)
            if pixels is None:
                raise StoreError(
                    f"the pixels of {spec.name} in the interrupted run's partial store changed while"
                    " resuming; convert again with `overwrite`"
                )
            record = partial(journal.record, spec.index)
            write = writer.add_shard(path, pixels=memoryview(pixels), on_written=record)
            if write is not None:  # one recovered shard's pixels in memory at a time
                write.result()
        else:
            used = sum(count for _, _, count, _ in info.pixels) * job.shard_format.image_bytes
            buffers = self._buffers

            def written(placed: list[PixelRunRow]) -> None:  # on the store writer's pixel thread
                journal.record(spec.index, placed)
                buffers.release(slot, used)

            write = writer.add_shard(path, pixels=buffers.slot(slot)[:used], on_written=written)
            if write is not None:
                self._writing[slot] = write

    def finish(self, job: ShardJob, specs: Sequence[ShardSpec], overwrite: bool) -> None:
        """Nothing to do: the shards were copied into the store."""


def _work_item(item: ShardTask | shard.BatchItem) -> ShardInfo | list[Result]:
    """Worker: a whole shard, or one batch of a large user's images."""
    return shard.convert_shard(item) if isinstance(item, ShardTask) else shard.standardize_batch(item)


def run_local(job: ShardJob, pool: WorkerPool, pixel_slot=lambda spec: None) -> Iterator[ShardInfo]:
    """Write the pending shards with the ``pool``'s processes; yields their infos in ``pending`` order.

    The pool must be entered before any HDF5 file is opened (see :class:`WorkerPool`).
    ``pixel_slot(spec)``: the shared buffer slot a raw shard's pixels go to (None: into the shard).
    """
    plan: ConversionPlan = job.plan
    source, work, pending = job.source, job.work, job.pending
    # A large user's images go out in batches so that every worker stays busy, their results coming
    # back to this process; a raw store's results are decoded pixels (196 KB per 256 px image): sent
    # between processes they cost more than the balance gains, so its shards stay whole.
    batched = job.image_options.storage != "raw"
    large = {spec.index for spec in pending if batched and shard.is_large(plan, spec)}
    sender = None if pool.shares_memory and shard.inherited_source() is source else source

    def items() -> Iterator[ShardTask | shard.BatchItem]:
        for spec in pending:
            if spec.index not in large:
                yield shard.shard_task(
                    plan,
                    sender,
                    spec,
                    work.shard_path(spec),
                    job.image_options,
                    job.shard_format,
                    pixel_slot(spec),
                )
                continue
            yield from shard.image_batches(
                plan, source, spec, job.image_options, job.shard_format.worker_fields
            )

    todo = sum(spec.stop_image - spec.first_image for spec in pending)
    outputs = pool.ordered_map(_work_item, items())
    with (
        closing(outputs),
        tqdm(
            total=plan.planned_images,
            initial=plan.planned_images - todo,
            unit="img",
            disable=job.quiet,
            desc="converting",
        ) as bar,
    ):
        for spec in pending:
            if spec.index in large:
                batches = (next(outputs) for _ in range(spec.first_image, spec.stop_image, shard.BATCH_SIZE))
                results = (result for batch in batches for result in batch)  # type: ignore[union-attr]
                path = work.shard_path(spec)
                yield shard.write_shard(
                    path, spec, shard.shard_users(plan, spec), results, job.shard_format, bar
                )
            else:
                info = shard.next_shard(outputs, spec, plan)
                bar.update(spec.stop_image - spec.first_image)
                yield info  # type: ignore[misc]
