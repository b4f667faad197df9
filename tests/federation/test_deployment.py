"""A real federation on 127.0.0.1: ``fedimage serve`` and ``fedimage client`` as separate processes.

Each test starts a Flower SuperLink (through ``fedimage serve``) and SuperNodes (through
``fedimage client``), each in its own process group, on ephemeral loopback ports, and ends every
group it started. A recording TCP proxy sits between one client and the server to check what
crosses the wire.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import descendants, fast_options, photo, save_image, write_jsonl

from fedimage import ImageOptions, convert, open_source

torch = pytest.importorskip("torch")
pytest.importorskip("flwr")
pytest.importorskip("cryptography")
pytest.importorskip("dp_accounting")
pytest.importorskip("matplotlib")

from flower_helpers import LocalGrid  # noqa: E402

from fedimage.federation import make_kits  # noqa: E402
from fedimage.federation.client_app import make_client_app  # noqa: E402
from fedimage.federation.client_data import SimulationDirectory  # noqa: E402
from fedimage.federation.pki import make_node_key_pair  # noqa: E402
from fedimage.federation.processes import free_port  # noqa: E402
from fedimage.federation.server_loop import ClientDirectory, FederatedRounds, FederationSettings  # noqa: E402
from fedimage.training.models import build_model  # noqa: E402

pytestmark = pytest.mark.slow

MARKER = "planted-marker-7f3a9c"  # a user id that shows on the wire if anything goes in clear text
TRAIN_USERS = ("site-a", "site-b", MARKER)
SPARE_USER = (
    "site-c"  # a fourth train site: SecAgg+ among 3 cannot survive a dropout (threshold 2 of 2 neighbours)
)
VAL_USER = "site-v"
SIZE, CROP = 16, 14
TRAINING = [
    "--model", "cnn", "--image-size", str(CROP), "--batch-size", "4", "--local-epochs", "1",
    "--strategy", "fedavg", "--seed", "5", "--eval-every", "1", "--cohort-size", "3",
]  # fmt: skip


@pytest.fixture(autouse=True)
def task_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    """The run identity Flower's runtime sets before a ServerApp creates messages (restored afterwards)."""
    from flwr.supercore.task_identity import TaskIdentity

    for name, value in (("_run_id", 1), ("_task_id", 1), ("_node_id", 1)):
        if getattr(TaskIdentity, name) is None:
            monkeypatch.setattr(TaskIdentity, name, value)


@pytest.fixture(scope="module")
def store_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four train sites (one of them named MARKER) with 3 images each and one val site with 2."""
    root = tmp_path_factory.mktemp("federation")
    rows = []
    labels = (["cat"], ["dog"], ["cat", "dog"], ["tree"])
    for number, (user, split, count) in enumerate(
        [*((user, "train", 3) for user in (*TRAIN_USERS, SPARE_USER)), (VAL_USER, "val", 2)]
    ):
        for index in range(count):
            image = save_image(
                root / "images" / f"{user}-{index}.png", photo(40, 32, seed=number * 10 + index)
            )
            rows.append(
                {
                    "image": str(image),
                    "user_id": user,
                    "labels": labels[(number + index) % 4],
                    "partition": split,
                }
            )
    manifest = write_jsonl(root / "manifest.jsonl", rows)
    path = root / "store.h5"
    convert(open_source(manifest), path, fast_options(image=ImageOptions(size=SIZE)))
    return path


class Processes:
    """Every process a test starts, each the leader of its own group; all groups are ended at the end."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.started: list[subprocess.Popen] = []
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1"}

    def fedimage(self, name: str, *args: str) -> subprocess.Popen:
        log = (self.folder / f"{name}.log").open("wb")
        process = subprocess.Popen(
            [sys.executable, "-m", "fedimage", *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env=self.env,
        )
        self.started.append(process)
        return process

    def output(self, name: str) -> str:
        return (self.folder / f"{name}.log").read_text(errors="replace")

    def kill_tree(self, process: subprocess.Popen) -> None:
        """``kill -9`` a process and every process group under it (a site that goes dark)."""
        groups = set()
        for pid in descendants(process.pid):
            with contextlib.suppress(ProcessLookupError):
                groups.add(os.getpgid(pid))
        for group in groups:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(group, signal.SIGKILL)

    def end_all(self) -> None:
        for process in self.started:
            self.kill_tree(process)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=10)


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    running = Processes(tmp_path)
    try:
        yield running
    finally:
        running.end_all()


