"""A folder tree whose directory names give users and/or labels."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path

from fedimage.errors import OptionError, SourceError
from fedimage.labels import Taxonomy
from fedimage.records import ImageRecord, Reject, literal
from fedimage.sources.base import Source

FOLDER_LAYOUTS = ("class", "user", "user/class")
LINK_LOOP = "folder link leads back to a folder that holds it (a loop); not followed"
READ_ALREADY = "folder is read already through another path (a second link to it); not read twice"
NOT_UTF8 = "file or folder name is not UTF-8 text"


class FolderSource(Source):
    """Images in ``root/<label>/``, ``root/<user>/`` or ``root/<user>/<label>/``.

    Every non-hidden file is an input (a non-image becomes a rejection, never
    a silent skip). Deeper sub-folders belong to the folder that names them.
    The image id is the file's path relative to ``root``. A label folder names
    a coarse label, or a fine label when a taxonomy knows it as one.

    Links to folders are followed, each folder read once: a link back to a folder
    that holds it (a loop), or a second way to a folder already read (the real folder
    wins over a link, then the first link in path order), becomes one rejection for
    the link itself. A folder that cannot be read is one rejection too.
    """

    kind = "folder"

    def __init__(self, root: Path, layout: str | None = None, taxonomy: Taxonomy | None = None):
        super().__init__(root)
        if not root.is_dir():
            raise SourceError(f"source folder not found: {root}")
        #: Folders (and files) rejected while listing: their path parts and the reason.
        self._problems: dict[tuple[str, ...], str] = {}
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
        """Every non-hidden file, as path parts under ``root``, following links to folders once."""
        files: list[tuple[str, ...]] = []
        hidden = 0
        visited = {_identity(os.stat(self.root))}
        links: list[tuple[tuple[str, ...], str]] = []

        def walk(top: tuple[str, ...], top_path: str) -> None:
            nonlocal hidden
            stack = [(top, top_path)]
            while stack:
                parts, directory = stack.pop()
                try:
                    with os.scandir(directory) as listing:
                        entries = sorted(listing, key=lambda entry: entry.name)
                except OSError as error:
                    self._problems[parts] = "folder cannot be read: " + literal(error.strerror or str(error))
                    continue
                for entry in entries:
                    if entry.name.startswith("."):
                        hidden += 1
                        continue
                    child = (*parts, entry.name)
                    if not entry.is_dir():
                        files.append(child)
                    elif entry.is_symlink():
                        links.append((child, entry.path))  # followed once every real folder is known
                    else:
                        identity = _identity(entry.stat())
                        if identity in visited:  # a bind mount or similar: the same folder twice
                            self._problems[child] = READ_ALREADY
                        else:
                            visited.add(identity)
                            stack.append((child, entry.path))

        walk((), str(self.root))
        while links:
            links.sort(reverse=True)
            parts, path = links.pop()
            try:
                target = os.path.realpath(path)
                identity = _identity(os.stat(path))
            except OSError as error:
                self._problems[parts] = "folder cannot be read: " + literal(error.strerror or str(error))
                continue
            holder = os.path.realpath(os.path.dirname(path))
            if os.path.commonpath([target, holder]) == target:
                self._problems[parts] = LINK_LOOP
            elif identity in visited:
                self._problems[parts] = READ_ALREADY
            else:
                visited.add(identity)
                walk(parts, path)
        if hidden:
            self.ignored["hidden file or folder"] = hidden
        for parts in files:
            if not _is_utf8("/".join(parts)):
                self._problems[parts] = NOT_UTF8
        files = [parts for parts in files if parts not in self._problems]
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

    def records(self, columns: Sequence[str] = ()) -> Iterator[ImageRecord | Reject]:
        self.check_columns(columns)
        return self._records()

    def _records(self) -> Iterator[ImageRecord | Reject]:
        entries = sorted([*self._files, *self._problems])
        for parts in entries:
            relative = "/".join(parts)
            path = str(self.root.joinpath(*parts))
            problem = self._problems.get(parts)
            if problem is None and len(parts) < 2:
                problem = (
                    f"file lies directly in the source folder; layout {literal(repr(self.layout))} "
                    "expects it inside a sub-folder"
                )
            if problem is not None:
                in_user_folder = len(parts) > 1 or parts in self._problems  # a user's folder itself
                user = parts[0] if self.has_users and in_user_folder and problem != NOT_UTF8 else None
                yield Reject(
                    origin=relative,
                    path=path,
                    reason=problem,
                    image_id=relative,
                    user_id=user,
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


def _identity(stat: os.stat_result) -> tuple[int, int]:
    return stat.st_dev, stat.st_ino


def _is_utf8(text: str) -> bool:
    """False for names whose bytes are not UTF-8 (Python holds them as surrogate escapes)."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
