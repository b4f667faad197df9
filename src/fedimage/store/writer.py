"""Writing a store: user groups streamed one image at a time, metadata last, atomic rename."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import json
import os
import sys
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import h5py
import numpy as np

from fedimage.errors import StoreError
from fedimage.labels import LABEL_JOIN
from fedimage.store import schema, sealing
from fedimage.store.checksum import DatasetDigest, array_line, group_checksum
from fedimage.store.metadata import MetadataColumn, encode_user_values

if TYPE_CHECKING:
    from fedimage.store.sealing import Sealing

DEFAULT_SPILL_BYTES = 256 << 20
JPEG_CHUNK_BYTES = 1 << 20
METADATA_CACHE_BYTES = 256 << 10


def index_dtype(limit: int, smallest: type = np.uint8) -> np.dtype:
    """The smallest unsigned dtype (not below ``smallest``) that holds values < ``limit``."""
    for dtype in (np.uint8, np.uint16, np.uint32, np.uint64):
        if np.dtype(dtype).itemsize >= np.dtype(smallest).itemsize and limit <= np.iinfo(dtype).max + 1:
            return np.dtype(dtype)
    raise StoreError(f"index range {limit} too large")


def check_output(path: Path, overwrite: bool) -> None:
    """Fail early, before any work, when ``path`` cannot or must not be written."""
    if path.is_dir():
        raise StoreError(f"output {path} is a folder")
    if path.exists() and not overwrite:
        raise StoreError(f"output {path} already exists; pass `overwrite` to replace it")
    if not path.parent.is_dir():
        raise StoreError(f"output folder {path.parent} does not exist")


_CREATION: dict[object, Any] = {}


#: Datasets up to this size are stored in their object header (HDF5's compact layout): one write
#: instead of two for a user's ids, labels and offsets (about 7% of a JPEG store's conversion CPU).
COMPACT_BYTES = 8192


def _dataset_creation_properties(compact: bool = False) -> h5py.h5p.PropDCID:
    """Contiguous (or ``compact``) layout without timestamps (as h5py's default), so files are
    reproducible.

    One property list per process and layout, reused for every dataset (creating one costs as
    much as a third of writing a small dataset); a forked worker makes its own.
    """
    key = ("dcpl", compact, os.getpid())
    properties = _CREATION.get(key)
    if properties is None:
        properties = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        properties.set_obj_track_times(False)
        if compact:
            properties.set_layout(h5py.h5d.COMPACT)
        _CREATION[key] = properties
    return properties


def _file_type(dtype: np.dtype) -> h5py.h5t.TypeID:
    """The HDF5 type of ``dtype``, made once per process and dtype."""
    key = (dtype, os.getpid())
    kind = _CREATION.get(key)
    if kind is None:
        kind = _CREATION[key] = h5py.h5t.py_create(dtype)
    return kind


def write_dataset(
    group: h5py.Group, name: str, array: np.ndarray, compact_small: bool = True
) -> h5py.h5d.DatasetID:
    """``group[name] = array`` through h5py's low-level API: same file, half the time; returns the dataset.

    A store has eight or nine small datasets per user, so per-dataset overhead
    decides how fast users with few images are written. Arrays up to :data:`COMPACT_BYTES` are
    stored compact unless ``compact_small`` is False (images: always at one place in the file).
    """
    array = np.ascontiguousarray(array)
    space = h5py.h5s.create_simple(array.shape)
    dataset = h5py.h5d.create(
        group.id,
        name.encode("utf-8"),
        _file_type(array.dtype),
        space,
        dcpl=_dataset_creation_properties(compact=compact_small and 0 < array.nbytes <= COMPACT_BYTES),
    )
    if array.size:
        dataset.write(h5py.h5s.ALL, h5py.h5s.ALL, array, mtype=_file_type(array.dtype))
    return dataset


def allocate_dataset(group: h5py.Group, name: str, shape: tuple[int, ...]) -> int:
    """Make a contiguous uint8 dataset of ``shape`` whose room is allocated now and never filled by
    HDF5; returns the file offset of its bytes, for :class:`PixelWrites`."""
    key = ("dcpl-allocated", os.getpid())
    properties = _CREATION.get(key)
    if properties is None:
        properties = _CREATION[key] = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        properties.set_obj_track_times(False)
        properties.set_layout(h5py.h5d.CONTIGUOUS)
        properties.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
        properties.set_fill_time(h5py.h5d.FILL_TIME_NEVER)
    dataset = h5py.h5d.create(
        group.id,
        name.encode("utf-8"),
        _file_type(np.dtype(np.uint8)),
        h5py.h5s.create_simple(shape),
        dcpl=properties,
    )
    return dataset.get_offset()


def _write_blob(group: h5py.Group, name: str, array: np.ndarray) -> None:
    """A sealed blob: contiguous, like images (its bytes at one place in the file)."""
    write_dataset(group, name, array, compact_small=False)


def _bound_metadata_cache(file: h5py.File) -> None:
    """Cap HDF5's metadata cache of a file being written at :data:`METADATA_CACHE_BYTES`.

    HDF5 grows it adaptively up to 32 MB as objects pile up, but a store is written
    once, front to back, and never revisits what it wrote: a small cache costs no measurable time
    and keeps the writer's memory flat in the number of users.
    """
    config = file.id.get_mdc_config()
    config.set_initial_size = True
    config.initial_size = config.max_size = METADATA_CACHE_BYTES
    config.min_size = min(config.min_size, METADATA_CACHE_BYTES)
    file.id.set_mdc_config(config)


def fsync_file(path: Path) -> None:
    """Flush a file's (or a folder's) data and metadata to the disk."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


