"""``serve``: the server side of a real federation, on Flower's Deployment Engine.

From a server kit (:func:`fedimage.federation.make_kits`) it

1. starts a SuperLink with TLS (the kit's certificate) and SuperNode authentication, in its own
   process group, offline (no telemetry, no update checks, no runtime dependency installation);
2. registers the kit's node public keys, and only those, and learns each one's node id, so that
   the server knows which node is which client from the key it authenticated with;
3. writes a Flower App (``pyproject.toml`` naming fedimage's ServerApp and ClientApp) and the run
   file, and submits the app with ``flwr run``;
4. waits for the ServerApp's outputs (``summary.json`` or ``failure.json``), then ends every
   process it started, also on error or Ctrl-C.

The server never holds a bundle or a bundle key: training, validation and test all happen on the
clients, and only updates (masked, with secure aggregation) and evaluation statistics arrive.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fedimage.errors import FedimageError, OptionError
from fedimage.federation.kits import ServerSettings, parse_server, read_server_settings, toml_string
from fedimage.federation.options import ServeOptions
from fedimage.federation.processes import (
    FlowerProcessError,
    ProcessGroup,
    flower_environment,
    flower_executable,
    terminate_on_sigterm,
)

APP_NAME = "fedimage-federation"
CONNECTION = "fedimage"
#: Host names on which the SuperLink is reached from its own machine.
_LOCAL_HOSTS = {"0.0.0.0", "::", "127.0.0.1", "localhost", "::1"}


class FederationFailed(FedimageError):
    """A federation did not finish; the message says why in one line."""


def serve(
    server_kit: str | Path,
    output: str | Path,
    config: Any,
    options: ServeOptions | None = None,
    *,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run a federation's server from its kit until the training ends; returns the run's summary.

    Parameters
    ----------
    server_kit:
        The ``server`` folder of :func:`~fedimage.federation.make_kits`.
    output:
        Folder for ``metrics.jsonl``, ``summary.json``, ``checkpoint.pt``, ``curves.png`` (and
        the Flower processes' logs under ``flower/``).
    config:
        The training settings, a :class:`~fedimage.training.options.TrainOptions` (as for
        ``fedimage.train``).
    options:
        Address, minimum clients and timeouts (:class:`ServeOptions`).
    log:
        Receives progress lines.

    Example::

        from fedimage import TrainOptions
        summary = serve("kits/server", "runs/site-fl", TrainOptions(model="cnn", rounds=50))
    """
    from fedimage.training.outputs import FAILURE_FILE, prepare_output

    options = options or ServeOptions()
    kit = read_server_settings(server_kit)
    run = _run_plan(kit, config, options, log)
    out = prepare_output(Path(output), options.overwrite).resolve()
    for stale in (FAILURE_FILE,):
        (out / stale).unlink(missing_ok=True)
    work = out / "flower"
    work.mkdir(exist_ok=True)
    host, port = parse_server(options.address, "address")
    control = f"{'127.0.0.1' if host in _LOCAL_HOSTS else host}:{port}"
    flwr_home = work / "home"
    flwr_home.mkdir(exist_ok=True)
    (flwr_home / "config.toml").write_text(
        "[superlink]\n"
        f"default = {toml_string(CONNECTION)}\n\n"
        f"[superlink.{CONNECTION}]\n"
        f"address = {toml_string(control)}\n"
        + (
            "insecure = true\n"
            if options.insecure
            else f"root-certificates = {toml_string(str(kit.ca_certificate))}\n"
        )
    )
    env = flower_environment(flwr_home)
    started = time.monotonic()
    with terminate_on_sigterm():
        return _serve(kit, config, options, run, out, work, host, port, control, env, started, log)


