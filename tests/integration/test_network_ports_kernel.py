"""Published ports as nftables dnat rules, with ketchd's userland-proxy set to false; every
packet stays in the test's network namespace."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time
from collections.abc import Iterator

import pytest

from support.daemon import KetchDaemon, daemon_fixture
from support.netns import entered
from support.network_leftovers import no_network_leftovers  # noqa: F401
from support.restart import restart_ketchd

WAIT_SECONDS = 30.0


@pytest.fixture(scope="module")
def daemon() -> Iterator[KetchDaemon]:
    for started in daemon_fixture():
        restart_ketchd(started, "--userland-proxy=false", kill_signal=signal.SIGTERM)
        yield started


def _dnat_rules(daemon: KetchDaemon) -> list[str]:
    listed = subprocess.run(
        daemon.namespace.command(["nft", "list", "table", "ip", daemon.instance.table_name]),
        capture_output=True,
        text=True,
    )
    return [line.strip() for line in listed.stdout.splitlines() if " dnat to " in line]


def _reply(daemon: KetchDaemon, port: int) -> bytes:
    deadline = time.monotonic() + WAIT_SECONDS
    reply = b""
    while b"hi" not in reply and time.monotonic() < deadline:
        try:
            with entered(daemon.namespace):
                client = socket.create_connection(("127.0.0.1", port), timeout=5)
            with client:
                reply = client.recv(100)
        except OSError:
            time.sleep(0.2)
    return reply


def _run_hi_server(daemon: KetchDaemon, host_port: int) -> str:
    """Run a container that replies "hi" on port 8080, published on 127.0.0.1:``host_port``,
    and return its id."""
    result = daemon.ketch(
        "run", "-d", "-p", f"127.0.0.1:{host_port}:8080", "busybox", "nc", "-ll", "-p", "8080",
        "-e", "echo", "hi",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    container_id = result.stdout.strip()
    daemon.container_ids.add(container_id)
    return container_id


def test_kernel_rules_forward_loopback(daemon: KetchDaemon) -> None:
    container_id = _run_hi_server(daemon, 18300)
    address = json.loads(daemon.ketch("inspect", container_id).stdout)[0]["NetworkSettings"][
        "IPAddress"
    ]

    assert f"ip daddr 127.0.0.1 tcp dport 18300 dnat to {address}:8080" in _dnat_rules(daemon)
    assert _reply(daemon, 18300) == b"hi\n"
    ps = daemon.ketch("ps", "--format", "{{.Ports}}", "--filter", f"id={container_id}")
    assert ps.stdout.strip() == "127.0.0.1:18300->8080/tcp"

    removed = daemon.ketch("rm", "-f", container_id)
    assert removed.returncode == 0, removed.stderr
    deadline = time.monotonic() + WAIT_SECONDS
    while _dnat_rules(daemon) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _dnat_rules(daemon) == []


def test_kernel_rules_hold_port(daemon: KetchDaemon) -> None:
    result = daemon.ketch("run", "-d", "-p", "18301:80", "busybox", "sleep", "60")
    assert result.returncode == 0, result.stderr
    daemon.container_ids.add(result.stdout.strip())
    with entered(daemon.namespace):
        other = socket.socket()
    with other, pytest.raises(OSError):
        other.bind(("0.0.0.0", 18301))
    daemon.ketch("rm", "-f", result.stdout.strip())


def test_kernel_rules_after_ketchd_kill(daemon: KetchDaemon) -> None:
    container_id = _run_hi_server(daemon, 18302)
    assert _reply(daemon, 18302) == b"hi\n"

    restart_ketchd(daemon, "--userland-proxy=false")
    assert _reply(daemon, 18302) == b"hi\n"
    assert len(_dnat_rules(daemon)) == 2  # prerouting and output
    daemon.ketch("rm", "-f", container_id)


def test_kernel_rules_follow_disconnect(daemon: KetchDaemon) -> None:
    created = daemon.ketch("network", "create", "--subnet", "10.91.0.0/24", "kernel-next")
    assert created.returncode == 0, created.stderr
    container_id = _run_hi_server(daemon, 18303)
    assert _reply(daemon, 18303) == b"hi\n"

    connected = daemon.ketch("network", "connect", "kernel-next", container_id)
    assert connected.returncode == 0, connected.stderr
    disconnected = daemon.ketch("network", "disconnect", "bridge", container_id)
    assert disconnected.returncode == 0, disconnected.stderr
    networks = json.loads(daemon.ketch("inspect", container_id).stdout)[0]["NetworkSettings"][
        "Networks"
    ]
    address = networks["kernel-next"]["IPAddress"]

    assert f"ip daddr 127.0.0.1 tcp dport 18303 dnat to {address}:8080" in _dnat_rules(daemon)
    assert _reply(daemon, 18303) == b"hi\n"
    daemon.ketch("rm", "-f", container_id)
    daemon.ketch("network", "rm", "kernel-next")


def test_kernel_rules_reject_ipv6_host(daemon: KetchDaemon) -> None:
    created = daemon.ketch("create", "-p", "[::1]:18304:80", "busybox", "sleep", "60")
    if created.returncode == 0:
        daemon.container_ids.add(created.stdout.strip())

    assert created.returncode != 0
    assert "IPv6 host address ::1" in created.stderr
    assert "needs the userland proxy" in created.stderr
    assert _dnat_rules(daemon) == []
    listed = daemon.ketch("ps", "-aq")
    assert listed.stdout.strip() == ""
