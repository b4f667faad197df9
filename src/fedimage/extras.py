"""Import optional dependencies with a message naming the extra that provides them."""

from __future__ import annotations

import importlib
from types import ModuleType

EXTRAS = {
    "torch": "train",
    "dp_accounting": "train",
    "matplotlib": "train",
    "pfl": "pfl",
    "flwr": "flower",
}


def require(module: str) -> ModuleType:
    """Import ``module`` or raise ImportError saying which fedimage extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        top = module.split(".")[0]
        extra = EXTRAS.get(top, "train")
        raise ImportError(
            f"fedimage training needs {top!r}, which is not installed: pip install 'fedimage[{extra}]'"
        ) from error
