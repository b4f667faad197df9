"""``fedimage report``: heterogeneity of one or more stores as stats.json, PNG plots and one
self-contained report.html (needs the ``report`` extra: matplotlib)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedimage._version import __version__
from fedimage.analysis.heterogeneity import Heterogeneity, heterogeneity_from_store
from fedimage.errors import OptionError
from fedimage.extras import require
from fedimage.labels import LABEL_LEVELS
from fedimage.store.opening import open_store

LEVELS = LABEL_LEVELS


@dataclass(frozen=True)
class ReportFiles:
    """What :func:`heterogeneity_report` wrote."""

    html: Path
    stats: Path
    plots: list[Path]
    #: The summary table as text (what ``fedimage report`` prints).
    table: str = ""


def _plots_module() -> Any:
    require("matplotlib", "the heterogeneity report")
    from fedimage.analysis import plots

    return plots


def _unique_names(paths: Sequence[Path]) -> list[str]:
    names: list[str] = []
    for path in paths:
        name, suffix = path.stem, 2
        while name in names:
            name, suffix = f"{path.stem}-{suffix}", suffix + 1
        names.append(name)
    return names


def _split_views(path: Path, partition: Path | None, splits: list[str] | None) -> dict[str, Heterogeneity]:
    """The same statistics for each split alone (a client split within itself appears in each)."""
    with open_store(path, partition=partition) as store:
        names = [split for split in store.splits if splits is None or split in splits]
        return {split: heterogeneity_from_store(store, [split]) for split in names}


def text_table(names: Sequence[str], rows: list[tuple[str, list[Any]]]) -> str:
    """The summary table as aligned text, for a terminal."""

    def cell(value: Any) -> str:
        if value is None:
            return "-"
        return f"{value:.4g}" if isinstance(value, float) else str(value)

    cells = [[label, *(cell(value) for value in values)] for label, values in rows]
    header = ["measure", *names]
    widths = [max(len(row[i]) for row in [header, *cells]) for i in range(len(header))]
    lines = [
        "  ".join(
            text.ljust(width) if i == 0 else text.rjust(width)
            for i, (text, width) in enumerate(zip(row, widths, strict=True))
        )
        for row in [header, *cells]
    ]
    return "\n".join(lines)


def _table_rows(stats: dict[str, Heterogeneity], level: str) -> list[tuple[str, list[Any]]]:
    summaries = [s.summary() for s in stats.values()]
    rows: list[tuple[str, list[Any]]] = [
        ("clients", [s["clients"] for s in summaries]),
        ("images", [s["images"] for s in summaries]),
    ]
    for key in ("mean", "min", "p50", "max"):
        rows.append((f"images per client, {key}", [s["images_per_client"].get(key) for s in summaries]))
    rows.append((f"{level} labels", [s[level]["num_labels"] for s in summaries]))
    rows.append(("global effective labels", [s[level]["global_effective_labels"] for s in summaries]))
    for measure in ("effective_labels", "labels_present", "hellinger", "jensen_shannon", "emd"):
        for key in ("mean", "p50", "p95"):
            rows.append((f"{measure}, {key}", [s[level][measure].get(key) for s in summaries]))
    return rows


def heterogeneity_report(
    stores: Sequence[str | Path],
    output: str | Path,
    splits: list[str] | None = None,
    level: str = "coarse",
    top_clients: int = 30,
    partitions: Sequence[str | Path] | None = None,
) -> ReportFiles:
    """Write ``stats.json``, PNGs and ``report.html`` for ``stores`` (side by side) into ``output``.

    Parameters:
        stores: one or more store paths, compared side by side.
        output: the folder to write into (created if missing).
        splits: only these splits (default: all).
        level: ``"coarse"`` or ``"fine"`` labels.
        top_clients: clients shown in the label heatmap.
        partitions: partition overlays (``fedimage repartition``) of the one store given, compared
            side by side instead of stores (each named after its file).

    Example::

        files = fedimage.heterogeneity_report(["iid.h5", "dirichlet.h5"], "report/")
        print(files.html)
    """
    if not stores:
        raise OptionError("fedimage report needs at least one store")
    if level not in LEVELS:
        raise OptionError(f"`level` must be one of {', '.join(LEVELS)}, got {level!r}")
    if top_clients < 1:
        raise OptionError(f"`top_clients` must be at least 1, got {top_clients}")
    plots = _plots_module()
    from fedimage.analysis.report_html import page, summary_table

    paths = [Path(store) for store in stores]
    overlays: list[Path | None] = [None] * len(paths)
    if partitions:
        if len(paths) != 1:
            raise OptionError(f"`partitions` are overlays of one store; got {len(paths)} stores")
        overlays = [Path(partition) for partition in partitions]
        paths = paths * len(overlays)
    names = _unique_names([overlay or path for path, overlay in zip(paths, overlays, strict=True)])
    stats = {}
    for name, path, overlay in zip(names, paths, overlays, strict=True):
        with open_store(path, partition=overlay) as opened:
            stats[name] = heterogeneity_from_store(opened, splits)
    split_views = {
        name: _split_views(path, overlay, splits)
        for name, path, overlay in zip(names, paths, overlays, strict=True)
    }
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)

    kinds = {
        "sizes": ("Images per client", lambda s, t: plots.sizes_histogram(s, t)),
        "labels": ("Labels per client", lambda s, t: plots.labels_per_client(s, t, level)),
        "heatmap": (
            f"Label shares of the {top_clients} largest clients",
            lambda s, t: plots.label_heatmap(s, t, level, top_clients),
        ),
        "divergence": (
            "Divergence from the global label distribution",
            lambda s, t: plots.divergence_distribution(s, t, level),
        ),
    }
    written: list[Path] = []
    sections: list[tuple[str, list[tuple[bytes, str]]]] = []

    def save(png: bytes, filename: str) -> bytes:
        (out / filename).write_bytes(png)
        written.append(out / filename)
        return png

    if len(stats) > 1:
        png = save(plots.comparison(stats, level), "comparison.png")
        sections.append(("All stores", [(png, "cumulative distributions of client sizes and JS distances")]))
    for kind, (heading, draw) in kinds.items():
        figures = [(save(draw(s, name), f"{name}_{kind}.png"), name) for name, s in stats.items()]
        sections.append((heading, figures))

    document = {
        "fedimage_version": __version__,
        "labels": level,
        "splits": splits,
        "stores": [
            {
                "name": name,
                "path": str(path),
                "summary": s.summary(),
                "splits": {split: view.summary() for split, view in split_views[name].items()},
                "clients": s.per_client(),
            }
            for (name, s), path in zip(stats.items(), paths, strict=True)
        ],
    }
    stats_path = out / "stats.json"
    stats_path.write_text(json.dumps(document, indent=1, allow_nan=False))
    title = "fedimage heterogeneity report: " + ", ".join(names)
    html_path = out / "report.html"
    html_path.write_text(
        page(title, summary_table(names, _table_rows(stats, level)), sections), encoding="utf-8"
    )
    return ReportFiles(
        html=html_path, stats=stats_path, plots=written, table=text_table(names, _table_rows(stats, level))
    )


__all__ = ["ReportFiles", "heterogeneity_report"]
