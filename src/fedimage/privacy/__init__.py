"""Privacy features: keyed pseudonyms (core) and secure aggregation (``secagg``, needs the ``privacy`` extra).

``fedimage.privacy.secagg`` is imported on demand so that the core package never needs ``cryptography``.
"""

from __future__ import annotations

from fedimage.privacy.pseudonyms import (
    KEY_BYTES,
    Pseudonymizer,
    generate_key_file,
    load_key,
    pseudonymize,
    pseudonymize_all,
)

__all__ = [
    "KEY_BYTES",
    "Pseudonymizer",
    "generate_key_file",
    "load_key",
    "pseudonymize",
    "pseudonymize_all",
]
