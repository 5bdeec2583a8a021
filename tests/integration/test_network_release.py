"""Endpoints that change under a container, against a real ketchd: released on stop and
exit and created again on the next start from the container's configuration, and published
ports that follow a disconnect to the next network, as docker does.

ketchd runs in a network namespace of the test's own, so links and traffic stay inside it.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest

from support.daemon import KetchDaemon, daemon_fixture
from support.netns import entered
from support.network_leftovers import no_network_leftovers  # noqa: F401
from support.restart import restart_ketchd

WAIT_SECONDS = 30.0


@pytest.fixture(scope="module")
def daemon() -> Iterator[KetchDaemon]:
    yield from daemon_fixture()


def ok(daemon: KetchDaemon, *args: str) -> str:
    result = daemon.ketch(*args, timeout=120)
    assert result.returncode == 0, f"{' '.join(args)}: {result.stderr}"
    return result.stdout


def run_detached(daemon: KetchDaemon, *args: str) -> str:
    container_id = ok(daemon, "run", "-d", *args).strip()
    daemon.container_ids.add(container_id)
    return container_id


def inspect(daemon: KetchDaemon, reference: str) -> dict[str, Any]:
    return json.loads(ok(daemon, "inspect", reference))[0]


def link_names(daemon: KetchDaemon) -> list[str]:
    result = subprocess.run(
        daemon.namespace.command(["ip", "-o", "link"]), capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    return [line.split(":")[1].strip().split("@")[0] for line in result.stdout.splitlines()]


def wait_until(condition: Any, description: str) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {description}"
        time.sleep(0.1)


def released(daemon: KetchDaemon, container_id: str) -> bool:
    """Return whether the container has no veth and no pinned namespace left."""
    no_veth = not any(name.startswith("v" + container_id[:7]) for name in link_names(daemon))
    return no_veth and not (daemon.exec_root / "netns" / container_id).exists()


def tcp_reply(daemon: KetchDaemon, port: int, expected: bytes) -> bytes:
    """Connect to 127.0.0.1:port in ketchd's namespace until the reply has ``expected``."""
    deadline = time.monotonic() + WAIT_SECONDS
    reply = b""
    while expected not in reply and time.monotonic() < deadline:
        try:
            with entered(daemon.namespace):
                client = socket.create_connection(("127.0.0.1", port), timeout=10)
            with client:
                reply = client.recv(4096)
        except OSError:
            reply = b""
        if expected not in reply:
            time.sleep(0.2)
    return reply


def test_stop_releases_endpoint(daemon: KetchDaemon) -> None:
    ok(daemon, "network", "create", "--subnet", "10.94.0.0/24", "gone")
    container_id = run_detached(daemon, "--network", "gone", "busybox", "sleep", "600")
    assert not released(daemon, container_id)

    ok(daemon, "stop", "-t", "1", container_id)
    wait_until(lambda: released(daemon, container_id), "the endpoint's release")
    network = json.loads(ok(daemon, "network", "inspect", "gone"))[0]
    assert network["Containers"] == {}
    settings = inspect(daemon, container_id)["NetworkSettings"]["Networks"]["gone"]
    assert settings["IPAddress"] == ""
    assert settings["NetworkID"] == network["Id"]

    ok(daemon, "network", "rm", "gone")
    result = daemon.ketch("start", container_id)
    assert result.returncode != 0
    assert "network gone not found" in result.stderr
    assert released(daemon, container_id)
    ok(daemon, "rm", container_id)


def test_exit_releases_endpoint(daemon: KetchDaemon) -> None:
    container_id = run_detached(daemon, "busybox", "true")
    wait_until(lambda: inspect(daemon, container_id)["State"]["Status"] == "exited", "exit")
    wait_until(lambda: released(daemon, container_id), "the endpoint's release")
    ok(daemon, "rm", container_id)


def test_start_keeps_configured_endpoint(daemon: KetchDaemon) -> None:
    ok(daemon, "network", "create", "--subnet", "10.95.0.0/24", "kept")
    container_id = run_detached(
        daemon, "--network", "kept", "--ip", "10.95.0.77", "--mac-address", "02:aa:bb:cc:dd:ee",
        "--network-alias", "other-name", "busybox", "sleep", "600",
    )  # fmt: skip
    ok(daemon, "stop", "-t", "1", container_id)
    wait_until(lambda: released(daemon, container_id), "the endpoint's release")
    ok(daemon, "start", container_id)

    settings = inspect(daemon, container_id)["NetworkSettings"]["Networks"]["kept"]
    assert settings["IPAddress"] == "10.95.0.77"
    assert settings["MacAddress"] == "02:aa:bb:cc:dd:ee"
    assert "other-name" in settings["Aliases"]
    addresses = ok(daemon, "exec", container_id, "ip", "-o", "-4", "addr", "show", "eth0")
    assert "10.95.0.77/24" in addresses
    hosts = ok(daemon, "exec", container_id, "cat", "/etc/hosts")
    assert hosts.count("10.95.0.77") == 1

    ok(daemon, "rm", "-f", container_id)
    ok(daemon, "network", "rm", "kept")


