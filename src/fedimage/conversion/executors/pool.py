"""Worker processes with an ordered, bounded map."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import gc
import multiprocessing
import os
import signal
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from typing import TypeVar

PR_SET_PDEATHSIG = 1  # from <sys/prctl.h>

T = TypeVar("T")
R = TypeVar("R")


def default_workers() -> int:
    """All cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _ready(_: int) -> int:
    return os.getpid()


def _die_with_parent() -> None:
    """Worker initializer: on Linux, ask the kernel to kill this worker when its parent dies.

    Without it, a main process killed with SIGKILL would leave its workers waiting forever.
    """
    with contextlib.suppress(OSError, AttributeError):  # not Linux: nothing to do
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


class WorkerPool:
    """``workers`` processes (none when ``workers`` is 1: work then runs in this process).

    Enter it before opening any HDF5 file: the workers are started on entry,
    forked where the platform allows (fast, and scripts need no ``__main__``
    guard), so no open HDF5 handle ever crosses a fork.
    """

    def __init__(self, workers: int, in_flight_per_worker: int = 4):
        self.workers = workers
        self.window = workers * in_flight_per_worker
        self._executor: ProcessPoolExecutor | None = None
        self._method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"

    def __enter__(self) -> WorkerPool:
        if self.workers > 1:
            if self._method == "fork":
                gc.freeze()  # workers' garbage collections then leave inherited pages unshared
            context = multiprocessing.get_context(self._method)
            self._executor = ProcessPoolExecutor(
                max_workers=self.workers, mp_context=context, initializer=_die_with_parent
            )
            list(self._executor.map(_ready, range(self.workers)))  # start every worker now
        return self

    @property
    def shares_memory(self) -> bool:
        """True when work runs in this process or in forked copies of it (they inherit its objects)."""
        return self._executor is None or self._method == "fork"

    def __exit__(self, *exc_info: object) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None
            gc.unfreeze()

    def ordered_map(self, function: Callable[[T], R], items: Iterable[T]) -> Iterator[R]:
        """``map(function, items)`` in the workers, results in input order.

        At most ``workers * in_flight_per_worker`` items are submitted ahead of
        the consumer, so memory stays bounded however many items there are.
        """
        if self._executor is None:
            yield from map(function, items)
            return
        pending: deque[Future[R]] = deque()
        try:
            for item in items:
                pending.append(self._executor.submit(function, item))
                if len(pending) >= self.window:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()
