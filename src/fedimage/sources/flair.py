"""FLAIR's raw distribution: ``labels_and_metadata.json`` plus ``small_images/``."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from fedimage.errors import SourceError
from fedimage.records import Reject, literal
from fedimage.sources.base import CellError, InsideChecker, Source, clean_id, parse_label_list
from fedimage.sources.json_stream import iter_json_array
from fedimage.sources.metadata import raw_column, table_column
from fedimage.sources.record_table import SCHEMA, SourceMetadata, clean_label_lists

METADATA_FILE = "labels_and_metadata.json"
IMAGE_FOLDER = "small_images"
TAXONOMY_FILE = "label_relationship.txt"
FLAIR_COLUMNS: dict[str, str | None] = {
    "image": "_image",
    "user": "user_id",
    "labels": "labels",
    "fine_labels": "fine_grained_labels",
    "split": "partition",
    "image_id": "image_id",
}
METADATA_BATCH_ROWS = 1 << 13
_FIELDS = ("user_id", "image_id", "labels", "fine_grained_labels", "partition")


class FlairSource(Source):
    """A folder as ml-flair's ``download_dataset.py`` leaves it.

    Each metadata object has ``user_id``, ``image_id``, ``labels``,
    ``fine_grained_labels`` and ``partition``; the image is
    ``small_images/{image_id}.jpg``. ``label_relationship.txt``, when present,
    is the default taxonomy.
    """

    kind = "flair"

    def __init__(self, root: Path, image_folder: str = IMAGE_FOLDER):
        super().__init__(root)
        self.metadata_path = root / METADATA_FILE
        if not self.metadata_path.is_file():
            raise SourceError(f"{root} is not a FLAIR folder: {METADATA_FILE} not found")
        self.image_folder = image_folder

    @property
    def split_column(self) -> str | None:
        return "partition"

    @staticmethod
    def looks_like(path: Path) -> bool:
        return path.is_dir() and (path / METADATA_FILE).is_file()

    @property
    def default_taxonomy(self) -> Path | None:
        candidate = self.root / TAXONOMY_FILE
        return candidate if candidate.is_file() else None

    def metadata(self, columns: Sequence[str] = ()) -> SourceMetadata:
        """The records as a table, built column-wise a batch of items at a time.

        FLAIR's 429,000 items are validated and laid out in Arrow, not per record. An item
        whose field cannot be what it means (an id that is a list, a number among labels,
        text that is not UTF-8) is rejected naming the field. Each name of ``columns`` (another
        field of the items) becomes a ``meta:<name>`` column.
        """
        rejects: list[Reject] = []
        tables: list[pa.Table] = []
        fields = (*_FIELDS, *(name for name in columns if name not in _FIELDS))
        batch: dict[str, list[Any]] = {name: [] for name in fields}
        items: list[int] = []
        seen: dict[str, None] = {}
        inside = InsideChecker(self.root)
        for index, item in enumerate(iter_json_array(self.metadata_path)):
            if not isinstance(item, dict):
                rejects.append(
                    Reject(origin=_origin(index), reason="item is not a JSON object", stage="source")
                )
                continue
            for name, values in batch.items():
                values.append(item.get(name))
            if columns:
                seen.update(dict.fromkeys(item))
            items.append(index)
            if len(items) == METADATA_BATCH_ROWS:
                tables.append(self._batch_table(batch, items, rejects, inside, columns))
                batch, items = {name: [] for name in fields}, []
        tables.append(self._batch_table(batch, items, rejects, inside, columns))
        for name in columns:
            if name not in seen:
                raise SourceError(
                    f"`keep_columns` column {name!r} is not a field of {self.metadata_path.name}; its items"
                    f" have: {', '.join(seen) or '(none)'}"
                )
        try:
            table = pa.concat_tables(tables, promote_options="permissive")
        except (pa.ArrowInvalid, pa.ArrowTypeError):  # a field of numbers in some batches, text in others
            table = pa.concat_tables([_metadata_as_text(part, columns) for part in tables])
        return SourceMetadata(table, _in_source_order(rejects))

    def available_columns(self) -> list[str] | None:
        return None  # known only once the items are read (see metadata)

    def check_columns(self, columns: Sequence[str], option: str = "keep_columns") -> None:
        """FLAIR's items are read to know their fields: :meth:`metadata` checks ``columns``."""

    def _batch_table(
        self,
        batch: dict[str, list[Any]],
        items: list[int],
        rejects: list[Reject],
        inside: InsideChecker,
        columns: Sequence[str] = (),
    ) -> pa.Table:
        """One batch of metadata objects as record-table rows; rows without a usable image are rejected."""
        problems: dict[int, tuple[str, str]] = {}
        extra = {}
        for name in columns:
            extra[name], bad = raw_column(batch[name])
            for row, problem in bad.items():
                problems.setdefault(row, (name, problem))
        image_ids = _texts(batch["image_id"], "image_id", problems)
        user_ids = _texts(batch["user_id"], "user_id", problems)
        partitions = _texts(batch["partition"], "partition", problems)
        labels = _labels(batch["labels"], "labels", problems)
        fine_labels = _labels(batch["fine_grained_labels"], "fine_grained_labels", problems)
        folder = os.path.join(os.path.abspath(self.root), self.image_folder)
        paths = pc.binary_join_element_wise(folder + os.sep, image_ids, ".jpg", "")
        keep = pc.not_equal(image_ids, "").to_numpy(zero_copy_only=False)
        unusual = pc.match_substring(image_ids, "/").to_numpy(zero_copy_only=False)
        root = os.path.abspath(self.root)
        if os.sep != "/" or os.path.normpath(folder) != folder or not folder.startswith(root + os.sep):
            unusual[:] = True  # paths are resolved one by one
        else:
            folder_inside, links = inside.folder(folder)
            if not folder_inside:
                unusual[:] = True
            elif links:  # images that are symbolic links: checked one by one
                names = pc.binary_join_element_wise(image_ids, ".jpg", "")
                linked = pc.is_in(names, value_set=pa.array(sorted(links), pa.string()))
                unusual |= linked.to_numpy(zero_copy_only=False)
        keep[list(problems)] = False
        path_list: list[str | None] | None = None
        for row in sorted({*np.flatnonzero(~keep | unusual).tolist(), *problems}):
            user_id = user_ids[row].as_py() or None
            if row in problems:
                field, problem = problems[row]
                reason = "field {detail} " + literal(problem)
                rejects.append(Reject(_origin(items[row]), reason, detail=field, stage="source"))
                continue
            image_id = image_ids[row].as_py()
            if not image_id:
                reason = "row has no image path"
                rejects.append(Reject(_origin(items[row]), reason, user_id=user_id, stage="source"))
                continue
            relative = f"{self.image_folder}/{image_id}.jpg"
            resolved, problem = inside.check(relative)
            if resolved is None:
                keep[row] = False
                rejects.append(
                    Reject(
                        _origin(items[row]),
                        problem or "",
                        image_id=image_id,
                        path=relative,
                        user_id=user_id,
                        stage="source",
                    )
                )
            else:
                path_list = path_list if path_list is not None else paths.to_pylist()
                path_list[row] = resolved
        if path_list is not None:
            paths = pa.array(path_list, pa.string())
        index = pa.array(items, pa.int64())
        origin = pc.binary_join_element_wise(f"{METADATA_FILE} item ", pc.cast(index, pa.string()), "")
        table = pa.table(
            {
                "path": paths,
                "image_id": image_ids,
                "user_id": user_ids,
                "labels": clean_label_lists(labels, "|"),
                "fine_labels": clean_label_lists(fine_labels, "|"),
                "split": partitions,
                "origin": origin,
                "row": pa.array(np.full(len(items), -1, dtype=np.int64)),
            },
            schema=SCHEMA,
        )
        for name, values in extra.items():
            table = table.append_column(table_column(name), values)
        return table if keep.all() else table.filter(pa.array(keep))


