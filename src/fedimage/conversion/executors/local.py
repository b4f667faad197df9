"""The ``local`` executor: worker processes on this machine write whole shard files in parallel."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import closing, contextmanager
from typing import ClassVar

from tqdm import tqdm

from fedimage.conversion import shard
from fedimage.conversion.executors.base import ShardJob
from fedimage.conversion.executors.pool import WorkerPool, default_workers
from fedimage.conversion.plan import ConversionPlan
from fedimage.conversion.shard import Result, ShardTask
from fedimage.conversion.workdir import ShardInfo, ShardSpec
from fedimage.store.writer import StoreWriter


class LocalExecutor:
    """Shards written by ``workers`` processes here (all cores by default); the store copies them in."""

    keeps_shards: ClassVar[bool] = False

    @contextmanager
    def running(self, job: ShardJob) -> Iterator[Iterator[ShardInfo]]:
        workers = job.workers or default_workers()
        with (
            shard.source_for_workers(job.source),
            WorkerPool(workers, shard.SHARDS_IN_FLIGHT_PER_WORKER) as pool,
        ):
            yield run_local(job, pool)

    def add_shard(self, writer: StoreWriter, job: ShardJob, spec: ShardSpec) -> None:
        writer.add_shard(job.work.shard_path(spec))

    def finish(self, job: ShardJob, specs: Sequence[ShardSpec], overwrite: bool) -> None:
        """Nothing to do: the shards were copied into the store."""


def _work_item(item: ShardTask | shard.BatchItem) -> ShardInfo | list[Result]:
    """Worker: a whole shard, or one batch of a large user's images."""
    return shard.convert_shard(item) if isinstance(item, ShardTask) else shard.standardize_batch(item)


def run_local(job: ShardJob, pool: WorkerPool) -> Iterator[ShardInfo]:
    """Write the pending shards with the ``pool``'s processes; yields their infos in ``pending`` order.

    The pool must be entered before any HDF5 file is opened (see :class:`WorkerPool`).
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
                    plan, sender, spec, work.shard_path(spec), job.image_options, job.shard_format
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
