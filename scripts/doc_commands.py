"""The shell commands of the documentation's ``bash`` blocks, for the scripts and tests that check them.

for command in commands_in(Path("README.md")):
    print(command.line, command.text)
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

_FENCE = re.compile(r"^```(\w*)\s*$")


@dataclass(frozen=True)
class DocCommand:
    """One command of a ``bash`` block: its first line's number, text (continuations joined), comment."""

    path: Path
    line: int
    text: str
    comment: str

    def words(self) -> list[str]:
        return shlex.split(self.text)


def commands_in(path: Path, after_marker: str | None = None) -> Iterator[DocCommand]:
    """Every command of the ``bash`` blocks of ``path`` (only the first block after ``after_marker``)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    start = 0
    if after_marker is not None:
        start = next((i for i, line in enumerate(lines) if after_marker in line), None)
        if start is None:
            raise ValueError(f"{path} has no {after_marker!r}")
    in_bash, pending, first = False, "", 0
    for number, line in enumerate(lines[start:], start=start + 1):
        fence = _FENCE.match(line.strip())
        if fence:
            if in_bash and after_marker is not None:
                return
            in_bash = not in_bash and fence.group(1) == "bash" if not in_bash else False
            continue
        if not in_bash:
            continue
        code, comment = _split_comment(line)
        if not pending:
            first = number
        if code.rstrip().endswith("\\"):
            pending += code.rstrip()[:-1] + " "
            continue
        text = (pending + code).strip()
        pending = ""
        if text:
            yield DocCommand(path, first, " ".join(text.split()), comment)


def _split_comment(line: str) -> tuple[str, str]:
    """A line's code and its trailing ``# comment`` (a ``#`` inside quotes is code)."""
    quote = None
    for index, char in enumerate(line):
        if char in "'\"" and quote in (None, char):
            quote = None if quote == char else char
        elif char == "#" and quote is None and (index == 0 or line[index - 1].isspace()):
            return line[:index], line[index + 1 :].strip()
    return line, ""
