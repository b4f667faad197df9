"""Flower's processes as fedimage starts them: own process group, offline environment, bounded waits.

Flower's SuperLink and SuperNodes each start a ``flower-superexec`` child (found by name on
``PATH``), which starts app processes; a SIGTERM to the parent alone can leave them running.
So each process fedimage starts is a group leader (``start_new_session``), and stopping it
ends the whole group: SIGTERM, a grace period, then SIGKILL.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO

from fedimage.errors import FedimageError
from fedimage.federation.flwr import OFFLINE_ENVIRONMENT

#: How often Flower's superexec looks for new work (seconds; Flower's default is 1.0; at 0.1 an idle site
#: costs about 8% of a core, measured on 2 cores, at 1.0 about 2%).
TASK_POLL_SECONDS = "0.5"


class FlowerProcessError(FedimageError):
    """A Flower process could not start or ended with an error."""


def flower_executable(name: str) -> str:
    """The Flower command ``name`` of this Python's environment (its ``bin`` folder first, then PATH)."""
    local = Path(sys.executable).parent / name
    if local.exists():
        return str(local)
    found = shutil.which(name)
    if found is None:
        raise FlowerProcessError(
            f"Flower's {name!r} command is not installed: pip install 'fedimage[flower]'"
        )
    return found


def flower_environment(flwr_home: Path | None = None) -> dict[str, str]:
    """The environment of a Flower process: offline, this environment's ``bin`` first on PATH, fast polls."""
    env = dict(os.environ)
    env.update(OFFLINE_ENVIRONMENT)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.setdefault("FLWR_SUPEREXEC_TASK_POLL_INTERVAL", TASK_POLL_SECONDS)
    env.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    env["PYTHONUNBUFFERED"] = "1"
    if flwr_home is not None:
        env["FLWR_HOME"] = str(flwr_home)
    return env


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


class ProcessGroup:
    """One command started as the leader of its own process group, its output in ``log_path``.

    Parameters
    ----------
    argv:
        The command and its arguments.
    log_path:
        File receiving the command's standard output and error.
    env:
        Its environment (see :func:`flower_environment`).

    Example::

        with ProcessGroup([flower_executable("flower-superlink"), "--insecure"], Path("sl.log"), env) as link:
            ...
    """

    def __init__(self, argv: Sequence[str], log_path: Path, env: dict[str, str], cwd: Path | None = None):
        self.argv = list(argv)
        self.log_path = Path(log_path)
        self._log: IO[bytes] = self.log_path.open("ab")
        try:
            self.process = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=cwd,
                start_new_session=True,
            )
        except OSError as error:
            self._log.close()
            raise FlowerProcessError(f"could not start {Path(self.argv[0]).name}: {error}") from None

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    @property
    def returncode(self) -> int | None:
        return self.process.poll()

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self, grace: float = 5.0) -> None:
        """End the group and every group its processes started: SIGTERM, ``grace`` seconds, then SIGKILL.

        Flower's SuperLink starts its superexec in a session of its own, so the groups of all
        descendants (found in ``/proc`` where there is one) are ended too. Reaps the leader.
        """
        groups = {self.process.pid} | _descendant_groups(self.process.pid)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for group in groups:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(group, sig)
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline and any(_group_alive(group) for group in groups):
                self.process.poll()
                time.sleep(0.05)
            if not any(_group_alive(group) for group in groups):
                break
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=grace)
        self._log.close()

    def __enter__(self) -> ProcessGroup:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _descendant_groups(pid: int) -> set[int]:
    """Process groups of ``pid``'s descendants (Linux ``/proc``; empty elsewhere)."""
    children: dict[int, list[int]] = {}
    groups: dict[int, int] = {}
    try:
        entries = [entry for entry in os.listdir("/proc") if entry.isdigit()]
    except OSError:
        return set()
    for entry in entries:
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        children.setdefault(int(fields[1]), []).append(int(entry))
        groups[int(entry)] = int(fields[2])
    found: set[int] = set()
    queue = list(children.get(pid, []))
    while queue:
        current = queue.pop()
        if current in groups:
            found.add(groups[current])
        queue.extend(children.get(current, []))
    return found


@contextlib.contextmanager
def terminate_on_sigterm() -> Iterator[None]:
    """Turn SIGTERM into ``SystemExit`` for a block (main thread only), so ``finally`` clauses end
    the processes the block started; the previous handler comes back afterwards."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def leave(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, leave)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie leader still counts as a member until reaped: reap it if it is ours
    with contextlib.suppress(ChildProcessError):
        pid, _ = os.waitpid(pgid, os.WNOHANG)
        if pid == pgid:
            return _group_alive_after_reap(pgid)
    return True


def _group_alive_after_reap(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True
