"""fedimage: turn any image collection into a federated-learning dataset.

The public API lives in this namespace::

    import fedimage
    report = fedimage.convert(fedimage.open_source("photos/", layout="user"), "out.h5")
    with fedimage.open("out.h5") as store:
        user = store.load_user("train", store.users("train").popitem()[0])
"""

from __future__ import annotations

from fedimage._version import __version__
from fedimage.conversion.pipeline import ConvertOptions, ConvertReport, convert
from fedimage.conversion.plan import PlanOptions
from fedimage.conversion.splits import SplitRatios
from fedimage.errors import (
    FedimageError,
    OptionError,
    SourceError,
    StoreError,
)
from fedimage.imaging.standardize import ImageOptions
from fedimage.labels import Taxonomy, load_taxonomy
from fedimage.privacy.keys import Passphrase
from fedimage.sources import ManifestColumns, open_source
from fedimage.sources.sample import sample_path
from fedimage.store.reader import FederatedStore, UnknownUserError, UserData
from fedimage.store.reader import open_store as open
from fedimage.store.verify import VerifyReport, verify_store

__all__ = [
    "ConvertOptions",
    "ConvertReport",
    "FederatedStore",
    "FedimageError",
    "ImageOptions",
    "ManifestColumns",
    "OptionError",
    "Passphrase",
    "PlanOptions",
    "SourceError",
    "SplitRatios",
    "StoreError",
    "Taxonomy",
    "UnknownUserError",
    "UserData",
    "VerifyReport",
    "__version__",
    "convert",
    "load_taxonomy",
    "open",
    "open_source",
    "sample_path",
    "verify_store",
]
