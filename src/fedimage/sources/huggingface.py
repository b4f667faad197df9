"""Hugging Face datasets on local disk: ``save_to_disk`` folders, Arrow or Parquet files.

The user index is built from the metadata columns alone (zero-copy from
memory-mapped Arrow, or column-pruned Parquet reads): image bytes are never
loaded to group users. They are read later, batch by batch in store order,
from memory-mapped Arrow files; Parquet files are first streamed into a
temporary Arrow file so that this random access stays cheap and memory bounded.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import tempfile
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from fedimage.errors import OptionError, SourceError
from fedimage.extras import require
from fedimage.labels import Taxonomy
from fedimage.records import ImageRecord, Reject, literal
from fedimage.sources.base import Source
from fedimage.sources.manifest import ManifestColumns, describe_columns
from fedimage.sources.metadata import KeepColumn, table_column
from fedimage.sources.record_table import (
    LABELS,
    SCHEMA,
    SourceMetadata,
    clean_id_column,
    clean_label_lists,
    label_problems,
)

#: The Parquet schema metadata entry of fedimage's ``parquet`` export: JSON with the store's taxonomy
#: under ``label_relationship`` ({fine: coarse}), which becomes the source's default taxonomy.
FEDIMAGE_PARQUET_METADATA = b"fedimage"
TAXONOMY_ENTRY = "label_relationship"
#: ... and under ``image_size`` the side of its images, which becomes the source's stated size.
IMAGE_SIZE_ENTRY = "image_size"
#: ... and under ``color`` its images' colour (``rgb`` or ``gray``), which becomes the source's stated colour.
COLOR_ENTRY = "color"
#: ... and, for a lossless store's export (PNG files), under ``storage`` ``lossless`` and under
#: ``bit_depth`` 8 or 16: the source's stated storage and bit depth.
STORAGE_ENTRY = "storage"
BIT_DEPTH_ENTRY = "bit_depth"
#: The values each stated entry may take (others are ignored).
_STATED_CHOICES: dict[str, tuple[Any, ...]] = {
    COLOR_ENTRY: ("rgb", "gray"),
    STORAGE_ENTRY: ("jpeg", "raw", "lossless"),
    BIT_DEPTH_ENTRY: (8, 16),
}
PARQUET_BATCH_ROWS = 64  # image cells: small batches stream a row group's pages (faster, less memory)
#: The entry of a fedimage export's ``fedimage`` metadata listing its per-image metadata columns.
METADATA_ENTRY = "image_metadata"
PARQUET_BUFFER_BYTES = 1 << 20
METADATA_BATCH_ROWS = 1 << 12  # bounds the transient Arrow and numpy arrays of label cleaning


@dataclass
class _DataFile:
    """One data file: where its rows start in the source, and its split (DatasetDict)."""

    path: Path
    kind: str  # "arrow-stream", "arrow-file" or "parquet"
    split: str | None
    first_row: int = 0
    num_rows: int = 0
    images: _ImageColumn | _ImageBlob | None = None  # the image column, opened on first use


class HuggingFaceSource(Source):
    """A Hugging Face dataset saved on disk, with a ``datasets.Image`` column ({bytes, path}).

    Accepts a ``save_to_disk`` folder (``Dataset`` or ``DatasetDict``: each split's
    name becomes the partition unless a partition column is mapped), a folder of
    ``.parquet``/``.arrow`` files (a Hub snapshot such as ``apple/flair``), or one file.
    Columns are mapped as for manifests and default to FLAIR's names.
    """

    kind = "hf"

    def __init__(
        self,
        path: Path,
        columns: ManifestColumns | None = None,
        label_delimiter: str = "|",
    ):
        super().__init__(path if path.is_dir() else path.parent)
        self.path = path
        self.label_delimiter = label_delimiter
        self._files = _find_data_files(path)
        schema = self._schema(self._files[0])
        names = list(schema.names)
        self.columns = (columns or ManifestColumns()).resolve(names, str(path))
        image_type = schema.field(self.columns["image"]).type
        if not (pa.types.is_struct(image_type) and image_type.get_field_index("bytes") >= 0):
            raise SourceError(
                f"column {self.columns['image']!r} of {path} is {image_type}, not a datasets Image "
                "column (struct<bytes, path>); for image paths use a manifest instead"
            )
        self._tmpdir: str | None = None
        self._finalizer: weakref.finalize | None = None
        row = 0
        for data_file in self._files:
            data_file.first_row = row
            data_file.num_rows = self._num_rows(data_file)
            row += data_file.num_rows
        self._starts = np.array([data_file.first_row for data_file in self._files], dtype=np.int64)

    @property
    def name(self) -> str:
        return self.path.name

    @functools.cached_property
    def _fedimage_entries(self) -> list[tuple[Path, bytes]]:
        """Each Parquet file's ``fedimage`` schema-metadata entry (a fedimage export's), read once."""
        entries = []
        for data_file in self._files:
            if data_file.kind == "parquet":
                raw = (pq.read_schema(data_file.path).metadata or {}).get(FEDIMAGE_PARQUET_METADATA)
                if raw is not None:
                    entries.append((data_file.path, raw))
        return entries

    @property
    def default_taxonomy(self) -> Taxonomy | None:
        """The taxonomy that a fedimage ``parquet`` export keeps in its files' schema metadata."""
        found: dict[str, dict[str, str]] = {}
        for path, raw in self._fedimage_entries:
            mapping = _taxonomy_entry(raw, path)
            if mapping:
                found[json.dumps(mapping, sort_keys=True)] = mapping
        if len(found) > 1:
            raise SourceError(f"the Parquet files of {self.path} hold different taxonomies; pass `taxonomy`")
        return Taxonomy(next(iter(found.values()))) if found else None

    @property
    def stated_image_size(self) -> int | None:
        """The image side that a fedimage ``parquet`` export states in its schema metadata."""
        sizes = self._stated(IMAGE_SIZE_ENTRY)
        return sizes.pop() if len(sizes) == 1 else None

    @property
    def stated_color(self) -> str | None:
        """The image colour (``rgb`` or ``gray``) that a fedimage ``parquet`` export states."""
        colors = self._stated(COLOR_ENTRY)
        return colors.pop() if len(colors) == 1 else None

    @property
    def stated_storage(self) -> str | None:
        """The storage (``lossless``) that a fedimage ``parquet`` export of a lossless store states."""
        storages = self._stated(STORAGE_ENTRY)
        return storages.pop() if len(storages) == 1 else None

    @property
    def stated_bit_depth(self) -> int | None:
        """The bits per sample (8 or 16) that a fedimage ``parquet`` export of a lossless store states."""
        depths = self._stated(BIT_DEPTH_ENTRY)
        return depths.pop() if len(depths) == 1 else None

    @property
    def stated_metadata_columns(self) -> tuple[KeepColumn, ...]:
        """The metadata columns a fedimage ``parquet`` export lists (``image_metadata``), when every
        file lists the same ones and the data has them."""
        found = set()
        for _, raw in self._fedimage_entries:
            with contextlib.suppress(ValueError, AttributeError, TypeError, KeyError, OptionError):
                entries = json.loads(raw).get(METADATA_ENTRY) or []
                found.add(tuple(KeepColumn(str(entry["name"]), str(entry["type"])) for entry in entries))
        if len(found) != 1:
            return ()
        columns = found.pop()
        available = set(self.available_columns())
        return columns if all(column.name in available for column in columns) else ()

    def _stated(self, entry: str) -> set[Any]:
        """The valid values of one entry of the fedimage metadata of the Parquet files."""
        values = set()
        for _, raw in self._fedimage_entries:
            with contextlib.suppress(ValueError, AttributeError, TypeError):
                value = json.loads(raw).get(entry)
                if entry == IMAGE_SIZE_ENTRY and isinstance(value, int) and not isinstance(value, bool):
                    if 8 <= value <= 4096:
                        values.add(value)
                elif any(
                    type(value) is type(choice) and value == choice
                    for choice in _STATED_CHOICES.get(entry, ())
                ):
                    values.add(value)
        return values

    @property
    def split_column(self) -> str | None:
        if self.columns["split"]:
            return self.columns["split"]
        return "(the dataset's split names)" if any(data_file.split for data_file in self._files) else None

    @property
    def has_users(self) -> bool:
        return self.columns["user"] is not None

    def describe(self) -> str:
        mapped = describe_columns(self.columns)
        rows = sum(data_file.num_rows for data_file in self._files)
        return f"hugging face dataset {self.path} ({len(self._files)} files, {rows} rows; {mapped})"

    # -- metadata -------------------------------------------------------------------------
    @staticmethod
    def _schema(data_file: _DataFile) -> pa.Schema:
        if data_file.kind == "parquet":
            return pq.read_schema(data_file.path)
        return _open_arrow(data_file).schema

    @staticmethod
    def _num_rows(data_file: _DataFile) -> int:
        if data_file.kind == "parquet":
            return pq.ParquetFile(data_file.path).metadata.num_rows
        return _open_arrow(data_file).num_rows

    def _metadata_batches(self, data_file: _DataFile, columns: list[str]) -> Iterator[pa.RecordBatch]:
        """The metadata columns of one file, a bounded batch of rows at a time."""
        if data_file.kind == "parquet":
            yield from pq.ParquetFile(data_file.path, buffer_size=PARQUET_BUFFER_BYTES).iter_batches(
                batch_size=METADATA_BATCH_ROWS, columns=columns
            )
        else:
            yield from _open_arrow(data_file).select(columns).to_batches(max_chunksize=METADATA_BATCH_ROWS)

    def _metadata_table(
        self, data_file: _DataFile, rejects: list[Reject], extra: Sequence[str] = ()
    ) -> pa.Table:
        """One file's rows as a record table, built column-wise in Arrow (image bytes never read),
        with a ``meta:<name>`` column per name of ``extra`` (a class-label column as its names)."""
        wanted = {field: name for field, name in self.columns.items() if name and field != "image"}
        schema = self._schema(data_file)
        class_names = {name: _class_names(schema, name) for name in {*wanted.values(), *extra}}
        tables, first = [], 0
        for batch in self._metadata_batches(data_file, sorted({*wanted.values(), *extra})):
            table = self._record_chunk(data_file, batch, first, wanted, class_names, rejects, extra)
            tables.append(table)
            first += batch.num_rows
        if not tables:
            empty = SCHEMA.empty_table()
            for name in extra:
                empty = empty.append_column(table_column(name), pa.array([], schema.field(name).type))
            return empty
        return pa.concat_tables(tables)

    def _record_chunk(
        self,
        data_file: _DataFile,
        table: pa.RecordBatch,
        first: int,
        wanted: dict[str, str],
        class_names: dict[str, list[str] | None],
        rejects: list[Reject],
        extra: Sequence[str] = (),
    ) -> pa.Table:
        """A batch of rows as record-table rows; a row with a cell its column cannot hold is rejected."""
        count = table.num_rows
        index = pa.array(np.arange(first, first + count, dtype=np.int64))
        blank = pc.fill_null(pa.nulls(count, pa.string()), "")
        problems: dict[int, tuple[str, str]] = {}

        def text(field: str) -> pa.Array:
            if field not in wanted:
                return blank
            ids, bad = clean_id_column(table.column(wanted[field]))
            for row, problem in bad.items():
                problems.setdefault(row, (wanted[field], problem))
            return ids

        def labels(field: str) -> pa.Array:
            if field not in wanted:
                return pa.array([[]] * count, LABELS)
            column = table.column(wanted[field])
            names = class_names[wanted[field]]
            column, bad = label_problems(_named(column, names) if names else column)
            for row, problem in bad.items():
                problems.setdefault(row, (wanted[field], problem))
            return clean_label_lists(column, self.label_delimiter)

        image_ids = text("image_id")
        default_ids = pc.binary_join_element_wise(f"{data_file.path.stem}-", pc.cast(index, pa.string()), "")
        partition = text("split") if "split" in wanted else pa.array([data_file.split] * count, pa.string())
        columns = {
            "path": blank,
            "image_id": pc.if_else(pc.equal(image_ids, ""), default_ids, image_ids),
            "user_id": text("user"),
            "labels": labels("labels"),
            "fine_labels": labels("fine_labels"),
            "split": partition,
            "origin": pc.binary_join_element_wise(
                f"{data_file.path.name} row ", pc.cast(index, pa.string()), ""
            ),
            "row": pc.add(index, data_file.first_row),
        }
        records = pa.table(columns, schema=SCHEMA)
        for name in extra:
            column = table.column(name)
            names = class_names[name]
            records = records.append_column(table_column(name), _named(column, names) if names else column)
        if not problems:
            return records
        origins = records.column("origin")
        for row in sorted(problems):
            column, problem = problems[row]
            reason = "column {detail} " + literal(problem)
            rejects.append(Reject(origins[row].as_py(), reason, detail=column, stage="source"))
        keep = np.ones(count, dtype=bool)
        keep[list(problems)] = False
        return records.filter(pa.array(keep))

    def available_columns(self) -> list[str]:
        names: dict[str, None] = {}
        for data_file in self._files:
            names.update(dict.fromkeys(self._schema(data_file).names))
        return list(names)

    def metadata(self, columns: Sequence[str] = ()) -> SourceMetadata:
        self.check_columns(columns)
        for data_file in self._files:
            missing = [name for name in columns if name not in self._schema(data_file).names]
            if missing:
                raise SourceError(
                    f"`keep_columns` column {missing[0]!r} is not a column of {data_file.path.name}"
                    f" (the other data files have it)"
                )
        rejects: list[Reject] = []
        tables = [self._metadata_table(data_file, rejects, columns) for data_file in self._files]
        try:
            return SourceMetadata(pa.concat_tables(tables, promote_options="permissive"), rejects)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as error:
            raise SourceError(f"the data files of {self.root} disagree on a column's type: {error}") from None

    # -- image bytes ------------------------------------------------------------------------
    def read_images(self, records: Sequence[ImageRecord]) -> list[bytes | str | None]:
        """Each record's encoded image, a file path when the row stores only a path, or None."""
        rows = np.fromiter((record.row for record in records), dtype=np.int64, count=len(records))
        data_file_of = np.searchsorted(self._starts, rows, side="right") - 1
        out: list[bytes | str | None] = []
        for row, file_index in zip(rows.tolist(), data_file_of.tolist(), strict=True):
            data_file = self._files[file_index]
            out.append(self._images(data_file).payload(row - data_file.first_row, self.root))
        return out

    def prepare_reading(self) -> None:
        """Build every file's image access (Parquet image columns are copied to flat files) now."""
        for data_file in self._files:
            self._images(data_file)
        pa.default_memory_pool().release_unused()  # forked workers should not inherit Parquet's buffers

    def _images(self, data_file: _DataFile) -> _ImageColumn:
        if data_file.images is None:
            if data_file.kind == "parquet":
                data_file.images = self._parquet_images_as_blob(data_file)
            else:
                data_file.images = _ImageColumn(_open_arrow(data_file).column(self.columns["image"]))
        return data_file.images

    def _parquet_images_as_blob(self, data_file: _DataFile) -> _ImageBlob:
        """Stream a Parquet file's image column into a flat temporary file (read back with pread)."""
        if self._tmpdir is None:
            self._tmpdir = tempfile.mkdtemp(prefix="fedimage-hf-")
            self._finalizer = weakref.finalize(self, shutil.rmtree, self._tmpdir, ignore_errors=True)
        target = Path(self._tmpdir) / f"{len(os.listdir(self._tmpdir))}.bin"
        parquet = pq.ParquetFile(data_file.path, buffer_size=PARQUET_BUFFER_BYTES)
        column = [self.columns["image"]]
        # One row group at a time, no read-ahead: memory stays at about one row group.
        batches = (
            batch
            for group in range(parquet.num_row_groups)
            for batch in parquet.iter_batches(
                batch_size=PARQUET_BATCH_ROWS, row_groups=[group], columns=column, use_threads=False
            )
        )
        return _ImageBlob(target, (batch.column(0) for batch in batches))

    def close(self) -> None:
        """Delete temporary files (also done when the source is garbage collected)."""
        for data_file in self._files:
            if isinstance(data_file.images, _ImageBlob):
                data_file.images.close()
            data_file.images = None
        if self._finalizer is not None:
            self._finalizer()


