"""``run_client``: one site of a real federation, a Flower SuperNode started from its client kit.

The SuperNode connects to the server over TLS, verified against the kit's CA certificate, and
authenticates with the kit's node key. Its node config names the site's bundle and bundle key,
so fedimage's ClientApp reads only this site's data, which never leaves the machine: the site
sends model updates (masked, with secure aggregation) and evaluation statistics.

The SuperNode runs in its own process group with bounded reconnection. ``run_client`` returns
when the server says the run is over (the ClientApp's ``finished`` handler leaves a marker file),
or fails with one line when the SuperNode exits: a server certificate from another authority, a
key the server did not register, a server that cannot be reached.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from fedimage.errors import FedimageError
from fedimage.federation import protocol
from fedimage.federation.kits import NodeConfig, read_node_config, toml_string
from fedimage.federation.options import ClientOptions
from fedimage.federation.processes import (
    ProcessGroup,
    flower_environment,
    flower_executable,
    free_port,
    terminate_on_sigterm,
)

#: A SuperNode refused as unregistered is started again this many times, this many seconds apart: a
#: site that connects while ``serve`` is still registering the kit's keys gets in.
NOT_REGISTERED_RETRIES = 3
NOT_REGISTERED_DELAY = 5.0


class ClientRefused(FedimageError):
    """The SuperNode could not join the federation; the message names the cause."""


#: What a SuperNode's log says, and what it means for the site, in one line.
_CAUSES = (
    (
        "CERTIFICATE_VERIFY_FAILED",
        "the server's certificate is not signed by this kit's authority (wrong kit?)",
    ),
    (
        "certificate verify failed",
        "the server's certificate is not signed by this kit's authority (wrong kit?)",
    ),
    ("2004", "the server does not know this node's key (a kit from another federation, or not registered)"),
    (
        "not registered",
        "the server does not know this node's key (a kit from another federation, or not registered)",
    ),
    ("UNEXPECTED_EOF_WHILE_READING", "the connection closed during the TLS handshake (a proxy or firewall?)"),
    ("2001", "the server requires node authentication and this node sent no key"),
    ("Connection refused", "no server answers at the address (not started yet, stopped, or a firewall)"),
    ("failed to connect", "no server answers at the address (not started yet, stopped, or a firewall)"),
    ("Name or service not known", "the server's host name does not resolve"),
)


def run_client(
    kit: str | Path, options: ClientOptions | None = None, *, log: Callable[[str], None] = print
) -> None:
    """Join the federation as the site of client kit ``kit`` until the server ends the run.

    Parameters
    ----------
    kit:
        A client kit folder (``kits/clients/<split>/<client>``) or its ``node.toml``.
    options:
        Server address override and reconnection bounds (:class:`ClientOptions`).
    log:
        Receives progress lines.

    Raises :class:`ClientRefused` with the cause in one line when the SuperNode cannot join or
    loses the server before the run ends.

    Example::

        run_client("kits/clients/train/59769174@N00")
    """
    options = options or ClientOptions()
    node = read_node_config(kit)
    server = options.server or node.server
    with tempfile.TemporaryDirectory(prefix="fedimage-client-") as scratch:
        work = Path(scratch)
        finished = work / "finished"
        config_file = work / "node-config.toml"
        values = {
            protocol.NODE_BUNDLE: str(node.bundle),
            protocol.NODE_BUNDLE_KEY: str(node.bundle_key),
            protocol.NODE_CLIENT: node.client,
            protocol.NODE_SPLIT: node.split,
            protocol.NODE_FINISHED_FILE: str(finished),
        }
        config_file.write_text("".join(f"{toml_string(k)} = {toml_string(v)}\n" for k, v in values.items()))
        flwr_home = work / "home"
        flwr_home.mkdir()
        security = (
            ["--insecure"]
            if options.insecure
            else [
                "--root-certificates", str(node.root_certificates),
                "--auth-supernode-private-key", str(node.node_private_key),
            ]
        )  # fmt: skip
        argv = [
            flower_executable("flower-supernode"),
            "--superlink", server,
            *security,
            "--node-config", str(config_file),
            "--max-retries", str(options.max_retries),
            "--max-wait-time", str(options.max_wait),
            "--host", "127.0.0.1",
            "--port", str(free_port()),
        ]  # fmt: skip
        log_path = work / "supernode.log"
        how = "WITHOUT TLS (insecure)" if options.insecure else "TLS, node authentication"
        log(f"client {node.client} ({node.split}): joining {server} ({how})")
        env = flower_environment(flwr_home)
        with terminate_on_sigterm():
            _watch(node, server, argv, log_path, env, finished, log)


def _watch(
    node: NodeConfig,
    server: str,
    argv: list[str],
    log_path: Path,
    env: dict[str, str],
    finished: Path,
    log: Callable[[str], None],
) -> None:
    """Run the SuperNode until the server ends the run (restarting it while its key is not registered)."""
    supernode = ProcessGroup(argv, log_path, env)
    attempts, seen = 1, 0  # ``seen``: log characters of earlier attempts
    try:
        while True:
            if finished.exists():
                log(f"client {node.client}: the server ended the run")
                return
            if not supernode.alive():
                text = supernode.log_text()[seen:]
                if _not_registered(text) and attempts <= NOT_REGISTERED_RETRIES:
                    # the server may still be registering the kit's keys: a bounded wait
                    log(
                        f"client {node.client}: the server does not know this node's key yet; "
                        f"retrying in {NOT_REGISTERED_DELAY:g} s ({attempts}/{NOT_REGISTERED_RETRIES})"
                    )
                    supernode.stop()
                    seen += len(text)
                    time.sleep(NOT_REGISTERED_DELAY)
                    attempts += 1
                    supernode = ProcessGroup(argv, log_path, env)
                    continue
                raise ClientRefused(refusal(node.client, server, text, supernode.returncode))
            time.sleep(0.2)
    finally:
        supernode.stop()
        _keep_log(log_path, Path(node.bundle).parent / "supernode.log")


def _not_registered(log_text: str) -> bool:
    return "2004" in log_text or "not registered" in log_text


def refusal(client: str, server: str, log_text: str, returncode: int | None) -> str:
    """The one-line reason a SuperNode exited, from its log."""
    for marker, cause in _CAUSES:
        if marker in log_text:
            return f"client {client} could not join {server}: {cause}"
    lines = [line.strip() for line in log_text.splitlines() if line.strip()]
    last = lines[-1][:300] if lines else "no output"
    return f"client {client}: the SuperNode exited with code {returncode} before the run ended: {last}"


def _keep_log(source: Path, target: Path) -> None:
    """Leave the SuperNode's log next to the kit, for the site's operator."""
    with contextlib.suppress(OSError):
        target.write_bytes(source.read_bytes())
