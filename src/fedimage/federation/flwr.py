"""Flower's modules, imported once with a clear message when the ``flower`` extra is missing.

Flower reports usage and checks for updates over the internet unless told not to, read at
import time: fedimage runs offline, so both are turned off before the first import.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

#: Environment that keeps every Flower process off the internet (telemetry, update checks).
OFFLINE_ENVIRONMENT = {"FLWR_TELEMETRY_ENABLED": "0", "FLWR_DISABLE_UPDATE_CHECK": "1"}
for _name, _value in OFFLINE_ENVIRONMENT.items():
    os.environ.setdefault(_name, _value)


def require_flwr(module: str) -> Any:
    """Import a Flower module or raise ImportError naming fedimage's ``flower`` extra."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(
            "fedimage's Flower integration needs 'flwr', which is not installed: "
            "pip install 'fedimage[flower]'"
        ) from error


flwr_app = require_flwr("flwr.app")
flwr_clientapp = require_flwr("flwr.clientapp")
flwr_serverapp = require_flwr("flwr.serverapp")
