"""fedimage: turn any image collection into a federated-learning dataset.

Every command of the ``fedimage`` CLI is a function here::

    import fedimage
    report = fedimage.convert("photos/", "out.h5")          # fedimage convert
    with fedimage.open("out.h5") as store:                  # read users' images and labels
        user = store.load_user("train", next(iter(store.users("train"))))
    fedimage.verify_store("out.h5")                         # fedimage verify
    fedimage.summarize("out.h5")                            # fedimage inspect
    fedimage.export("out.h5", "parquet", "out-parquet/")    # fedimage export
    fedimage.heterogeneity_report(["out.h5"], "report/")    # fedimage report
    fedimage.keygen("my.key")                               # fedimage keygen
    fedimage.convert_sample("out/sample.h5")                # fedimage demo
    fedimage.train("out.h5", fedimage.TrainOptions(rounds=5), "run/")  # fedimage train (extra: pfl)
    fedimage.make_kits("out.h5", "kits/", "fl.example.org:9092")        # fedimage kits (extra: privacy)
    fedimage.serve("kits/server", "run/", fedimage.TrainOptions())      # fedimage serve (extra: flower)
    fedimage.run_client("kits/clients/train/u1")                        # fedimage client (extra: flower)

The packages follow the data flow: ``sources`` -> ``conversion`` -> ``store`` ->
(``analysis``, ``exports``, ``loaders``) -> ``training`` -> ``federation`` (a real deployment),
with ``partitioning``, ``privacy`` and ``cli`` beside them.
"""

from __future__ import annotations

from typing import Any

from fedimage._version import __version__
from fedimage.analysis.report import heterogeneity_report
from fedimage.analysis.summary import summarize
from fedimage.conversion import ConvertOptions, ConvertReport, PlanOptions, SplitRatios, convert
from fedimage.conversion.sample import convert_sample
from fedimage.errors import FedimageError, MissingExtraError, OptionError, SourceError, StoreError
from fedimage.exports import ExportOptions, ExportReport, export
from fedimage.imaging import ImageOptions
from fedimage.labels import Taxonomy, load_taxonomy
from fedimage.partitioning import PartitionOptions
from fedimage.privacy import Passphrase, Pseudonymizer
from fedimage.privacy.pseudonyms import generate_key_file as keygen
from fedimage.sources import ManifestColumns, open_source
from fedimage.sources.sample import sample_path
from fedimage.store.reader import FederatedStore, UnknownUserError, UserData
from fedimage.store.reader import open_store as open
from fedimage.store.verify import VerifyReport, verify_store

#: Training and deployment need extras (train, pfl, flower, privacy): imported when first used.
_TRAINING = {
    "train": "fedimage.training.runner",
    "TrainOptions": "fedimage.training.options",
    "DPOptions": "fedimage.training.options",
    "SecAggOptions": "fedimage.training.options",
    "make_kits": "fedimage.federation.kits",
    "serve": "fedimage.federation.serve",
    "ServeOptions": "fedimage.federation.serve",
    "run_client": "fedimage.federation.node",
    "ClientOptions": "fedimage.federation.node",
}


def __getattr__(name: str) -> Any:
    if name in _TRAINING:
        import importlib

        return getattr(importlib.import_module(_TRAINING[name]), name)
    raise AttributeError(f"module 'fedimage' has no attribute {name!r}")


__all__ = [
    "ClientOptions",
    "ConvertOptions",
    "ConvertReport",
    "DPOptions",
    "ExportOptions",
    "ExportReport",
    "FederatedStore",
    "FedimageError",
    "ImageOptions",
    "ManifestColumns",
    "MissingExtraError",
    "OptionError",
    "PartitionOptions",
    "Passphrase",
    "PlanOptions",
    "Pseudonymizer",
    "SecAggOptions",
    "ServeOptions",
    "SourceError",
    "SplitRatios",
    "StoreError",
    "Taxonomy",
    "TrainOptions",
    "UnknownUserError",
    "UserData",
    "VerifyReport",
    "__version__",
    "convert",
    "convert_sample",
    "export",
    "heterogeneity_report",
    "keygen",
    "load_taxonomy",
    "make_kits",
    "open",
    "open_source",
    "run_client",
    "sample_path",
    "serve",
    "summarize",
    "train",
    "verify_store",
]