def _taxonomy_entry(raw: bytes, path: Path) -> dict[str, str]:
    """The {fine: coarse} taxonomy in fedimage's Parquet metadata entry ({} when there is none)."""
    try:
        mapping = json.loads(raw).get(TAXONOMY_ENTRY) or {}
    except (ValueError, AttributeError):
        mapping = None
    valid = isinstance(mapping, dict) and all(
        isinstance(fine, str) and isinstance(coarse, str) for fine, coarse in mapping.items()
    )
    if not valid:
        raise SourceError(f"{path}: the taxonomy in its fedimage metadata is not a JSON {{fine: coarse}}")
    return mapping


def _class_names(schema: pa.Schema, column: str) -> list[str] | None:
    """The names of a ``datasets`` ClassLabel column (or list of ClassLabel), from the schema metadata."""
    try:
        features = json.loads((schema.metadata or {})[b"huggingface"])["info"]["features"]
    except (KeyError, ValueError, TypeError):
        return None
    feature = features.get(column) or {}
    if feature.get("_type") in ("Sequence", "List", "LargeList") and isinstance(feature.get("feature"), dict):
        feature = feature["feature"]
    names = feature.get("names") if feature.get("_type") == "ClassLabel" else None
    return [str(name) for name in names] if isinstance(names, list) else None


