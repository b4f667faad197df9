"""A conversion's work folder: the store written as shard files that a later run can resume.

Users are cut, in store order, into shards of a 64th of the images, between
:data:`MIN_SHARD_IMAGES` and :data:`SHARD_IMAGES` (whole users, so a larger user
makes a larger shard).
Each shard is a small store (``shard-00003.h5``) written under a temporary name
and renamed when complete, so a run killed at any point leaves only whole
shards behind. ``--resume`` reuses the shards whose key (options + the exact
rows they hold) matches, and the store is then assembled from all shards: by
copying their user groups into one file, or (``--engine ray``) by linking them
with HDF5 external links. Either way the result does not depend on whether, or
where, a run was interrupted.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from fedimage.errors import StoreError
from fedimage.records import Reject
from fedimage.store import schema
from fedimage.store.checksum import checksum_of_group, digest_line

SHARD_IMAGES = 4096
MIN_SHARD_IMAGES = 256
SHARDS_PER_RUN = 64  # enough shards to keep every worker busy to the end
RUN_FILE = "run.json"


@dataclass(frozen=True, slots=True)
class ShardSpec:
    """Users ``first_user:stop_user`` of the plan (images ``first_image:stop_image`` in store order)."""

    index: int
    first_user: int
    stop_user: int
    first_image: int
    stop_image: int

    @property
    def name(self) -> str:
        return f"shard-{self.index:05d}.h5"


def shard_target(total_images: int, most: int | None = None) -> int:
    """Images per shard for a run of ``total_images`` (at most ``most``): a function of the plan and
    options only, so resume finds them."""
    target = min(SHARD_IMAGES, max(MIN_SHARD_IMAGES, -(-total_images // SHARDS_PER_RUN)))
    return target if most is None else max(1, min(target, most))


def shard_specs(
    user_sizes: Sequence[int], target_images: int | None = None, most: int | None = None
) -> list[ShardSpec]:
    """Cut users (in store order) into runs of at least ``target_images`` images (the last may be
    smaller); by default :func:`shard_target`'s, at most ``most``."""
    target_images = shard_target(sum(user_sizes), most) if target_images is None else target_images
    specs: list[ShardSpec] = []
    first_user = first_image = image = 0
    for user, size in enumerate(user_sizes):
        image += size
        if image - first_image >= target_images:
            specs.append(ShardSpec(len(specs), first_user, user + 1, first_image, image))
            first_user, first_image = user + 1, image
    if first_user < len(user_sizes):
        specs.append(ShardSpec(len(specs), first_user, len(user_sizes), first_image, image))
    return specs


def work_dir_for(output: Path) -> Path:
    """Where a conversion to ``output`` keeps its shards until the store is assembled."""
    return output.with_name(output.name + ".work")


def shards_dir_for(output: Path) -> Path:
    """Where a linked store (``--engine ray``) keeps the shard files its top-level file links to."""
    return output.with_name(output.name + ".shards")


