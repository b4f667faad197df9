"""A folder tree whose directory names give users and/or labels."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from fedimage.errors import OptionError, SourceError
from fedimage.labels import Taxonomy
from fedimage.records import ImageRecord, Reject
from fedimage.sources.base import Source

FOLDER_LAYOUTS = ("class", "user", "user/class")


class FolderSource(Source):
    """Images in ``root/<label>/``, ``root/<user>/`` or ``root/<user>/<label>/``.

    Every non-hidden file is an input (a non-image becomes a rejection, never
    a silent skip). Deeper sub-folders belong to the folder that names them.
    The image id is the file's path relative to ``root``. A label folder names
    a coarse label, or a fine label when a taxonomy knows it as one.
    """

    kind = "folder"

    def __init__(self, root: Path, layout: str | None = None, taxonomy: Taxonomy | None = None):
        super().__init__(root)
        if not root.is_dir():
            raise SourceError(f"source folder not found: {root}")
        self._files = self._list_files()
        if not self._files:
            raise SourceError(f"source folder {root} contains no files")
        self.layout = layout or self._detect_layout()
        if self.layout not in FOLDER_LAYOUTS:
            raise OptionError(f"`layout` must be one of {', '.join(FOLDER_LAYOUTS)}, got {self.layout!r}")
        self._fine_labels = set(taxonomy.fine_labels) if taxonomy else set()

    @property
    def has_users(self) -> bool:
        return self.layout != "class"

    def describe(self) -> str:
        return f"folder {self.root} (layout {self.layout}, {len(self._files)} files)"

    def _list_files(self) -> list[tuple[str, ...]]:
        files: list[tuple[str, ...]] = []
        hidden = 0
        for directory, subdirs, names in os.walk(self.root):
            kept = sorted(name for name in subdirs if not name.startswith("."))
            hidden += len(subdirs) - len(kept)
            subdirs[:] = kept
            relative = Path(directory).relative_to(self.root).parts
            for name in sorted(names):
                if name.startswith("."):
                    hidden += 1
                    continue
                files.append((*relative, name))
        if hidden:
            self.ignored["hidden file or folder"] = hidden
        files.sort()
        return files

    def _detect_layout(self) -> str:
        depths = {len(parts) for parts in self._files}
        if min(depths) >= 3:
            return "user/class"
        raise OptionError(
            f"cannot tell the layout of {self.root}: pass `layout` class "
            "(root/<label>/<image>), user (root/<user>/<image>) or user/class "
            "(root/<user>/<label>/<image>)"
        )

    def records(self) -> Iterator[ImageRecord | Reject]:
        for parts in self._files:
            relative = "/".join(parts)
            path = str(self.root.joinpath(*parts))
            if len(parts) < 2:
                yield Reject(
                    origin=relative,
                    path=path,
                    reason=f"file lies directly in the source folder; layout {self.layout!r} "
                    "expects it inside a sub-folder",
                    stage="source",
                )
                continue
            user, label = "", ""
            if self.layout == "class":
                label = parts[0]
            elif self.layout == "user":
                user = parts[0]
            else:
                user = parts[0]
                label = parts[1] if len(parts) >= 3 else ""
            labels: tuple[str, ...] = ()
            fine: tuple[str, ...] = ()
            if label in self._fine_labels:
                fine = (label,)
            elif label:
                labels = (label,)
            yield ImageRecord(
                path=path,
                image_id=relative,
                user_id=user,
                labels=labels,
                fine_labels=fine,
                origin=relative,
            )
