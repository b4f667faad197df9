"""A manifest table (CSV, JSONL/JSON or Parquet) with one row per image."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, ClassVar

from fedimage.errors import SourceError
from fedimage.records import ImageRecord, Reject, literal
from fedimage.sources.base import (
    CellError,
    InsideChecker,
    Source,
    clean_id,
    clean_text,
    parse_label_list,
)

MANIFEST_SUFFIXES = {
    ".csv": "csv",
    ".tsv": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".parquet": "parquet",
    ".pq": "parquet",
}


@dataclass(frozen=True, slots=True)
class ManifestColumns:
    """Which column holds what. None means: the FLAIR-style default, if the table has it.

    A column named explicitly must exist; a default that is absent means the
    table does not carry that field. Only the image column is required.
    """

    image: str | None = None
    user: str | None = None
    labels: str | None = None
    fine_labels: str | None = None
    split: str | None = None
    image_id: str | None = None

    DEFAULTS: ClassVar[dict[str, str]] = {
        "image": "image",
        "user": "user_id",
        "labels": "labels",
        "fine_labels": "fine_grained_labels",
        "split": "partition",
        "image_id": "image_id",
    }

    def resolve(self, available: list[str], where: str) -> dict[str, str | None]:
        """Map each field to an existing column name (or None), checking explicit names."""
        resolved: dict[str, str | None] = {}
        for field in fields(self):
            explicit = getattr(self, field.name)
            if explicit is not None:
                if explicit not in available:
                    raise SourceError(
                        f"`columns.{field.name}` {explicit!r} is not a column of {where}; "
                        f"its columns are: {', '.join(available) or '(none)'}"
                    )
                resolved[field.name] = explicit
            else:
                default = self.DEFAULTS[field.name]
                resolved[field.name] = default if default in available else None
        if resolved["image"] is None:
            raise SourceError(
                f"{where} has no image column: name it with `columns.image`; "
                f"its columns are: {', '.join(available) or '(none)'}"
            )
        return resolved


class ManifestSource(Source):
    """Rows of a table; image paths are relative to the table's folder."""

    kind = "manifest"

    def __init__(
        self,
        path: Path,
        columns: ManifestColumns | None = None,
        label_delimiter: str = "|",
    ):
        super().__init__(path.parent)
        self.path = path
        if not path.is_file():
            raise SourceError(f"manifest file not found: {path}")
        self.table_format = MANIFEST_SUFFIXES.get(path.suffix.lower())
        if self.table_format is None:
            raise SourceError(
                f"unknown manifest format {path.suffix!r} for {path}; "
                f"expected one of {', '.join(sorted(MANIFEST_SUFFIXES))}"
            )
        if not label_delimiter:
            raise SourceError("`label_delimiter` must not be empty")
        self.label_delimiter = label_delimiter
        self._columns_spec = columns or ManifestColumns()
        self._metadata_columns: Sequence[str] = ()
        self._rows, self._available = self._open_rows()
        self.columns = self._columns_spec.resolve(self._available, str(path))

    @property
    def split_column(self) -> str | None:
        return self.columns["split"]

    def available_columns(self) -> list[str]:
        return list(self._available)

    @property
    def has_users(self) -> bool:
        return self.columns["user"] is not None

    @property
    def name(self) -> str:
        return self.path.name

    def describe(self) -> str:
        return f"{self.table_format} manifest {self.path} ({describe_columns(self.columns)})"

    def _open_rows(self) -> tuple[Iterator[tuple[str, Any]], list[str]]:
        """An iterator of (origin, row-or-error) and the list of column names."""
        reader = {
            "csv": self._csv_rows,
            "jsonl": self._jsonl_rows,
            "json": self._json_rows,
            "parquet": self._parquet_rows,
        }[self.table_format]
        return reader()

    def _csv_rows(self) -> tuple[Iterator[tuple[str, Any]], list[str]]:
        delimiter = "\t" if self.path.suffix.lower() == ".tsv" else ","
        try:
            # Bytes that are not UTF-8 are kept (as surrogate escapes) and reject only their row.
            with open(self.path, newline="", encoding="utf-8-sig", errors="surrogateescape") as handle:
                reader = csv.DictReader(handle, delimiter=delimiter)
                header = list(reader.fieldnames or [])
                rows = [(f"{self.path.name} line {reader.line_num}", row) for row in reader]
        except (OSError, csv.Error) as error:
            raise SourceError(f"cannot read CSV manifest {self.path}: {error}") from None
        return iter(rows), header

    def _jsonl_rows(self) -> tuple[Iterator[tuple[str, Any]], list[str]]:
        rows: list[tuple[str, Any]] = []
        columns: dict[str, None] = {}
        try:
            with open(self.path, "rb") as handle:
                for number, data in enumerate(handle, start=1):
                    if not data.strip():
                        continue
                    origin = f"{self.path.name} line {number}"
                    try:
                        row = json.loads(data.decode("utf-8-sig" if number == 1 else "utf-8"))
                    except UnicodeDecodeError:
                        rows.append((origin, ValueError("line is not UTF-8 text")))
                        continue
                    except json.JSONDecodeError as error:
                        rows.append((origin, ValueError(f"invalid JSON: {error.msg}")))
                        continue
                    if not isinstance(row, dict):
                        rows.append((origin, ValueError("row is not a JSON object")))
                        continue
                    columns.update(dict.fromkeys(row))
                    rows.append((origin, row))
        except OSError as error:
            raise SourceError(f"cannot read JSONL manifest {self.path}: {error}") from None
        return iter(rows), list(columns)

    def _json_rows(self) -> tuple[Iterator[tuple[str, Any]], list[str]]:
        try:
            # Bytes that are not UTF-8 are kept (as surrogate escapes) and reject only their row.
            with open(self.path, encoding="utf-8", errors="surrogateescape") as handle:
                data = json.load(handle)
        except (OSError, json.JSONDecodeError) as error:
            raise SourceError(f"cannot read JSON manifest {self.path}: {error}") from None
        if not isinstance(data, list):
            raise SourceError(f"JSON manifest {self.path} must hold a list of row objects")
        return json_list_rows(data, self.path.name)

    def _parquet_rows(self) -> tuple[Iterator[tuple[str, Any]], list[str]]:
        import pyarrow.parquet as pq

        try:
            parquet = pq.ParquetFile(self.path)
        except Exception as error:
            raise SourceError(f"cannot read Parquet manifest {self.path}: {error}") from None
        names = list(parquet.schema_arrow.names)

        def rows() -> Iterator[tuple[str, Any]]:
            wanted = list(
                dict.fromkeys([*(name for name in self.columns.values() if name), *self._metadata_columns])
            )
            number = 0
            for batch in parquet.iter_batches(columns=wanted, batch_size=8192):
                try:
                    batch_rows = batch.to_pylist()
                except UnicodeDecodeError:  # a string cell that is not UTF-8: its row is rejected
                    batch_rows = _as_binary(batch).to_pylist()
                for row in batch_rows:
                    yield f"{self.path.name} row {number}", row
                    number += 1

        return rows(), names

    def records(self, columns: Sequence[str] = ()) -> Iterator[ImageRecord | Reject]:
        self.check_columns(columns)
        self._metadata_columns = columns
        return records_from_rows(
            self._rows, self.columns, InsideChecker(self.root), self.label_delimiter, columns
        )


