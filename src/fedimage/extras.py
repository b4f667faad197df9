"""Optional dependencies: import one, or fail with one error that names the extra installing it.

The core (sources, conversion, store, partitioning) needs only numpy, h5py, Pillow,
simplejpeg, pyarrow and tqdm. Everything else comes with an extra of the ``fedimage``
package, and :func:`require` is the one place that says which::

    from fedimage.extras import require
    torch = require("torch", "training")  # MissingExtraError: ... pip install 'fedimage[train]'
"""

from __future__ import annotations

import importlib
from types import ModuleType

from fedimage.errors import MissingExtraError

#: The extra that installs each optional top-level package.
EXTRAS = {
    "torch": "train",
    "dp_accounting": "train",
    "matplotlib": "report",
    "pfl": "pfl",
    "flwr": "flower",
    "ray": "ray",
    "cryptography": "privacy",
    "datasets": "hf",
    "huggingface_hub": "hf",
    "google_crc32c": "export",
    "google": "export",  # protobuf
    "pydicom": "dicom",
    "pylibjpeg": "dicom",
}


def extra_for(module: str) -> str:
    """The extra of the ``fedimage`` package that installs ``module`` (by its top-level name)."""
    return EXTRAS.get(module.split(".")[0], "train")


def require(module: str, feature: str | None = None) -> ModuleType:
    """Import ``module``, or raise :class:`~fedimage.errors.MissingExtraError` naming its extra.

    Parameters:
        module: the dotted module name to import, e.g. ``"flwr.app"``.
        feature: what needs it, for the message (default: ``"fedimage"``).

    Example::

        plt = require("matplotlib.pyplot", "the heterogeneity report")
    """
    try:
        return importlib.import_module(module)
    except ImportError as error:
        top = module.split(".")[0]
        missing = error.name or top
        raise MissingExtraError(
            f"{feature or 'fedimage'} needs {missing!r}, which is not installed: "
            f"pip install 'fedimage[{extra_for(top)}]'",
            extra=extra_for(top),
        ) from error
