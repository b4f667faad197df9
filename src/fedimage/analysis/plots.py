"""PNG figures of a federation's heterogeneity (matplotlib's object API with the Agg canvas:
no pyplot, no global state, no display needed)."""

from __future__ import annotations

import io

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from fedimage.analysis.heterogeneity import Heterogeneity

DPI = 110
DIVERGENCES = (
    ("hellinger", "Hellinger"),
    ("jensen_shannon", "Jensen-Shannon distance"),
    ("emd", "EMD (0-1)"),
)


def _png(figure: Figure) -> bytes:
    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def _message(text: str) -> bytes:
    figure = Figure(figsize=(5, 1.2))
    figure.text(0.5, 0.5, text, ha="center", va="center", fontsize=10)
    return _png(figure)


def sizes_histogram(stats: Heterogeneity, title: str) -> bytes:
    """Images per client: log-spaced bins on a log x axis."""
    figure = Figure(figsize=(5, 3.4), layout="constrained")
    axes = figure.add_subplot()
    sizes = stats.sizes[stats.sizes > 0]
    if sizes.size:
        top = max(float(sizes.max()), 2.0)
        bins = np.unique(np.geomspace(1, top * 1.0001, num=min(40, max(int(top), 2)) + 1))
        axes.hist(sizes, bins=bins, color="#3b6ea8", edgecolor="white", linewidth=0.4)
        axes.set_xscale("log")
    axes.set_xlabel("images per client (log scale)")
    axes.set_ylabel("clients")
    axes.set_title(f"{title}: {stats.num_clients} clients, {int(stats.sizes.sum())} images", fontsize=9)
    return _png(figure)


def labels_per_client(stats: Heterogeneity, title: str, level: str = "coarse") -> bytes:
    """Distinct and effective number of labels per client."""
    measures = stats.levels[level].measures
    figure = Figure(figsize=(5, 3.4), layout="constrained")
    axes = figure.add_subplot()
    present = measures["labels_present"]
    effective = measures["effective_labels"][~np.isnan(measures["effective_labels"])]
    top = max(float(present.max(initial=1)), 1.0)
    bins = np.arange(0, top + 2) - 0.5 if top <= 60 else 40
    axes.hist(present, bins=bins, alpha=0.7, label="distinct labels", color="#3b6ea8")
    axes.hist(effective, bins=bins, alpha=0.6, label="effective labels exp(H)", color="#e0803a")
    axes.set_xlabel(f"{level} labels per client")
    axes.set_ylabel("clients")
    axes.legend(fontsize=8)
    axes.set_title(title, fontsize=9)
    return _png(figure)


def label_heatmap(stats: Heterogeneity, title: str, level: str = "coarse", clients: int = 30) -> bytes:
    """Share of each of the largest clients' images carrying each label (at most 60 labels:
    the most frequent)."""
    histograms = stats.levels[level].histograms
    if histograms.num_labels == 0:
        return _message(f"{title}: the store has no {level} labels")
    largest = stats.largest(clients)
    frequencies = stats.frequencies(level, largest)
    labels = np.argsort(-histograms.global_counts(), kind="stable")[:60]
    labels = np.sort(labels)
    frequencies = frequencies[:, labels]
    figure = Figure(
        figsize=(max(5.0, 1.5 + 0.16 * len(labels)), 1.6 + 0.16 * len(largest)), layout="constrained"
    )
    axes = figure.add_subplot()
    image = axes.imshow(frequencies, aspect="auto", cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
    axes.set_xticks(range(len(labels)), [histograms.label_names[i] for i in labels], rotation=90, fontsize=6)
    axes.set_yticks(
        range(len(largest)), [f"{stats.client_ids[c][:18]} ({stats.sizes[c]})" for c in largest], fontsize=6
    )
    figure.colorbar(image, ax=axes, label="share of client's images", shrink=0.8)
    axes.set_title(f"{title}: {len(largest)} largest clients", fontsize=9)
    return _png(figure)


def divergence_distribution(stats: Heterogeneity, title: str, level: str = "coarse") -> bytes:
    """Histograms of each client's divergence from the federation's label distribution."""
    measures = stats.levels[level].measures
    figure = Figure(figsize=(5, 3.4), layout="constrained")
    axes = figure.add_subplot()
    bins = np.linspace(0, 1, 41)
    for name, label in DIVERGENCES:
        values = measures[name][~np.isnan(measures[name])]
        axes.hist(values, bins=bins, histtype="step", linewidth=1.4, label=label)
    axes.set_xlim(0, 1)
    axes.set_xlabel(f"divergence from the global {level} label distribution")
    axes.set_ylabel("clients")
    axes.legend(fontsize=8)
    axes.set_title(title, fontsize=9)
    return _png(figure)


def comparison(all_stats: dict[str, Heterogeneity], level: str = "coarse") -> bytes:
    """Empirical CDFs of client sizes and Jensen-Shannon distances, one line per store."""
    figure = Figure(figsize=(10, 3.4), layout="constrained")
    sizes_axes, js_axes = figure.subplots(1, 2)
    for name, stats in all_stats.items():
        sizes = np.sort(stats.sizes)
        sizes_axes.step(sizes, np.arange(1, len(sizes) + 1) / max(len(sizes), 1), where="post", label=name)
        js = np.sort(stats.levels[level].measures["jensen_shannon"])
        js = js[~np.isnan(js)]
        js_axes.step(js, np.arange(1, len(js) + 1) / max(len(js), 1), where="post", label=name)
    sizes_axes.set_xscale("log")
    sizes_axes.set_xlabel("images per client (log)")
    js_axes.set_xlabel(f"Jensen-Shannon distance ({level} labels)")
    js_axes.set_xlim(0, 1)
    for axes in (sizes_axes, js_axes):
        axes.set_ylabel("fraction of clients")
        axes.legend(fontsize=8)
    return _png(figure)