class RecordingProxy:
    """A TCP relay on 127.0.0.1 to ``target`` that keeps every byte each way (bounded by the test's size)."""

    def __init__(self, target_port: int):
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.up = bytearray()  # client -> server
        self.down = bytearray()  # server -> client
        self.first_bytes: list[bytes] = []
        self._stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        self.listener.settimeout(0.5)
        while not self._stop.is_set():
            try:
                client, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                server = socket.create_connection(("127.0.0.1", self.target_port), timeout=10)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            threading.Thread(target=self._pipe, args=(client, server, self.up, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client, self.down, False), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket, record: bytearray, upstream: bool) -> None:
        first = True
        try:
            while chunk := source.recv(65536):
                if first and upstream:
                    self.first_bytes.append(chunk[:3])
                first = False
                record.extend(chunk)
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._stop.set()
        self.listener.close()


class OpenFileWatch:
    """Samples the files the processes of a process tree hold open (from /proc), until stopped."""

    def __init__(self, root_pid: int):
        self.root_pid = root_pid
        self.seen: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._stop.is_set():
            for pid in descendants(self.root_pid):
                with contextlib.suppress(OSError):
                    for fd in os.listdir(f"/proc/{pid}/fd"):
                        with contextlib.suppress(OSError):
                            self.seen.add(os.readlink(f"/proc/{pid}/fd/{fd}"))
            time.sleep(0.1)

    def stop(self) -> set[str]:
        self._stop.set()
        self._thread.join(timeout=5)
        return self.seen


