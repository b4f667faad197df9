"""A raw store's pixels, written once: workers decode into shared memory, the store writer writes them.

A raw store is mostly pixels (196 KB per 256 px image, 85 GB for FLAIR). Shard files that held
them would write every pixel twice (into the shard, then into the store) and delete them after.
Instead, the local executor lends its forked workers :class:`PixelBuffers`: shared memory,
one slot per shard in flight. A worker puts a shard's decoded images into its slot and writes a shard
file without pixels (ids, labels, metadata, and each user's pixel checksum); the main process
writes the pixels straight from the slot into the store, so they reach the file once.

Shards aim at :data:`PIXEL_SHARD_BYTES` of pixels, so the slots stay small; a shard above
:data:`MAX_SLOT_BYTES` (one user with thousands of large images) keeps its pixels in its shard
file, as other stores do, and the store writer copies them.

Resume still works: after each shard the store writer appends the file offsets of that shard's
pixels in the store being written to a journal (:class:`PixelJournal`). A run interrupted at
any point (Ctrl-C, ``kill -9``) leaves its partial store; ``resume`` moves it into the work
folder and takes a finished shard's pixels from it, each user's bytes checked against the
checksum its shard recorded (a shard whose pixels are missing or damaged is made again).
"""

from __future__ import annotations

import contextlib
import json
import mmap
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedimage.store.checksum import DatasetDigest

#: Slot bytes kept mapped after a larger shard was written (the rest is given back to the system).
KEPT_SLOT_BYTES = 64 << 20
#: Pixels per shard the conversion aims at (whole users: a larger user makes a larger shard).
PIXEL_SHARD_BYTES = 64 << 20
#: A shard with more pixels than this (one enormous user) keeps them in its shard file instead: memory
#: stays bounded, and that shard's pixels are written twice.
MAX_SLOT_BYTES = 1 << 30
JOURNAL_PREFIX = "pixels-"


@dataclass(frozen=True, slots=True)
class PixelRun:
    """Where one user's pixels are: ``count`` images from byte ``offset`` of a file."""

    split: str
    user_id: str
    count: int
    offset: int
    nbytes: int
    #: The digest of the bytes (in the images line of the user group's checksum).
    digest: str

    @classmethod
    def from_json(cls, row: Sequence[Any]) -> PixelRun:
        split, user_id, count, offset, nbytes, digest = row
        return cls(str(split), str(user_id), int(count), int(offset), int(nbytes), str(digest))


class PixelBuffers:
    """``slots`` shared, anonymous memory maps of ``capacity`` bytes each, made before workers fork.

    Pages are touched only as pixels are written; a slot that held a larger shard than
    :data:`KEPT_SLOT_BYTES` gives its tail back after use (:meth:`release`).
    """

    def __init__(self, slots: int, capacity: int):
        self.capacity = max(1, capacity)
        self._maps = [mmap.mmap(-1, self.capacity) for _ in range(max(1, slots))]

    @property
    def slots(self) -> int:
        return len(self._maps)

    def slot(self, index: int) -> memoryview:
        return memoryview(self._maps[index % len(self._maps)])

    def release(self, index: int, used: int) -> None:
        """Give back the pages of slot ``index`` beyond :data:`KEPT_SLOT_BYTES` (when it used more)."""
        if used <= KEPT_SLOT_BYTES:
            return
        start = KEPT_SLOT_BYTES - KEPT_SLOT_BYTES % mmap.PAGESIZE
        with contextlib.suppress(AttributeError, OSError, ValueError):  # MADV_REMOVE: Linux only
            self._maps[index % len(self._maps)].madvise(mmap.MADV_REMOVE, start, self.capacity - start)

    def close(self) -> None:
        for memory in self._maps:
            with contextlib.suppress(BufferError):  # a view still alive: the map goes with the process
                memory.close()
        self._maps = []


class SlotWriter:
    """Fills one slot with a shard's accepted images (``image_bytes`` each), in order.

    Workers decode each image into a small buffer of their own and :meth:`add` copies it here:
    decoding straight into the slot cost 5-6% more CPU (the checksum then reads pixels that have
    left the CPU's cache).
    """

    def __init__(self, slot: memoryview, image_bytes: int):
        self._slot = slot
        self._image_bytes = image_bytes
        self.used = 0

    def add(self, payload: bytes | memoryview) -> None:
        """Copy the next accepted image's pixels into the slot."""
        if len(payload) != self._image_bytes:
            raise ValueError(
                f"an image of {len(payload)} bytes in a store of {self._image_bytes}-byte images"
            )
        end = self.used + self._image_bytes
        if end > len(self._slot):
            raise ValueError(f"a shard's pixels outgrew their buffer ({len(self._slot)} bytes)")
        self._slot[self.used : end] = payload
        self.used = end


_lent: PixelBuffers | None = None  # the buffers of the running conversion, in this process and its workers


