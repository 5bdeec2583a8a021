"""User-defined networks through docker-py against a real ketchd, inside the test's network
namespace: create, list, inspect, connect, disconnect, remove and prune, and containers
on a named network talking TCP by address."""

from __future__ import annotations

import ipaddress
import subprocess
import time
from collections.abc import Iterator

import docker
import docker.errors
import docker.types
import pytest

from support.daemon import KetchDaemon
from support.network_leftovers import no_network_leftovers  # noqa: F401


@pytest.fixture
def network(client: docker.DockerClient) -> Iterator[docker.models.networks.Network]:
    pool = docker.types.IPAMPool(
        subnet="10.77.0.0/24", gateway="10.77.0.254", iprange="10.77.0.128/25"
    )
    created = client.networks.create(
        "web",
        driver="bridge",
        ipam=docker.types.IPAMConfig(pool_configs=[pool]),
        labels={"team": "a"},
        options={"com.docker.network.driver.mtu": "1400"},
    )
    try:
        yield created
    finally:
        for container in client.containers.list(all=True):
            container.remove(force=True)
        try:
            created.remove()
        except docker.errors.NotFound:
            pass


def _links(daemon: KetchDaemon) -> list[str]:
    output = subprocess.run(
        daemon.namespace.command(["ip", "-o", "link"]), capture_output=True, text=True
    ).stdout
    return [line.split(":")[1].strip().split("@")[0] for line in output.splitlines()]


def _run(client: docker.DockerClient, *command: str, **options: object) -> object:
    return client.containers.run("busybox", list(command), detach=True, **options)


def _address_of(container: object, network: str) -> str:
    container.reload()  # type: ignore[attr-defined]
    return container.attrs["NetworkSettings"]["Networks"][network]["IPAddress"]  # type: ignore[attr-defined]


def test_network_create_fields(network: docker.models.networks.Network) -> None:
    attrs = network.attrs
    assert attrs["Name"] == "web"
    assert attrs["Driver"] == "bridge"
    assert attrs["IPAM"]["Config"] == [
        {"Subnet": "10.77.0.0/24", "Gateway": "10.77.0.254", "IPRange": "10.77.0.128/25"}
    ]
    assert attrs["Labels"] == {"team": "a"}
    assert attrs["Options"]["com.docker.network.driver.mtu"] == "1400"


def test_network_bridge_named_by_id(
    daemon: KetchDaemon, network: docker.models.networks.Network
) -> None:
    assert "br-" + network.id[:12] in _links(daemon)


def test_network_list_and_filters(
    client: docker.DockerClient, network: docker.models.networks.Network
) -> None:
    names = {n.name for n in client.networks.list()}
    assert {"bridge", "host", "none", "web"} <= names
    assert [n.name for n in client.networks.list(filters={"label": "team=a"})] == ["web"]
    assert [n.name for n in client.networks.list(filters={"type": "custom"})] == ["web"]
    assert client.networks.list(names=["nothing-like-this"]) == []


def test_network_default_bridge_options(client: docker.DockerClient, daemon: KetchDaemon) -> None:
    options = client.networks.get("bridge").attrs["Options"]
    assert options["com.docker.network.bridge.default_bridge"] == "true"
    assert options["com.docker.network.bridge.name"] == daemon.instance.default_bridge


def test_network_name_filter_not_regex(
    client: docker.DockerClient, network: docker.models.networks.Network
) -> None:
    assert client.networks.list(names=["we"])[0].name == "web"
    assert client.networks.list(names=["(unclosed"]) == []


def test_network_get_by_prefix(
    client: docker.DockerClient, network: docker.models.networks.Network
) -> None:
    assert client.networks.get(network.id[:10]).name == "web"


def test_network_overlap_forbidden(
    client: docker.DockerClient, network: docker.models.networks.Network
) -> None:
    pool = docker.types.IPAMPool(subnet="10.77.0.0/16")
    with pytest.raises(docker.errors.APIError) as caught:
        client.networks.create("other", ipam=docker.types.IPAMConfig(pool_configs=[pool]))
    assert caught.value.status_code == 403
    assert "10.77.0.0/24 of network web" in str(caught.value)


def test_network_host_route_overlap(daemon: KetchDaemon, client: docker.DockerClient) -> None:
    route = ["ip", "route", "add", "10.96.5.0/24", "dev", "lo"]
    subprocess.run(daemon.namespace.command(route), check=True)
    try:
        pool = docker.types.IPAMPool(subnet="10.96.0.0/16")
        with pytest.raises(docker.errors.APIError) as caught:
            client.networks.create("routed", ipam=docker.types.IPAMConfig(pool_configs=[pool]))
    finally:
        route[2] = "del"
        subprocess.run(daemon.namespace.command(route), check=True)
    assert caught.value.status_code == 403
    assert "overlaps the host's route to 10.96.5.0/24" in str(caught.value)


def test_network_automatic_subnets_disjoint(
    daemon: KetchDaemon, client: docker.DockerClient
) -> None:
    route = ["ip", "route", "add", "172.19.0.0/16", "dev", "lo"]
    subprocess.run(daemon.namespace.command(route), check=True)
    created = []
    try:
        created = [client.networks.create(name) for name in ("auto1", "auto2")]
    finally:
        route[2] = "del"
        subprocess.run(daemon.namespace.command(route), check=True)
    subnets = [ipaddress.IPv4Network(n.attrs["IPAM"]["Config"][0]["Subnet"]) for n in created]
    subnets.append(
        ipaddress.IPv4Network(client.networks.get("bridge").attrs["IPAM"]["Config"][0]["Subnet"])
    )
    for network in created:
        network.remove()
    assert ipaddress.IPv4Network("172.19.0.0/16") not in subnets
    for index, subnet in enumerate(subnets):
        for other in subnets[index + 1 :]:
            assert not subnet.overlaps(other)