def records_from_rows(
    rows: Iterator[tuple[str, Any]],
    columns: dict[str, str | None],
    inside: InsideChecker,
    delimiter: str,
    metadata_columns: Sequence[str] = (),
) -> Iterator[ImageRecord | Reject]:
    """Records of (origin, row) pairs; a row that is an exception becomes its rejection.

    Each record's ``metadata`` holds its row's cells of ``metadata_columns`` (None when absent).
    """
    for origin, row in rows:
        if isinstance(row, Exception):
            yield Reject(origin=origin, reason=literal(str(row)), stage="source")
            continue
        record = row_to_record(row, origin, columns, inside, delimiter)
        if metadata_columns and isinstance(record, ImageRecord):
            record = replace(record, metadata=tuple(row.get(name) for name in metadata_columns))
        yield record


def _as_binary(batch: Any) -> Any:
    """``batch`` with its string columns (and lists of strings) as bytes, which need not be UTF-8."""
    import pyarrow as pa

    def binary(kind: pa.DataType) -> pa.DataType:
        if pa.types.is_string(kind) or pa.types.is_large_string(kind):
            return pa.large_binary()
        if pa.types.is_list(kind) or pa.types.is_large_list(kind):
            return pa.large_list(binary(kind.value_type))
        return kind

    return pa.Table.from_batches([batch]).cast(pa.schema([(f.name, binary(f.type)) for f in batch.schema]))


def describe_columns(columns: dict[str, str | None]) -> str:
    """``field=column`` for every field a table provides, for progress messages."""
    return ", ".join(f"{field}={name}" for field, name in columns.items() if name)


def json_list_rows(data: list[Any], name: str) -> tuple[Iterator[tuple[str, Any]], list[str]]:
    """Rows of a JSON list of objects, with a rejection for every non-object item."""
    columns: dict[str, None] = {}
    rows: list[tuple[str, Any]] = []
    for index, row in enumerate(data):
        origin = f"{name} item {index}"
        if isinstance(row, dict):
            columns.update(dict.fromkeys(row))
            rows.append((origin, row))
        else:
            rows.append((origin, ValueError("item is not a JSON object")))
    return iter(rows), list(columns)


def row_to_record(
    row: dict[str, Any],
    origin: str,
    columns: dict[str, str | None],
    inside: InsideChecker,
    delimiter: str,
) -> ImageRecord | Reject:
    """Validate one manifest row into a record, or say why it cannot be one.

    Ids are text or integers (an integral float is its integer), labels a list of names or
    delimited text; a cell of another type rejects the row, naming its column.
    """

    def cell(field: str, clean: Any, *args: Any) -> Any:
        name = columns[field]
        try:
            return clean(row.get(name) if name else None, *args)
        except CellError as error:
            raise _RowError(name or field, str(error)) from None

    try:
        image = cell("image", clean_text)
        image_id = cell("image_id", clean_id) or image
        user = cell("user", clean_id)
        partition = cell("split", clean_id) if columns["split"] else None
        labels = cell("labels", parse_label_list, delimiter)
        fine_labels = cell("fine_labels", parse_label_list, delimiter)
    except _RowError as error:
        reason = "column {detail} " + literal(error.problem)
        return Reject(origin=origin, reason=reason, detail=error.column, stage="source")
    if not image:
        return Reject(
            origin=origin,
            reason="row has no image path",
            image_id=image_id or None,
            user_id=user or None,
            stage="source",
        )
    path, problem = inside.check(image)
    if path is None:
        return Reject(
            origin=origin,
            reason=problem or "",
            image_id=image_id,
            path=image,
            user_id=user or None,
            stage="source",
        )
    return ImageRecord(
        path=path,
        image_id=image_id,
        user_id=user,
        labels=labels,
        fine_labels=fine_labels,
        split=partition,
        origin=origin,
    )


class _RowError(Exception):
    def __init__(self, column: str, problem: str):
        super().__init__(column, problem)
        self.column = column
        self.problem = problem