@dataclass
class ShardInfo:
    """What a finished shard records about itself in ``/metadata/shard``."""

    index: int
    key: str
    users: dict[str, dict[str, dict[str, Any]]]
    rejects: list[Reject]
    #: A shard without pixels (a raw store written once): (split, user id, images, digest of the
    #: pixels) of each user, in the order of their pixels in the shard's buffer.
    pixels: list[tuple[str, str, int, str]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        rejects = [reject.to_json() for reject in self.rejects]
        data = {"index": self.index, "key": self.key, "users": self.users, "rejects": rejects}
        if self.pixels:
            data["pixels"] = [list(entry) for entry in self.pixels]
        return data

    @classmethod
    def read(cls, path: Path) -> ShardInfo:
        with h5py.File(path, "r") as file:
            data = json.loads(file[schema.METADATA][schema.SHARD_INFO][()])
        rejects = [Reject(**row) for row in data["rejects"]]
        pixels = [(str(s), str(u), int(n), str(h)) for s, u, n, h in data.get("pixels", [])]
        return cls(data["index"], data["key"], data["users"], rejects, pixels)


class WorkDir:
    """The shard files of one conversion, and the run options they were made with."""

    def __init__(self, output: Path):
        self.output = output
        self.path = work_dir_for(output)

    def shard_path(self, spec: ShardSpec) -> Path:
        return self.path / spec.name

    def prepare(self, run: dict[str, Any], *, resume: bool, overwrite: bool) -> bool:
        """Create the folder, or check that a left-over one belongs to this run; True when resuming."""
        run_file = self.path / RUN_FILE
        if self.path.exists():
            if not resume:
                if not overwrite:
                    raise StoreError(
                        f"{self.path} holds an interrupted conversion to {self.output.name}; "
                        "pass `resume` to continue it, or `overwrite` to start over"
                    )
                shutil.rmtree(self.path)
            else:
                previous = _read_json(run_file)
                if previous != run:
                    changed = sorted(k for k in {*run, *previous} if run.get(k) != previous.get(k))
                    raise StoreError(
                        f"cannot resume {self.output.name}: the interrupted run used other "
                        f"{', '.join(changed) or 'settings'}; pass `overwrite` to start over"
                    )
                for leftover in self.path.glob("*.partial"):
                    leftover.unlink()
                return True
        self.path.mkdir()
        run_file.write_text(json.dumps(run, indent=1, sort_keys=True))
        return False

    def finished(
        self, spec: ShardSpec, key: str, pixel_shape: tuple[int, ...] | None = None
    ) -> ShardInfo | None:
        """The shard's info when a previous run finished it with the same key, else None.

        ``pixel_shape``: one image's (size, size, channels) when shards hold no pixels (their
        users' checksums then count the pixels' recorded digests).
        """
        path = self.shard_path(spec)
        if not path.exists():
            return None
        try:
            info = ShardInfo.read(path)
        except (OSError, KeyError, ValueError):
            path.unlink()  # unreadable: made again
            return None
        if info.key != key:
            raise StoreError(
                f"cannot resume {self.output.name}: {spec.name} was made from other rows "
                "(the source changed since the interrupted run); pass `overwrite` to start over"
            )
        if not _groups_match(path, info, pixel_shape):
            path.unlink()  # damaged since it was finished: made again
            return None
        return info

    def has_finished_shards(self) -> bool:
        """True when the folder holds at least one finished shard (worth keeping for a resume)."""
        return self.path.is_dir() and any(self.path.glob("shard-*.h5"))

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def _groups_match(path: Path, info: ShardInfo, pixel_shape: tuple[int, ...] | None) -> bool:
    """True when every user group of a finished shard still has the checksum it was written with
    (a shard without pixels: with its users' recorded pixel digests in place of ``images``)."""
    pixel_lines: dict[tuple[str, str], list[str]] = {}
    if info.pixels:
        if pixel_shape is None:
            return False
        for split, user_id, count, digest in info.pixels:
            line = digest_line(schema.IMAGES, np.dtype(np.uint8), (count, *pixel_shape), digest)
            pixel_lines[split, user_id] = [line]
    try:
        with h5py.File(path, "r") as shard:
            return all(
                checksum_of_group(
                    shard[split][schema.user_key(user_id)], pixel_lines.get((split, user_id), ())
                )
                == entry["sha256"]
                for split, users in info.users.items()
                for user_id, entry in users.items()
            )
    except (OSError, KeyError, ValueError, RuntimeError, TypeError):
        return False


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def move_shards(work: WorkDir, specs: Sequence[ShardSpec], destination: Path, overwrite: bool) -> None:
    """Move finished shard files into ``destination`` (a linked store's shard folder)."""
    if destination.exists():
        if not overwrite:
            raise StoreError(f"{destination} already exists; pass `overwrite` to replace it")
        shutil.rmtree(destination)
    destination.mkdir()
    for spec in specs:
        os.replace(work.shard_path(spec), destination / spec.name)
