"""The names that ketchd's name server resolves for a client (scope, running containers only,
aliases and ids), and the resolv.conf updates after a connect or disconnect."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

from ketch.engine.dnsnames import ContainerNames, HostUpstreams, ResolvConfUpdater
from ketch.engine.events import EventBus
from ketch.engine.resolvconf import DnsSettings, ResolvConfRenderer
from ketch.engine.store import ContainerPaths
from ketch.network.dns import find_addresses
from ketch.network.store import Endpoint, Network

WEB_ID = "a" * 64
DB_ID = "b" * 64
CACHE_ID = "c" * 64


def network(name: str, number: int) -> Network:
    return Network(
        id=name * 8,
        name=name,
        driver="bridge",
        subnet=IPv4Network(f"172.{number}.0.0/16"),
        gateway=IPv4Address(f"172.{number}.0.1"),
        bridge=f"br-{name}",
    )


FRONT = network("front", 20)
# ketchd's own address on the front network: in the subnet, but no container's.
GATEWAY = IPv4Address("172.20.0.1")
BACK = network("back", 21)
BRIDGE = network("bridge", 17)


def endpoint(container_id: str, net: Network, host: int, aliases: tuple[str, ...] = ()):
    address = IPv4Address(int(net.subnet.network_address) + host)
    return Endpoint(container_id, net.id, address, "02:42:00:00:00:00", "veth", aliases)


@dataclass
class FakeContainer:
    id: str
    name: str
    running: bool = True
    host_config: dict = field(default_factory=dict)
    network_endpoints: dict = field(default_factory=dict)


class FakeStore:
    def __init__(self, *containers: FakeContainer) -> None:
        self.containers = {container.id: container for container in containers}

    def get(self, container_id: str) -> FakeContainer | None:
        return self.containers.get(container_id)


class FakeNetworking:
    def __init__(self, endpoints: list[Endpoint]) -> None:
        self._endpoints = endpoints

    def networks(self) -> list[Network]:
        return [FRONT, BACK, BRIDGE]

    def endpoints(self, network_id: str) -> list[Endpoint]:
        return [e for e in self._endpoints if e.network_id == network_id]


def lookup_for(store: FakeStore, endpoints: list[Endpoint]) -> ContainerNames:
    return ContainerNames(store, FakeNetworking(endpoints))  # type: ignore[arg-type]


STORE = FakeStore(
    FakeContainer(WEB_ID, "/web"),
    FakeContainer(DB_ID, "/db"),
    FakeContainer(CACHE_ID, "/cache"),
)
ENDPOINTS = [
    endpoint(WEB_ID, FRONT, 2, ("www",)),
    endpoint(WEB_ID, BACK, 2),
    endpoint(DB_ID, BACK, 3, ("database",)),
    endpoint(CACHE_ID, FRONT, 3),
    endpoint(CACHE_ID, BRIDGE, 2),
]


def resolve(name: str, client: IPv4Address | None, queried: Network = FRONT) -> list[str]:
    records = lookup_for(STORE, ENDPOINTS)(queried, client)
    return [str(address) for address in find_addresses(records, name)]


def test_names_by_container_name() -> None:
    assert resolve("cache", GATEWAY) == ["172.20.0.3"]


def test_names_by_alias() -> None:
    assert resolve("www", GATEWAY) == ["172.20.0.2"]


def test_names_by_short_and_full_id() -> None:
    assert resolve(CACHE_ID[:12], GATEWAY) == ["172.20.0.3"]
    assert resolve(CACHE_ID, GATEWAY) == ["172.20.0.3"]


def test_names_alias_only_on_its_network() -> None:
    assert resolve("www", IPv4Address("172.21.0.3"), BACK) == []


def test_names_client_sees_all_its_networks() -> None:
    web_on_front = IPv4Address("172.20.0.2")
    assert resolve("database", web_on_front) == ["172.21.0.3"]


def test_names_other_network_hidden() -> None:
    cache_on_front = IPv4Address("172.20.0.3")
    assert resolve("db", cache_on_front) == []


def test_names_default_bridge_never_served() -> None:
    records = lookup_for(STORE, ENDPOINTS)(FRONT, GATEWAY)
    assert all(record.network_name != "bridge" for record in records)


def test_names_stopped_container_hidden() -> None:
    store = FakeStore(FakeContainer(WEB_ID, "/web", running=False), FakeContainer(DB_ID, "/db"))
    records = lookup_for(store, ENDPOINTS)(FRONT, GATEWAY)
    assert find_addresses(records, "web") == []


def test_names_follow_rename() -> None:
    store = FakeStore(FakeContainer(WEB_ID, "/web"))
    lookup = lookup_for(store, ENDPOINTS)
    store.containers[WEB_ID].name = "/frontend"
    records = lookup(FRONT, GATEWAY)
    assert find_addresses(records, "frontend") == [IPv4Address("172.20.0.2")]
    assert find_addresses(records, "web") == []


def test_upstreams_from_client_dns_option() -> None:
    store = FakeStore(FakeContainer(WEB_ID, "/web", host_config={"Dns": ["10.1.1.1"]}))
    lookup = lookup_for(store, ENDPOINTS)
    assert lookup.upstreams_of(FRONT, IPv4Address("172.20.0.2")) == [("10.1.1.1", 53)]


def test_upstreams_empty_without_dns_option() -> None:
    lookup = lookup_for(STORE, ENDPOINTS)
    assert lookup.upstreams_of(FRONT, IPv4Address("172.20.0.2")) == []


def test_upstreams_empty_for_unknown_client() -> None:
    lookup = lookup_for(STORE, ENDPOINTS)
    assert lookup.upstreams_of(FRONT, IPv4Address("172.20.9.9")) == []


class FakeEngine:
    def __init__(self, tmp_path: Path, container: object) -> None:
        self.events = EventBus()
        self.paths = ContainerPaths(tmp_path)
        self.store = FakeStore(container)  # type: ignore[arg-type]


def run_update(tmp_path: Path, container: object, action: str = "connect") -> str:
    """Publish a network event for ``container`` and return its resolv.conf afterwards."""
    host_file = tmp_path / "host-resolv.conf"
    host_file.write_text("nameserver 10.0.0.2\n")
    settings = DnsSettings(host_resolv_conf=host_file)
    engine = FakeEngine(tmp_path, container)
    path = engine.paths.directory(WEB_ID) / "resolv.conf"
    path.parent.mkdir(parents=True)
    path.write_text("nameserver 10.0.0.2\n")
    inode = path.stat().st_ino

    async def main() -> None:
        renderer = ResolvConfRenderer(settings, lambda: [FRONT, BACK, BRIDGE])
        updater = ResolvConfUpdater(engine, renderer)  # type: ignore[arg-type]
        try:
            engine.events.publish("network", action, FRONT.id, {"container": WEB_ID})
            for _ in range(10):
                await asyncio.sleep(0)
        finally:
            await updater.close()

    asyncio.run(main())
    assert path.stat().st_ino == inode, "the file was replaced, not rewritten in place"
    return path.read_text()


def test_updater_connect_names_gateway(tmp_path: Path) -> None:
    container = FakeContainer(WEB_ID, "/web")
    container.network_endpoints = {"bridge": {}, "front": {}}
    text = run_update(tmp_path, container)
    assert text == "nameserver 172.20.0.1\noptions ndots:0\n"


def test_updater_prefers_own_network(tmp_path: Path) -> None:
    container = FakeContainer(WEB_ID, "/web", host_config={"NetworkMode": "back"})
    container.network_endpoints = {"front": {}, "back": {}}
    text = run_update(tmp_path, container)
    assert text.splitlines()[0] == "nameserver 172.21.0.1"


def test_updater_disconnect_restores_default(tmp_path: Path) -> None:
    container = FakeContainer(WEB_ID, "/web", host_config={"NetworkMode": "front"})
    container.network_endpoints = {"bridge": {}}
    text = run_update(tmp_path, container, "disconnect")
    assert text == "nameserver 10.0.0.2\n"


def test_names_hidden_from_other_subnet() -> None:
    container_on_back = IPv4Address("172.21.0.3")
    assert resolve("web", container_on_back, FRONT) == []


def test_names_hidden_without_client_address() -> None:
    assert resolve("web", None) == []


def test_upstreams_default_for_unknown_client() -> None:
    lookup = ContainerNames(STORE, FakeNetworking(ENDPOINTS), lambda: [("10.0.0.2", 53)])  # type: ignore[arg-type]
    assert lookup.upstreams_of(FRONT, IPv4Address("172.20.9.9")) == [("10.0.0.2", 53)]


def test_host_upstreams_follow_file(tmp_path: Path) -> None:
    host_file = tmp_path / "resolv.conf"
    host_file.write_text("nameserver 10.0.0.2\n")
    upstreams = HostUpstreams(DnsSettings(host_resolv_conf=host_file))
    first = upstreams()
    host_file.write_text("nameserver 10.0.0.3\nnameserver 10.0.0.4\n")
    second = upstreams()
    assert first == [("10.0.0.2", 53)]
    assert second == [("10.0.0.3", 53), ("10.0.0.4", 53)]


def test_host_upstreams_prefer_dns_setting(tmp_path: Path) -> None:
    host_file = tmp_path / "resolv.conf"
    host_file.write_text("nameserver 10.0.0.2\n")
    upstreams = HostUpstreams(DnsSettings(servers=("10.9.9.9",), host_resolv_conf=host_file))
    assert upstreams() == [("10.9.9.9", 53)]


class CountingNetworking(FakeNetworking):
    """Networks and endpoints that count their reads and carry a store generation."""

    def __init__(self, endpoints: list[Endpoint]) -> None:
        super().__init__(endpoints)
        self.network_reads = 0
        self.endpoint_reads = 0
        self.generation = 0

    def networks(self) -> list[Network]:
        self.network_reads += 1
        return super().networks()

    def endpoints(self, network_id: str) -> list[Endpoint]:
        self.endpoint_reads += 1
        return super().endpoints(network_id)


def cached_lookup(store: FakeStore, networking: CountingNetworking) -> ContainerNames:
    return ContainerNames(
        store,  # type: ignore[arg-type]
        networking,  # type: ignore[arg-type]
        network_generation=lambda: networking.generation,
    )


def test_names_cached_between_queries() -> None:
    networking = CountingNetworking(ENDPOINTS)
    lookup = cached_lookup(STORE, networking)

    first = lookup(FRONT, GATEWAY)
    reads = (networking.network_reads, networking.endpoint_reads)
    second = lookup(FRONT, GATEWAY)
    lookup.upstreams_of(FRONT, IPv4Address("172.20.0.2"))

    assert second == first
    assert (networking.network_reads, networking.endpoint_reads) == reads
    assert networking.network_reads == 1


def test_names_reread_after_generation_change() -> None:
    networking = CountingNetworking(ENDPOINTS[:1])
    lookup = cached_lookup(STORE, networking)
    assert find_addresses(lookup(FRONT, GATEWAY), "cache") == []

    networking._endpoints = ENDPOINTS
    assert find_addresses(lookup(FRONT, GATEWAY), "cache") == []
    networking.generation += 1

    assert find_addresses(lookup(FRONT, GATEWAY), "cache") == [IPv4Address("172.20.0.3")]
    assert networking.network_reads == 2


def test_names_cached_follow_rename_and_stop() -> None:
    store = FakeStore(FakeContainer(WEB_ID, "/web"), FakeContainer(CACHE_ID, "/cache"))
    lookup = cached_lookup(store, CountingNetworking(ENDPOINTS))
    assert find_addresses(lookup(FRONT, GATEWAY), "web") == [IPv4Address("172.20.0.2")]

    store.containers[WEB_ID].name = "/frontend"
    store.containers[CACHE_ID].running = False
    records = lookup(FRONT, GATEWAY)

    assert find_addresses(records, "frontend") == [IPv4Address("172.20.0.2")]
    assert find_addresses(records, "web") == []
    assert find_addresses(records, "cache") == []
