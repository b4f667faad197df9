"""How ``serve`` and ``run_client`` run: options checked without Flower installed (the CLI builds its
parsers from their defaults on a core install).

    ServeOptions(address="0.0.0.0:9092", min_clients=5, round_timeout=300)
    ClientOptions(server="fl.example.org:9092", max_wait=600)
"""

from __future__ import annotations

from dataclasses import dataclass

from fedimage.errors import OptionError
from fedimage.federation.kits import parse_server


@dataclass(frozen=True)
class ServeOptions:
    """How ``serve`` runs the server.

    ``address``: where the SuperLink listens (``host:port``; ``0.0.0.0`` for every interface).
    ``min_clients``: a round proceeds with at least this many replies (default: half the cohort,
    rounded up). ``round_timeout``: seconds a round's exchange waits for clients.
    ``connect_timeout``: seconds to wait for ``min_clients`` train clients at the start.
    ``run_timeout``: seconds the whole run may take (default: from the rounds and timeouts).
    """

    address: str = "0.0.0.0:9092"
    min_clients: int | None = None
    round_timeout: float = 600.0
    connect_timeout: float = 600.0
    run_timeout: float | None = None
    overwrite: bool = False
    #: No TLS and no node authentication, on a loopback address only: for tests on one machine.
    insecure: bool = False

    def __post_init__(self) -> None:
        host, _ = parse_server(self.address, "address")
        if self.insecure and host.strip("[]") not in ("127.0.0.1", "::1", "localhost"):
            raise OptionError(
                f"`insecure` (no TLS, no node authentication) is for one machine: `address` must be a "
                f"loopback address, got {self.address}"
            )
        if self.min_clients is not None and self.min_clients < 1:
            raise OptionError(f"`min_clients` must be >= 1, got {self.min_clients}")
        for name in ("round_timeout", "connect_timeout"):
            if not getattr(self, name) > 0:
                raise OptionError(f"`{name}` must be > 0 seconds, got {getattr(self, name)}")


@dataclass(frozen=True)
class ClientOptions:
    """How ``run_client`` connects.

    ``server``: ``host:port`` overriding the kit's. ``max_wait``: seconds the SuperNode keeps
    trying to reach the server (at start and after a connection loss) before giving up.
    ``max_retries``: reconnection attempts within that time.
    """

    server: str | None = None
    max_wait: float = 300.0
    max_retries: int = 100
    #: No TLS and no node key, to a loopback server only: for tests on one machine.
    insecure: bool = False

    def __post_init__(self) -> None:
        if self.server is not None:
            parse_server(self.server, "server")
        if self.insecure and (
            self.server is None or not self.server.startswith(("127.0.0.1:", "[::1]:", "localhost:"))
        ):
            raise OptionError("`insecure` (no TLS, no node key) needs a loopback `server` address")
        if not self.max_wait > 0:
            raise OptionError(f"`max_wait` must be > 0 seconds, got {self.max_wait}")
        if self.max_retries < 1:
            raise OptionError(f"`max_retries` must be >= 1, got {self.max_retries}")