def test_start_gets_free_address(daemon: KetchDaemon) -> None:
    ok(daemon, "network", "create", "--subnet", "10.96.0.0/24", "moved")
    first = run_detached(daemon, "--network", "moved", "busybox", "sleep", "600")
    address = inspect(daemon, first)["NetworkSettings"]["Networks"]["moved"]["IPAddress"]
    ok(daemon, "stop", "-t", "1", first)
    wait_until(lambda: released(daemon, first), "the endpoint's release")
    second = run_detached(daemon, "--network", "moved", "--ip", address, "busybox", "sleep", "600")

    ok(daemon, "start", first)
    moved = inspect(daemon, first)["NetworkSettings"]["Networks"]["moved"]["IPAddress"]
    assert moved not in ("", address)
    hosts = ok(daemon, "exec", first, "cat", "/etc/hosts")
    assert f"{address}\t" not in hosts

    ok(daemon, "rm", "-f", first, second)
    ok(daemon, "network", "rm", "moved")


def test_ports_follow_stop_and_start(daemon: KetchDaemon) -> None:
    container_id = run_detached(
        daemon, "-p", "18181:7000", "busybox",
        "sh", "-c", "while true; do echo first | nc -l -p 7000; done",
    )  # fmt: skip
    assert b"first" in tcp_reply(daemon, 18181, b"first")
    ok(daemon, "stop", "-t", "1", container_id)
    wait_until(lambda: released(daemon, container_id), "the endpoint's release")

    ok(daemon, "start", container_id)
    assert b"first" in tcp_reply(daemon, 18181, b"first")
    ok(daemon, "rm", "-f", container_id)


def test_ports_follow_policy_restart(daemon: KetchDaemon) -> None:
    # The server replies once and exits, so each reply after the first needs a restart.
    container_id = run_detached(
        daemon, "--restart", "always", "-p", "18182:7000", "busybox",
        "sh", "-c", "echo again | nc -l -p 7000",
    )  # fmt: skip
    for _ in range(3):
        assert b"again" in tcp_reply(daemon, 18182, b"again")
    assert inspect(daemon, container_id)["RestartCount"] >= 2
    ok(daemon, "rm", "-f", container_id)


def test_exit_while_down_releases(daemon: KetchDaemon) -> None:
    container_id = run_detached(daemon, "busybox", "sleep", "2")
    restart_ketchd(daemon, while_down=4.0)
    wait_until(lambda: inspect(daemon, container_id)["State"]["Status"] == "exited", "exit")
    wait_until(lambda: released(daemon, container_id), "the endpoint's release")
    ok(daemon, "rm", container_id)


def test_ports_follow_disconnect(daemon: KetchDaemon) -> None:
    ok(daemon, "network", "create", "--subnet", "10.97.0.0/24", "first-net")
    ok(daemon, "network", "create", "--subnet", "10.98.0.0/24", "second-net")
    container_id = run_detached(
        daemon, "--network", "first-net", "-p", "18183:7000", "busybox",
        "sh", "-c", "while true; do echo moved | nc -l -p 7000; done",
    )  # fmt: skip
    assert b"moved" in tcp_reply(daemon, 18183, b"moved")
    ok(daemon, "network", "connect", "second-net", container_id)

    ok(daemon, "network", "disconnect", "first-net", container_id)
    assert b"moved" in tcp_reply(daemon, 18183, b"moved")
    ok(daemon, "rm", "-f", container_id)
    ok(daemon, "network", "rm", "first-net", "second-net")


def test_joined_namespace_kept_until_joiner_stops(daemon: KetchDaemon) -> None:
    target = run_detached(daemon, "busybox", "sleep", "600")
    joiner = run_detached(daemon, "--network", f"container:{target}", "busybox", "sleep", "600")

    ok(daemon, "stop", "-t", "1", target)
    assert (daemon.exec_root / "netns" / target).exists()
    assert "eth0" in ok(daemon, "exec", joiner, "ip", "-o", "link")

    ok(daemon, "stop", "-t", "1", joiner)
    wait_until(lambda: released(daemon, target), "the endpoint's release")
    ok(daemon, "rm", joiner, target)


def test_prune_removes_network_of_stopped(daemon: KetchDaemon) -> None:
    ok(daemon, "network", "create", "--label", "pruned=yes", "--subnet", "10.90.0.0/24", "idle")
    stopped = run_detached(daemon, "--network", "idle", "busybox", "sleep", "600")
    ok(daemon, "stop", "-t", "1", stopped)
    wait_until(lambda: released(daemon, stopped), "the endpoint's release")

    output = ok(daemon, "network", "prune", "-f", "--filter", "label=pruned=yes")
    assert "idle" in output
    assert daemon.ketch("network", "inspect", "idle").returncode != 0
    ok(daemon, "rm", stopped)
