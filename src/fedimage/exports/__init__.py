"""Exports of a store to the formats other FL tool chains read.

::

    from fedimage.exports import ExportOptions, export
    report = export("out.h5", "tfrecords", "out_tfrecords/", ExportOptions(quality=95))

=================  ===========================================================================
``flair-central``  one HDF5 file in ml-flair's ungrouped layout (``--not_group_data_by_user``)
``tfrecords``      ml-flair's TFRecords: ``{split}/{user}.tfrecords`` + ``label_to_index.json``
``dirs``           ``{split}/{user}/`` folders of JPEG files + ``metadata.json``, ``index.json``
``parquet``        ``{split}.parquet`` with a Hugging Face ``datasets`` Image column
``client-bundles`` one encrypted one-user store per client + its own key file (``privacy`` extra)
=================  ===========================================================================

A lossless store's images go to ``dirs`` and ``parquet`` as its PNG files and to ``client-bundles``
as they are stored; ``tfrecords`` (JPEGs) and ``flair-central`` (uint8 pixels) get an 8-bit lossless
store's images transcoded, and refuse a 16-bit store in one line, before writing anything.

Every export streams the store user by user, shows a progress bar unless ``quiet``,
writes under a temporary name renamed when complete, and refuses to replace an
existing destination unless ``overwrite``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from fedimage.errors import OptionError
from fedimage.exports import flair_central, tfrecords
from fedimage.exports.base import ExportOptions, ExportReport, ExportRun
from fedimage.exports.client_bundles import write_client_bundles
from fedimage.exports.destination import StagedDestination, size_on_disk
from fedimage.exports.dirs import write_dirs
from fedimage.exports.flair_central import write_flair_central
from fedimage.exports.parquet import write_parquet
from fedimage.exports.reading import check_8_bit
from fedimage.exports.tfrecords import write_tfrecords
from fedimage.store.reader import FederatedStore
from fedimage.store.sealing import StoreKey


@dataclass(frozen=True)
class Exporter:
    """A registered export format: its writer and whether it writes one file or a folder.

    ``reproducible``: the same store gives the same bytes (not for ``client-bundles``, whose
    keys are fresh random keys on every export). ``eight_bits_only``: for a format that holds 8-bit
    pixels only, what refuses a 16-bit store (see :func:`~fedimage.exports.reading.check_8_bit`).
    """

    name: str
    write: Callable[[ExportRun, Path], None]
    writes_folder: bool
    description: str
    reproducible: bool = True
    eight_bits_only: str | None = None


EXPORTERS: dict[str, Exporter] = {
    exporter.name: exporter
    for exporter in (
        Exporter("dirs", write_dirs, True, "a folder per client: image files and metadata.json"),
        Exporter(
            "flair-central",
            write_flair_central,
            False,
            "ml-flair's ungrouped HDF5 (one file)",
            eight_bits_only=flair_central.EIGHT_BITS_ONLY,
        ),
        Exporter("parquet", write_parquet, True, "a Parquet file per split, Hugging Face Image column"),
        Exporter(
            "tfrecords",
            write_tfrecords,
            True,
            "ml-flair's TFRecords, a file per client",
            eight_bits_only=tfrecords.EIGHT_BITS_ONLY,
        ),
        Exporter(
            "client-bundles", write_client_bundles, True, "an encrypted store per client, own key each", False
        ),
    )
}
EXPORT_FORMATS = tuple(EXPORTERS)


def export(
    store: str | Path | FederatedStore,
    to: str,
    destination: str | Path,
    options: ExportOptions | None = None,
    *,
    key: StoreKey | None = None,
) -> ExportReport:
    """Export every user of ``store`` to ``destination`` in the format ``to``.

    Parameters:
        store: a store path, or a :class:`~fedimage.store.reader.FederatedStore` already open.
        to: one of :data:`EXPORT_FORMATS` (``flair-central``, ``dirs``, ``parquet``, ``tfrecords``,
            ``client-bundles``).
        destination: the file (``flair-central``) or folder to create.
        options: overwrite, progress bar, JPEG quality for raw stores.
        key: the key of an encrypted store (when ``store`` is a path).

    Example::

        report = fedimage.export("out.h5", "parquet", "out-parquet/")
        print(report.summary())
    """
    options = options or ExportOptions()
    exporter = EXPORTERS.get(to)
    if exporter is None:
        raise OptionError(f"unknown export format {to!r}; choose one of: {', '.join(EXPORT_FORMATS)}")
    if not isinstance(store, FederatedStore):
        with FederatedStore(store, key=key) as opened:
            return export(opened, to, destination, options)
    if exporter.eight_bits_only is not None:
        check_8_bit(store, exporter.eight_bits_only)
    started = time.perf_counter()
    target = StagedDestination(
        Path(destination), is_folder=exporter.writes_folder, overwrite=options.overwrite, store=store.path
    )
    with (
        target as partial,
        tqdm(total=store.num_images(), unit="img", disable=options.quiet, desc=f"export {to}") as bar,
    ):
        run = ExportRun(store, options, bar)
        exporter.write(run, partial)
        target.publish()
    return ExportReport(
        format=to,
        store=store.path,
        destination=target.path,
        splits=run.splits,
        bytes=size_on_disk(target.path),
        seconds=time.perf_counter() - started,
    )


__all__ = [
    "EXPORTERS",
    "EXPORT_FORMATS",
    "ExportOptions",
    "ExportReport",
    "Exporter",
    "export",
]
