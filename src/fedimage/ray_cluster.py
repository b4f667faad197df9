"""Starting or joining a Ray cluster: local instances stay on loopback, a bad address is one line.

A Ray instance that fedimage starts (the ``ray`` executor without ``ray_address``, Flower's
simulation) is for this machine only: :func:`loopback` makes Ray bind and advertise 127.0.0.1
(Ray otherwise uses the machine's network address even when told ``127.0.0.1``), with the
dashboard and usage reporting off. :func:`join` checks a cluster address before Ray tries it,
so an unreachable head is a :class:`~fedimage.errors.FedimageError` naming the address, not a
minute of retries and a traceback.

    with loopback():
        ray.init(**local_init_args(num_cpus=2))
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import socket
from collections.abc import Iterator
from typing import Any

from fedimage.errors import FedimageError, OptionError
from fedimage.extras import require

LOOPBACK = "127.0.0.1"
#: How long a cluster address may take to accept a TCP connection before it counts as unreachable.
CONNECT_TIMEOUT_S = 5.0


class ClusterError(FedimageError):
    """A Ray cluster cannot be reached or cannot run the work asked of it."""


def local_init_args(num_cpus: int | None) -> dict[str, Any]:
    """``ray.init`` arguments for a local instance on loopback (use inside :func:`loopback`)."""
    return {
        "address": "local",  # always a new instance, never one found running on this machine
        "_node_ip_address": LOOPBACK,
        "num_cpus": num_cpus,
        "include_dashboard": False,
        "log_to_driver": False,
        "configure_logging": False,
        "logging_level": logging.ERROR,
    }


@contextlib.contextmanager
def loopback() -> Iterator[None]:
    """Within this block, Ray resolves this node's address to 127.0.0.1 (its instances bind there).

    Ray turns ``127.0.0.1`` into the machine's routable address unless its "no cluster" switch
    (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER``, read into ``ray_constants.ENABLE_RAY_CLUSTER``) is off;
    this sets it off for the block and restores it after.
    """
    require("ray", "a local Ray instance")
    from ray._private import ray_constants  # Ray's own switch; there is no public one

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    previous = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = previous


def split_address(address: str) -> tuple[str, int]:
    """``host:port`` (also ``ray://host:port``) as (host, port), or an OptionError naming ``ray_address``."""
    text = address.removeprefix("ray://")
    host, separator, port = text.rpartition(":")
    if not separator or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise OptionError(f"`ray_address` must be HOST:PORT (the head's GCS port), got {address!r}")
    return host.strip("[]"), int(port)


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_reachable(address: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """Fail with one line unless something accepts TCP connections at ``address``."""
    host, port = split_address(address)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as error:
        reason = error.strerror or type(error).__name__
        if isinstance(error, TimeoutError | socket.timeout):
            reason = f"no answer within {timeout:g} s"
        raise ClusterError(
            f"cannot reach the Ray cluster at {address} ({reason}): check that its head runs "
            f"(`ray start --head --port {port}`) and that this machine may connect to that port"
        ) from None


@contextlib.contextmanager
def join(address: str | None, num_cpus: int | None) -> Iterator[Any]:
    """Ray connected to the cluster at ``address``, or to a new local instance on loopback.

    Yields the ``ray`` module; shuts Ray down after if this call started or joined it. A cluster
    with fewer CPUs than ``num_cpus`` is refused.
    """
    ray = require("ray", "the ray executor")
    if ray.is_initialized():  # the caller's own Ray session: use it as it is
        yield ray
        return
    local = address is None or is_loopback(split_address(address)[0])
    with loopback() if local else contextlib.nullcontext():
        if address is None:
            ray.init(**local_init_args(num_cpus))
        else:
            check_reachable(address)
            try:
                ray.init(address=address, log_to_driver=False, configure_logging=False)
            except (ConnectionError, RuntimeError, TimeoutError, ValueError) as error:
                first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
                raise ClusterError(f"cannot join the Ray cluster at {address}: {first}") from None
        try:
            if address is not None and num_cpus is not None:
                available = int(ray.cluster_resources().get("CPU", 0))
                if available < num_cpus:
                    raise ClusterError(
                        f"the Ray cluster at {address} has {available} CPUs, fewer than the {num_cpus} "
                        "`workers` asked for: add nodes or ask for fewer"
                    )
            yield ray
        finally:
            ray.shutdown()
