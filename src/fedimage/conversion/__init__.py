"""The conversion pipeline: a source's records are planned (users, splits, partitions), cut into
shards that an executor standardizes and writes in parallel, and assembled into one store.

Modules, in the order data flows through them: :mod:`~fedimage.conversion.plan` (and
:mod:`~fedimage.conversion.splits`), :mod:`~fedimage.conversion.workdir` (the resumable work
folder), :mod:`~fedimage.conversion.shard` (one shard's work), :mod:`~fedimage.conversion.executors`
(``local`` processes or ``ray`` tasks), :mod:`~fedimage.conversion.pipeline` (:func:`convert`).
"""

from __future__ import annotations

from fedimage.conversion.options import ConvertOptions, ConvertReport
from fedimage.conversion.pipeline import convert
from fedimage.conversion.plan import PlanOptions
from fedimage.conversion.splits import SplitRatios

__all__ = ["ConvertOptions", "ConvertReport", "PlanOptions", "SplitRatios", "convert"]
