"""What every export shares: options, the report, and the run that streams users to an exporter."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from fedimage.errors import OptionError
from fedimage.exports.reading import ExportUser
from fedimage.store.reader import FederatedStore

DEFAULT_QUALITY = 95


@dataclass(frozen=True, slots=True)
class ExportOptions:
    """How to export. ``quality`` only matters when a raw store's pixels are encoded as JPEG."""

    overwrite: bool = False
    quiet: bool = False
    quality: int = DEFAULT_QUALITY

    def __post_init__(self) -> None:
        if not 1 <= self.quality <= 100:
            raise OptionError(f"`quality` must be between 1 and 100, got {self.quality}")


@dataclass
class ExportReport:
    """What an export wrote: users and images per split, bytes on disk, time taken."""

    format: str
    store: Path
    destination: Path
    splits: dict[str, dict[str, int]]
    bytes: int
    seconds: float

    @property
    def users(self) -> int:
        return sum(split["users"] for split in self.splits.values())

    @property
    def images(self) -> int:
        return sum(split["images"] for split in self.splits.values())

    def summary(self) -> str:
        """Two lines for the command line."""
        splits = ", ".join(
            f"{name} {info['users']} users / {info['images']} images" for name, info in self.splits.items()
        )
        rate = self.images / max(self.seconds, 1e-9)
        return (
            f"exported {self.store} to {self.destination} ({self.format}): {splits or 'nothing'}\n"
            f"{self.users} users, {self.images} images, {self.bytes / 1e6:.1f} MB in {self.seconds:.1f} s "
            f"({rate:.0f} images/s, {self.bytes / 1e6 / max(self.seconds, 1e-9):.1f} MB/s)"
        )


@dataclass
class ExportRun:
    """An export in progress: the store, the options, and its users one at a time.

    :meth:`users` loads each user only when the exporter asks for the next one, counts
    what was handed out and advances the progress bar.
    """

    store: FederatedStore
    options: ExportOptions
    progress: tqdm
    splits: dict[str, dict[str, int]] = field(default_factory=dict)

    def users(self, split: str) -> Iterator[ExportUser]:
        counts = self.splits.setdefault(split, {"users": 0, "images": 0})
        for user_id in self.store.users(split):
            user = ExportUser.read(self.store, split, user_id)
            yield user
            counts["users"] += 1
            counts["images"] += len(user)
            self.progress.update(len(user))