FALLOC_FL_KEEP_SIZE = 1  # from <linux/falloc.h>


#: Disk reserved beyond a raw store's pixels for its HDF5 metadata (with 1% of the pixels' size).
RESERVE_MARGIN_BYTES = 16 << 20


def reserve_space(path: Path, nbytes: int) -> bool:
    """Allocate ``nbytes`` of disk for ``path`` ahead of its writes, without changing its size.

    Writing into allocated blocks costs the kernel a fraction of allocating them write by write
    (measured on ext4: a raw store's 3.9 GB of pixels took 8.8 s of system time without, see
    docs/performance.md). The file's bytes are unchanged; :func:`release_unused_space` gives back
    what was not written. Returns False where the system cannot (not Linux, a file system
    without ``fallocate``, too little space): the writes then allocate as usual.
    """
    if nbytes <= 0 or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fallocate = libc.fallocate
        fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
        descriptor = os.open(path, os.O_WRONLY)
    except (OSError, AttributeError):
        return False
    try:
        return fallocate(descriptor, FALLOC_FL_KEEP_SIZE, 0, nbytes) == 0
    finally:
        os.close(descriptor)


def release_unused_space(path: Path) -> None:
    """Free the blocks :func:`reserve_space` allocated past the end of ``path`` (its bytes stay)."""
    with contextlib.suppress(OSError):
        os.truncate(path, path.stat().st_size)


