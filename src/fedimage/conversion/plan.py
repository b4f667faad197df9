"""Turn a source's metadata into a conversion plan: validated, grouped by user, split, capped.

Everything here works on metadata only, column-wise (see :mod:`fedimage.sources.record_table`),
and is deterministic: the same rows and options give the same plan whatever order
the source yields them in (except which of two duplicate image ids is kept: the
first one seen).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass, field, replace

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from fedimage.conversion.metadata import partition_values
from fedimage.conversion.splits import (
    DEFAULT_SPLIT_NAMES,
    SPLIT_LEVELS,
    STRATIFY_LEVELS,
    SplitRatios,
    assign_splits,
    assign_stratified,
    check_split_name,
    choose_capped,
    sample_users,
    split_images,
)
from fedimage.errors import OptionError
from fedimage.labels import LABEL_JOIN, Taxonomy
from fedimage.partitioning import (
    SKEW_STRATEGIES,
    PartitionOptions,
    column_names,
    partition,
    pick_label,
    regroup,
)
from fedimage.records import ImageRecord, Reject, literal
from fedimage.sources.metadata import table_column
from fedimage.sources.record_table import (
    SourceMetadata,
    first_per_row,
    label_rows,
    metadata_from_records,
    records_of,
    string_codes,
)

#: A rejection's reason template and the detail it names (see :class:`fedimage.records.Reject`).
Reason = tuple[str, str | None]


@dataclass(frozen=True, slots=True)
class PlanOptions:
    """Options that decide which image goes to which user and split.

    ``seed`` is the plan's one seed: it shuffles users into splits, groups users and, in a plan,
    drives the partition scheme too (a ``partition`` given another non-zero seed is an error).
    ``partition`` None means the source's own users ("natural"), or, for a source without users,
    IID over :class:`~fedimage.partitioning.PartitionOptions`' default number of clients; the
    number of clients is set only there (``PartitionOptions(num_clients=...)``).

    The users a plan splits are the source's users, the groups of ``group_size`` or the clients
    a ``partition`` makes; in that order, a plan drops users with fewer than
    ``min_images_per_user`` valid images, keeps a seeded sample of ``max_users`` of the rest,
    caps each at ``max_images_per_user`` images and splits them (see ``docs/splits.md``):

    - ``split_level`` ``"user"`` (FLAIR's way): each user goes whole to one split, at random
      (``stratify`` None) or so that each split's labels and image count follow the whole
      (``stratify`` ``"labels"``: coarse labels, ``"fine-labels"``: fine labels).
    - ``split_level`` ``"image"``: each user's images are split by ``split`` (per user, largest
      remainder), so a user holds data in every split under the same id. A source that gives its
      rows a split is an error then, unless ``source_splits`` is False.

    Example::

        PlanOptions(split=SplitRatios.parse("0.8,0.1,0.1"), stratify="labels", min_images_per_user=5)
    """

    split: SplitRatios = field(default_factory=SplitRatios)
    #: Keep the split a source's split column gives a user (False: split every user by ``split``).
    source_splits: bool = True
    seed: int = 0
    max_images_per_user: int | None = None
    partition: PartitionOptions | None = None
    #: Which of an image's labels a label-skew scheme follows (see fedimage.partitioning.labels).
    skew_label: str = "rarest"
    #: Merge natural users into seeded groups of this many users.
    group_size: int | None = None
    #: ``"user"``: whole users go to one split (FLAIR's way); ``"image"``: each user's images are split.
    split_level: str = "user"
    #: Balance user splits on ``"labels"`` (coarse) or ``"fine-labels"``; None: users split at random.
    stratify: str | None = None
    #: Drop users (or clients) with fewer valid images than this, counted before the per-user cap.
    min_images_per_user: int | None = None
    #: Keep a seeded sample of this many users (after ``min_images_per_user``).
    max_users: int | None = None

    def __post_init__(self) -> None:
        if self.max_images_per_user is not None and self.max_images_per_user < 1:
            raise OptionError(f"`max_images_per_user` must be at least 1, got {self.max_images_per_user}")
        if self.skew_label not in SKEW_STRATEGIES:
            choices = ", ".join(SKEW_STRATEGIES)
            raise OptionError(f"`skew_label` must be one of {choices}, got {self.skew_label!r}")
        if self.group_size is not None and self.group_size < 1:
            raise OptionError(f"`group_size` must be at least 1, got {self.group_size}")
        if self.split_level not in SPLIT_LEVELS:
            choices = ", ".join(SPLIT_LEVELS)
            raise OptionError(f"`split_level` must be one of {choices}, got {self.split_level!r}")
        if self.stratify is not None and self.stratify not in STRATIFY_LEVELS:
            choices = ", ".join(STRATIFY_LEVELS)
            raise OptionError(f"`stratify` must be None or one of {choices}, got {self.stratify!r}")
        if self.stratify is not None and self.split_level != "user":
            raise OptionError(
                f"`stratify` balances whole users across splits; it cannot be combined with `split_level`"
                f" {self.split_level}"
            )
        if self.min_images_per_user is not None and self.min_images_per_user < 1:
            raise OptionError(f"`min_images_per_user` must be at least 1, got {self.min_images_per_user}")
        if self.max_users is not None and self.max_users < 1:
            raise OptionError(f"`max_users` must be at least 1, got {self.max_users}")
        if self.partition is not None and self.partition.seed != self.seed:
            if self.partition.seed != 0:
                raise OptionError(
                    f"`partition.seed` ({self.partition.seed}) differs from `seed` ({self.seed}): a plan has"
                    " one seed; set `seed`"
                )
            object.__setattr__(self, "partition", replace(self.partition, seed=self.seed))
        if self.group_size is not None and self.partition is not None:
            raise OptionError("`group_size` merges natural users; it cannot be combined with `partition`")


@dataclass(frozen=True, slots=True)
class UserPlan:
    """One user group of the store: rows ``start:stop`` of the plan's table."""

    split: str
    user_id: str
    start: int
    stop: int

    @property
    def size(self) -> int:
        return self.stop - self.start


