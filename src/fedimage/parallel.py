"""Ordered, bounded parallel map over worker processes."""

from __future__ import annotations

import multiprocessing
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def default_workers() -> int:
    """All cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def ordered_map(
    function: Callable[[T], R],
    items: Iterable[T],
    workers: int,
    in_flight_per_worker: int = 4,
) -> Iterator[R]:
    """``map(function, items)`` run in ``workers`` processes, results in input order.

    At most ``workers * in_flight_per_worker`` items are submitted ahead of the
    consumer, so memory stays bounded however many items there are. With one
    worker everything runs in this process. Workers are spawned, never forked:
    the caller may hold HDF5 files open, which must not cross a fork.
    """
    if workers <= 1:
        yield from map(function, items)
        return
    window = workers * in_flight_per_worker
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        pending: deque[Future[R]] = deque()
        try:
            for item in items:
                pending.append(pool.submit(function, item))
                if len(pending) >= window:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()