def _named(array: pa.Array, names: list[str]) -> pa.Array:
    """ClassLabel indices (or lists of them) replaced by their names; -1 (no label) becomes null."""
    vocabulary = pa.array(names, pa.string())

    def name(indices: pa.Array) -> pa.Array:
        valid = pc.and_(pc.greater_equal(indices, 0), pc.less(indices, len(names)))
        return vocabulary.take(pc.if_else(valid, indices, pa.scalar(None, indices.type)))

    if pa.types.is_list(array.type) or pa.types.is_large_list(array.type):
        offsets = array.offsets
        return type(array).from_arrays(offsets, name(array.values), mask=array.is_null())
    return name(array)


class _ImageColumn:
    """Random access to the cells of a (memory-mapped) ``datasets`` Image column, one row at a time.

    Reading a cell touches only its own bytes: no per-batch ``take`` over the whole column.
    """

    def __init__(self, column: pa.ChunkedArray):
        chunks = [chunk for chunk in column.chunks if len(chunk)]
        self._starts = np.cumsum([0, *(len(chunk) for chunk in chunks)])[:-1]
        self._chunks = chunks
        self._bytes = [chunk.field("bytes") for chunk in chunks]
        has_path = bool(chunks) and chunks[0].type.get_field_index("path") >= 0
        self._paths = [chunk.field("path") if has_path else None for chunk in chunks]

    def payload(self, row: int, root: Path) -> bytes | str | None:
        """The row's image bytes, else its path (made absolute against ``root``), else None."""
        index = int(np.searchsorted(self._starts, row, side="right")) - 1
        offset = row - int(self._starts[index])
        chunk = self._chunks[index]
        if chunk.null_count and not chunk[offset].is_valid:
            return None
        data = self._bytes[index][offset].as_py()
        if data:
            return data
        paths = self._paths[index]
        path = paths[offset].as_py() if paths is not None else None
        if not path:
            return None
        return path if os.path.isabs(path) else str(root / path)


