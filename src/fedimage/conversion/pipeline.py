"""The conversion pipeline: source -> plan -> shards (standardized in parallel) -> store."""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fedimage._version import __version__
from fedimage.conversion.executors.pool import WorkerPool, default_workers
from fedimage.conversion.plan import ConversionPlan, PlanOptions, make_plan
from fedimage.conversion.shard import (
    SHARDS_IN_FLIGHT_PER_WORKER,
    ShardFormat,
    run_local,
    shard_key,
    source_for_workers,
)
from fedimage.conversion.workdir import ShardInfo, WorkDir, move_shards, shard_specs, shards_dir_for
from fedimage.errors import OptionError, StoreError
from fedimage.imaging.standardize import ImageOptions
from fedimage.labels import Taxonomy
from fedimage.privacy.keys import StoreKey, cipher_module
from fedimage.privacy.pseudonyms import PseudonymizedSource, Pseudonymizer
from fedimage.records import Reject, write_rejects
from fedimage.sources import Source
from fedimage.store import schema
from fedimage.store.writer import StoreWriter, check_output

ENGINES = ("local", "ray")


@dataclass(frozen=True, slots=True)
class ConvertOptions:
    """Everything that shapes a conversion.

    ``workers``, ``quiet``, ``resume`` and ``engine`` do not change the images or labels written.
    ``resume`` continues an interrupted run from the shards it finished (see
    :mod:`fedimage.conversion.workdir`); ``engine="ray"`` runs shards as Ray tasks (on the
    cluster at ``ray_address``, or a local instance) and links them from the output.
    ``pseudonyms`` replaces user ids (and with ``pseudonymize_image_ids`` image ids) by keyed
    HMAC pseudonyms before planning: the store and the rejects report see pseudonyms only.
    ``encrypt_key`` (32 bytes, a key file or a ``Passphrase``) encrypts every user group and the
    metadata (:mod:`fedimage.privacy.encryption`).
    """

    image: ImageOptions = field(default_factory=ImageOptions)
    plan: PlanOptions = field(default_factory=PlanOptions)
    workers: int | None = None
    overwrite: bool = False
    quiet: bool = False
    resume: bool = False
    engine: str = "local"
    ray_address: str | None = None
    pseudonyms: Pseudonymizer | None = None
    pseudonymize_image_ids: bool = False
    encrypt_key: StoreKey | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.workers is not None and self.workers < 1:
            raise OptionError(f"--workers must be at least 1, got {self.workers}")
        if self.engine not in ENGINES:
            raise OptionError(f"--engine must be one of {', '.join(ENGINES)}, got {self.engine!r}")
        if self.encrypt_key is not None and self.engine == "ray":
            raise OptionError(
                "encryption is not available with --engine ray: its shard files keep user ids, image counts"
                " and the paths of rejected images in the clear; use --engine local"
            )
        if self.pseudonymize_image_ids and self.pseudonyms is None:
            raise OptionError("--pseudonymize-image-ids needs --pseudonymize-key")
        if self.pseudonyms is not None and self.engine == "ray":
            raise OptionError(
                "--pseudonymize-key is not available with --engine ray: its shard files keep the source"
                " paths of rejected images; use --engine local"
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

    @property
    def rejected(self) -> int:
        return len(self.rejects)


def convert(
    source: Source,
    output: str | Path,
    options: ConvertOptions | None = None,
    taxonomy: Taxonomy | None = None,
) -> ConvertReport:
    """Convert ``source`` into the store ``output``; see :class:`ConvertReport`."""
    options = options or ConvertOptions()
    started = time.perf_counter()
    output = Path(output)
    rejects_path = Path(schema.rejects_path_for(str(output)))
    if options.resume and output.exists() and not options.overwrite:
        raise StoreError(f"{output} already exists: that conversion finished, there is nothing to resume")
    check_output(output, options.overwrite)
    metadata = source.metadata()
    pseudonymized = None
    if options.pseudonyms is not None:
        pseudonymized = PseudonymizedSource(metadata, options.pseudonyms, options.pseudonymize_image_ids)
        metadata = pseudonymized.metadata
    plan = make_plan(metadata, options.plan, has_users=source.has_users, taxonomy=taxonomy)
    run = _run_settings(source, options, taxonomy, plan)
    cipher = None
    if options.encrypt_key is not None:  # keys derived from the key and the run: same inputs, same bytes
        fingerprint = json.dumps(run, sort_keys=True).encode("utf-8")
        cipher = cipher_module().StoreCipher.for_new_store(options.encrypt_key, fingerprint)
        run["encryption"] = cipher.header
    shard_format = ShardFormat(
        storage=options.image.storage,
        image_size=options.image.size,
        coarse_labels=tuple(plan.coarse_labels),
        fine_labels=tuple(plan.fine_labels),
        run_key=hashlib.sha256(json.dumps(run, sort_keys=True).encode("utf-8")).hexdigest(),
        cipher=cipher,
    )
    work = WorkDir(output)
    resuming = work.prepare(run, resume=options.resume, overwrite=options.overwrite)
    specs = shard_specs([user.size for user in plan.users])
    infos: dict[int, ShardInfo] = {}
    if resuming:
        for spec in specs:
            info = work.finished(spec, shard_key(plan, spec, shard_format.run_key))
            if info is not None:
                infos[spec.index] = info
    reused = len(infos)
    pending = [spec for spec in specs if spec.index not in infos]
    workers = options.workers or default_workers()
    linked = options.engine == "ray"
    if linked:
        from fedimage.conversion.executors.ray import run_ray

        made = run_ray(
            plan,
            source,
            options.image,
            pending,
            work,
            shard_format,
            options.ray_address,
            options.workers,
            options.quiet,
        )
        for info in made:
            infos[info.index] = info
        shards = shards_dir_for(output)
        move_shards(work, specs, shards, options.overwrite)

    # The workers start before the store is opened, so no HDF5 handle crosses a fork.
    with (
        contextlib.nullcontext() if linked else source_for_workers(source),
        WorkerPool(1 if linked else workers, SHARDS_IN_FLIGHT_PER_WORKER) as pool,
        StoreWriter(
            output,
            storage=options.image.storage,
            image_size=options.image.size,
            coarse_labels=plan.coarse_labels,
            fine_labels=plan.fine_labels,
            overwrite=options.overwrite,
            cipher=cipher,
        ) as writer,
    ):
        if not linked:
            made = run_local(plan, source, options.image, pending, work, shard_format, pool, options.quiet)
        for spec in specs:  # local shards are copied in as they arrive, while workers write the next
            if linked:
                writer.add_shard(shards / spec.name, link_as=f"{shards.name}/{spec.name}")
                continue
            if spec.index not in infos:
                info = next(made)
                infos[info.index] = info
            writer.add_shard(work.shard_path(spec))
        rejects = list(plan.rejects)
        for spec in specs:
            rejects.extend(infos[spec.index].rejects)
        if pseudonymized is not None:
            rejects = pseudonymized.scrub(rejects)
        splits = {
            split: {"users": len(users), "images": sum(u["images"] for u in users.values())}
            for split, users in writer.users.items()
        }
        written = sum(info["images"] for info in splits.values())
        writer.finish(_metadata(source, plan, options, taxonomy, writer, splits, written, rejects))
    work.remove()
    write_rejects(rejects_path, rejects)
    return ConvertReport(
        output=output,
        rejects_path=rejects_path,
        inputs=plan.inputs,
        written=written,
        rejects=rejects,
        splits=splits,
        seconds=time.perf_counter() - started,
        shards_reused=reused,
    )


def _run_settings(
    source: Source, options: ConvertOptions, taxonomy: Taxonomy | None, plan: ConversionPlan
) -> dict[str, Any]:
    """What must not change between an interrupted run and its resumption."""
    plan_options = asdict(options.plan)
    plan_options["split"] = dict(zip(options.plan.split.names, options.plan.split.ratios, strict=True))
    return {
        "fedimage_version": __version__,
        "source": source.describe(),
        "image options": asdict(options.image),
        "plan options": plan_options,
        "taxonomy": taxonomy.fine_to_coarse if taxonomy else None,
        "engine": options.engine,
        "planned images": plan.planned_images,
        "labels": [plan.coarse_labels, plan.fine_labels],
        **_pseudonym_settings(options),
    }


def _pseudonym_settings(options: ConvertOptions) -> dict[str, Any]:
    """How ids were pseudonymized (with the key's fingerprint, never the key), when they were."""
    if options.pseudonyms is None:
        return {}
    return {"pseudonyms": options.pseudonyms.describe(options.pseudonymize_image_ids)}


def _metadata(
    source: Source,
    plan: ConversionPlan,
    options: ConvertOptions,
    taxonomy: Taxonomy | None,
    writer: StoreWriter,
    splits: dict[str, dict[str, int]],
    written: int,
    rejects: list[Reject],
) -> dict[str, Any]:
    plan_options = asdict(options.plan)
    plan_options["split"] = dict(zip(options.plan.split.names, options.plan.split.ratios, strict=True))
    manifest = {
        "format": schema.FORMAT_NAME,
        "format_version": schema.FORMAT_VERSION,
        "fedimage_version": __version__,
        "storage": options.image.storage,
        "image_size": options.image.size,
        "source": {"format": source.kind, "name": source.name},
        "options": {**asdict(options.image), **plan_options},
        "users_assigned": plan.users_assigned,
        "counts": {
            "inputs": plan.inputs,
            "written": written,
            "rejected": len(rejects),
            "ignored": dict(source.ignored),
        },
        "splits": splits,
        "users": writer.users,
        **_pseudonym_settings(options),
    }
    return {
        schema.TAXONOMY: taxonomy.fine_to_coarse if taxonomy else {},
        schema.MANIFEST: manifest,
    }