@dataclass
class ConversionPlan:
    """The accepted images in store order (split, user, image id), their users, and the rejects.

    ``table`` keeps the source's rows (with derived labels, users and splits filled in);
    ``order`` lists the rows that go into the store, in store order.
    """

    table: pa.Table
    order: np.ndarray
    users: list[UserPlan]
    rejects: list[Reject]
    inputs: int
    coarse_labels: list[str]
    fine_labels: list[str]
    users_assigned: bool = False

    @property
    def planned_images(self) -> int:
        return len(self.order)

    def records(self, start: int = 0, stop: int | None = None) -> list[ImageRecord]:
        """Images ``start:stop`` of the store order as records (materialized on demand)."""
        rows = self.order[start:stop]
        return records_of(self.table.take(pa.array(rows, pa.int64())))

    def spread_records(self, count: int) -> list[ImageRecord]:
        """Up to ``count`` images spread evenly over the store order (the first and last included)."""
        if not len(self.order):
            return []
        spread = np.linspace(0, len(self.order) - 1, num=min(count, len(self.order)))
        picks = np.unique(spread.astype(np.int64))
        return records_of(self.table.take(pa.array(self.order[picks], pa.int64())))

    def user_records(self, user: UserPlan) -> list[ImageRecord]:
        return self.records(user.start, user.stop)

    def split_label_counts(
        self, failed: Collection[str] = ()
    ) -> tuple[dict[str, int], dict[str, np.ndarray]]:
        """Images and coarse label histogram (over ``coarse_labels``) of each split, in store order,
        counting the planned images less those whose image id is in ``failed`` (not written)."""
        kept = self.table.select(["image_id", "split", "labels"]).take(pa.array(self.order, pa.int64()))
        if failed:
            written = pc.invert(
                pc.is_in(kept.column("image_id"), value_set=pa.array(list(failed), pa.string()))
            )
            kept = kept.filter(written)
        splits = list(dict.fromkeys(user.split for user in self.users))
        split_index = {name: index for index, name in enumerate(splits)}
        encoded = pc.dictionary_encode(kept.column("split").combine_chunks())
        position = np.array([split_index[name] for name in encoded.dictionary.to_pylist()] + [0], np.int64)
        split_of = position[encoded.indices.to_numpy(zero_copy_only=False)]
        rows, vocabulary, codes = label_rows(kept.column("labels"))
        label_index = {name: index for index, name in enumerate(self.coarse_labels)}
        code_index = np.array([label_index[name] for name in vocabulary], dtype=np.int64)
        histograms = np.zeros((len(splits), len(self.coarse_labels)), dtype=np.int64)
        np.add.at(histograms, (split_of[rows], code_index[codes] if len(codes) else codes), 1)
        images = np.bincount(split_of, minlength=len(splits))
        counts = {name: int(images[index]) for index, name in enumerate(splits) if images[index]}
        return counts, {name: histograms[split_index[name]] for name in counts}

    def iter_records(self, batch: int = 1024) -> Iterator[ImageRecord]:
        for start in range(0, len(self.order), batch):
            yield from self.records(start, start + batch)