class _ImageBlob:
    """Image cells copied into one flat file: each row's bytes are read back with ``pread``.

    Parquet cannot be read row by row cheaply, so its image column is streamed once into
    this file. Only the offsets (8 bytes a row) stay in memory; unlike a memory map, reads
    do not grow the process's resident memory with the size of the dataset.
    """

    def __init__(self, path: Path, columns: Iterator[pa.Array]):
        offsets = [np.zeros(1, dtype=np.int64)]
        valid_rows: list[np.ndarray] = []
        self._paths: dict[int, str] = {}
        end, row = 0, 0
        with open(path, "wb") as sink:
            for cells in columns:
                data = cells.field("bytes")
                lengths = pc.fill_null(pc.binary_length(data), 0).to_numpy(zero_copy_only=False)
                valid = np.ones(len(cells), dtype=bool)
                if cells.null_count:
                    valid = cells.is_valid().to_numpy(zero_copy_only=False)
                lengths = np.where(valid, lengths, 0).astype(np.int64)
                _write_cells(sink, data, lengths)
                if cells.type.get_field_index("path") >= 0:
                    for position in np.flatnonzero(valid & (lengths == 0)).tolist():
                        path_value = cells.field("path")[position].as_py()
                        if path_value:
                            self._paths[row + position] = path_value
                offsets.append(end + np.cumsum(lengths))
                valid_rows.append(valid)
                end += int(lengths.sum())
                row += len(cells)
        self.offsets = np.concatenate(offsets)
        self.valid = np.concatenate(valid_rows) if valid_rows else np.zeros(0, dtype=bool)
        self._fd: int | None = os.open(path, os.O_RDONLY)

    def payload(self, row: int, root: Path) -> bytes | str | None:
        if not self.valid[row]:
            return None
        start, stop = int(self.offsets[row]), int(self.offsets[row + 1])
        if stop > start and self._fd is not None:
            return os.pread(self._fd, stop - start, start)
        path = self._paths.get(row)
        if not path:
            return None
        return path if os.path.isabs(path) else str(root / path)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _write_cells(sink: BinaryIO, data: pa.Array, lengths: np.ndarray) -> None:
    """Write the cells of a binary array that have a positive ``length``, back to back.

    When those are exactly the array's values (the usual case), that is one write of
    its values buffer; otherwise (a null row that still holds bytes) cell by cell.
    """
    if not len(data):
        return
    if pa.types.is_binary(data.type) or pa.types.is_large_binary(data.type):
        offset_type = np.int64 if pa.types.is_large_binary(data.type) else np.int32
        _, offset_buffer, values = data.buffers()
        offsets = np.frombuffer(offset_buffer, dtype=offset_type)[data.offset : data.offset + len(data) + 1]
        if np.array_equal(np.diff(offsets), lengths):
            if values is not None and offsets[-1] > offsets[0]:
                sink.write(memoryview(values)[int(offsets[0]) : int(offsets[-1])])
            return
    for position in np.flatnonzero(lengths > 0).tolist():
        sink.write(data[position].as_buffer())


