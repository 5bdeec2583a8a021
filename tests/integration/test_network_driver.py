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

# Run inside the namespace: connect two containers, report what exists, try to remove the
# network in use, connect a third over a leftover veth, disconnect one, let remove_stale
# drop the others, remove the network, and report again.
SCENARIO = textwrap.dedent(
    """
    import asyncio, json, sqlite3, sys
    from pathlib import Path
    from pyroute2 import IPRoute
    from ketch.engine.networking import ContainerNetworking
    from ketch.errors import Conflict

    def link_names():
        with IPRoute() as ipr:
            return sorted(link.get("ifname") for link in ipr.get_links())

    def add_leftover_veth():
        with IPRoute() as ipr:
            ipr.link("add", ifname="veth" + "c" * 11, kind="veth", peer={"ifname": "kpleft"})

    async def main(root):
        db = sqlite3.connect(":memory:", isolation_level=None)
        networking = ContainerNetworking(db, root)
        hosts = root / "hosts"
        first = await networking.connect("a" * 64, "first", hosts)
        second = await networking.connect("b" * 64, "second", hosts)
        again = await networking.connect("a" * 64, "first", hosts)
        report = {
            "first": first["bridge"],
            "second": second["bridge"],
            "again": again["bridge"],
            "links": await asyncio.to_thread(link_names),
            "hosts": hosts.read_text(),
        }
        try:
            await networking.driver.remove_network("bridge")
            report["remove_in_use"] = "removed"
        except Conflict as error:
            report["remove_in_use"] = str(error)
        # A veth that a crash left without a record must not block the next connect.
        await asyncio.to_thread(add_leftover_veth)
        report["after_leftover"] = (await networking.connect("c" * 64, "third", hosts))["bridge"]
        await networking.disconnect("a" * 64)
        await networking.remove_stale(set())
        await networking.driver.remove_network("bridge")
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


def test_driver_addresses_differ(report: dict[str, dict[str, str]]) -> None:
    assert report["first"]["IPAddress"] != report["second"]["IPAddress"]


def test_driver_reconnect_keeps_address(report: dict[str, dict[str, str]]) -> None:
    assert report["again"]["IPAddress"] == report["first"]["IPAddress"]


def test_driver_makes_bridge_and_veths(report: dict[str, list[str]]) -> None:
    assert "ketch0" in report["links"]
    assert "veth" + "a" * 11 in report["links"]
    assert "veth" + "b" * 11 in report["links"]


def test_driver_hosts_lines(report: dict[str, str]) -> None:
    assert report["hosts"].count("\tfirst\n") == 1


def test_driver_cleanup_leaves_nothing(report: dict[str, object]) -> None:
    assert report["links_after"] == ["lo"]
    assert report["netns_after"] == []
    assert report["mounts_after"] == 0


def test_driver_remove_in_use_conflict(report: dict[str, str]) -> None:
    assert "has active endpoints" in report["remove_in_use"]


def test_driver_connect_over_leftover_veth(report: dict[str, dict[str, str]]) -> None:
    assert report["after_leftover"]["IPAddress"]