def make_plan(
    metadata: SourceMetadata | Iterable[ImageRecord | Reject],
    options: PlanOptions,
    *,
    has_users: bool = True,
    taxonomy: Taxonomy | None = None,
) -> ConversionPlan:
    """Validate every row and lay out users, splits and caps."""
    if not isinstance(metadata, SourceMetadata):
        metadata = metadata_from_records(metadata)
    table = metadata.table
    rejects = list(metadata.rejects)
    checks = _RowChecks(table)
    checks.run(has_users, taxonomy)
    if taxonomy is not None:
        labels = _derive_coarse(table, taxonomy, checks.bad)
        table = table.set_column(table.schema.get_field_index("labels"), "labels", labels)
    checks.flag_duplicates()
    rejects.extend(checks.rejects("source"))

    # The assignment works on a narrow table of the valid rows' keys.
    valid = np.flatnonzero(~checks.bad)
    keys = table.select(["image_id", "user_id", "split"])
    if len(valid) < table.num_rows:
        keys = keys.take(pa.array(valid))
    clients = _clients(keys, table, valid, options, has_users)
    if clients is not None:
        keys = keys.set_column(1, "user_id", clients)
        table = table.set_column(2, "user_id", _scatter(clients, valid, table.num_rows))
    stratify_by = None
    if options.stratify is not None:
        stratify_by = table.column("labels" if options.stratify == "labels" else "fine_labels")
        stratify_by = stratify_by.take(pa.array(valid)) if len(valid) < table.num_rows else stratify_by
    assignment = _assign(keys, stratify_by, options)
    table = table.set_column(
        table.schema.get_field_index("split"), "split", _scatter(assignment.splits, valid, table.num_rows)
    )
    if assignment.dropped:
        rows = pa.array([int(valid[row]) for row, _, _ in assignment.dropped], pa.int64())
        dropped_records = records_of(table.take(rows))
        rejects.extend(
            _reject(record, reason, stage)
            for record, (_, reason, stage) in zip(dropped_records, assignment.dropped, strict=True)
        )
    order = valid[assignment.order]
    kept = table if len(order) == table.num_rows else table.take(pa.array(np.sort(order)))
    coarse = set(pc.unique(kept.column("labels").combine_chunks().flatten()).to_pylist())
    fine = set(pc.unique(kept.column("fine_labels").combine_chunks().flatten()).to_pylist())
    if taxonomy is not None:
        coarse.update(taxonomy.coarse_labels)
        fine.update(taxonomy.fine_labels)
    return ConversionPlan(
        table=table,
        order=order,
        users=assignment.users,
        rejects=rejects,
        inputs=metadata.inputs,
        coarse_labels=sorted(coarse),
        fine_labels=sorted(fine),
        users_assigned=clients is not None,
    )


def _scatter(values: pa.Array | pa.ChunkedArray, rows: np.ndarray, count: int) -> pa.Array:
    """A column of ``count`` rows holding ``values`` at ``rows`` (nulls elsewhere)."""
    position = np.full(count, -1, dtype=np.int64)
    position[rows] = np.arange(len(rows))
    indices = pa.array(position, mask=position < 0)
    array = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    return array.take(indices)