def _open_arrow(data_file: _DataFile) -> pa.Table:
    source = pa.memory_map(str(data_file.path))
    try:
        if data_file.kind == "arrow-stream":
            return pa.ipc.open_stream(source).read_all()
        return pa.ipc.open_file(source).read_all()
    except pa.ArrowInvalid as error:
        raise SourceError(f"cannot read Arrow file {data_file.path}: {error}") from None


def _arrow_kind(path: Path) -> str:
    with open(path, "rb") as handle:
        return "arrow-file" if handle.read(6) == b"ARROW1" else "arrow-stream"


def _find_data_files(path: Path) -> list[_DataFile]:
    """The data files of a dataset on disk, in a deterministic order."""
    if not path.exists():
        raise SourceError(f"source not found: {path}")
    if path.is_file():
        return [_data_file_at(path, None)]
    splits_file = path / "dataset_dict.json"
    if splits_file.is_file():
        splits = json.loads(splits_file.read_text())["splits"]
        data_files = [
            data_file for split in splits for data_file in _saved_dataset_files(path / split, split)
        ]
    elif (path / "state.json").is_file():
        data_files = _saved_dataset_files(path, None)
    else:
        files = sorted(
            candidate
            for candidate in path.rglob("*")
            if candidate.suffix in (".parquet", ".arrow") and not candidate.name.startswith(".")
        )
        data_files = [_data_file_at(candidate, None) for candidate in files]
    if not data_files:
        raise SourceError(f"{path} holds no Hugging Face dataset (.arrow or .parquet files)")
    return data_files


