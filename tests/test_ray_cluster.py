"""Ray instances fedimage starts stay on loopback; a bad cluster address is one line, exit 2, no store."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import descendants, is_loopback_address, listening_addresses

from fedimage.cli import main
from fedimage.errors import OptionError
from fedimage.ray_cluster import ClusterError, check_reachable, join, split_address

pytestmark = pytest.mark.slow  # starts Ray


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_local_instance_listens_on_loopback_only():
    with join(None, 1) as ray:
        node = ray._private.worker.global_worker.node
        addresses = listening_addresses(descendants(os.getpid()))
        assert node.node_ip_address == "127.0.0.1" and node.gcs_address.startswith("127.0.0.1:")
        assert addresses and all(is_loopback_address(address) for address in addresses), addresses
        assert {entry["NodeManagerAddress"] for entry in ray.nodes()} == {"127.0.0.1"}
    assert not ray.is_initialized()


def test_addresses_are_checked():
    assert split_address("127.0.0.1:6379") == ("127.0.0.1", 6379)
    assert split_address("ray://[::1]:10001") == ("::1", 10001)
    for bad in ("127.0.0.1", "host:port", ":80", "h:70000"):
        with pytest.raises(OptionError, match="`ray_address` must be HOST:PORT"):
            split_address(bad)


def test_an_unreachable_cluster_is_one_line_within_seconds():
    address = f"127.0.0.1:{free_port()}"
    started = time.monotonic()
    with pytest.raises(ClusterError) as error:
        check_reachable(address)
    assert time.monotonic() - started < 10
    assert address in str(error.value) and "\n" not in str(error.value)


def test_convert_with_an_unreachable_cluster_exits_2_without_a_store(
    user_folder: Path, tmp_path: Path, capsys
):
    output = tmp_path / "out.h5"
    address = f"127.0.0.1:{free_port()}"
    argv = ["convert", str(user_folder), "-o", str(output), "--layout", "user", "--quiet"]
    status = main([*argv, "--executor", "ray", "--ray-address", address])
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1 and f"cannot reach the Ray cluster at {address}" in err
    assert "Traceback" not in err
    assert not output.exists() and not (tmp_path / "out.h5.work").exists()


@pytest.fixture
def ray_head():
    """A one-CPU Ray head on loopback, started by hand as a user would, in its own process group."""
    port = free_port()
    environment = {
        **os.environ,
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # the head binds and advertises 127.0.0.1
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_AUTH_MODE": "disabled",  # no token to share between head and driver in a test
    }
    ray = str(Path(sys.executable).with_name("ray"))
    command = [ray, "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port)]
    command += ["--num-cpus", "1", "--include-dashboard", "false", "--block"]
    head = subprocess.Popen(
        command, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                check_reachable(f"127.0.0.1:{port}", timeout=1)
                break
            except ClusterError:
                if time.monotonic() > deadline or head.poll() is not None:
                    pytest.skip("the Ray head did not start")
                time.sleep(0.5)
        yield f"127.0.0.1:{port}"
    finally:
        members = descendants(head.pid)
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait(timeout=30)
        for pid in members:  # Ray's own children that left the group, if any
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_a_cluster_short_of_cpus_is_refused(ray_head: str):
    """Joined from a fresh process: Ray keeps its authentication mode per process, so this test's
    setting (no token between a hand-started head and its driver) must not reach later tests."""
    code = (
        "import sys\n"
        "from fedimage.ray_cluster import ClusterError, join\n"
        "try:\n"
        "    with join(sys.argv[1], 4):\n"
        "        sys.exit('joined a 1-CPU cluster for 4 workers')\n"
        "except ClusterError as error:\n"
        "    print(error)\n"
        "with join(sys.argv[1], 1) as ray:\n"
        "    print('cpus', ray.cluster_resources().get('CPU'))\n"
    )
    environment = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    result = subprocess.run(
        [sys.executable, "-c", code, ray_head], env=environment, capture_output=True, text=True, timeout=180
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "has 1 CPUs, fewer than the 4 `workers`" in result.stdout
    assert "cpus 1.0" in result.stdout