class _RowChecks:
    """Column-wise validation; each bad row keeps the reason of the first check it fails."""

    def __init__(self, table: pa.Table):
        self.table = table
        self.count = table.num_rows
        self.bad = np.zeros(self.count, dtype=bool)
        self.reasons: dict[int, Reason] = {}

    def flag(self, mask: np.ndarray, reason: Callable[[int], Reason]) -> None:
        for row in np.flatnonzero(mask & ~self.bad).tolist():
            self.reasons[row] = reason(row)
        self.bad |= mask

    def _empty(self, name: str) -> np.ndarray:
        column = pc.fill_null(self.table.column(name), "")
        return pc.equal(column, "").to_numpy(zero_copy_only=False)

    def run(self, has_users: bool, taxonomy: Taxonomy | None) -> None:
        self.flag(self._empty("image_id"), lambda _: ("row has no image id", None))
        if has_users:
            self.flag(self._empty("user_id"), lambda _: ("row has no user id", None))
        partition = self.table.column("split")
        has_partition = pc.is_valid(partition).to_numpy(zero_copy_only=False)
        self.flag(has_partition & self._empty("split"), lambda _: ("row has no split value", None))
        for name in pc.unique(pc.drop_null(partition)).to_pylist():
            try:
                check_split_name(name)
            except OptionError as error:
                mask = pc.fill_null(pc.equal(partition, name), False).to_numpy(zero_copy_only=False)
                message = literal(str(error))
                self.flag(mask, lambda _, message=message: (message, None))
        for column in ("labels", "fine_labels"):
            self._flag_labels(
                column,
                lambda values: pc.match_substring(values, LABEL_JOIN),
                lambda label: (f"label {{detail}} contains {LABEL_JOIN!r}, FLAIR's label separator", label),
            )
        if taxonomy is not None:
            fine_set = pa.array(taxonomy.fine_labels, pa.string())
            coarse_set = pa.array(taxonomy.coarse_labels, pa.string())
            self._flag_labels(
                "fine_labels",
                lambda values: pc.invert(pc.is_in(values, value_set=fine_set)),
                lambda label: ("fine label {detail} is not in the taxonomy", label),
            )
            self._flag_labels(
                "labels",
                lambda values: pc.invert(pc.is_in(values, value_set=coarse_set)),
                lambda label: ("label {detail} is not a coarse label of the taxonomy", label),
            )

    def _flag_labels(
        self,
        column: str,
        is_bad: Callable[[pa.Array], pa.BooleanArray],
        reason: Callable[[str], Reason],
    ) -> None:
        """Flag rows holding a label for which ``is_bad`` (vectorized over all labels) is true."""
        lists = self.table.column(column).combine_chunks()
        values = lists.flatten()
        bad = pc.fill_null(is_bad(values), False).to_numpy(zero_copy_only=False)
        if not bad.any():
            return
        lengths = pc.fill_null(pc.list_value_length(lists), 0).to_numpy(zero_copy_only=False)
        rows = np.repeat(np.arange(self.count, dtype=np.int64), lengths)
        first = first_per_row(rows, bad, self.count)
        self.flag(first >= 0, lambda row: reason(values[int(first[row])].as_py()))

    def flag_duplicates(self) -> None:
        """Reject every later row of an image id (among otherwise valid rows)."""
        valid = np.flatnonzero(~self.bad)
        ids = self.table.column("image_id")
        if len(valid) < self.count:
            ids = ids.take(pa.array(valid))
        encoded = pc.dictionary_encode(ids.combine_chunks())
        if len(encoded.dictionary) == len(valid):
            return
        codes = encoded.indices.to_numpy(zero_copy_only=False)
        _, first_index = np.unique(codes, return_index=True)
        duplicate = np.ones(len(valid), dtype=bool)
        duplicate[first_index] = False
        if not duplicate.any():
            return
        first_row = valid[first_index][np.searchsorted(codes[first_index], codes)]
        origins = self.table.column("origin")
        mask = np.zeros(self.count, dtype=bool)
        mask[valid[duplicate]] = True
        self.flag(
            mask,
            lambda row: (
                "duplicate image id {image_id} (first seen at {detail!s})",
                origins[int(first_row[np.searchsorted(valid, row)])].as_py(),
            ),
        )

    def rejects(self, stage: str) -> list[Reject]:
        rows = sorted(self.reasons)
        return [
            _reject(record, self.reasons[row], stage)
            for row, record in zip(rows, records_of(self.table.take(pa.array(rows, pa.int64()))), strict=True)
        ]


def _reject(record: ImageRecord, reason: Reason, stage: str) -> Reject:
    """A row's rejection; ``reason`` is a template and its detail (see :class:`Reject`)."""
    template, detail = reason
    return Reject(
        origin=record.origin,
        reason=template,
        detail=detail,
        image_id=record.image_id or None,
        path=record.path or None,
        user_id=record.user_id or None,
        stage=stage,
    )