def _saved_dataset_files(folder: Path, split: str | None) -> list[_DataFile]:
    state = json.loads((folder / "state.json").read_text())
    return [_data_file_at(folder / entry["filename"], split) for entry in state["_data_files"]]


def _data_file_at(path: Path, split: str | None) -> _DataFile:
    if path.suffix == ".parquet":
        return _DataFile(path, "parquet", split)
    if path.suffix == ".arrow":
        return _DataFile(path, _arrow_kind(path), split)
    raise SourceError(f"{path} is neither a .parquet nor an .arrow file")


def resolve_hub_name(name: str, allow_download: bool) -> Path:
    """The local snapshot folder of a Hub dataset ``owner/name`` in the Hugging Face cache.

    Nothing is downloaded unless ``allow_download`` (which needs ``huggingface_hub``).
    """
    cache = Path(
        os.environ.get("HF_HUB_CACHE")
        or Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface")) / "hub"
    )
    repo = cache / f"datasets--{name.replace('/', '--')}"
    snapshot = _cached_snapshot(repo)
    if snapshot is not None:
        return snapshot
    if not allow_download:
        raise SourceError(
            f"dataset {name!r} is not in the local Hugging Face cache ({cache}); "
            "pass `allow_download` to fetch it from the Hub"
        )
    snapshot_download = require("huggingface_hub", "allow_download").snapshot_download
    return Path(snapshot_download(repo_id=name, repo_type="dataset", cache_dir=str(cache)))


def _cached_snapshot(repo: Path) -> Path | None:
    ref = repo / "refs" / "main"
    if ref.is_file():
        snapshot = repo / "snapshots" / ref.read_text().strip()
        if snapshot.is_dir():
            return snapshot
    snapshots = sorted((repo / "snapshots").glob("*")) if (repo / "snapshots").is_dir() else []
    return snapshots[-1] if snapshots else None
