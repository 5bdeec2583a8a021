"""The names that ketchd's name server resolves for a client: scope, running containers only,
aliases and ids."""

from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network

from ketch.engine.dnsnames import ContainerNames
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
    assert resolve("cache", None) == ["172.20.0.3"]


def test_names_by_alias() -> None:
    assert resolve("www", None) == ["172.20.0.2"]


def test_names_by_short_and_full_id() -> None:
    assert resolve(CACHE_ID[:12], None) == ["172.20.0.3"]
    assert resolve(CACHE_ID, None) == ["172.20.0.3"]


def test_names_alias_only_on_its_network() -> None:
    assert resolve("www", IPv4Address("172.21.0.3"), BACK) == []


def test_names_client_sees_all_its_networks() -> None:
    web_on_front = IPv4Address("172.20.0.2")
    assert resolve("database", web_on_front) == ["172.21.0.3"]


def test_names_other_network_hidden() -> None:
    cache_on_front = IPv4Address("172.20.0.3")
    assert resolve("db", cache_on_front) == []


def test_names_default_bridge_never_served() -> None:
    records = lookup_for(STORE, ENDPOINTS)(FRONT, None)
    assert all(record.network_name != "bridge" for record in records)


def test_names_stopped_container_hidden() -> None:
    store = FakeStore(FakeContainer(WEB_ID, "/web", running=False), FakeContainer(DB_ID, "/db"))
    records = lookup_for(store, ENDPOINTS)(FRONT, None)
    assert find_addresses(records, "web") == []


def test_names_follow_rename() -> None:
    store = FakeStore(FakeContainer(WEB_ID, "/web"))
    lookup = lookup_for(store, ENDPOINTS)
    store.containers[WEB_ID].name = "/frontend"
    records = lookup(FRONT, None)
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
