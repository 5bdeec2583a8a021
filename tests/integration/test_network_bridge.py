"""Bridge networking against a real ketchd, all inside the test's network namespace."""

from __future__ import annotations

import ipaddress
import subprocess
import time

from support.daemon import KetchDaemon
from support.network_leftovers import no_network_leftovers  # noqa: F401


def _links(daemon: KetchDaemon) -> str:
    return subprocess.run(
        daemon.namespace.command(["ip", "-o", "link"]), capture_output=True, text=True
    ).stdout


def _bridge_subnet(daemon: KetchDaemon) -> ipaddress.IPv4Network:
    output = subprocess.run(
        daemon.namespace.command(
            ["ip", "-o", "-4", "addr", "show", daemon.instance.default_bridge]
        ),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return ipaddress.IPv4Interface(output.split()[3]).network


def _run_detached(daemon: KetchDaemon, *args: str) -> str:
    result = daemon.ketch("run", "-d", "busybox", *args)
    assert result.returncode == 0, result.stderr
    container_id = result.stdout.strip()
    daemon.container_ids.add(container_id)
    return container_id


def test_bridge_eth0_in_subnet(daemon: KetchDaemon) -> None:
    result = daemon.ketch("run", "--rm", "busybox", "ip", "-o", "-4", "addr", "show", "eth0")
    assert result.returncode == 0, result.stderr
    address = ipaddress.IPv4Interface(result.stdout.split()[3])
    assert address.ip in _bridge_subnet(daemon)


def test_bridge_hosts_names_address(daemon: KetchDaemon) -> None:
    result = daemon.ketch("run", "--rm", "--hostname", "web", "busybox", "cat", "/etc/hosts")
    assert result.returncode == 0, result.stderr
    assert "\tweb\n" in result.stdout


def test_bridge_reaches_other_container(daemon: KetchDaemon) -> None:
    server = _run_detached(daemon, "sh", "-c", "echo pong | nc -l -p 7000")
    address = ""
    deadline = time.monotonic() + 20
    while not address and time.monotonic() < deadline:
        shown = daemon.ketch("exec", server, "ip", "-o", "-4", "addr", "show", "eth0")
        if shown.returncode == 0 and shown.stdout.split():
            address = str(ipaddress.IPv4Interface(shown.stdout.split()[3]).ip)
    assert address, "the server container has no eth0 address"

    reply = ""
    while "pong" not in reply and time.monotonic() < deadline:
        result = daemon.ketch("run", "--rm", "busybox", "nc", "-w", "5", address, "7000")
        reply = result.stdout
        if "pong" not in reply:
            time.sleep(0.2)
    assert "pong" in reply
    daemon.ketch("rm", "-f", server)


def test_bridge_remove_leaves_nothing(daemon: KetchDaemon) -> None:
    container_id = _run_detached(daemon, "sleep", "60")
    # Host-side veths are named v<container id[:7]><network id[:7]>.
    assert " v" + container_id[:7] in _links(daemon)

    removed = daemon.ketch("rm", "-f", container_id)
    assert removed.returncode == 0, removed.stderr
    assert " v" + container_id[:7] not in _links(daemon)
    assert not (daemon.exec_root / "netns" / container_id).exists()
    mounts = open("/proc/self/mountinfo").read()
    assert f"netns/{container_id}" not in mounts


def test_inspect_shows_bridge_address(daemon: KetchDaemon) -> None:
    container_id = _run_detached(daemon, "sleep", "60")
    shown = daemon.ketch("inspect", "-f", "{{.NetworkSettings.IPAddress}}", container_id)
    assert shown.returncode == 0, shown.stderr
    assert ipaddress.IPv4Address(shown.stdout.strip()) in _bridge_subnet(daemon)
    daemon.ketch("rm", "-f", container_id)


def test_docker_cli_bridge_address(daemon: KetchDaemon) -> None:
    result = daemon.docker("run", "--rm", "busybox", "ip", "-o", "-4", "addr", "show", "eth0")
    assert result.returncode == 0, result.stderr
    address = ipaddress.IPv4Interface(result.stdout.split()[3])
    assert address.ip in _bridge_subnet(daemon)


def test_bridge_restart_keeps_address(daemon: KetchDaemon) -> None:
    container_id = _run_detached(daemon, "sleep", "60")
    before = daemon.ketch("inspect", "-f", "{{.NetworkSettings.IPAddress}}", container_id)
    stopped = daemon.ketch("stop", "-t", "0", container_id)
    assert stopped.returncode == 0, stopped.stderr

    started = daemon.ketch("start", container_id)
    assert started.returncode == 0, started.stderr
    shown = daemon.ketch("exec", container_id, "ip", "-o", "-4", "addr", "show", "eth0")
    assert shown.returncode == 0, shown.stderr
    assert str(ipaddress.IPv4Interface(shown.stdout.split()[3]).ip) == before.stdout.strip()
    daemon.ketch("rm", "-f", container_id)