class _Writeback:
    """Writes a file's bytes to disk in a background thread while more are added (a durable store is
    fsynced before it is published: this way that last fsync waits only for the last bytes)."""

    def __init__(self, path: Path):
        self._descriptor = os.open(path, os.O_RDONLY)
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start a background flush unless one is running."""
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._flush, name="fedimage-writeback", daemon=True)
            self._thread.start()

    def _flush(self) -> None:
        with contextlib.suppress(OSError):  # the final fsync reports a real failure
            os.fdatasync(self._descriptor)

    def close(self) -> None:
        if self._thread is not None:
            self._thread.join()
        os.close(self._descriptor)


#: Where one user's pixels went in a store: (split, user id, images, offset, bytes, digest).
PixelRunRow = tuple[str, str, int, int, int, str]


class PixelWrites:
    """Writes byte runs into a file at given offsets from one background thread, in order.

    A raw store's pixels are most of its bytes; they are written on this thread (``pwrite`` lets go
    of the GIL) while the writer's thread takes in the next shard. With ``direct``, runs whose
    memory, offset and length are multiples of :data:`DIRECT_ALIGNMENT` go to the disk without
    the page cache (``O_DIRECT``): the kernel's copy of every pixel into cached pages was a fifth
    of a raw conversion's CPU time (see docs/performance.md). Other runs, and every run where the
    file system refuses ``O_DIRECT``, are written through the page cache.
    """

    def __init__(self, path: Path, background: bool = True, direct: bool = False):
        self._path = path
        self._descriptor = os.open(path, os.O_WRONLY)
        self._direct = _open_direct(path) if direct else None
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="fedimage-pixels") if background else None
        self._futures: list[Future[None]] = []

    def submit(self, pieces: list[tuple[int, memoryview]], then: Callable[[], None]) -> Future[None]:
        """Write each (offset, bytes) of ``pieces``, then call ``then`` (on the writing thread; here,
        before returning, unless ``background``)."""
        if self._pool is None:
            self._write(pieces, then)
            future: Future[None] = Future()
            future.set_result(None)
            return future
        future = self._pool.submit(self._write, pieces, then)
        self._futures = [*(kept for kept in self._futures if not kept.done() or kept.exception()), future]
        return future

    def _write(self, pieces: list[tuple[int, memoryview]], then: Callable[[], None]) -> None:
        try:
            for offset, data in pieces:
                self._write_piece(offset, data)
        except OSError as error:
            reason = error.strerror or error
            raise StoreError(f"cannot write pixels into {self._path}: {reason}") from error
        then()

    def _write_piece(self, offset: int, data: memoryview) -> None:
        if self._direct is not None and _aligned(offset, data):
            try:
                self._write_all(self._direct, offset, data)
                return
            except OSError as error:
                if error.errno != errno.EINVAL:
                    raise
                os.close(self._direct)  # O_DIRECT refused after all: the page cache from now on
                self._direct = None
        self._write_all(self._descriptor, offset, data)

    def _write_all(self, descriptor: int, offset: int, data: memoryview) -> None:
        while data:
            written = os.pwrite(descriptor, data, offset)
            data, offset = data[written:], offset + written

    def close(self) -> None:
        """Wait for every write, then close the file; raises what made one fail."""
        try:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
        finally:
            os.close(self._descriptor)
            if self._direct is not None:
                os.close(self._direct)
        for future in self._futures:
            future.result()


#: What ``O_DIRECT`` writes need to be multiples of (memory address, file offset, length): the page
#: size, which covers every disk's logical block size.
DIRECT_ALIGNMENT = 4096


def _open_direct(path: Path) -> int | None:
    """``path`` opened for writes that bypass the page cache, or None where that is not possible."""
    flag = getattr(os, "O_DIRECT", 0)
    if not flag:
        return None
    try:
        return os.open(path, os.O_WRONLY | flag)
    except OSError:  # a file system without O_DIRECT (tmpfs on older kernels): the page cache
        return None


def _aligned(offset: int, data: memoryview) -> bool:
    if offset % DIRECT_ALIGNMENT or len(data) % DIRECT_ALIGNMENT:
        return False
    return np.frombuffer(data, dtype=np.uint8).ctypes.data % DIRECT_ALIGNMENT == 0


def partial_path_for(path: Path) -> Path:
    """The temporary name a store is written under before its final rename."""
    return path.with_name(path.name + ".partial")


class StoreWriter:
    """Writes one store file. Use as a context manager; call :meth:`finish` to publish it.

    The file is written as ``<name>.partial`` and renamed only by :meth:`finish`,
    so an interrupted run never leaves a file that looks complete. With a ``cipher``
    (:mod:`fedimage.privacy.encryption`) each user group is one sealed blob, held in memory
    until sealed, and ``/metadata`` is sealed too unless ``seal_metadata`` is False (shards).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        storage: str,
        image_size: int,
        coarse_labels: Sequence[str],
        fine_labels: Sequence[str],
        overwrite: bool = False,
        spill_bytes: int | None = None,
        cipher: Sealing | None = None,
        seal_metadata: bool = True,
        color: str = "rgb",
        metadata_columns: Sequence[MetadataColumn] = (),
        durable: bool = True,
        pixels_elsewhere: bool = False,
        keep_partial: Callable[[Path], None] | None = None,
        reserve_bytes: int = 0,
    ):
        self.path = Path(path)
        check_output(self.path, overwrite)
        self.storage = storage
        self.image_size = image_size
        #: Channels of a raw store's pixels: 3 (``rgb``) or 1 (``gray``).
        self.channels = 1 if color == "gray" else 3
        #: Where a user's images (and a jpeg store's offsets) go: ``images``, or ``jpeg`` + ``jpeg_offsets``.
        self.images_name, self.offsets_name = schema.image_datasets(storage, schema.FORMAT_VERSION)
        self.coarse_mapping = {label: index for index, label in enumerate(coarse_labels)}
        self.fine_mapping = {label: index for index, label in enumerate(fine_labels)}
        self.coarse_counter: Counter[str] = Counter(dict.fromkeys(coarse_labels, 0))
        self.fine_counter: Counter[str] = Counter(dict.fromkeys(fine_labels, 0))
        self.spill_bytes = DEFAULT_SPILL_BYTES if spill_bytes is None else spill_bytes
        self.cipher = cipher
        #: The per-image metadata columns (see fedimage.store.metadata) each image's values follow.
        self.metadata_columns = tuple(metadata_columns)
        #: Whether :meth:`finish` forces the bytes to disk before publishing (a conversion's shards are
        #: not: a resume re-verifies every reused shard's checksums, so one an OS crash damaged is redone).
        self.durable = durable
        #: A raw shard whose pixels go to the store another way (:mod:`fedimage.conversion.pixels`):
        #: its groups get every dataset but ``images``, whose checksum line they still count.
        self.pixels_elsewhere = pixels_elsewhere
        #: (split, user id, images, digest of the pixels) of each group written, in order (pixels_elsewhere).
        self.pixel_users: list[tuple[str, str, int, str]] = []
        #: Called with the closed partial file on :meth:`abort` instead of deleting it (a resume reads it).
        self._keep_partial = keep_partial
        self._seal_metadata = seal_metadata and cipher is not None
        if cipher is not None:
            self.spill_bytes = sys.maxsize  # a sealed group is one AES-GCM message
        self.users: dict[str, dict[str, dict[str, Any]]] = {}
        self._splits: dict[str, h5py.Group] = {}
        self._partial = partial_path_for(self.path)
        #: Bytes of one image's raw pixels (a raw store's ``images`` rows).
        self.image_bytes = image_size * image_size * self.channels
        # A raw store of page-sized images, written into reserved disk: every object of one image or
        # more (each user's pixels) starts on a page boundary, so PixelWrites can write it directly.
        self._aligned = reserve_bytes > 0 and storage == "raw" and self.image_bytes % DIRECT_ALIGNMENT == 0
        alignment = {"alignment_threshold": self.image_bytes, "alignment_interval": DIRECT_ALIGNMENT}
        try:
            self._file = h5py.File(
                self._partial, "w", track_order=False, **(alignment if self._aligned else {})
            )
        except OSError as error:
            raise StoreError(f"cannot create {self._partial}: {error}") from None
        _bound_metadata_cache(self._file)
        #: Whether disk was reserved ahead (``reserve_bytes``: about what the pixels will take).
        margin = reserve_bytes // 100 + RESERVE_MARGIN_BYTES if reserve_bytes > 0 else 0
        self._reserved = reserve_space(self._partial, reserve_bytes + margin)
        self._writeback = _Writeback(self._partial) if durable else None
        self._pixel_writes: PixelWrites | None = None

    def __enter__(self) -> StoreWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._file is not None:
            self.abort()

    def user(self, split: str, user_id: str) -> UserGroupWriter:
        """A writer for one user group (created when its first image arrives)."""
        return UserGroupWriter(self, split, user_id)

    def add_shard(
        self,
        path: Path,
        link_as: str | None = None,
        pixels: memoryview | None = None,
        on_written: Callable[[list[PixelRunRow]], None] | None = None,
    ) -> Future[None] | None:
        """Take over a finished shard's user groups: copied, or as external links to ``link_as``.

        A shard written without pixels (``pixels_elsewhere``) takes them from ``pixels``, its users'
        images one after the other. Into reserved disk they are written in the background:
        ``pixels`` must stay unchanged until the returned future is done. Once the bytes are in the
        file, and before the next shard's are written, ``on_written`` gets where each user's pixels
        went: (split, user id, images, offset, bytes, digest), in the shard's order.
        """
        write = None
        with h5py.File(path, "r") as shard:
            meta = shard[schema.METADATA]
            info = json.loads(meta[schema.SHARD_INFO][()])
            users = info["users"]
            if link_as is None:
                copy_user_groups(shard, self._file, users)
            else:
                link_user_groups(link_as, self._file, users)
            if pixels is not None:
                write = self._write_pixels(info.get("pixels", []), pixels, on_written)
            self.coarse_counter.update(json.loads(meta[schema.LABEL_COUNTER][()]))
            self.fine_counter.update(json.loads(meta[schema.FINE_LABEL_COUNTER][()]))
        for split, entries in users.items():
            self.users.setdefault(split, {}).update(entries)
        if self._writeback is not None:
            self._writeback.start()  # the shard's bytes go to disk while the next shard is copied
        return write

    def _write_pixels(
        self,
        users: list[list[Any]],
        pixels: memoryview,
        on_written: Callable[[list[PixelRunRow]], None] | None,
    ) -> Future[None]:
        """Make each listed user's ``images`` dataset and write its bytes from ``pixels``, once.

        The datasets' room is allocated here; the bytes go in from :class:`PixelWrites`'s thread
        (while this thread takes in the next shard). Users whose datasets HDF5 placed one right
        after the other (most: their headers go elsewhere) are written as one run.
        """
        placed: list[PixelRunRow] = []
        runs: list[tuple[int, int, int]] = []  # (file offset, start in pixels, bytes)
        start = 0
        for split, user_id, count, digest in users:
            nbytes = count * self.image_bytes
            if start + nbytes > len(pixels):
                raise StoreError(f"the pixels of user {user_id!r} are missing from their shard's buffer")
            group = self._split_group(split)[schema.user_key(user_id)]
            shape = (count, self.image_size, self.image_size, self.channels)
            offset = allocate_dataset(group, self.images_name, shape)
            placed.append((split, user_id, count, offset, nbytes, digest))
            if runs and runs[-1][0] + runs[-1][2] == offset:  # right after the previous user's
                runs[-1] = (runs[-1][0], runs[-1][1], runs[-1][2] + nbytes)
            else:
                runs.append((offset, start, nbytes))
            start += nbytes
        pieces = [(offset, pixels[first : first + nbytes]) for offset, first, nbytes in runs]
        if self._pixel_writes is None:
            # In the background only into reserved disk: a write that fails for lack of space leaves
            # HDF5 unable to close the datasets it is making meanwhile (and later files crash on them).
            self._pixel_writes = PixelWrites(
                self._partial, background=self._reserved, direct=self._reserved and self._aligned
            )
        return self._pixel_writes.submit(pieces, lambda: on_written(placed) if on_written else None)

    def finish(self, metadata: dict[str, Any]) -> None:
        """Write ``/metadata`` (counters, mappings, taxonomy, ``metadata``'s entries) and publish."""
        meta = self._file.require_group(schema.METADATA)
        entries = {
            schema.LABEL_MAPPING: self.coarse_mapping,
            schema.FINE_LABEL_MAPPING: self.fine_mapping,
            schema.LABEL_COUNTER: dict(sorted(self.coarse_counter.items())),
            schema.FINE_LABEL_COUNTER: dict(sorted(self.fine_counter.items())),
            **metadata,
        }
        texts = {name: json.dumps(value, ensure_ascii=False) for name, value in entries.items()}
        if self._seal_metadata:
            texts, sealed = sealing.seal_metadata_entries(self.cipher, texts)
            write_dataset(meta, sealing.SEALED, sealed, compact_small=False)
        for name, text in texts.items():
            meta[name] = text
        self._stop_pixel_writes()
        self._file.flush()
        self._file.close()
        self._file = None
        self._stop_writeback()
        if self._reserved:
            release_unused_space(self._partial)
        if self.durable:
            fsync_file(self._partial)  # the bytes are on disk before the name that publishes them
        os.replace(self._partial, self.path)
        if self.durable:
            fsync_file(self.path.parent)

    def abort(self) -> None:
        """Close and delete the partial file (or hand it to ``keep_partial``)."""
        with contextlib.suppress(OSError, StoreError):  # a failed pixel write: reported already
            self._stop_pixel_writes()
        if self._file is not None:
            with contextlib.suppress(
                OSError, RuntimeError
            ):  # a full disk fails the last flush: discarded anyway
                self._file.close()
            self._file = None
        self._stop_writeback()
        if self._reserved:
            release_unused_space(self._partial)
        if self._keep_partial is not None and self._partial.exists():
            self._keep_partial(self._partial)
        else:
            self._partial.unlink(missing_ok=True)

    def _stop_pixel_writes(self) -> None:
        """Wait for the pixel writes under way (raising the first that failed)."""
        if self._pixel_writes is not None:
            writes, self._pixel_writes = self._pixel_writes, None
            writes.close()

    def _stop_writeback(self) -> None:
        if self._writeback is not None:
            self._writeback.close()
            self._writeback = None

    def _split_group(self, split: str) -> h5py.Group:
        group = self._splits.get(split)
        if group is None:
            group = self._splits[split] = self._file.require_group(split)
        return group

    def _record_user(self, split: str, user_id: str, count: int, checksum: str, **extra: str) -> None:
        self.users.setdefault(split, {})[user_id] = {"images": count, "sha256": checksum, **extra}


