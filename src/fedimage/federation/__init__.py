"""Real federations on Flower's Deployment Engine: kits, serve, client.

A federation operator turns a store into kits (:func:`make_kits`): a certificate authority
that stays with the operator, a server kit (TLS certificate, every client's node public key,
``settings.json``) and one kit per client (its data as an encrypted one-user store, its key,
the CA certificate, a node-authentication key pair, ``node.toml``). The server and each client
read their kit back with :func:`read_server_settings` and :func:`read_node_config`.

- :mod:`fedimage.federation.kits`: the kits, their layout, and reading them back.
- :mod:`fedimage.federation.pki`: the CA, the server certificate and the node keys
  (``cryptography``, the ``privacy`` extra; imported only when kits are made).

Example::

    from fedimage.federation import make_kits, read_node_config

    report = make_kits("flair.h5", "kits/", "fl.example.org:9092")
    config = read_node_config("kits/clients/train/59769174@N00")
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

#: The names of ``__all__`` are imported on first use: a ClientApp process (one per Flower message)
#: imports this package, and needs none of the kit-making code.

if TYPE_CHECKING:
    from fedimage.federation.kits import (
        KitClient,
        KitsReport,
        NodeConfig,
        ServerSettings,
        make_kits,
        read_node_config,
        read_server_settings,
    )


def __getattr__(name: str) -> Any:
    if name in __all__:
        from fedimage.federation import kits

        return getattr(kits, name)
    raise AttributeError(f"module 'fedimage.federation' has no attribute {name!r}")


__all__ = [
    "KitClient",
    "KitsReport",
    "NodeConfig",
    "ServerSettings",
    "make_kits",
    "read_node_config",
    "read_server_settings",
]