def _derive_coarse(table: pa.Table, taxonomy: Taxonomy, bad: np.ndarray) -> pa.ListArray:
    """The labels column, with the coarse labels of their fine labels for rows that have none."""
    labels = table.column("labels").combine_chunks()
    coarse_lengths = pc.fill_null(pc.list_value_length(labels), 0).to_numpy(zero_copy_only=False)
    fine_rows, fine_vocabulary, fine_codes = label_rows(table.column("fine_labels"))
    fine_lengths = pc.fill_null(pc.list_value_length(table.column("fine_labels")), 0)
    needs = (coarse_lengths == 0) & (fine_lengths.to_numpy(zero_copy_only=False) > 0) & ~bad
    if not needs.any():
        return labels
    coarse_names = taxonomy.coarse_labels
    coarse_index = {name: index for index, name in enumerate(coarse_names)}
    coarse_of_fine = np.array(
        [coarse_index.get(taxonomy.fine_to_coarse.get(label, ""), -1) for label in fine_vocabulary] + [-1]
    )
    own_rows, own_vocabulary, own_codes = label_rows(labels)
    # One vocabulary for the labels kept and the labels derived: [own..., taxonomy coarse...].
    derived = needs[fine_rows]
    keys = np.unique(fine_rows[derived] * len(coarse_names) + coarse_of_fine[fine_codes[derived]])
    rows = np.concatenate([own_rows, keys // len(coarse_names)])
    codes = np.concatenate([own_codes, len(own_vocabulary) + keys % len(coarse_names)])
    order = np.argsort(rows, kind="stable")
    offsets = np.zeros(len(labels) + 1, dtype=np.int32)
    np.cumsum(np.bincount(rows, minlength=len(labels)), out=offsets[1:])
    vocabulary = pa.array([*own_vocabulary, *coarse_names], pa.string())
    return pa.ListArray.from_arrays(pa.array(offsets), vocabulary.take(pa.array(codes[order])))


def _clients(
    keys: pa.Table,
    table: pa.Table,
    valid: np.ndarray,
    options: PlanOptions,
    has_users: bool,
) -> pa.Array | None:
    """The client of each valid row when users are made rather than taken from the source (else None).

    Partitions are computed over the images sorted by image id, so they do not depend
    on the order of the source's rows. A ``column`` partition names each client by its value.
    """
    coarse, fine = table.column("labels"), table.column("fine_labels")
    if options.group_size is not None:
        if not has_users:
            raise OptionError("`group_size` merges the source's users, but this source has none")
        groups = regroup(keys.column("user_id").to_pylist(), options.group_size, options.seed)
        return _client_names(groups, "group")
    partition_options = options.partition
    if partition_options is None:
        if has_users:
            return None
        partition_options = PartitionOptions("iid", seed=options.seed)
    count = keys.num_rows
    by_id = pc.sort_indices(keys.column("image_id")).to_numpy()
    position = np.empty(count, dtype=np.int64)
    position[by_id] = np.arange(count)
    skew = None
    if partition_options.needs_labels:
        labels = coarse if pc.sum(pc.list_value_length(coarse)).as_py() else fine
        if len(valid) < len(labels):
            labels = labels.take(pa.array(valid))
        rows, vocabulary, codes = label_rows(labels)
        rank = np.argsort(np.argsort(np.array(vocabulary, dtype=object))) if vocabulary else codes
        skew = pick_label(position[rows], rank[codes], count, options.skew_label, partition_options.seed)
    values = None
    if partition_options.needs_values:
        key = partition_options.key or ""
        if table_column(key) not in table.column_names:
            raise OptionError(
                f"the {partition_options.scheme} partition follows column {key!r} (`partition_key`), which"
                " the source's rows do not carry"
            )
        keyed = table.select([table_column(key)])
        keyed = keyed.take(pa.array(valid)) if len(valid) < table.num_rows else keyed
        values = partition_values(keyed, key, partition_options.scheme)[by_id]
    clients = partition(count, partition_options, skew, values)[position]
    if partition_options.scheme == "column" and values is not None:
        return pa.array(column_names(values), pa.string()).take(pa.array(clients))
    return _client_names(clients, "client")


def _client_names(clients: np.ndarray, prefix: str) -> pa.Array:
    count = int(clients.max()) + 1 if len(clients) else 1
    width = len(str(count - 1))
    names = pa.array([f"{prefix}_{client:0{width}d}" for client in range(count)], pa.string())
    return names.take(pa.array(clients))


@dataclass
class _Assignment:
    order: np.ndarray  # rows of the keys table, in store order
    splits: pa.Array  # the split of each row of the keys table
    users: list[UserPlan]
    dropped: list[tuple[int, Reason, str]]  # (row, reason, stage) of the rows filtered or capped, by row


def _assign(
    keys: pa.Table, stratify_by: pa.ListArray | pa.ChunkedArray | None, options: PlanOptions
) -> _Assignment:
    """Store order (split, user, image id) of the rows kept by the user filters and the per-user cap,
    the user groups, and the rows dropped on the way (``stratify_by``: the labels a stratified split
    balances, one list per row of ``keys``)."""
    user_codes, user_vocabulary = string_codes(keys.column("user_id"))
    user_names = user_vocabulary.to_pylist()
    id_codes, _ = string_codes(keys.column("image_id"))
    by_user = np.lexsort((id_codes, user_codes))  # rows by user, then image id
    sizes = np.bincount(user_codes, minlength=len(user_names))
    kept_users, reasons = _filter_users(sizes, user_names, options)
    keep = kept_users[user_codes]
    dropped: list[tuple[int, Reason, str]] = [
        (row, reasons[int(user_codes[row])], "filter") for row in np.flatnonzero(~keep).tolist()
    ]
    cap = options.max_images_per_user
    if cap is not None:
        sorted_users = user_codes[by_user]
        starts = np.flatnonzero(np.r_[True, sorted_users[1:] != sorted_users[:-1]])
        stops = np.r_[starts[1:], len(by_user)]
        reason = f"over the cap of {cap} images per user (user has {{size}} images)"
        for start, stop in zip(starts.tolist(), stops.tolist(), strict=True):
            user = int(sorted_users[start])
            if stop - start > cap and kept_users[user]:
                rows = by_user[start:stop]
                kept = np.zeros(stop - start, dtype=bool)
                kept[choose_capped(stop - start, cap, options.seed, user_names[user])] = True
                keep[rows[~kept]] = False
                capped = (reason.format(size=stop - start), None)
                dropped.extend((row, capped, "cap") for row in rows[~kept].tolist())

    split_codes, split_names = _split_codes(keys, user_codes, user_names, keep, by_user, stratify_by, options)
    rank = {name: index for index, name in enumerate(DEFAULT_SPLIT_NAMES)}
    split_order = sorted(range(len(split_names)), key=lambda i: (rank.get(split_names[i], len(rank)), i))
    split_key = np.empty(len(split_names), dtype=np.int64)
    split_key[split_order] = np.arange(len(split_names))
    order = np.lexsort((id_codes, user_codes, split_key[split_codes]))
    order = order[keep[order]]
    return _Assignment(
        order=order,
        splits=pa.array(split_names, pa.string()).take(pa.array(split_codes)),
        users=_user_ranges(split_codes[order], user_codes[order], split_names, user_names),
        dropped=sorted(dropped, key=lambda entry: entry[0]),
    )


def _filter_users(
    sizes: np.ndarray, user_names: list[str], options: PlanOptions
) -> tuple[np.ndarray, dict[int, Reason]]:
    """Which users ``min_images_per_user`` and then ``max_users`` keep, and why each other one is dropped."""
    kept = np.ones(len(user_names), dtype=bool)
    reasons: dict[int, Reason] = {}
    minimum = options.min_images_per_user
    if minimum is not None:
        template = f"user {{user_id}} has {{detail!s}} images, fewer than the minimum of {minimum} per user"
        for user in np.flatnonzero(sizes < minimum).tolist():
            reasons[user] = (template, str(int(sizes[user])))
            kept[user] = False
    if options.max_users is not None:
        candidates = np.flatnonzero(kept).tolist()
        sampled = sample_users([user_names[user] for user in candidates], options.max_users, options.seed)
        template = f"user {{user_id}} is not among the {options.max_users} users sampled"
        for user in candidates:
            if user_names[user] not in sampled:
                reasons[user] = (template, None)
                kept[user] = False
    return kept, reasons


def _split_codes(
    table: pa.Table,
    user_codes: np.ndarray,
    user_names: list[str],
    keep: np.ndarray,
    by_user: np.ndarray,
    stratify_by: pa.ListArray | pa.ChunkedArray | None,
    options: PlanOptions,
) -> tuple[np.ndarray, list[str]]:
    """Each row's split: its partition when its user's rows carry one, else its user's assigned split
    (or, with ``split_level`` image, its own split among its user's kept rows)."""
    partition = table.column("split").combine_chunks()
    if not options.source_splits:  # the source's split column is ignored
        partition = pa.nulls(len(partition), pa.string())
    encoded = pc.dictionary_encode(partition)
    partition_names = encoded.dictionary.to_pylist()
    partition_codes = pc.fill_null(encoded.indices, -1).to_numpy(zero_copy_only=False).astype(np.int64)
    names = sorted({*partition_names, *options.split.names, ""})
    index = {name: position for position, name in enumerate(names)}
    if options.split_level == "image":
        if (partition_codes >= 0).any():
            raise OptionError(
                "`split_level` image splits each user's images by `split`, but the source gives its rows a"
                " split: ignore it with `source_splits=False`, or split whole users (`split_level` user)"
            )
        return _image_split_codes(user_codes, user_names, keep, by_user, names, options), names
    # A user's rows carry partitions when the first of its rows, in source order, has one.
    first_row = np.full(len(user_names), table.num_rows, dtype=np.int64)
    np.minimum.at(first_row, user_codes, np.arange(table.num_rows))
    given = partition_codes[first_row] >= 0 if table.num_rows else np.zeros(0, dtype=bool)
    present = np.zeros(len(user_names), dtype=bool)
    present[user_codes[keep]] = True  # users with a row left after the filters
    to_assign = present & ~given
    if stratify_by is None:
        assigned = assign_splits(
            [name for name, chosen in zip(user_names, to_assign.tolist(), strict=True) if chosen],
            options.split,
            options.seed,
        )
    else:
        assigned = _stratified(user_codes, user_names, keep & to_assign[user_codes], stratify_by, options)
    from_partition = np.array([index[name] for name in partition_names] + [index[""]], dtype=np.int64)
    of_user = np.array([index[assigned.get(name, "")] for name in user_names] or [0], dtype=np.int64)
    codes = np.where(given[user_codes], from_partition[partition_codes], of_user[user_codes])
    return codes, names


def _image_split_codes(
    user_codes: np.ndarray,
    user_names: list[str],
    keep: np.ndarray,
    by_user: np.ndarray,
    names: list[str],
    options: PlanOptions,
) -> np.ndarray:
    """Each row's split when every user's kept rows (sorted by image id) are split by ``split``."""
    codes = np.full(len(user_codes), names.index(""), dtype=np.int64)
    code_of = np.array([names.index(name) for name in options.split.names], dtype=np.int64)
    rows = by_user[keep[by_user]]
    if not len(rows):
        return codes
    users = user_codes[rows]
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
    stops = np.r_[starts[1:], len(rows)]
    for start, stop in zip(starts.tolist(), stops.tolist(), strict=True):
        user = user_names[int(users[start])]
        codes[rows[start:stop]] = code_of[split_images(stop - start, options.split, options.seed, user)]
    return codes


def _stratified(
    user_codes: np.ndarray,
    user_names: list[str],
    rows: np.ndarray,
    stratify_by: pa.ListArray | pa.ChunkedArray,
    options: PlanOptions,
) -> dict[str, str]:
    """A stratified split of the users of the rows flagged in ``rows`` (see :func:`assign_stratified`)."""
    users = np.unique(user_codes[rows])
    compact = np.full(len(user_names), -1, dtype=np.int64)
    compact[users] = np.arange(len(users))
    sizes = np.bincount(compact[user_codes[rows]], minlength=len(users))
    label_row, vocabulary, codes = label_rows(stratify_by)
    rank = np.argsort(np.argsort(np.array(vocabulary, dtype=object))) if vocabulary else codes
    labelled = rows[label_row]
    occurrences = (compact[user_codes[label_row[labelled]]], rank[codes[labelled]])
    return assign_stratified(
        [user_names[user] for user in users.tolist()], sizes, occurrences, options.split, options.seed
    )


def _user_ranges(
    split_codes: np.ndarray, user_codes: np.ndarray, split_names: list[str], user_names: list[str]
) -> list[UserPlan]:
    """The (split, user) groups of rows in store order."""
    if not len(user_codes):
        return []
    changed = (split_codes[1:] != split_codes[:-1]) | (user_codes[1:] != user_codes[:-1])
    starts = np.flatnonzero(np.r_[True, changed])
    stops = [*starts[1:].tolist(), len(user_codes)]
    splits = split_codes[starts].tolist()
    users = user_codes[starts].tolist()
    return [
        UserPlan(split_names[split], user_names[user], start, stop)
        for split, user, start, stop in zip(splits, users, starts.tolist(), stops, strict=True)
    ]
