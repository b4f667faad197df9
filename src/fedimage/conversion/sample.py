"""Converting the embedded Open Clip Art sample: what ``fedimage demo`` and ``make demo`` run."""

from __future__ import annotations

import os
from pathlib import Path

from fedimage.conversion.options import ConvertOptions, ConvertReport
from fedimage.conversion.pipeline import convert
from fedimage.imaging.standardize import ImageOptions
from fedimage.labels import load_taxonomy
from fedimage.sources import open_source
from fedimage.sources.sample import sample_manifest, sample_taxonomy


def convert_sample(
    output: str | os.PathLike[str] = "out/sample.h5",
    *,
    storage: str = "jpeg",
    workers: int | None = None,
    quiet: bool = False,
) -> ConvertReport:
    """Convert the embedded sample (300 clip-art drawings by 12 authors) into ``output``, replacing it.

    Parameters:
        output: the store to write; its folder is created.
        storage: ``"jpeg"`` or ``"raw"``.
        workers: processes (default: all cores).
        quiet: no progress bar.

    Example::

        report = fedimage.convert_sample("out/sample.h5")
    """
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    options = ConvertOptions(
        image=ImageOptions(storage=storage), workers=workers, quiet=quiet, overwrite=True
    )
    with open_source(sample_manifest()) as source:
        return convert(source, output, options, taxonomy=load_taxonomy(sample_taxonomy()))
