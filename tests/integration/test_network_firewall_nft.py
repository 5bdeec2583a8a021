"""ketch's nftables table, applied for real, only inside network namespaces the tests make."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import subprocess
import time
from collections.abc import Iterator
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest

from ketch.network.firewall import Firewall
from ketch.network.store import Network
from support.daemon import KetchDaemon
from support.netns import NetworkNamespace, entered, network_namespace
from support.network_leftovers import no_network_leftovers  # noqa: F401

OPEN = Network(
    id="a" * 64,
    name="front",
    driver="bridge",
    subnet=IPv4Network("10.201.0.0/24"),
    gateway=IPv4Address("10.201.0.1"),
    bridge="br-k6cfront",
)
INTERNAL = Network(
    id="b" * 64,
    name="back",
    driver="bridge",
    subnet=IPv4Network("10.202.0.0/24"),
    gateway=IPv4Address("10.202.0.1"),
    bridge="br-k6cback",
    internal=True,
)


def _table(namespace: NetworkNamespace, name: str = "ketch") -> list[dict] | None:
    """Return the rules of table ``ip <name>`` in the namespace as nft's JSON, or None
    without it."""
    listed = subprocess.run(
        namespace.command(["nft", "-j", "list", "table", "ip", name]),
        capture_output=True,
        text=True,
    )
    if listed.returncode != 0:
        return None
    return [item["rule"] for item in json.loads(listed.stdout)["nftables"] if "rule" in item]


def _masqueraded_subnets(rules: list[dict]) -> set[str]:
    subnets = set()
    for rule in rules:
        if not any("masquerade" in expression for expression in rule["expr"]):
            continue
        for expression in rule["expr"]:
            right = expression.get("match", {}).get("right")
            if isinstance(right, dict) and "prefix" in right:
                prefix = right["prefix"]
                subnets.add(f"{prefix['addr']}/{prefix['len']}")
    return subnets


def _run_firewall(
    namespace: NetworkNamespace, steps: list[tuple[str, Network]], forward: Path
) -> None:
    async def scenario() -> None:
        firewall = Firewall(ip_forward_path=forward)
        for action, network in steps:
            if action == "up":
                await firewall.network_up(network)
            else:
                await firewall.network_down(network)

    if not forward.exists():
        forward.write_text("0\n")
    # nft is started from this thread, so it runs inside the namespace.
    with entered(namespace):
        asyncio.run(scenario())


@pytest.fixture
def namespace() -> Iterator[NetworkNamespace]:
    with network_namespace("ketch-fw") as made:
        yield made


def test_firewall_masquerades_subnet(namespace: NetworkNamespace, tmp_path: Path) -> None:
    forward = tmp_path / "ip_forward"
    forward.write_text("0\n")
    _run_firewall(namespace, [("up", OPEN)], forward)
    rules = _table(namespace)
    assert rules is not None
    assert _masqueraded_subnets(rules) == {"10.201.0.0/24"}
    assert forward.read_text() == "1\n"


def test_firewall_internal_only_drops(namespace: NetworkNamespace, tmp_path: Path) -> None:
    _run_firewall(namespace, [("up", INTERNAL)], tmp_path / "ip_forward")
    rules = _table(namespace)
    assert rules is not None
    assert _masqueraded_subnets(rules) == set()
    verdicts = [next(iter(rule["expr"][-1])) for rule in rules]
    assert verdicts == ["drop", "drop"]


def test_firewall_down_removes_rules(namespace: NetworkNamespace, tmp_path: Path) -> None:
    forward = tmp_path / "ip_forward"
    _run_firewall(namespace, [("up", OPEN), ("up", INTERNAL), ("down", OPEN)], forward)
    rules = _table(namespace)
    assert rules is not None
    assert _masqueraded_subnets(rules) == set()


def test_firewall_last_down_deletes_table(namespace: NetworkNamespace, tmp_path: Path) -> None:
    _run_firewall(namespace, [("up", OPEN), ("down", OPEN)], tmp_path / "ip_forward")
    assert _table(namespace) is None


def test_ketchd_masquerades_bridge(daemon: KetchDaemon) -> None:
    result = daemon.ketch("run", "--rm", "busybox", "true")
    assert result.returncode == 0, result.stderr
    address = subprocess.run(
        daemon.namespace.command(
            ["ip", "-o", "-4", "addr", "show", daemon.instance.default_bridge]
        ),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()[3]
    subnet = str(ipaddress.IPv4Interface(address).network)

    rules = _table(daemon.namespace, daemon.instance.table_name)
    assert rules is not None
    assert subnet in _masqueraded_subnets(rules)
    forwarding = subprocess.run(
        daemon.namespace.command(["cat", "/proc/sys/net/ipv4/ip_forward"]),
        capture_output=True,
        text=True,
        check=True,
    )
    assert forwarding.stdout.strip() == "1"


def test_ketchd_network_rules_follow_network(daemon: KetchDaemon) -> None:
    created = daemon.docker("network", "create", "--subnet", "10.210.0.0/24", "egress-net")
    assert created.returncode == 0, created.stderr
    rules = _table(daemon.namespace, daemon.instance.table_name)
    assert rules is not None
    assert "10.210.0.0/24" in _masqueraded_subnets(rules)

    removed = daemon.docker("network", "rm", "egress-net")
    assert removed.returncode == 0, removed.stderr
    rules = _table(daemon.namespace, daemon.instance.table_name) or []
    assert "10.210.0.0/24" not in _masqueraded_subnets(rules)


def test_ketchd_internal_network_drops(daemon: KetchDaemon) -> None:
    created = daemon.docker(
        "network", "create", "--internal", "--subnet", "10.211.0.0/24", "closed-net"
    )
    assert created.returncode == 0, created.stderr
    try:
        rules = _table(daemon.namespace, daemon.instance.table_name)
        assert rules is not None
        assert "10.211.0.0/24" not in _masqueraded_subnets(rules)
        comments = [rule.get("comment") for rule in rules]
        assert comments.count("network closed-net") == 2
    finally:
        daemon.docker("network", "rm", "closed-net")


def _connects(daemon: KetchDaemon, argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        daemon.namespace.command(argv), capture_output=True, text=True, timeout=60
    )


def test_ketchd_icc_false_isolates_containers(daemon: KetchDaemon) -> None:
    created = daemon.docker(
        "network", "create", "--subnet", "10.212.0.0/24",
        "-o", "com.docker.network.bridge.enable_icc=false", "isolated-net",
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    server = ""
    try:
        started = daemon.ketch(
            "run", "-d", "--network", "isolated-net", "--ip", "10.212.0.10", "busybox",
            "sh", "-c", "while true; do echo pong | nc -l -p 7000; done",
        )  # fmt: skip
        assert started.returncode == 0, started.stderr
        server = started.stdout.strip()
        daemon.container_ids.add(server)

        # The server replies to ketchd's namespace, which reaches it from the bridge's own side.
        from_host = ""
        for _ in range(100):
            from_host = _connects(daemon, ["busybox", "nc", "-w", "5", "10.212.0.10", "7000"])
            if "pong" in from_host.stdout:
                break
            time.sleep(0.2)
        assert "pong" in from_host.stdout

        client = daemon.ketch(
            "run", "--rm", "--network", "isolated-net", "busybox",
            "sh", "-c", "ping -c 1 -W 5 10.212.0.1 && nc -w 3 10.212.0.10 7000",
        )  # fmt: skip
        assert "1 packets received" in client.stdout
        assert "pong" not in client.stdout
        assert client.returncode != 0
    finally:
        if server:
            daemon.ketch("rm", "-f", server)
        daemon.docker("network", "rm", "isolated-net")
    assert "10.212.0.0" not in _connects(daemon, ["nft", "list", "ruleset"]).stdout
