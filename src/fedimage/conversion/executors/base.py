"""What an executor is: the part of a conversion that runs its pending shards somewhere."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import ClassVar, Protocol

from fedimage.conversion.plan import ConversionPlan
from fedimage.conversion.shard import ShardFormat
from fedimage.conversion.workdir import ShardInfo, ShardSpec, WorkDir
from fedimage.imaging.standardize import ImageOptions
from fedimage.sources import Source
from fedimage.store.writer import StoreWriter


@dataclass(frozen=True)
class ShardJob:
    """The shards a conversion still has to write, and everything needed to write them."""

    plan: ConversionPlan
    source: Source
    image_options: ImageOptions
    pending: Sequence[ShardSpec]
    work: WorkDir
    shard_format: ShardFormat
    workers: int | None
    quiet: bool
    address: str | None = None
    overwrite: bool = False


class Executor(Protocol):
    """Runs a conversion's pending shards and hands them to the store writer.

    :meth:`running` is entered before the store file is opened (worker processes must start
    before any HDF5 handle exists) and yields each finished shard's info, in any order.
    :meth:`add_shard` puts one finished shard into the store; :meth:`finish` runs after the
    store is written.
    """

    #: True when the store keeps the shard files (it links them): they hold user ids and the
    #: paths of rejected images in the clear, so encryption and pseudonyms are refused.
    keeps_shards: ClassVar[bool]

    @staticmethod
    def writes_pixels_once() -> bool:
        """True when a raw store's pixels skip the shard files (written once, by the store writer)."""
        ...

    def running(self, job: ShardJob) -> AbstractContextManager[Iterator[ShardInfo]]: ...

    def add_shard(self, writer: StoreWriter, job: ShardJob, spec: ShardSpec) -> None: ...

    def finish(self, job: ShardJob, specs: Sequence[ShardSpec], overwrite: bool) -> None: ...
