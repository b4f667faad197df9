"""Label vocabularies and the fine -> coarse label taxonomy.

FLAIR's conventions: label indices follow alphabetical order, and every fine
label maps to exactly one coarse label.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from enum import StrEnum
from pathlib import Path

from fedimage.errors import OptionError, SourceError

LABEL_JOIN = "|"  # ml-flair joins an image's labels with this character


class LabelLevel(StrEnum):
    """Which of a store's two label vocabularies: coarse (FLAIR's 17) or fine (FLAIR's 1,628).

    A ``StrEnum``: ``LabelLevel.COARSE == "coarse"``, so every API that takes a level also
    takes the plain string.

        level = LabelLevel.parse("fine")
    """

    COARSE = "coarse"
    FINE = "fine"

    @classmethod
    def parse(cls, value: str, parameter: str = "labels") -> LabelLevel:
        """``value`` as a level, or an :class:`~fedimage.errors.OptionError` naming ``parameter``."""
        try:
            return cls(value)
        except ValueError:
            choices = ", ".join(level.value for level in cls)
            raise OptionError(f"`{parameter}` must be one of {choices}, got {value!r}") from None

    @property
    def targets_field(self) -> str:
        """The :class:`~fedimage.store.reader.UserData` field holding this level's multi-hot targets."""
        return "labels" if self is LabelLevel.COARSE else "fine_labels"


#: The level names, for command-line choices.
LABEL_LEVELS = tuple(level.value for level in LabelLevel)


class Taxonomy:
    """A mapping from each fine label to its one coarse label."""

    def __init__(self, fine_to_coarse: Mapping[str, str]):
        self.fine_to_coarse: dict[str, str] = dict(sorted(fine_to_coarse.items()))

    @property
    def coarse_labels(self) -> list[str]:
        return sorted(set(self.fine_to_coarse.values()))

    @property
    def fine_labels(self) -> list[str]:
        return list(self.fine_to_coarse)

    def coarse_of(self, fine_labels: Iterable[str]) -> tuple[str, ...]:
        """The coarse labels implied by ``fine_labels`` (sorted, unique).

        Raises KeyError with the first fine label the taxonomy does not know.
        """
        return tuple(sorted({self.fine_to_coarse[label] for label in fine_labels}))

    def __len__(self) -> int:
        return len(self.fine_to_coarse)

    def __repr__(self) -> str:
        return f"<Taxonomy: {len(self)} fine labels -> {len(self.coarse_labels)} coarse labels>"


def load_taxonomy(path: str | Path) -> Taxonomy:
    """Read a taxonomy file: a JSON object {fine: coarse}, or one ``fine coarse`` pair a line.

    Pairs may be separated by ``->`` (FLAIR's ``label_relationship.txt``), a tab,
    a comma or spaces (all but spaces allow spaces inside labels). Blank lines and
    lines starting with ``#`` are skipped.
    A fine label mapped to two different coarse labels is an error.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SourceError(f"taxonomy file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise SourceError(f"cannot read taxonomy file {path}: {error}") from None
    if text.lstrip().startswith("{"):
        return _taxonomy_from_json(text, path)
    mapping: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        fine, coarse = _split_pair(line, path, number)
        _add_pair(mapping, fine, coarse, f"{path} line {number}")
    if not mapping:
        raise SourceError(f"taxonomy file {path} holds no (fine, coarse) pairs")
    return Taxonomy(mapping)


def _split_pair(line: str, path: Path, number: int) -> tuple[str, str]:
    for separator in ("->", "\t", ","):
        if separator in line:
            parts = [part.strip() for part in line.split(separator)]
            break
    else:
        parts = line.split()
    if len(parts) != 2 or not all(parts):
        raise SourceError(
            f"{path} line {number}: expected 'fine -> coarse' (or tab/comma/space separated), got {line!r}"
        )
    return parts[0], parts[1]


def _taxonomy_from_json(text: str, path: Path) -> Taxonomy:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise SourceError(f"taxonomy file {path} is not valid JSON: {error}") from None
    if not isinstance(data, dict) or not all(
        isinstance(key, str) and isinstance(value, str) for key, value in data.items()
    ):
        raise SourceError(f"taxonomy file {path} must be a JSON object of strings {{fine: coarse}}")
    mapping: dict[str, str] = {}
    for fine, coarse in data.items():
        _add_pair(mapping, fine.strip(), coarse.strip(), str(path))
    return Taxonomy(mapping)


def _add_pair(mapping: dict[str, str], fine: str, coarse: str, where: str) -> None:
    if not fine or not coarse:
        raise SourceError(f"{where}: empty label in taxonomy pair")
    previous = mapping.get(fine)
    if previous is not None and previous != coarse:
        raise SourceError(
            f"{where}: fine label {fine!r} is mapped to both {previous!r} and {coarse!r}; "
            "each fine label needs exactly one coarse label"
        )
    mapping[fine] = coarse


def label_mapping(labels: Iterable[str]) -> dict[str, int]:
    """FLAIR's label index: each distinct label numbered in alphabetical order."""
    return {label: index for index, label in enumerate(sorted(set(labels)))}