def test_network_duplicate_name(
    client: docker.DockerClient, network: docker.models.networks.Network
) -> None:
    with pytest.raises(docker.errors.APIError) as caught:
        client.networks.create("web")
    assert caught.value.status_code == 409
    assert "network with name web already exists" in str(caught.value)


def test_network_missing_not_found(client: docker.DockerClient) -> None:
    with pytest.raises(docker.errors.NotFound, match="network missing not found"):
        client.networks.get("missing")


def test_network_remove_predefined(client: docker.DockerClient) -> None:
    for name in ("bridge", "host", "none"):
        with pytest.raises(docker.errors.APIError) as caught:
            client.networks.get(name).remove()
        assert caught.value.status_code == 403


def test_network_tcp_by_address(
    client: docker.DockerClient, network: docker.models.networks.Network
) -> None:
    server = _run(client, "sh", "-c", "echo pong | nc -l -p 7000", network="web")
    address = _address_of(server, "web")
    assert ipaddress.IPv4Address(address) in ipaddress.IPv4Network("10.77.0.128/25")
    reply = b""
    deadline = time.monotonic() + 30
    while b"pong" not in reply and time.monotonic() < deadline:
        reply = client.containers.run(
            "busybox", ["nc", "-w", "5", address, "7000"], network="web", remove=True
        )
        if b"pong" not in reply:
            time.sleep(0.2)
    assert b"pong" in reply


def test_network_tcp_by_name(
    client: docker.DockerClient, network: docker.models.networks.Network
) -> None:
    _run(client, "sh", "-c", "echo pong | nc -l -p 7000", network="web", name="server")
    reply = b""
    deadline = time.monotonic() + 30
    while b"pong" not in reply and time.monotonic() < deadline:
        reply = client.containers.run(
            "busybox", ["nc", "-w", "5", "server", "7000"], network="web", remove=True
        )
        if b"pong" not in reply:
            time.sleep(0.2)
    assert b"pong" in reply


def test_network_mtu_on_eth0(
    client: docker.DockerClient, network: docker.models.networks.Network
) -> None:
    output = client.containers.run(
        "busybox", ["cat", "/sys/class/net/eth0/mtu"], network="web", remove=True
    )
    assert output.strip() == b"1400"


def test_network_rm_in_use_conflict(
    client: docker.DockerClient, network: docker.models.networks.Network
) -> None:
    _run(client, "sleep", "60", network="web")
    with pytest.raises(docker.errors.APIError) as caught:
        network.remove()
    assert caught.value.status_code == 409
    assert "has active endpoints" in str(caught.value)


def test_network_connect_running(
    client: docker.DockerClient, network: docker.models.networks.Network
) -> None:
    container = _run(client, "sleep", "60")
    network.connect(container, aliases=["db"], ipv4_address="10.77.0.200")
    result = container.exec_run(["ip", "-o", "-4", "addr", "show", "eth1"])  # type: ignore[attr-defined]
    assert b"10.77.0.200/24" in result.output
    container.reload()  # type: ignore[attr-defined]
    settings = container.attrs["NetworkSettings"]["Networks"]  # type: ignore[attr-defined]
    assert settings["web"]["Aliases"] == ["db"]
    assert settings["web"]["IPAMConfig"] == {"IPv4Address": "10.77.0.200"}
    network.reload()
    assert container.id in network.attrs["Containers"]  # type: ignore[attr-defined]
    assert network.attrs["Containers"][container.id]["IPv4Address"] == "10.77.0.200/24"  # type: ignore[attr-defined]


def test_network_connect_before_start(
    client: docker.DockerClient, network: docker.models.networks.Network
) -> None:
    container = client.containers.create("busybox", ["sleep", "60"])
    network.connect(container, aliases=["late"])
    container.start()
    result = container.exec_run(["ip", "-o", "-4", "addr", "show", "eth1"])
    assert b"10.77.0.128/24" in result.output
    container.reload()
    assert container.attrs["NetworkSettings"]["Networks"]["web"]["Aliases"] == ["late"]


def test_network_disconnect_running(
    client: docker.DockerClient, network: docker.models.networks.Network
) -> None:
    container = _run(client, "sleep", "60", network="web")
    client.networks.get("bridge").connect(container)
    network.disconnect(container)
    result = container.exec_run(["ip", "-o", "link"])  # type: ignore[attr-defined]
    assert b"eth1" in result.output
    assert b"eth0" not in result.output
    container.reload()  # type: ignore[attr-defined]
    assert list(container.attrs["NetworkSettings"]["Networks"]) == ["bridge"]  # type: ignore[attr-defined]
    routes = container.exec_run(["ip", "route"]).output  # type: ignore[attr-defined]
    assert b"default via" in routes


def test_network_prune_removes_unused(client: docker.DockerClient) -> None:
    client.networks.create("unused", labels={"prune": "yes"})
    pruned = client.networks.prune(filters={"label": "prune=yes"})
    assert pruned["NetworksDeleted"] == ["unused"]


def test_network_removal_leaves_nothing(daemon: KetchDaemon, client: docker.DockerClient) -> None:
    created = client.networks.create("gone")
    container = _run(client, "sleep", "60", network="gone")
    container.remove(force=True)  # type: ignore[attr-defined]
    created.remove()
    links = _links(daemon)
    assert "br-" + created.id[:12] not in links
    assert not any(name.startswith("v" + container.id[:7]) for name in links)  # type: ignore[attr-defined]
    assert not (daemon.exec_root / "netns" / container.id).exists()  # type: ignore[attr-defined]
