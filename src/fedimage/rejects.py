"""The rejects report: one JSON line per input that did not reach the store."""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from fedimage.records import Reject


def write_rejects(path: Path, rejects: Iterable[Reject]) -> None:
    """Write the report atomically (an empty file when nothing was rejected)."""
    partial = path.with_name(path.name + ".partial")
    with open(partial, "w", encoding="utf-8") as handle:
        for reject in rejects:
            handle.write(json.dumps(reject.to_json(), ensure_ascii=False) + "\n")
    os.replace(partial, path)


def read_rejects(path: Path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def reason_counts(rejects: Iterable[Reject]) -> Counter[str]:
    """Rejections grouped by the general kind of reason (the text before any detail)."""
    return Counter(_reason_kind(reject.reason) for reject in rejects)


def _reason_kind(reason: str) -> str:
    """The reason with its specifics (quoted values, numbers, details) blanked out."""
    reason = reason.split(": ", 1)[0].split(" (", 1)[0]
    reason = re.sub(r"'[^']*'|\"[^\"]*\"", "…", reason)
    return re.sub(r"\d[\d,]*", "N", reason)