@contextlib.contextmanager
def lend_buffers(buffers: PixelBuffers | None) -> Iterator[None]:
    """Make ``buffers`` reachable by workers forked inside this block (:func:`lent_slot`)."""
    global _lent
    _lent = buffers
    try:
        yield
    finally:
        _lent = None


def lent_slot(index: int) -> memoryview:
    if _lent is None:
        raise RuntimeError("a shard task with a pixel slot needs the lend_buffers() block")
    return _lent.slot(index)


class PixelJournal:
    """Where each finished shard's pixels lie in the partial store of one run (``pixels-N.jsonl``).

    Each run of a conversion writes the journal of its own partial store; a resumed run first
    moves the interrupted run's partial store beside its journal (``pixels-N.h5``), and looks a
    shard's pixels up in the newest journal that has them.
    """

    def __init__(self, folder: Path):
        self.folder = folder
        self._handle: Any = None

    def generations(self) -> list[int]:
        numbers = []
        for path in self.folder.glob(f"{JOURNAL_PREFIX}*.jsonl"):
            with contextlib.suppress(ValueError):
                numbers.append(int(path.stem.removeprefix(JOURNAL_PREFIX)))
        return sorted(numbers)

    def _paths(self, generation: int) -> tuple[Path, Path]:
        stem = self.folder / f"{JOURNAL_PREFIX}{generation:03d}"
        return stem.with_suffix(".jsonl"), stem.with_suffix(".h5")

    def adopt(self, partial_store: Path) -> None:
        """Keep an interrupted run's partial store (its pixels) beside that run's journal.

        The newest journal without its file takes it; without such a journal the file holds
        nothing a resume can find, and is deleted.
        """
        if not partial_store.exists():
            return
        generations = self.generations()
        if generations:
            journal, pixels = self._paths(generations[-1])
            if not pixels.exists() and journal.stat().st_size:
                os.replace(partial_store, pixels)
                return
        partial_store.unlink()

    def start(self) -> None:
        """Open a new journal for the partial store this run writes."""
        generations = self.generations()
        journal, _ = self._paths((generations[-1] + 1) if generations else 0)
        self._handle = open(journal, "a", encoding="utf-8")  # noqa: SIM115 (closed by close())

    def record(self, shard: int, runs: Sequence[Sequence[Any]]) -> None:
        """Append where the pixels of shard number ``shard`` lie (their bytes are in the file already):
        (split, user id, images, offset, bytes, digest) of each user, in the shard's order."""
        line = json.dumps({"shard": shard, "runs": [list(run) for run in runs]})
        self._handle.write(line + "\n")
        self._handle.flush()

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def find(self, shard: int) -> tuple[Path, list[PixelRun]] | None:
        """The newest file holding the pixels of shard number ``shard``, and where they lie."""
        for generation in reversed(self.generations()):
            journal, pixels = self._paths(generation)
            if not pixels.exists():
                continue
            for line in reversed(journal.read_text(encoding="utf-8").splitlines()):
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue  # a line cut short by the interruption
                if entry.get("shard") == shard:
                    return pixels, [PixelRun.from_json(row) for row in entry["runs"]]
        return None

    def holds(self, shard: int, users: Sequence[tuple[str, str, int, str]]) -> bool:
        """True when a journaled partial store holds shard ``shard``'s pixels for ``users`` ((split,
        user id, images, digest) each, as its shard recorded them), every byte checked."""
        found = self.find(shard)
        if found is None:
            return False
        path, runs = found
        if [(run.split, run.user_id, run.count, run.digest) for run in runs] != list(users):
            return False
        scratch = bytearray(max((run.nbytes for run in runs), default=0))  # one user's bytes at a time
        return all(read_runs(path, [run], memoryview(scratch)) == run.nbytes for run in runs)

    def recover(self, shard: int) -> bytearray | None:
        """Shard ``shard``'s pixels from the journaled partial store that holds them, checked; None
        when they are missing or changed."""
        found = self.find(shard)
        if found is None:
            return None
        path, runs = found
        pixels = bytearray(sum(run.nbytes for run in runs))
        return pixels if read_runs(path, runs, memoryview(pixels)) == len(pixels) else None


def read_runs(path: Path, runs: Sequence[PixelRun], slot: memoryview) -> int | None:
    """Copy the bytes of ``runs`` from ``path`` into ``slot``, checking each run's digest.

    Returns the bytes copied, or None when the file lacks them or any run's bytes differ.
    """
    used = 0
    try:
        with open(path, "rb") as handle:
            for run in runs:
                if used + run.nbytes > len(slot):
                    return None
                target = slot[used : used + run.nbytes]
                handle.seek(run.offset)
                if handle.readinto(target) != run.nbytes:
                    return None
                digest = DatasetDigest()
                digest.update(target)
                if digest.hexdigest() != run.digest:
                    return None
                used += run.nbytes
    except OSError:
        return None
    return used
