"""The bridge driver on its own, run by a child process inside a network namespace that
the test makes, so that its bridge and veths never touch the host's network."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator

import pytest

from support.netns import NetworkNamespace, create_namespace, delete_namespace

# Run inside the namespace: connect two containers to ``bridge``, then make a user-defined
# network and connect one of them to it as well. Try the errors, disconnect, let remove_stale
# drop the rest, remove the networks, and report what exists at each step.
SCENARIO = textwrap.dedent(
    """
    import asyncio, json, sqlite3, sys
    from ipaddress import IPv4Address, IPv4Network
    from pathlib import Path
    from types import SimpleNamespace
    from pyroute2 import IPRoute
    from ketch.engine.networking import ContainerNetworking
    from ketch.errors import KetchError
    from ketch.network import links
    from ketch.network.bridge import NetworkRequest, veth_name
    from ketch.network.namespaces import run_in_namespace

    class Recorder:
        def __init__(self):
            self.calls = []
        async def network_up(self, network):
            self.calls.append(["up", network.name])
        async def network_down(self, network):
            self.calls.append(["down", network.name])

    def link_names():
        with IPRoute() as ipr:
            return sorted(link.get("ifname") for link in ipr.get_links())

    def interfaces():
        with IPRoute() as ipr:
            return {
                link.get("ifname"): {
                    "mtu": link.get("mtu"),
                    "addresses": [
                        a.get("address") for a in ipr.get_addr(index=link["index"], family=2)
                    ],
                }
                for link in ipr.get_links()
            }

    def container(letter, hostname):
        return SimpleNamespace(
            id=letter * 64, name="/" + hostname, host_config={"NetworkMode": "default"},
            config={"Hostname": hostname}, network_endpoints={}, running=True,
        )

    async def error_of(coroutine):
        try:
            await coroutine
        except KetchError as error:
            return type(error).__name__ + ": " + str(error)
        return "no error"

    async def main(root):
        db = sqlite3.connect(":memory:", isolation_level=None)
        networking = ContainerNetworking(db, root)
        driver = networking.driver
        recorder = Recorder()
        networking.services.append(recorder)
        hosts = root / "hosts"
        both = await asyncio.gather(driver.default_network(), driver.default_network())
        first, second = container("a", "first"), container("b", "second")
        await networking.connect_container(first, hosts, lambda _: None)
        await networking.connect_container(second, hosts, lambda _: None)
        report = {"first": first.network_endpoints["bridge"]}
        report["default_ids"] = sorted({network.id for network in both})
        report["second"] = second.network_endpoints["bridge"]
        await networking.connect_container(first, hosts, lambda _: None)
        report["again"] = first.network_endpoints["bridge"]
        bridge = networking.find_network("bridge")
        request = NetworkRequest(
            name="backend", subnet=IPv4Network("10.55.0.0/24"),
            ip_range=IPv4Network("10.55.0.128/25"), mtu=1400, internal=True,
        )
        backend = await driver.create_network(request)
        report["overlap"] = await error_of(
            driver.create_network(NetworkRequest(name="other", subnet=IPv4Network("10.55.0.0/16")))
        )
        report["duplicate"] = await error_of(driver.create_network(request))
        await networking.connect_network(first, backend, {"Aliases": ["db"]}, hosts)
        report["backend"] = first.network_endpoints["backend"]
        report["connect_twice"] = await error_of(
            networking.connect_network(first, backend, {}, hosts)
        )
        report["aliases"] = [list(e.aliases) for e in networking.endpoints(backend.id)]
        report["links"] = await asyncio.to_thread(link_names)
        report["inside"] = run_in_namespace(driver.namespace_path("a" * 64), interfaces)
        report["hosts"] = hosts.read_text()
        report["remove_in_use"] = await error_of(driver.remove_network(backend))
        report["remove_default"] = await error_of(driver.remove_network(bridge))
        await networking.disconnect_network(first, backend)
        report["inside_after"] = sorted(
            run_in_namespace(driver.namespace_path("a" * 64), interfaces)
        )
        # A veth that a crash left without a record must not block the next connect.
        leftover = veth_name("c" * 64, bridge.id)
        own_namespace = Path("/proc/self/ns/net")
        await asyncio.to_thread(links.add_veth, leftover, "kleft", "ketch0", own_namespace)
        third = container("c", "third")
        await networking.connect_container(third, hosts, lambda _: None)
        report["after_leftover"] = third.network_endpoints["bridge"]
        await networking.disconnect("a" * 64)
        await networking.remove_stale(set())
        await driver.remove_network(backend)
        await asyncio.to_thread(links.delete_link, "ketch0")
        report["services"] = recorder.calls
        report["links_after"] = await asyncio.to_thread(link_names)
        report["netns_after"] = sorted(p.name for p in (root / "netns").iterdir())
        report["mounts_after"] = open("/proc/self/mountinfo").read().count(str(root))
        print(json.dumps(report))

    asyncio.run(main(Path(sys.argv[1])))
    """
)


@pytest.fixture(scope="module")
def namespace() -> Iterator[NetworkNamespace]:
    made = create_namespace("ketch-netdrv")
    try:
        yield made
    finally:
        delete_namespace(made)


@pytest.fixture(scope="module")
def report(
    namespace: NetworkNamespace, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, object]:
    tmp_path = tmp_path_factory.mktemp("netdrv")
    command = namespace.command([sys.executable, "-c", SCENARIO, str(tmp_path)])
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    finally:
        for path in (tmp_path / "netns").glob("*"):
            subprocess.run(["umount", "-l", str(path)], capture_output=True)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_driver_default_made_once(report: dict[str, list[str]]) -> None:
    assert len(report["default_ids"]) == 1


def test_driver_addresses_differ(report: dict[str, dict[str, str]]) -> None:
    assert report["first"]["IPAddress"] != report["second"]["IPAddress"]


def test_driver_reconnect_keeps_address(report: dict[str, dict[str, str]]) -> None:
    assert report["again"]["IPAddress"] == report["first"]["IPAddress"]


def test_driver_makes_bridges_and_veths(report: dict[str, list[str]]) -> None:
    assert "ketch0" in report["links"]
    assert report["links"].count("br-" + report["backend"]["NetworkID"][:12]) == 1
    assert sum(name.startswith("vaaaaaaa") for name in report["links"]) == 2
    assert sum(name.startswith("vbbbbbbb") for name in report["links"]) == 1


def test_driver_hosts_lines(report: dict[str, str]) -> None:
    assert report["hosts"].count("\tfirst\n") == 2


def test_driver_second_network_is_eth1(report: dict[str, dict[str, dict[str, object]]]) -> None:
    assert report["inside"]["eth1"]["addresses"] == ["10.55.0.128"]
    assert report["inside"]["eth1"]["mtu"] == 1400
    assert report["inside"]["eth0"]["addresses"] == [report["first"]["IPAddress"]]


def test_driver_ip_range_and_inspect(report: dict[str, dict[str, object]]) -> None:
    assert report["backend"]["IPAddress"] == "10.55.0.128"
    assert report["backend"]["IPPrefixLen"] == 24
    assert report["backend"]["Aliases"] == ["db"]
    assert report["backend"]["Gateway"] == ""  # internal: no route out


def test_driver_stores_aliases(report: dict[str, object]) -> None:
    assert report["aliases"] == [["db"]]


def test_driver_disconnect_removes_eth1(report: dict[str, list[str]]) -> None:
    assert report["inside_after"] == ["eth0", "lo"]


def test_driver_overlap_names_both(report: dict[str, str]) -> None:
    assert report["overlap"].startswith("Forbidden: Pool overlaps")
    assert "10.55.0.0/24 of network backend" in report["overlap"]


def test_driver_duplicate_name(report: dict[str, str]) -> None:
    assert report["duplicate"] == "Conflict: network with name backend already exists"


def test_driver_connect_twice_forbidden(report: dict[str, str]) -> None:
    assert "already exists in network backend" in report["connect_twice"]


def test_driver_remove_in_use_conflict(report: dict[str, str]) -> None:
    assert report["remove_in_use"].startswith("Conflict:")
    assert "has active endpoints" in report["remove_in_use"]


def test_driver_remove_default_forbidden(report: dict[str, str]) -> None:
    assert "pre-defined network" in report["remove_default"]


def test_driver_services_told(report: dict[str, list[list[str]]]) -> None:
    assert report["services"] == [["up", "bridge"], ["up", "backend"], ["down", "backend"]]


def test_driver_cleanup_leaves_nothing(report: dict[str, object]) -> None:
    assert report["links_after"] == ["lo"]
    assert report["netns_after"] == []
    assert report["mounts_after"] == 0


def test_driver_connect_over_leftover_veth(report: dict[str, dict[str, str]]) -> None:
    assert report["after_leftover"]["IPAddress"]