def _serve(
    kit: ServerSettings,
    config: Any,
    options: ServeOptions,
    run: dict[str, Any],
    out: Path,
    work: Path,
    host: str,
    port: int,
    control: str,
    env: dict[str, str],
    started: float,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """``serve`` once its plan and folders are ready: the processes, until the outputs are written."""
    security = (
        ["--insecure"]
        if options.insecure
        else [
            "--ssl-ca-certfile", str(kit.ca_certificate),
            "--ssl-certfile", str(kit.certificate),
            "--ssl-keyfile", str(kit.private_key),
            "--enable-supernode-auth",
        ]
    )  # fmt: skip
    superlink = ProcessGroup(
        [
            flower_executable("flower-superlink"),
            *security,
            "--disable-runtime-dependency-installation",
            "--host", host.strip("[]"),
            "--port", str(port),
        ],
        work / "superlink.log",
        env,
    )  # fmt: skip
    try:
        _wait_for_listener(control, superlink)
        if options.insecure:
            nodes = None  # no node authentication: the ServerApp asks each node who it is
            log(
                f"SuperLink on {options.address} WITHOUT TLS OR NODE AUTHENTICATION (insecure, loopback only)"
            )
        else:
            nodes = _register_nodes(kit, control, superlink, log)
            log(
                f"SuperLink on {options.address} (TLS, node authentication): {len(nodes)} client keys "
                f"registered in {time.monotonic() - started:.1f} s"
            )
        run["output"] = str(out.resolve())
        run["nodes"] = (
            None if nodes is None else {str(node): [split, client] for node, (split, client) in nodes.items()}
        )
        run["address"] = options.address
        run_file = work / "run.json"
        run_file.write_text(json.dumps(run, indent=1, ensure_ascii=False) + "\n")
        app = _write_app(work / "app", run_file)
        _submit(app, env, work, superlink)
        log(
            f"run submitted: waiting for {run['settings']['min_clients']} of "
            f"{len(kit.clients.get('train', []))} "
            f"train clients, then {config.rounds} rounds"
        )
        deadline = started + (options.run_timeout or _default_run_timeout(run, options))
        summary = _wait_for_outputs(out, superlink, deadline, log)
    finally:
        superlink.stop()
    log(f"wrote {out}: metrics.jsonl, summary.json, checkpoint.pt ({time.monotonic() - started:.1f} s)")
    return summary


def _run_plan(
    kit: ServerSettings, config: Any, options: ServeOptions, log: Callable[[str], None]
) -> dict[str, Any]:
    """The run file's content but the output, nodes and address: settings the ServerApp needs."""
    from fedimage.training.engines.flower import check_options, federation_settings
    from fedimage.training.runner import default_crop
    from fedimage.training.update_bounds import clip_range_for

    if config.central:
        raise OptionError(
            "`central` training needs the data on the server; a federation keeps it on the clients"
        )
    check_options(config)
    train = kit.clients.get("train", [])
    if not train:
        raise OptionError(f"the server kit {kit.folder} has no train clients")
    labels = kit.label_names.get(config.labels)
    if not labels:
        raise OptionError(f"the server kit has no {config.labels!r} labels")
    crop = config.image_size or default_crop(kit.image_size)
    cohort = min(config.cohort_size, len(train))
    min_clients = options.min_clients if options.min_clients is not None else max(1, math.ceil(cohort / 2))
    if config.secure_aggregation is not None and cohort < 3:
        raise OptionError(f"secure aggregation needs a cohort of at least 3 train clients, got {cohort}")
    if min_clients > cohort:
        raise OptionError(f"`min_clients` {min_clients} is larger than the cohort of {cohort} train clients")
    calibration = None
    privacy = None
    if config.dp is not None:
        from fedimage.training.privacy import calibrate

        calibration = calibrate(
            config.dp.epsilon,
            config.dp.delta,
            rounds=config.rounds,
            cohort_size=cohort,
            population=len(train),
            noise_cohort_size=config.dp.noise_cohort,
        )
        privacy = calibration.to_json()
        log(
            f"DP: noise multiplier {calibration.noise_multiplier:.4f} for (epsilon {config.dp.epsilon}, "
            f"delta {config.dp.delta}), {cohort} of {len(train)} train clients a round; clients clip to "
            f"{config.dp.clip}"
        )
    secagg_range = None
    if config.secure_aggregation is not None:
        largest = max(client.images for client in train)
        secagg_range, origin = clip_range_for(config, largest)
        log(f"secure aggregation: SecAgg+ over the wire, +-{secagg_range:.4g} a coordinate ({origin})")
        if cohort <= 3:
            log(
                f"warning: with a cohort of {cohort}, SecAgg+ cannot survive a dropout (each client's "
                "secrets need a majority of its neighbours); a round fails if a client drops out"
            )
    settings = federation_settings(
        config,
        num_outputs=len(labels),
        crop=crop,
        cohort_size=cohort,
        calibration=calibration,
        secagg_range=secagg_range,
        validate=bool(kit.clients.get("val")),
        test=bool(kit.clients.get("test")),
        noise_seed=None,
        min_clients=min_clients,
        round_timeout=options.round_timeout,
        connect_timeout=options.connect_timeout,
    )
    return {
        "store": kit.store,
        "config": config.to_json(),
        "settings": settings.to_json(),
        "label_names": labels,
        "clients": {split: [client.client for client in clients] for split, clients in kit.clients.items()},
        "privacy": privacy,
    }


def _register_nodes(
    kit: ServerSettings,
    control: str,
    superlink: ProcessGroup,
    log: Callable[[str], None],
    timeout: float = 60.0,
) -> dict[int, tuple[str, str]]:
    """Register every kit client's public key with the SuperLink's Control API; node id -> (split, client)."""
    from fedimage.federation.flwr import require_flwr

    cli_typing = require_flwr("flwr.cli.typing")
    cli_utils = require_flwr("flwr.cli.utils")
    control_pb2 = require_flwr("flwr.proto.control_pb2")
    asymmetric = require_flwr("flwr.supercore.primitives.asymmetric")
    from cryptography.hazmat.primitives import serialization

    connection = cli_typing.SuperLinkConnection(
        name=CONNECTION, address=control, root_certificates=str(kit.ca_certificate)
    )
    deadline = time.monotonic() + timeout
    client = None
    while client is None:
        if not superlink.alive():
            raise FederationFailed(_process_failure("the SuperLink", superlink))
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # Flower prints "Using SuperLink: ..."
                client = cli_utils.init_http_client_from_connection(connection)
            nodes: dict[int, tuple[str, str]] = {}
            for entry in kit.all_clients():
                public = serialization.load_ssh_public_key(entry.public_key.read_bytes())
                reply = client.RegisterNode(
                    request=control_pb2.RegisterNodeRequest(public_key=asymmetric.public_key_to_bytes(public))
                )
                if not reply.node_id:
                    raise FederationFailed(f"the SuperLink refused the node key of client {entry.client}")
                nodes[int(reply.node_id)] = (entry.split, entry.client)
            return nodes
        except FederationFailed:
            raise
        except Exception as error:  # the SuperLink is still starting: bounded retries
            if client is not None:
                client.close()
                client = None
            if time.monotonic() > deadline:
                raise FederationFailed(
                    f"could not register the kit's nodes with the SuperLink at {control} within "
                    f"{timeout:g} s: "
                    f"{str(error).splitlines()[0] if str(error) else type(error).__name__}"
                ) from None
            time.sleep(0.5)
        finally:
            if client is not None:
                client.close()
    raise AssertionError("unreachable")


def _wait_for_listener(address: str, superlink: ProcessGroup, timeout: float = 60.0) -> None:
    """Wait until the SuperLink accepts TCP connections at ``address`` (it takes a few seconds to start)."""
    host, port = parse_server(address)
    deadline = time.monotonic() + timeout
    while True:
        if not superlink.alive():
            raise FederationFailed(_process_failure("the SuperLink", superlink))
        try:
            with socket.create_connection((host.strip("[]"), port), timeout=1.0):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise FederationFailed(
                    f"the SuperLink did not listen on {address} within {timeout:g} s"
                ) from None
            time.sleep(0.2)


def _write_app(folder: Path, run_file: Path) -> Path:
    """A Flower App folder naming fedimage's ServerApp and ClientApp (fedimage is installed on every node)."""
    from fedimage._version import __version__
    from fedimage.federation.server_app import RUN_FILE_KEY

    folder.mkdir(exist_ok=True)
    (folder / "pyproject.toml").write_text(
        "[build-system]\n"
        'requires = ["hatchling"]\n'
        'build-backend = "hatchling.build"\n\n'
        "[project]\n"
        f"name = {toml_string(APP_NAME)}\n"
        f"version = {toml_string(__version__)}\n"
        'description = "fedimage federated training (fedimage serve)"\n'
        "dependencies = []\n\n"
        "[tool.flwr.app]\n"
        'publisher = "fedimage"\n\n'
        "[tool.flwr.app.components]\n"
        'serverapp = "fedimage.federation.server_app:server_app"\n'
        'clientapp = "fedimage.federation.client_app:client_app"\n\n'
        "[tool.flwr.app.config]\n"
        f"{toml_string(RUN_FILE_KEY)} = {toml_string(str(run_file.resolve()))}\n"
    )
    return folder


def _submit(app: Path, env: dict[str, str], work: Path, superlink: ProcessGroup) -> None:
    """``flwr run APP`` against the SuperLink; a one-line error if it is refused."""
    try:
        done = subprocess.run(
            [flower_executable("flwr"), "run", str(app), CONNECTION, "--format", "json"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            start_new_session=True,
            cwd=work,
        )
    except subprocess.TimeoutExpired:
        raise FederationFailed("`flwr run` did not submit the app within 120 s") from None
    (work / "flwr-run.log").write_text(done.stdout + done.stderr)
    try:
        answer = json.loads(done.stdout)
    except ValueError:
        answer = {}
    if done.returncode != 0 or answer.get("success") is not True:
        if not superlink.alive():
            raise FederationFailed(_process_failure("the SuperLink", superlink))
        lines = [line.strip() for line in str(answer.get("error-message", "")).splitlines() if line.strip()]
        lines = lines or [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
        raise FederationFailed(f"`flwr run` failed: {lines[-1] if lines else done.returncode}")


def _default_run_timeout(run: dict[str, Any], options: ServeOptions) -> float:
    settings = run["settings"]
    stages = 5 if settings.get("secure_aggregation") else 1
    evaluations = settings["rounds"] // settings["eval_every"] + 2
    return options.connect_timeout + (settings["rounds"] * stages + evaluations) * options.round_timeout + 120


def _wait_for_outputs(
    out: Path, superlink: ProcessGroup, deadline: float, log: Callable[[str], None]
) -> dict[str, Any]:
    from fedimage.training.outputs import FAILURE_FILE, SUMMARY_FILE

    summary_file, failure_file = out / SUMMARY_FILE, out / FAILURE_FILE
    progress = out / "server.log"  # the ServerApp's progress lines, shown as they come
    shown = 0
    while True:
        if progress.exists():
            lines = progress.read_text(errors="replace").splitlines(keepends=True)
            for line in lines[shown:]:
                if line.endswith("\n"):
                    log(line.rstrip("\n"))
                    shown += 1
        if failure_file.exists():
            time.sleep(0.2)
            reason = json.loads(failure_file.read_text()).get("error", "unknown error")
            raise FederationFailed(f"the federation failed: {reason}")
        if summary_file.exists():
            time.sleep(0.2)  # written in one call, read after it closed
            return json.loads(summary_file.read_text())
        if not superlink.alive():
            raise FederationFailed(_process_failure("the SuperLink", superlink))
        if time.monotonic() > deadline:
            raise FederationFailed("the federation did not finish within its run timeout")
        time.sleep(0.5)


def _process_failure(what: str, process: ProcessGroup) -> str:
    """One line on why a Flower process ended: the last error line of its log."""
    lines = [line.strip() for line in process.log_text().splitlines() if line.strip()]
    errors = [line for line in lines if "ERROR" in line or "Error" in line]
    last = (errors or lines or ["no output"])[-1]
    return f"{what} exited with code {process.returncode}: {last[:300]}"


__all__ = ["FederationFailed", "FlowerProcessError", "ServeOptions", "serve"]