class UserGroupWriter:
    """Collects one user's images and labels and writes the user's datasets.

    Images are buffered (in one ``bytearray``, so the dataset is written from it without
    another copy) up to ``spill_bytes``; a larger user is appended to a chunked, resizable
    dataset instead, so memory stays bounded for any user size.
    """

    def __init__(self, store: StoreWriter, split: str, user_id: str):
        self.store = store
        self.split = split
        self.user_id = user_id
        self._buffer = bytearray()
        self._buffered_images = 0
        self._offsets = [0]
        self._image_ids: list[bytes] = []
        self._labels: list[tuple[str, ...]] = []
        self._fine: list[tuple[str, ...]] = []
        self._metadata: list[tuple[Any, ...]] = []
        self._images_digest = DatasetDigest()
        self._spilled: h5py.Dataset | None = None
        self._group: h5py.Group | None = None

    def add(
        self,
        payload: bytes,
        image_id: str,
        labels: tuple[str, ...],
        fine: tuple[str, ...],
        metadata: tuple[Any, ...] = (),
    ) -> None:
        """Append one standardized image (JPEG bytes or raw pixel bytes), with its values of the
        store's metadata columns (``metadata``, in their order)."""
        if len(metadata) != len(self.store.metadata_columns):
            raise StoreError(
                f"image {image_id!r} has {len(metadata)} metadata values; the store has"
                f" {len(self.store.metadata_columns)} metadata columns"
            )
        self._metadata.append(metadata)
        self._image_ids.append(image_id.encode("utf-8"))
        self._labels.append(labels)
        self._fine.append(fine)
        self._offsets.append(self._offsets[-1] + len(payload))
        self._images_digest.update(payload)
        if self.store.pixels_elsewhere:
            return
        self._buffer += payload
        self._buffered_images += 1
        if len(self._buffer) > self.store.spill_bytes:
            self._spill()

    def _take_buffer(self) -> np.ndarray:
        """The buffered images as an array (a view of the buffer, which starts anew)."""
        flat = np.frombuffer(self._buffer, dtype=np.uint8)
        count = self._buffered_images
        self._buffer = bytearray()
        self._buffered_images = 0
        if self.store.storage == "raw":
            size = self.store.image_size
            return flat.reshape(count, size, size, self.store.channels)
        return flat

    def _ensure_group(self) -> h5py.Group:
        if self._group is None:
            key = schema.user_key(self.user_id)
            split = self.store._split_group(self.split)
            try:  # low-level: a third of h5py's create_group
                self._group = h5py.Group(h5py.h5g.create(split.id, key.encode("utf-8")))
            except ValueError:  # the name exists
                raise StoreError(f"user {self.user_id!r} written twice to split {self.split!r}") from None
        return self._group

    def _spill(self) -> None:
        array = self._take_buffer()
        if self._spilled is None:
            chunks = (1, *array.shape[1:]) if array.ndim == 4 else (JPEG_CHUNK_BYTES,)
            self._spilled = self._ensure_group().create_dataset(
                self.store.images_name,
                shape=(0, *array.shape[1:]),
                maxshape=(None, *array.shape[1:]),
                dtype=np.uint8,
                chunks=chunks,
            )
        start = self._spilled.shape[0]
        self._spilled.resize(start + array.shape[0], axis=0)
        self._spilled[start:] = array

    def close(self) -> int:
        """Write the group's datasets; returns the number of images (0: nothing written)."""
        count = len(self._image_ids)
        if count == 0:
            return 0
        store = self.store
        if store.cipher is not None:
            arrays = {store.images_name: self._take_buffer(), **self._index_arrays(count)}
            group = self._ensure_group()
            checksum, nonce = sealing.write_sealed_group(
                group, store.cipher, self.split, self.user_id, arrays, _write_blob
            )
            self._count_labels()
            store._record_user(self.split, self.user_id, count, checksum, nonce=nonce)
            return count
        group = self._ensure_group()
        lines = []
        if store.pixels_elsewhere:  # the pixels' checksum line without the pixels
            images_shape = (count, store.image_size, store.image_size, store.channels)
            store.pixel_users.append((self.split, self.user_id, count, self._images_digest.hexdigest()))
        elif self._spilled is not None:
            if self._buffered_images:
                self._spill()
            images_shape = self._spilled.shape
        else:
            images = self._take_buffer()
            write_dataset(group, store.images_name, images, compact_small=False)
            images_shape = images.shape
        lines.append(self._images_digest.line(store.images_name, np.dtype(np.uint8), images_shape))
        for name, array in self._index_arrays(count).items():
            write_dataset(group, name, array)
            lines.append(array_line(name, array))
        self._count_labels()
        store._record_user(self.split, self.user_id, count, group_checksum(lines))
        return count

    def _index_arrays(self, count: int) -> dict[str, np.ndarray]:
        """Every dataset of the group but the images: ids, labels (both encodings), JPEG offsets."""
        store = self.store
        arrays: dict[str, np.ndarray] = {
            schema.IMAGE_IDS: np.array(self._image_ids, dtype="S"),
            schema.LABELS: _joined(self._labels),
            schema.FINE_LABELS: _joined(self._fine),
        }
        if store.offsets_name is not None:
            arrays[store.offsets_name] = np.asarray(self._offsets, dtype=np.int64)
        for index, column in enumerate(store.metadata_columns):
            arrays.update(encode_user_values(column, [values[index] for values in self._metadata]))
        row_dtype = index_dtype(count, np.uint16)
        arrays[schema.LABELS_ROW], arrays[schema.LABELS_COL] = _sparse(
            self._labels, store.coarse_mapping, row_dtype, index_dtype(len(store.coarse_mapping))
        )
        arrays[schema.FINE_LABELS_ROW], arrays[schema.FINE_LABELS_COL] = _sparse(
            self._fine,
            store.fine_mapping,
            row_dtype,
            index_dtype(len(store.fine_mapping), np.uint16),
        )
        return arrays

    def _count_labels(self) -> None:
        for labels in self._labels:
            self.store.coarse_counter.update(labels)
        for labels in self._fine:
            self.store.fine_counter.update(labels)


