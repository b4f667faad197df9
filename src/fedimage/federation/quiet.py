"""Flower's log lines in fedimage's runs: its per-round INFO lines off, its deprecation notices dropped."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator


class _DropDeprecation(logging.Filter):
    """Drops Flower's notice that ``run_simulation`` is deprecated in favour of ``flwr run``.

    ``flwr run`` needs a Flower App project folder; ``run_simulation`` is the Python entry to
    the same Simulation Runtime, and the notice would only confuse ``fedimage train`` users.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return "run_simulation` function is deprecated" not in record.getMessage()


@contextlib.contextmanager
def quiet_flower(level: int = logging.WARNING) -> Iterator[None]:
    """Raise Flower's log level for a block (fedimage logs its own progress)."""
    logger = logging.getLogger("flwr")
    previous = logger.level
    logger.setLevel(level)
    drop = _DropDeprecation()
    logger.addFilter(drop)
    try:
        yield
    finally:
        logger.removeFilter(drop)
        logger.setLevel(previous)
