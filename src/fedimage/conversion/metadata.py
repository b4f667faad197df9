"""A conversion's per-image metadata: the source columns it reads, typed, checked and pseudonymized.

:func:`read_metadata` asks the source for the kept columns (and the ``partition_key`` column of
a ``column`` or ``continuous`` partition), gives each its type (see
:func:`fedimage.sources.metadata.typed_column`) and rejects, naming the column, every row whose
cell does not fit it; :func:`pseudonymize_columns` replaces chosen columns' values by keyed
pseudonyms. Values are never quoted in a reason: they may identify someone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from fedimage.errors import OptionError
from fedimage.imaging.dicom import DICOM_FIELDS
from fedimage.imaging.exif import EXIF_FIELDS
from fedimage.imaging.standardize import ImageOptions
from fedimage.partitioning import PartitionOptions
from fedimage.privacy.pseudonyms import Pseudonymizer
from fedimage.sources import Source
from fedimage.sources.metadata import KeepColumn, parse_keep_columns, parse_names, table_column, typed_column
from fedimage.sources.record_table import SourceMetadata, reject_cells
from fedimage.store.metadata import MetadataColumn


@dataclass(frozen=True, slots=True)
class MetadataOptions:
    """Which per-image metadata a conversion keeps.

    Parameters:
        keep_columns: source columns kept per image (``"site,year:int"``, a list of names, or
            :class:`KeepColumn`); a ``:type`` suffix declares the type, else it is inferred.
        exif_columns: fields of each image's EXIF header (see :data:`fedimage.imaging.exif.EXIF_FIELDS`),
            read before the header is stripped.
        pseudonymize_columns: kept columns (or the ``partition_key`` column) whose values are
            replaced by keyed HMAC pseudonyms (needs the conversion's ``pseudonyms`` key).

    Example::

        MetadataOptions(keep_columns="site,taken:timestamp", exif_columns="camera_model")
    """

    keep_columns: tuple[KeepColumn, ...] | str | Sequence[str] = ()
    exif_columns: tuple[str, ...] | str = ()
    pseudonymize_columns: tuple[str, ...] | str = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "keep_columns", parse_keep_columns(self.keep_columns))
        object.__setattr__(self, "exif_columns", parse_names(self.exif_columns, "exif_columns"))
        object.__setattr__(
            self, "pseudonymize_columns", parse_names(self.pseudonymize_columns, "pseudonymize_columns")
        )
        for name in self.exif_columns:
            if name not in EXIF_FIELDS:
                raise OptionError(f"`exif_columns` field {name!r} is not one of {', '.join(EXIF_FIELDS)}")
        kept = {column.name for column in self.keep_columns}
        clashing = sorted(kept & set(self.exif_columns))
        if clashing:
            raise OptionError(
                f"`keep_columns` and `exif_columns` both name {clashing[0]!r}: a store's metadata column"
                " has one source"
            )

    @property
    def kept_names(self) -> list[str]:
        return [column.name for column in self.keep_columns]  # type: ignore[union-attr]

    def __bool__(self) -> bool:
        return bool(self.keep_columns or self.exif_columns or self.pseudonymize_columns)

    def describe(self) -> dict[str, Any]:
        """The options as the run's settings and the manifest record them."""
        return {
            "keep_columns": [str(column) for column in self.keep_columns],
            "exif_columns": list(self.exif_columns),
            "pseudonymize_columns": list(self.pseudonymize_columns),
        }


def check_identifiers(source: Source, options: Any, key: str | None) -> None:
    """Refuse to convert identifying ids or columns in the clear (a DICOM folder's patient ids,
    paths and identifying tags) unless ``options.allow_identifiers`` (``options``: ConvertOptions)."""
    if options.allow_identifiers:
        return
    if source.identifying_ids and options.pseudonyms is None:
        raise OptionError(
            f"a {source.kind} source's user ids and file paths identify patients: pass a pseudonym key"
            " (`pseudonyms`), or `allow_identifiers` for data that is de-identified already"
        )
    if source.identifying_labels is not None:
        raise OptionError(
            f"labels from {source.identifying_labels} would identify people (the DICOM confidentiality"
            " profile lists it): take labels from another tag, or pass `allow_identifiers`"
        )
    named = [*options.metadata.kept_names, *([key] if key else [])]
    for name in source.identifying_columns(named):
        if name not in options.metadata.pseudonymize_columns:
            raise OptionError(
                f"{name} identifies people (the DICOM confidentiality profile, PS3.15 Annex E, lists it):"
                " keep it pseudonymized (`pseudonymize_columns`), or leave it out"
            )


def partition_key(partition: PartitionOptions | None) -> str | None:
    """The metadata column a partition follows (``column``, ``continuous``), else None."""
    return partition.key if partition is not None and partition.needs_values else None


def read_metadata(
    source: Source, options: MetadataOptions, key: str | None = None
) -> tuple[SourceMetadata, list[MetadataColumn]]:
    """The source's rows with a typed ``meta:<name>`` column per kept column (and for ``key``),
    and those columns' descriptions (the key's last when it is not kept).

    A row whose cell does not fit its column's type, or that has no ``key`` value, is rejected.
    """
    wanted: list[KeepColumn] = list(options.keep_columns)  # type: ignore[arg-type]
    if key is not None and key not in options.kept_names:
        wanted.append(KeepColumn(key))
    if not wanted:
        return source.metadata(), []
    metadata = source.metadata([column.name for column in wanted])
    table = metadata.table
    problems: dict[int, tuple[str, str]] = {}
    columns = []
    for column in wanted:
        name = table_column(column.name)
        values, kind, bad = typed_column(table.column(name), column.type, column.name)
        table = table.set_column(table.schema.get_field_index(name), name, values)
        columns.append(MetadataColumn(column.name, kind))
        for row, problem in bad.items():
            problems.setdefault(row, (column.name, problem))
    if key is not None:
        for row in np.flatnonzero(
            table.column(table_column(key)).is_null().to_numpy(zero_copy_only=False)
        ).tolist():
            problems.setdefault(
                row, (key, "has no value: the partition by `partition_key` needs one per image")
            )
    rejects = list(metadata.rejects)
    table = reject_cells(table, problems, rejects)
    return SourceMetadata(table, rejects), columns


def pseudonymize_columns(
    metadata: SourceMetadata,
    columns: list[MetadataColumn],
    names: Sequence[str],
    pseudonyms: Pseudonymizer | None,
) -> tuple[SourceMetadata, list[MetadataColumn]]:
    """``metadata`` with the values of the columns ``names`` replaced by keyed pseudonyms (text)."""
    if not names:
        return metadata, columns
    if pseudonyms is None:
        raise OptionError("`pseudonymize_columns` needs a pseudonym key (`pseudonyms`)")
    known = {column.name: index for index, column in enumerate(columns)}
    table = metadata.table
    columns = list(columns)
    for name in names:
        if name not in known:
            raise OptionError(
                f"`pseudonymize_columns` column {name!r} is not kept (`keep_columns`) nor the `partition_key`"
            )
        field = table_column(name)
        text = _as_text(table.column(field).combine_chunks())
        table = table.set_column(table.schema.get_field_index(field), field, pseudonyms.array(text, "value"))
        columns[known[name]] = MetadataColumn(name, "string", pseudonymized=True)
    return SourceMetadata(table, metadata.rejects), columns


def _as_text(values: pa.Array) -> pa.Array:
    if pa.types.is_string(values.type):
        return values
    if pa.types.is_timestamp(values.type):
        return pa.array(
            [None if value is None else value.isoformat() for value in values.to_pylist()], pa.string()
        )
    return values.cast(pa.string())


def dicom_columns(image: ImageOptions) -> list[MetadataColumn]:
    """A 16-bit store's per-image DICOM fields (rescale, window: see
    :data:`fedimage.imaging.dicom.DICOM_FIELDS`), so its values convert back to modality units."""
    if image.bit_depth != 16:
        return []
    return [MetadataColumn(name, kind, origin="dicom") for name, kind in DICOM_FIELDS.items()]


def exif_columns(options: MetadataOptions) -> list[MetadataColumn]:
    """The store columns of the EXIF fields the options read."""
    return [MetadataColumn(name, EXIF_FIELDS[name], origin="exif") for name in options.exif_columns]


def partition_values(table: pa.Table, key: str, scheme: str) -> np.ndarray:
    """The ``key`` column as the partitioner takes it: text or numbers for ``column``, numbers
    (a time as seconds) for ``continuous``."""
    column = table.column(table_column(key)).combine_chunks()
    if scheme == "continuous":
        if pa.types.is_timestamp(column.type):
            return column.cast(pa.int64()).to_numpy(zero_copy_only=False) / 1e6
        if pa.types.is_string(column.type):
            raise OptionError(
                f"`partition_key` column {key!r} holds text; the continuous partition ranks numbers or times"
                " (declare a numeric column's type with `keep_columns` NAME:float)"
            )
        return column.cast(pa.float64()).to_numpy(zero_copy_only=False)
    if pa.types.is_timestamp(column.type):
        return np.array([value.isoformat() for value in column.to_pylist()], dtype=object)
    if pa.types.is_string(column.type):
        return np.array(column.to_pylist(), dtype=object)
    return column.to_numpy(zero_copy_only=False)
