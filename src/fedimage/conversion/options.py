"""What shapes a conversion (:class:`ConvertOptions`) and what it did (:class:`ConvertReport`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from fedimage.conversion.executors import executor
from fedimage.conversion.metadata import MetadataOptions
from fedimage.conversion.plan import PlanOptions
from fedimage.errors import OptionError
from fedimage.imaging.standardize import ImageOptions
from fedimage.privacy.keys import StoreKey
from fedimage.privacy.pseudonyms import Pseudonymizer
from fedimage.records import Reject


@dataclass(frozen=True, slots=True)
class ConvertOptions:
    """Everything that shapes a conversion.

    Parameters:
        image: how images are standardized and stored (size or ``native``, resize, ``jpeg`` or ``raw``,
            ``rgb`` or ``gray``).
        plan: which image goes to which user and split (ratios, seed, partition scheme).
        workers: processes (default: all cores). Does not change the bytes written.
        overwrite: replace an existing output.
        quiet: no progress bar.
        resume: continue an interrupted run from the shards it finished (see
            :mod:`fedimage.conversion.workdir`).
        executor: ``"local"`` (worker processes here) or ``"ray"`` (shards as Ray tasks on the
            cluster at ``ray_address`` or a local instance, linked from the output).
        ray_address: the Ray cluster to join (``executor="ray"``).
        pseudonyms: replaces user ids (and, with ``pseudonymize_image_ids``, image ids) by keyed
            HMAC pseudonyms before planning: the store and the rejects report see pseudonyms only.
        pseudonymize_image_ids: image ids too (they default to source paths, which may name users).
        encrypt_key: 32 bytes, a key file or a ``Passphrase``: encrypts every user group and the
            metadata (:mod:`fedimage.privacy.encryption`).
        metadata: per-image metadata to keep: source columns, EXIF fields, and which of them to
            pseudonymize (:class:`~fedimage.conversion.metadata.MetadataOptions`).
        allow_identifiers: convert a source whose ids identify people (a DICOM folder: patient ids,
            paths) without ``pseudonyms``, and keep identifying tags as they are: only for data that
            is de-identified already.

    Example::

        options = ConvertOptions(image=ImageOptions(size=64), plan=PlanOptions(seed=3), workers=2)
    """

    image: ImageOptions = field(default_factory=ImageOptions)
    plan: PlanOptions = field(default_factory=PlanOptions)
    workers: int | None = None
    overwrite: bool = False
    quiet: bool = False
    resume: bool = False
    executor: str = "local"
    ray_address: str | None = None
    pseudonyms: Pseudonymizer | None = None
    pseudonymize_image_ids: bool = False
    encrypt_key: StoreKey | None = field(default=None, repr=False)
    metadata: MetadataOptions = field(default_factory=MetadataOptions)
    allow_identifiers: bool = False

    def __post_init__(self) -> None:
        if self.metadata.pseudonymize_columns and self.pseudonyms is None:
            raise OptionError("`pseudonymize_columns` needs a pseudonym key (`pseudonyms`)")
        if self.workers is not None and self.workers < 1:
            raise OptionError(f"`workers` must be at least 1, got {self.workers}")
        keeps_shards = executor(self.executor).keeps_shards
        if self.encrypt_key is not None and keeps_shards:
            raise OptionError(
                f"`encrypt_key` is not available with `executor` {self.executor}: its shard files keep"
                " user ids, image counts and the paths of rejected images in the clear; use `executor` local"
            )
        if self.pseudonymize_image_ids and self.pseudonyms is None:
            raise OptionError("`pseudonymize_image_ids` needs `pseudonyms`")
        if self.pseudonyms is not None and keeps_shards:
            raise OptionError(
                f"`pseudonyms` is not available with `executor` {self.executor}: its shard files keep the"
                " source paths of rejected images; use `executor` local"
            )


@dataclass
class ConvertReport:
    """What a conversion did: every input is either written or rejected."""

    output: Path
    rejects_path: Path
    inputs: int
    written: int
    rejects: list[Reject]
    splits: dict[str, dict[str, int]]
    seconds: float
    shards_reused: int = 0
    #: The image options the store was written with (``size="native"`` resolved).
    image: ImageOptions | None = None
    #: What the conversion decided or noticed about the images, one line each (a native size, a gray source).
    notes: list[str] = field(default_factory=list)

    @property
    def rejected(self) -> int:
        return len(self.rejects)


__all__ = ["ConvertOptions", "ConvertReport"]
