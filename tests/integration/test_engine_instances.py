"""Two ketchd instances with different data roots side by side in one network namespace.

Each instance runs two containers on its default bridge and on a user-defined network.
Then one instance is killed with SIGKILL and started again, and the other's containers must
keep their interfaces, bridges, firewall rules and traffic, because a start removes only
links of its own instance and rewrites only its own nftables tables.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from support.daemon import KetchDaemon, ketch_ok, launch_ketchd, push_base_image, stop_ketchd
from support.netns import NetworkNamespace, create_namespace, delete_namespace
from support.registry import start_registry
from support.restart import restart_ketchd

PORT = 7000
# The user-defined network of each instance, by instance index.
USER_SUBNETS = ("10.211.0.0/24", "10.212.0.0/24")
SERVER_SCRIPT = f"while true; do echo pong | nc -l -p {PORT}; done"


@dataclass
class Running:
    daemon: KetchDaemon
    server: str
    client: str


def in_namespace(namespace: NetworkNamespace, *argv: str) -> str:
    result = subprocess.run(
        namespace.command(list(argv)), capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, f"{' '.join(argv)}: {result.stderr}"
    return result.stdout


def start_containers(daemon: KetchDaemon, subnet: str) -> Running:
    """Run a server and a client, each on the default bridge and on network ``user``."""
    ketch_ok(daemon, "network", "create", "--subnet", subnet, "user")
    server = ketch_ok(daemon, "run", "-d", "busybox", "sh", "-c", SERVER_SCRIPT).strip()
    client = ketch_ok(daemon, "run", "-d", "busybox", "sleep", "1000").strip()
    for container in (server, client):
        ketch_ok(daemon, "network", "connect", "user", container)
    return Running(daemon, server, client)


@pytest.fixture(scope="module")
def instances() -> Iterator[list[Running]]:
    # Unix socket paths are limited to 108 bytes, so the roots are short and under /tmp.
    root = Path(tempfile.mkdtemp(prefix="ketch-two-", dir="/tmp"))
    namespace = create_namespace("ketch-two")
    registry = None
    daemons: list[KetchDaemon] = []
    try:
        registry = start_registry(root / "registry", netns=namespace.name)
        push_base_image(namespace, registry.address)
        started = []
        for index, subnet in enumerate(USER_SUBNETS):
            daemons.append(launch_ketchd(root / f"d{index}", namespace, registry.address))
            started.append(start_containers(daemons[-1], subnet))
        yield started
    finally:
        for daemon in daemons:
            stop_ketchd(daemon)
        if registry is not None:
            registry.stop()
        delete_namespace(namespace)
        shutil.rmtree(root, ignore_errors=True)


def address_of(instance: Running, container: str, network: str) -> str:
    template = f"{{{{.NetworkSettings.Networks.{network}.IPAddress}}}}"
    return ketch_ok(instance.daemon, "inspect", "-f", template, container).strip()


def reply_over(instance: Running, network: str) -> str:
    """Connect from the client to the server's address on ``network`` and return the reply."""
    address = address_of(instance, instance.server, network)
    reply = ""
    deadline = time.monotonic() + 30
    while "pong" not in reply and time.monotonic() < deadline:
        command = ("exec", instance.client, "nc", "-w", "5", address, str(PORT))
        reply = instance.daemon.ketch(*command).stdout
        if "pong" not in reply:
            time.sleep(0.2)
    return reply


def interfaces_of(instance: Running, container: str) -> list[str]:
    output = ketch_ok(instance.daemon, "exec", container, "ip", "-o", "link")
    return [line.split(":")[1].strip().split("@")[0] for line in output.splitlines()]


def bridge_names(instance: Running) -> list[str]:
    """Return the interface names of the instance's ``bridge`` and ``user`` networks."""
    template = '{{index .Options "com.docker.network.bridge.name"}}'
    default = ketch_ok(instance.daemon, "network", "inspect", "-f", template, "bridge").strip()
    return [default, "br-" + network_id(instance, "user")[:12]]


def network_id(instance: Running, network: str) -> str:
    return ketch_ok(instance.daemon, "network", "inspect", "-f", "{{.Id}}", network).strip()


def link_names(namespace: NetworkNamespace) -> list[str]:
    output = in_namespace(namespace, "ip", "-o", "link")
    return [line.split(":")[1].strip().split("@")[0] for line in output.splitlines()]


def table_rules(instance: Running) -> str:
    table = instance.daemon.instance.table_name
    return in_namespace(instance.daemon.namespace, "nft", "list", "table", "ip", table)


def test_instances_use_own_names(instances: list[Running]) -> None:
    first, second = instances
    assert first.daemon.instance.default_bridge != second.daemon.instance.default_bridge
    assert first.daemon.instance.table_name != second.daemon.instance.table_name
    assert bridge_names(first)[0] == first.daemon.instance.default_bridge
    assert bridge_names(second)[0] == second.daemon.instance.default_bridge


def test_instances_get_distinct_subnets(instances: list[Running]) -> None:
    first, second = instances
    template = "{{(index .IPAM.Config 0).Subnet}}"
    subnets = [
        ketch_ok(instance.daemon, "network", "inspect", "-f", template, "bridge").strip()
        for instance in (first, second)
    ]
    assert subnets[0] != subnets[1]


def test_instance_restart_spares_other(instances: list[Running]) -> None:
    first, second = instances
    namespace = first.daemon.namespace
    for network in ("bridge", "user"):
        assert "pong" in reply_over(second, network)
    bridges_before = bridge_names(second)
    rules_before = table_rules(second)

    restart_ketchd(first.daemon)

    links = link_names(namespace)
    for bridge in bridges_before:
        assert bridge in links
    assert table_rules(second) == rules_before
    for container in (second.server, second.client):
        assert "eth0" in interfaces_of(second, container)
        assert "eth1" in interfaces_of(second, container)
    for network in ("bridge", "user"):
        assert "pong" in reply_over(second, network)


def test_restarted_instance_keeps_own(instances: list[Running]) -> None:
    first, _ = instances
    restart_ketchd(first.daemon)
    for bridge in bridge_names(first):
        assert bridge in link_names(first.daemon.namespace)
    for network in ("bridge", "user"):
        assert "pong" in reply_over(first, network)


def test_instance_subnet_of_other_rejected(instances: list[Running]) -> None:
    _, second = instances
    result = second.daemon.ketch("network", "create", "--subnet", USER_SUBNETS[0], "clash")
    assert result.returncode != 0
    assert USER_SUBNETS[0] in result.stderr


def test_instance_port_of_other_rejected(instances: list[Running]) -> None:
    first, second = instances
    publish = ("run", "-d", "-p", "127.0.0.1:18080:80", "busybox", "sleep", "1000")
    owner = ketch_ok(first.daemon, *publish).strip()
    try:
        result = second.daemon.ketch(*publish)
        assert result.returncode != 0
        assert "18080" in result.stderr
    finally:
        first.daemon.ketch("rm", "-f", owner)
        leftover = second.daemon.ketch("ps", "-aq", "-f", "status=created").stdout.split()
        if leftover:
            second.daemon.ketch("rm", "-f", *leftover)
