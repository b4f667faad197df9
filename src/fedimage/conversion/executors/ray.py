"""The ``ray`` executor: the same per-shard work as the local engine, as tasks on a Ray cluster.

The driver plans the conversion and hands each shard's rows to one task: the
image bytes themselves for sources that hold them (Hugging Face tables), file
paths otherwise. A task standardizes its images and writes its shard file into
the conversion's work folder, so that folder (and file paths of the source)
must be reachable from every node: a shared file system. A shard holding a
large user is spread over the cluster as batches of images instead, and the
driver writes it, as the local engine does. The driver then links the shards
from one top-level store (HDF5 external links), which the reader opens like any
other store.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, ClassVar

from tqdm import tqdm

from fedimage.conversion.executors.base import ShardJob
from fedimage.conversion.workdir import ShardInfo, ShardSpec, move_shards, shards_dir_for
from fedimage.errors import StoreError
from fedimage.ray_cluster import join
from fedimage.store.writer import StoreWriter

TASKS_IN_FLIGHT_PER_CPU = 2


class RayExecutor:
    """Shards as Ray tasks on a cluster (``address``) or a local instance; the store links them.

    The shard files move next to the store (``out.h5.shards/``) and the store holds HDF5
    external links to their user groups, so a cluster writes the store's bytes in parallel.
    """

    keeps_shards: ClassVar[bool] = True

    @staticmethod
    def writes_pixels_once() -> bool:
        """False: a linked store's pixels stay in the shard files its workers wrote (written once too)."""
        return False

    @contextmanager
    def running(self, job: ShardJob) -> Iterator[Iterator[ShardInfo]]:
        destination = shards_dir_for(job.work.output)
        if destination.exists() and not job.overwrite:
            raise StoreError(f"{destination} already exists; pass `overwrite` to replace it")
        yield run_ray(job)

    def add_shard(self, writer: StoreWriter, job: ShardJob, spec: ShardSpec) -> None:
        destination = shards_dir_for(job.work.output)
        writer.add_shard(job.work.shard_path(spec), link_as=f"{destination.name}/{spec.name}")

    def finish(self, job: ShardJob, specs: Sequence[ShardSpec], overwrite: bool) -> None:
        """Move the shard files where the store's links point."""
        move_shards(job.work, specs, shards_dir_for(job.work.output), overwrite)


def run_ray(job: ShardJob) -> Iterator[ShardInfo]:
    """Run the pending shards as Ray tasks (a local Ray instance unless ``job.address`` names a cluster)."""
    plan, source, image_options, work = job.plan, job.source, job.image_options, job.work
    pending, shard_format, address, workers, quiet = (
        job.pending,
        job.shard_format,
        job.address,
        job.workers,
        job.quiet,
    )
    from fedimage.conversion.shard import (
        convert_shard,
        image_batches,
        is_large,
        shard_task,
        shard_users,
        standardize_batch,
        write_shard,
    )

    with join(address, workers) as ray:
        task = ray.remote(convert_shard)
        batch_task = ray.remote(standardize_batch)
        window = max(1, int(ray.cluster_resources().get("CPU", 1)) * TASKS_IN_FLIGHT_PER_CPU)
        in_flight: dict[Any, ShardSpec] = {}
        queue = list(pending)
        todo = sum(spec.stop_image - spec.first_image for spec in pending)
        with tqdm(
            total=plan.planned_images,
            initial=plan.planned_images - todo,
            unit="img",
            disable=quiet,
            desc="converting (ray)",
        ) as bar:
            while queue or in_flight:
                while queue and len(in_flight) < window:
                    spec = queue.pop(0)
                    path = work.shard_path(spec)
                    if is_large(plan, spec):  # its images go out in batches; the driver writes the shard
                        batches = image_batches(plan, source, spec, image_options, shard_format.worker_fields)
                        refs = [batch_task.remote(batch) for batch in batches]
                        results = (result for ref in refs for result in ray.get(ref))
                        yield write_shard(path, spec, shard_users(plan, spec), results, shard_format, bar)
                        continue
                    ref = task.remote(shard_task(plan, source, spec, path, image_options, shard_format))
                    in_flight[ref] = spec
                if not in_flight:
                    continue
                done, _ = ray.wait(list(in_flight), num_returns=1)
                spec = in_flight.pop(done[0])
                info = ray.get(done[0])
                bar.update(spec.stop_image - spec.first_image)
                yield info