def _joined(label_lists: list[tuple[str, ...]]) -> np.ndarray:
    return np.array([LABEL_JOIN.join(labels).encode("utf-8") for labels in label_lists], dtype="S")


def _sparse(
    label_lists: list[tuple[str, ...]],
    mapping: dict[str, int],
    row_dtype: np.dtype,
    col_dtype: np.dtype,
) -> tuple[np.ndarray, np.ndarray]:
    """pfl-research's (row, col) coordinates of the multi-hot label matrix."""
    rows = [row for row, labels in enumerate(label_lists) for _ in labels]
    cols = [mapping[label] for labels in label_lists for label in labels]
    return np.asarray(rows, dtype=row_dtype), np.asarray(cols, dtype=col_dtype)


def copy_user_groups(source: h5py.File, target: h5py.File, users: dict[str, dict[str, Any]]) -> None:
    """Copy the user groups listed in ``users`` ({split: {user: entry}}), in that order."""
    for split, entries in users.items():
        source_split = source[split]
        target_split = target.require_group(split)
        for user in entries:
            key = schema.user_key(user).encode("utf-8")
            h5py.h5o.copy(source_split.id, key, target_split.id, key)


def link_user_groups(shard_name: str, target: h5py.File, users: dict[str, dict[str, Any]]) -> None:
    """Add HDF5 external links ``/{split}/{user}`` -> the group in ``shard_name`` (relative path)."""
    for split, entries in users.items():
        target_split = target.require_group(split)
        for user in entries:
            key = schema.user_key(user)
            target_split[key] = h5py.ExternalLink(shard_name, f"/{split}/{key}")