def wait_for_line(processes: Processes, name: str, text: str, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 120
    while text not in processes.output(name):
        assert process.poll() is None, processes.output(name)
        assert time.monotonic() < deadline, f"{name} never said {text!r}"
        time.sleep(0.2)


def wait(process: subprocess.Popen, timeout: float) -> int:
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{process.args[3:5]} did not finish within {timeout} s")


def kits_for(store_path: Path, folder: Path, port: int, **options: Any) -> Path:
    make_kits(store_path, folder, f"127.0.0.1:{port}", quiet=True, **options)
    return folder


def client_kit(kits: Path, user: str, split: str = "train") -> Path:
    return kits / "clients" / split / user


def initial_model_bytes(seed: int, num_outputs: int) -> bytes:
    """Bytes of the seeded initial model's first weight tensor, as the server sends them (float32)."""
    torch.manual_seed(seed)
    model = build_model("cnn", num_outputs, CROP)
    first = next(tensor for tensor in model.state_dict().values() if tensor.is_floating_point())
    return first.numpy().astype(np.float32).tobytes()[:64]


def replay_in_process(
    store_path: Path, run_file: Path, silent_after: dict[str, int] | None = None, absent: tuple[str, ...] = ()
) -> Any:
    """The same federation in one process (LocalGrid), same settings and seeds: its result and best model.

    ``silent_after[client] = r``: that client answers nothing from round ``r + 1`` on; ``absent``
    clients never connect.
    """
    settings = FederationSettings.from_json(json.loads(run_file.read_text())["settings"])
    directory = SimulationDirectory(store_path)
    grid = LocalGrid(make_client_app(directory), directory.num_partitions)
    node_of = {user: 100 + index for index, (_, user) in enumerate(directory.clients)}
    for user in absent:
        del grid.contexts[node_of[user]]

    class Silence:
        def round_done(self, server_round: int, model: Any, record: dict) -> None:
            for client, after in (silent_after or {}).items():
                if server_round >= after:
                    grid.silent[node_of[client]] = {
                        "query",
                        "train",
                        "evaluate",
                        "train.secagg_share",
                        "train.secagg_masked",
                        "train.secagg_unmask",
                        "query.finished",
                    }

        def evaluated(self, *args: Any) -> None:
            pass

    recipe = settings.recipe
    torch.manual_seed(settings.seed)
    model = build_model(recipe.model, recipe.num_outputs, recipe.crop)
    rounds = FederatedRounds(grid, settings, model, ClientDirectory(), Silence())
    result = rounds.run()
    return result, rounds.best_vector


def checkpoint_vector(path: Path) -> np.ndarray:
    state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    return np.concatenate([t.double().numpy().ravel() for t in state.values() if t.is_floating_point()])


def test_a_federation_over_tls_with_node_authentication_secure_aggregation_and_a_dropout(
    store_path: Path, tmp_path: Path, processes: Processes
):
    """4 train sites and a val site over TLS with node auth and SecAgg+; one site behind a recording
    proxy; one killed after round 1; a foreign kit and an unregistered key refused on the side."""
    port = free_port()
    kits = kits_for(store_path, tmp_path / "kits", port, splits=["train", "val"])
    server_machine = tmp_path / "server-machine"  # the server holds only its own kit
    shutil.copytree(kits / "server", server_machine / "server")
    assert not [
        p for p in (server_machine / "server").rglob("*") if p.suffix in (".h5",) or p.name == "bundle.key"
    ]
    proxy = RecordingProxy(port)
    run = tmp_path / "run"
    server = processes.fedimage(
        "serve",
        "serve", str(server_machine / "server"), "-o", str(run), "--address", f"127.0.0.1:{port}",
        "--rounds", "2", "--min-clients", "3", "--round-timeout", "30", "--connect-timeout", "120",
        "--secure-aggregation", "--secagg-range", "1.0", *TRAINING[:-2], "--cohort-size", "4",
        "--eval-every", "2",
    )  # fmt: skip
    watch = OpenFileWatch(server.pid)
    wait_for_line(processes, "serve", "run submitted", server)  # the proxy needs the SuperLink up
    sites = {
        user: processes.fedimage(user, "client", str(client_kit(kits, user)), "--max-wait", "60")
        for user in (*TRAIN_USERS, SPARE_USER)
        if user != MARKER
    }
    sites[MARKER] = processes.fedimage(
        MARKER,
        "client",
        str(client_kit(kits, MARKER)),
        "--server",
        f"127.0.0.1:{proxy.port}",
        "--max-wait",
        "60",
    )
    sites[VAL_USER] = processes.fedimage(
        VAL_USER, "client", str(client_kit(kits, VAL_USER, "val")), "--max-wait", "60"
    )
    # a site from another federation (another authority) and a site whose key was never registered
    foreign = kits_for(store_path, tmp_path / "other-kits", port, splits=["train"])
    stranger = tmp_path / "stranger"
    shutil.copytree(client_kit(kits, "site-a"), stranger)
    for name in ("node.key", "node.pub"):
        (stranger / name).unlink()
    private, public = make_node_key_pair()
    descriptor = os.open(stranger / "node.key", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        file.write(private)
    (stranger / "node.pub").write_bytes(public)
    refused = {
        "foreign": processes.fedimage(
            "foreign", "client", str(client_kit(foreign, "site-a")), "--max-wait", "20"
        ),
        "stranger": processes.fedimage("stranger", "client", str(stranger), "--max-wait", "20"),
    }
    for name, process in refused.items():
        assert wait(process, 90) != 0, name
    foreign_lines = [line for line in processes.output("foreign").splitlines() if line.startswith("error:")]
    assert foreign_lines == [
        "error: client site-a could not join 127.0.0.1:"
        f"{port}: the server's certificate is not signed by this kit's authority (wrong kit?)"
    ]
    stranger_lines = [line for line in processes.output("stranger").splitlines() if line.startswith("error:")]
    assert len(stranger_lines) == 1 and "does not know this node's key" in stranger_lines[0], (
        processes.output("stranger")
    )

    # kill -9 of a site after round 1: the site goes dark (every process group it started)
    server_log = run / "server.log"
    deadline = time.monotonic() + 300
    while not (server_log.exists() and "round 1 took" in server_log.read_text()):
        assert server.poll() is None, processes.output("serve")
        assert time.monotonic() < deadline, "round 1 did not finish"
        time.sleep(0.2)
    processes.kill_tree(sites.pop("site-b"))

    assert wait(server, 400) == 0, processes.output("serve")
    opened = watch.stop()
    for user, process in sites.items():
        assert wait(process, 60) == 0, processes.output(user)
    proxy.close()

    summary = json.loads((run / "summary.json").read_text())
    assert summary["completed_rounds"] == 2 and summary["engine"] == "flower-deployment"
    everyone = sorted((*TRAIN_USERS, SPARE_USER))
    first, second = summary["rounds"]
    assert first["contributors"] == everyone and first["dropped"] == {}
    assert second["contributors"] == [user for user in everyone if user != "site-b"]
    assert list(second["dropped"]) == ["site-b"] and "no reply within 30 s" in second["dropped"]["site-b"]
    assert [
        first["secure_aggregation"]["survivors"]["unmask"],
        second["secure_aggregation"]["survivors"]["unmask"],
    ] == [4, 3]
    assert summary["secure_aggregation"]["protocol"].startswith("SecAgg+")
    assert summary["client_evaluation"]["val"]["clients"] == 1
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [line["round"] for line in lines] == [2] and all("macro AP" in line["val"] for line in lines)
    for name in ("checkpoint.pt", "curves.png"):
        assert (run / name).exists()

    # the same rounds in one process, site-b silent from round 2, give the same model: same seeds and
    # cohorts, and the SecAgg+ sum exact within quantization although a site dropped out
    replayed, best = replay_in_process(store_path, run / "flower" / "run.json", {"site-b": 1})
    assert [r["contributors"] for r in replayed.rounds] == [r["contributors"] for r in summary["rounds"]]
    assert replayed.best_round == summary["best_round"]
    step = 2 * 1.0 / (2**32 // 4)
    np.testing.assert_allclose(checkpoint_vector(run / "checkpoint.pt"), best, rtol=1e-4, atol=step + 1e-6)

    # the server's processes never opened a store or bundle: it has no data and no data key
    assert not [path for path in opened if path.endswith((".h5", ".key")) and "server.key" not in path]
    # TLS: every connection began with a handshake; no id and no model weights in clear text
    assert proxy.first_bytes and all(first[:2] == b"\x16\x03" for first in proxy.first_bytes)
    assert MARKER.encode() not in proxy.up and MARKER.encode() not in proxy.down
    assert initial_model_bytes(5, 3) not in proxy.down


def test_without_tls_the_wire_shows_ids_and_weights(store_path: Path, tmp_path: Path, processes: Processes):
    """The control of the TLS test: the same proxy does see a plaintext federation (so that test can fail)."""
    port = free_port()
    kits = kits_for(store_path, tmp_path / "kits", port, splits=["train"])
    proxy = RecordingProxy(port)
    run = tmp_path / "run"
    server = processes.fedimage(
        "serve",
        "serve", str(kits / "server"), "-o", str(run), "--address", f"127.0.0.1:{port}", "--insecure",
        "--rounds", "1", "--min-clients", "2", "--round-timeout", "90", "--connect-timeout", "120",
        *TRAINING[:-2], "--cohort-size", "2",
    )  # fmt: skip
    wait_for_line(processes, "serve", "run submitted", server)
    sites = {
        "site-a": processes.fedimage(
            "site-a", "client", str(client_kit(kits, "site-a")), "--insecure", "--server", f"127.0.0.1:{port}"
        ),
        MARKER: processes.fedimage(
            MARKER,
            "client",
            str(client_kit(kits, MARKER)),
            "--insecure",
            "--server",
            f"127.0.0.1:{proxy.port}",
        ),
    }
    assert wait(server, 300) == 0, processes.output("serve")
    for user, process in sites.items():
        assert wait(process, 60) == 0, processes.output(user)
    proxy.close()
    assert MARKER.encode() in proxy.up  # its identity, in clear text
    assert initial_model_bytes(5, 3) in proxy.down  # the global model, in clear text


def test_sigterm_to_a_site_ends_every_process_it_started(
    store_path: Path, tmp_path: Path, processes: Processes
):
    """``fedimage client`` (and ``serve``) turn SIGTERM into a clean exit that ends their Flower groups."""
    kits = kits_for(store_path, tmp_path / "kits", free_port(), splits=["train"])
    site = processes.fedimage("site-a", "client", str(client_kit(kits, "site-a")), "--max-wait", "120")
    deadline = time.monotonic() + 60
    while not any("flower-supernode" in _command(pid) for pid in descendants(site.pid)):
        assert site.poll() is None and time.monotonic() < deadline, processes.output("site-a")
        time.sleep(0.2)
    started = set(descendants(site.pid)) - {site.pid}
    os.kill(site.pid, signal.SIGTERM)
    assert wait(site, 30) != 0
    time.sleep(0.5)
    assert not [pid for pid in started if _alive(pid)]


def _command(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"
