"""A self-contained HTML page: inline CSS, PNGs as base64 data URIs, no external reference."""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from typing import Any

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
thead th { background: #eef2f7; }
.row { display: flex; flex-wrap: wrap; gap: 1em; }
figure { margin: 0; flex: 1 1 30%; max-width: 48%; min-width: 20em; }
figure.wide { max-width: 100%; }
figcaption { font-size: 0.8em; color: #555; }
img { max-width: 100%; border: 1px solid #ddd; }
p.note { font-size: 0.85em; color: #444; max-width: 60em; }
"""

NOTE = (
    "Divergences compare each client's label distribution (label occurrences, normalized) with the "
    "federation's: Hellinger, Jensen-Shannon distance (base 2) and earth mover's distance with the "
    "0-1 ground metric (= total variation); all in [0, 1], 0 = identical. Effective labels = "
    "exp(entropy). Clients are the store's users."
)


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _figure(png: bytes, caption: str, wide: bool = False) -> str:
    text = html.escape(caption)
    kind = ' class="wide"' if wide else ""
    return f'<figure{kind}><img src="{data_uri(png)}" alt="{text}"><figcaption>{text}</figcaption></figure>'


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 1000 else f"{value:,.0f}"
    return f"{value:,}" if isinstance(value, int) else html.escape(str(value))


def summary_table(names: Sequence[str], rows: list[tuple[str, list[Any]]]) -> str:
    head = "".join(f"<th>{html.escape(name)}</th>" for name in names)
    body = "".join(
        f"<tr><td>{html.escape(label)}</td>{''.join(f'<td>{_cell(v)}</td>' for v in values)}</tr>"
        for label, values in rows
    )
    return f"<table><thead><tr><th>measure</th>{head}</tr></thead><tbody>{body}</tbody></table>"


def page(title: str, table: str, sections: list[tuple[str, list[tuple[bytes, str]]]]) -> str:
    """The whole document; ``sections`` are (heading, [(png, caption), ...]) shown side by side."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f'<p class="note">{html.escape(NOTE)}</p>',
        table,
    ]
    for heading, figures in sections:
        parts.append(f"<h2>{html.escape(heading)}</h2>")
        parts.append(
            '<div class="row">'
            + "".join(_figure(png, caption, len(figures) == 1) for png, caption in figures)
            + "</div>"
        )
    parts.append("</body></html>")
    return "\n".join(parts)