def _metadata_as_text(table: pa.Table, columns: Sequence[str]) -> pa.Table:
    """``table`` with its metadata columns as text (batches that typed a field differently)."""
    for name in columns:
        position = table.schema.get_field_index(table_column(name))
        values = [None if value is None else str(value) for value in table.column(position).to_pylist()]
        table = table.set_column(position, table_column(name), pa.array(values, pa.string()))
    return table


def _origin(index: int) -> str:
    return f"{METADATA_FILE} item {index}"


def _in_source_order(rejects: list[Reject]) -> list[Reject]:
    return sorted(rejects, key=lambda reject: int(reject.origin.rsplit(" ", 1)[1]))


_CONVERSION_ERRORS = (pa.ArrowInvalid, pa.ArrowTypeError, UnicodeEncodeError)


def _texts(values: list[Any], field: str, problems: dict[int, tuple[str, str]]) -> pa.Array:
    """An id field as stripped strings ('' when missing); an item that holds no id goes to ``problems``."""
    try:
        array = pa.array(values, pa.string())
    except _CONVERSION_ERRORS:  # numbers, lists, lone surrogates: item by item
        texts = []
        for row, value in enumerate(values):
            try:
                texts.append(clean_id(value))
            except CellError as error:
                problems.setdefault(row, (field, str(error)))
                texts.append("")
        array = pa.array(texts, pa.string())
    return pc.fill_null(pc.utf8_trim_whitespace(array), "")


def _labels(values: list[Any], field: str, problems: dict[int, tuple[str, str]]) -> pa.Array:
    """A label field: lists of strings, or ``|``-joined strings, as an Arrow column."""
    kinds = {type(value) for value in values} - {type(None)}
    uniform = pa.list_(pa.string()) if kinds <= {list} else pa.string() if kinds <= {str} else None
    with contextlib.suppress(*_CONVERSION_ERRORS):  # e.g. a number inside a list: item by item
        if uniform is not None:
            return pa.array(values, uniform)
    labels: list[list[str]] = []
    for row, value in enumerate(values):
        try:
            labels.append(list(parse_label_list(value, "|")))
        except CellError as error:
            problems.setdefault(row, (field, str(error)))
            labels.append([])
    return pa.array(labels, pa.list_(pa.string()))
