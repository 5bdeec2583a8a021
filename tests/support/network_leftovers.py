"""The check that a network test left nothing of ketch's behind in ketchd's namespace.

``network_leftovers`` lists what no container or network of the ketchd accounts for: links
marked as ketch's, pinned namespaces, subnets and dnat targets in ketch's nftables tables,
and sockets that ketchd listens on. Endpoints, namespaces and published ports belong only
to running containers, because ketchd releases them when a container stops.

Test modules that run a ketchd import the autouse fixture so that every test is checked::

    from support.network_leftovers import no_network_leftovers  # noqa: F401
"""

from __future__ import annotations

import ipaddress
import json
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from support.daemon import KetchDaemon, ketch_ok

BRIDGE_ALIAS_PREFIX = "ketch network "
VETH_ALIAS_PREFIX = "ketch endpoint "
DNS_PORT = 53
# The releases after a stop run in the background, so the check waits for them.
SETTLE_SECONDS = 30.0

SUBNET_PATTERN = re.compile(r"ip [sd]addr (\d+\.\d+\.\d+\.\d+/\d+)")
DNAT_PATTERN = re.compile(r"dnat to (\d+\.\d+\.\d+\.\d+):\d+")
LISTEN_PATTERN = re.compile(r"^(\S+)\s+\S+\s+\d+\s+\d+\s+(\S+):(\d+)\s.*pid=(\d+),")


@dataclass
class Accounted:
    """The networks, running containers, addresses and host ports in ketchd's records."""

    networks: set[str] = field(default_factory=set)
    subnets: set[str] = field(default_factory=set)
    gateways: set[str] = field(default_factory=set)
    running: set[str] = field(default_factory=set)
    addresses: set[str] = field(default_factory=set)
    host_ports: set[int] = field(default_factory=set)


def _output(daemon: KetchDaemon, argv: list[str]) -> str:
    result = subprocess.run(
        daemon.namespace.command(argv), capture_output=True, text=True, timeout=60
    )
    return result.stdout if result.returncode == 0 else ""


def _ketch_json(daemon: KetchDaemon, *args: str) -> list[dict[str, Any]]:
    output = ketch_ok(daemon, *args, timeout=120)
    return json.loads(output) if output.strip() else []


def _accounted(daemon: KetchDaemon) -> Accounted:
    accounted = Accounted()
    network_ids = daemon.ketch("network", "ls", "-q", "--no-trunc").stdout.split()
    for network in _ketch_json(daemon, "network", "inspect", *network_ids) if network_ids else []:
        accounted.networks.add(network["Id"])
        for config in network["IPAM"]["Config"] or []:
            accounted.subnets.add(config["Subnet"])
            accounted.gateways.add(config.get("Gateway", ""))

    container_ids = daemon.ketch("ps", "-aq", "--no-trunc").stdout.split()
    containers = _ketch_json(daemon, "inspect", *container_ids) if container_ids else []
    for container in containers:
        if not container["State"]["Running"]:
            continue
        accounted.running.add(container["Id"])
        mode = container["HostConfig"]["NetworkMode"]
        if mode.startswith("container:"):
            accounted.running.add(mode.removeprefix("container:"))  # its namespace is in use
        settings = container["NetworkSettings"]
        for endpoint in (settings.get("Networks") or {}).values():
            if endpoint.get("IPAddress"):
                accounted.addresses.add(endpoint["IPAddress"])
        for bindings in (settings.get("Ports") or {}).values():
            accounted.host_ports.update(int(b["HostPort"]) for b in bindings or [])
    return accounted


def _link_leftovers(daemon: KetchDaemon, accounted: Accounted) -> list[str]:
    leftovers = []
    for link in json.loads(_output(daemon, ["ip", "-j", "link"]) or "[]"):
        alias = link.get("ifalias", "")
        # An alias may start with the instance's tag, so the ids are its last fields.
        if alias.startswith(BRIDGE_ALIAS_PREFIX):
            network_id = alias.split(" ")[-1]
            if network_id not in accounted.networks:
                leftovers.append(f"bridge {link['ifname']} of a removed network")
        elif alias.startswith(VETH_ALIAS_PREFIX):
            container_id, network_id = alias.split(" ")[-2:]
            if container_id not in accounted.running or network_id not in accounted.networks:
                leftovers.append(f"veth {link['ifname']} ({alias})")
    return leftovers


def _namespace_leftovers(daemon: KetchDaemon, accounted: Accounted) -> list[str]:
    root = daemon.exec_root / "netns"
    pinned = sorted(path.name for path in root.iterdir()) if root.is_dir() else []
    return [f"pinned namespace {root / name}" for name in pinned if name not in accounted.running]


def _rule_leftovers(daemon: KetchDaemon, accounted: Accounted) -> list[str]:
    table = daemon.instance.table_name
    rules = _output(daemon, ["nft", "list", "table", "ip", table])
    rules += _output(daemon, ["nft", "list", "table", "bridge", table])
    leftovers = []
    for subnet in sorted(set(SUBNET_PATTERN.findall(rules))):
        if subnet not in accounted.subnets and not ipaddress.ip_network(subnet).is_loopback:
            leftovers.append(f"firewall rule for subnet {subnet}")
    for address in sorted(set(DNAT_PATTERN.findall(rules))):
        if address not in accounted.addresses:
            leftovers.append(f"dnat rule to {address}")
    return leftovers


def _listener_leftovers(daemon: KetchDaemon, accounted: Accounted) -> list[str]:
    leftovers = []
    pid = str(daemon.process.pid)
    for line in _output(daemon, ["ss", "-Hlntup"]).splitlines():
        match = LISTEN_PATTERN.match(line)
        if match is None or match.group(4) != pid:
            continue
        protocol, address, port = match.group(1), match.group(2).strip("[]"), int(match.group(3))
        if port == DNS_PORT and address in accounted.gateways:
            continue
        if port in accounted.host_ports:
            continue
        leftovers.append(f"ketchd listens on {protocol} {address}:{port}")
    return leftovers


def network_leftovers(daemon: KetchDaemon) -> list[str]:
    """Return ketch's network objects in ketchd's namespace that no running container or
    existing network accounts for, each described in a few words."""
    accounted = _accounted(daemon)
    return (
        _link_leftovers(daemon, accounted)
        + _namespace_leftovers(daemon, accounted)
        + _rule_leftovers(daemon, accounted)
        + _listener_leftovers(daemon, accounted)
    )


def assert_no_network_leftovers(daemon: KetchDaemon) -> None:
    """Wait until ``network_leftovers`` is empty; fail with the list after SETTLE_SECONDS."""
    deadline = time.monotonic() + SETTLE_SECONDS
    leftovers = network_leftovers(daemon)
    while leftovers and time.monotonic() < deadline:
        time.sleep(0.5)
        leftovers = network_leftovers(daemon)
    assert leftovers == [], "left behind in ketchd's namespace: " + "; ".join(leftovers)


@pytest.fixture(autouse=True)
def no_network_leftovers(request: pytest.FixtureRequest) -> Iterator[None]:
    """Check after each test that uses the ``daemon`` fixture that it left nothing behind."""
    yield
    if "daemon" not in request.fixturenames:
        return
    daemon = request.getfixturevalue("daemon")
    if daemon.process.poll() is not None:
        return  # ketchd is down, so its records cannot be read
    assert_no_network_leftovers(daemon)
