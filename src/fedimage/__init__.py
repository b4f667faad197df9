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

from typing import TYPE_CHECKING, Any

from fedimage._version import __version__

#: Public name -> (module, attribute). Imported on first use (PEP 562), so that ``import fedimage``
#: stays cheap: a Flower ClientApp process starts for every message and imports this package.
_PUBLIC: dict[str, tuple[str, str]] = {
    "heterogeneity_report": ("fedimage.analysis.report", "heterogeneity_report"),
    "repartition": ("fedimage.analysis.overlay", "repartition"),
    "summarize": ("fedimage.analysis.summary", "summarize"),
    "ConvertOptions": ("fedimage.conversion", "ConvertOptions"),
    "ConvertReport": ("fedimage.conversion", "ConvertReport"),
    "PlanOptions": ("fedimage.conversion", "PlanOptions"),
    "SplitRatios": ("fedimage.conversion", "SplitRatios"),
    "convert": ("fedimage.conversion", "convert"),
    "convert_sample": ("fedimage.conversion.sample", "convert_sample"),
    "FedimageError": ("fedimage.errors", "FedimageError"),
    "MissingExtraError": ("fedimage.errors", "MissingExtraError"),
    "OptionError": ("fedimage.errors", "OptionError"),
    "SourceError": ("fedimage.errors", "SourceError"),
    "StoreError": ("fedimage.errors", "StoreError"),
    "ExportOptions": ("fedimage.exports", "ExportOptions"),
    "ExportReport": ("fedimage.exports", "ExportReport"),
    "export": ("fedimage.exports", "export"),
    "ImageOptions": ("fedimage.imaging", "ImageOptions"),
    "MetadataOptions": ("fedimage.conversion.metadata", "MetadataOptions"),
    "Taxonomy": ("fedimage.labels", "Taxonomy"),
    "load_taxonomy": ("fedimage.labels", "load_taxonomy"),
    "PartitionOptions": ("fedimage.partitioning", "PartitionOptions"),
    "Passphrase": ("fedimage.privacy", "Passphrase"),
    "Pseudonymizer": ("fedimage.privacy", "Pseudonymizer"),
    "keygen": ("fedimage.privacy.pseudonyms", "generate_key_file"),
    "ManifestColumns": ("fedimage.sources", "ManifestColumns"),
    "open_source": ("fedimage.sources", "open_source"),
    "sample_path": ("fedimage.sources.sample", "sample_path"),
    "FederatedStore": ("fedimage.store.reader", "FederatedStore"),
    "UnknownUserError": ("fedimage.store.reader", "UnknownUserError"),
    "UserData": ("fedimage.store.reader", "UserData"),
    "open": ("fedimage.store.opening", "open_store"),
    "VerifyReport": ("fedimage.store.verify", "VerifyReport"),
    "verify_store": ("fedimage.store.verify", "verify_store"),
    # training and deployment need extras (train, pfl, flower, privacy)
    "train": ("fedimage.training.runner", "train"),
    "TrainOptions": ("fedimage.training.options", "TrainOptions"),
    "DPOptions": ("fedimage.training.options", "DPOptions"),
    "SecAggOptions": ("fedimage.training.options", "SecAggOptions"),
    "make_kits": ("fedimage.federation.kits", "make_kits"),
    "serve": ("fedimage.federation.serve", "serve"),
    "ServeOptions": ("fedimage.federation.options", "ServeOptions"),
    "run_client": ("fedimage.federation.node", "run_client"),
    "ClientOptions": ("fedimage.federation.options", "ClientOptions"),
}

if TYPE_CHECKING:  # what static tools see; at run time these come from ``__getattr__``
    from fedimage.analysis.overlay import repartition
    from fedimage.analysis.report import heterogeneity_report
    from fedimage.analysis.summary import summarize
    from fedimage.conversion import ConvertOptions, ConvertReport, PlanOptions, SplitRatios, convert
    from fedimage.conversion.metadata import MetadataOptions
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
    from fedimage.store.opening import open_store as open
    from fedimage.store.reader import FederatedStore, UnknownUserError, UserData
    from fedimage.store.verify import VerifyReport, verify_store


def __getattr__(name: str) -> Any:
    import importlib

    if name in _PUBLIC:
        module, attribute = _PUBLIC[name]
        value = getattr(importlib.import_module(module), attribute)
        globals()[name] = value  # once imported, a plain attribute
        return value
    try:  # a subpackage or module not imported yet: fedimage.store, fedimage.errors, ...
        return importlib.import_module(f"{__name__}.{name}")
    except ModuleNotFoundError:
        raise AttributeError(f"module 'fedimage' has no attribute {name!r}") from None


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))


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
    "MetadataOptions",
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
    "repartition",
    "run_client",
    "sample_path",
    "serve",
    "summarize",
    "train",
    "verify_store",
]
