"""Where a conversion's shards are written: a registry of executors (``local``, ``ray``).

Each executor follows the :class:`~fedimage.conversion.executors.base.Executor` protocol;
the pipeline looks one up by name and never branches on which it is::

    from fedimage.conversion.executors import executor
    runner = executor("local")
"""

from __future__ import annotations

from fedimage.conversion.executors.base import Executor, ShardJob
from fedimage.conversion.executors.local import LocalExecutor
from fedimage.conversion.executors.ray import RayExecutor
from fedimage.errors import OptionError

#: Executors by name (the ray executor imports Ray only when it runs).
REGISTRY: dict[str, type[Executor]] = {"local": LocalExecutor, "ray": RayExecutor}
EXECUTORS = tuple(REGISTRY)


def executor(name: str) -> Executor:
    """The executor called ``name`` (one of :data:`EXECUTORS`)."""
    if name not in REGISTRY:
        raise OptionError(f"`executor` must be one of {', '.join(EXECUTORS)}, got {name!r}")
    return REGISTRY[name]()


__all__ = ["EXECUTORS", "REGISTRY", "Executor", "ShardJob", "executor"]
