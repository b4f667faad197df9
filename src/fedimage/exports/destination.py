"""Writing an export under a temporary name and publishing it with a rename."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from types import TracebackType

from fedimage.errors import OptionError, StoreError


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


class StagedDestination:
    """The destination of an export (a file or a folder), written as ``<name>.partial``.

    Checked before any work: an existing destination needs ``overwrite``, its folder
    must exist, and it must neither be nor contain the store being read. On success
    :meth:`publish` renames the partial output into place (an existing destination is
    moved aside first and deleted only after); on failure the partial output is removed.
    """

    def __init__(self, path: Path, *, is_folder: bool, overwrite: bool, store: Path):
        self.path = Path(path)
        self.is_folder = is_folder
        self.partial = self.path.with_name(self.path.name + ".partial")
        self._published = False
        store = store.resolve()
        target = self.path.resolve()
        if target == store or target in store.parents:
            raise OptionError(f"destination {self.path} is (or holds) the store {store} being exported")
        if not self.path.parent.is_dir():
            raise StoreError(f"destination folder {self.path.parent} does not exist")
        if self.path.exists() or self.path.is_symlink():
            if not overwrite:
                raise StoreError(f"destination {self.path} already exists; pass `overwrite` to replace it")
            if self.path.is_dir() != is_folder:
                kind = "a folder" if self.path.is_dir() else "a file"
                raise StoreError(f"destination {self.path} is {kind}; this export writes the other kind")

    def __enter__(self) -> Path:
        _remove(self.partial)  # left over from an interrupted export
        if self.is_folder:
            self.partial.mkdir()
        return self.partial

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if not self._published:
            _remove(self.partial)

    def publish(self) -> None:
        """Move the finished output into place."""
        if self.is_folder and self.path.exists():
            old = self.path.with_name(self.path.name + ".replaced")
            _remove(old)
            os.replace(self.path, old)
            os.replace(self.partial, self.path)
            _remove(old)
        else:
            os.replace(self.partial, self.path)
        self._published = True


def size_on_disk(path: Path) -> int:
    """Bytes of a file, or of every file under a folder."""
    if path.is_file():
        return path.stat().st_size
    return sum((Path(root) / name).stat().st_size for root, _, files in os.walk(path) for name in files)
