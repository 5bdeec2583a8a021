"""The network operations of the Engine API: create, list, inspect, remove, prune, and
connect and disconnect of containers, with docker's JSON shapes and messages.

The predefined networks are ``bridge`` (a real bridge, ``ketch0`` for the default data
root, see ketch.network.instance), ``host`` and ``none``. The last two have no record:
they are listed and inspected like docker's, with fixed ids, and cannot be created,
removed or connected to.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from typing import Any

from ketch.engine import timestamps
from ketch.engine.networking import ContainerNetworking, network_name_of
from ketch.errors import Forbidden, InvalidArgument, NotFound, Unavailable
from ketch.network import ipam
from ketch.network.bridge import (
    BRIDGE_NAME_OPTION,
    DEFAULT_NETWORK,
    ICC_OPTION,
    MTU_OPTION,
    NetworkRequest,
)
from ketch.network.instance import MAX_INTERFACE_NAME_BYTES
from ketch.network.store import DEFAULT_MTU, Network

logger = logging.getLogger(__name__)

# Networks that exist without a record, as docker's do.
NAMESPACE_NETWORKS = ("host", "none")
PREDEFINED = (DEFAULT_NETWORK, *NAMESPACE_NETWORKS)

NETWORK_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")
LIST_FILTERS = ("name", "id", "label", "driver", "type", "dangling", "scope")
PRUNE_FILTERS = ("label", "label!", "until")


def fixed_id(name: str) -> str:
    """Return the id of a network without a record: stable across restarts."""
    return hashlib.sha256(f"ketch network {name}".encode()).hexdigest()


class NetworkOperations:
    """Network endpoints of the Engine API over the engine's container service."""

    def __init__(self, containers: Any, paths: Any) -> None:
        self._containers = containers
        self._paths = paths  # ContainerPaths, for each container's hosts file

    @property
    def _networking(self) -> ContainerNetworking:
        networking = self._containers.networking
        if networking is None:
            raise Unavailable("networks are not available: ketchd runs without bridge networking")
        return networking

    # Reading

    async def list(self, filters: dict[str, list[str]]) -> list[dict[str, Any]]:
        """Return the ``GET /networks`` list, filtered as docker filters it."""
        _check_filters(filters, LIST_FILTERS)
        await self._networking.driver.default_network()
        views = [self._view(n, with_containers=False) for n in self._networking.networks()]
        views += [self._namespace_view(name) for name in NAMESPACE_NETWORKS]
        selected = [v for v in views if self._matches(v, filters)]
        return sorted(selected, key=lambda view: view["Name"])

    async def inspect(self, reference: str) -> dict[str, Any]:
        name = _namespace_network(reference)
        if name is not None:
            return self._namespace_view(name)
        network = await self._networking.network_by_reference(reference)
        return self._view(network, with_containers=True)

    def _view(self, network: Network, with_containers: bool) -> dict[str, Any]:
        config: dict[str, str] = {"Subnet": str(network.subnet), "Gateway": str(network.gateway)}
        if network.ip_range is not None:
            config["IPRange"] = str(network.ip_range)
        return {
            "Name": network.name,
            "Id": network.id,
            "Created": network.created,
            "Scope": "local",
            "Driver": network.driver,
            "EnableIPv6": False,
            "IPAM": {"Driver": "default", "Options": None, "Config": [config]},
            "Internal": network.internal,
            "Attachable": network.attachable,
            "Ingress": False,
            "ConfigFrom": {"Network": ""},
            "ConfigOnly": False,
            "Containers": self._endpoint_views(network) if with_containers else {},
            "Options": self._options_view(network),
            "Labels": dict(network.labels),
        }

    @staticmethod
    def _options_view(network: Network) -> dict[str, str]:
        options = dict(network.options)
        if network.name == DEFAULT_NETWORK:
            options.setdefault("com.docker.network.bridge.default_bridge", "true")
            options.setdefault(BRIDGE_NAME_OPTION, network.bridge)
        return options

    def _endpoint_views(self, network: Network) -> dict[str, Any]:
        views = {}
        for endpoint in self._networking.endpoints(network.id):
            container = self._containers.find(endpoint.container_id)
            fields = self._networking.inspect_fields(endpoint, network)
            views[endpoint.container_id] = {
                "Name": container.name.lstrip("/") if container else "",
                "EndpointID": fields["EndpointID"],
                "MacAddress": endpoint.mac,
                "IPv4Address": f"{endpoint.address}/{network.subnet.prefixlen}",
                "IPv6Address": "",
            }
        return views

    def _namespace_view(self, name: str) -> dict[str, Any]:
        containers = {
            c.id: {
                "Name": c.name.lstrip("/"),
                "EndpointID": "",
                "MacAddress": "",
                "IPv4Address": "",
                "IPv6Address": "",
            }
            for c in self._containers.all()
            if c.running and c.host_config.get("NetworkMode") == name
        }
        return {
            "Name": name,
            "Id": fixed_id(name),
            "Created": "0001-01-01T00:00:00Z",
            "Scope": "local",
            "Driver": "null" if name == "none" else name,
            "EnableIPv6": False,
            "IPAM": {"Driver": "default", "Options": None, "Config": []},
            "Internal": False,
            "Attachable": False,
            "Ingress": False,
            "ConfigFrom": {"Network": ""},
            "ConfigOnly": False,
            "Containers": containers,
            "Options": {},
            "Labels": {},
        }

    def _matches(self, view: dict[str, Any], filters: dict[str, list[str]]) -> bool:
        checks = {
            "name": lambda value: _name_matches(view["Name"], value),
            "id": lambda value: view["Id"].startswith(value),
            "label": lambda value: _label_matches(view["Labels"], value),
            "driver": lambda value: view["Driver"] == value,
            "scope": lambda value: value == "local",
            "type": lambda value: _type_matches(view["Name"], value),
            "dangling": lambda value: _dangling_matches(self._in_use(view["Name"]), view, value),
        }
        return all(any(checks[name](value) for value in values) for name, values in filters.items())

    def _in_use(self, network_name: str) -> bool:
        """Return whether any container is on the network or is planned to join it."""
        for container in self._containers.all():
            if network_name in container.network_endpoints:
                return True
            mode = container.host_config.get("NetworkMode", "default")
            if network_name_of(mode) == network_name:
                return True
        return False

    # Changing

    async def create(self, body: Any) -> dict[str, Any]:
        """Create a bridge network from a ``POST /networks/create`` body."""
        request = parse_create_body(body)
        # The default network comes first, so that it gets the first free pool (172.17.0.0/16
        # on most hosts) as docker's does, and a user-defined network never takes it.
        await self._networking.driver.default_network()
        if request.name in PREDEFINED:
            raise Forbidden(f"{request.name} is a pre-defined network and cannot be created")
        network = await self._networking.driver.create_network(request)
        self._emit(network, "create")
        return {"Id": network.id, "Warning": ""}

    async def remove(self, reference: str) -> None:
        name = _namespace_network(reference)
        if name is not None:
            raise Forbidden(f"{name} is a pre-defined network and cannot be removed")
        network = await self._networking.network_by_reference(reference)
        await self._networking.driver.remove_network(network)
        self._emit(network, "destroy")

    async def prune(self, filters: dict[str, list[str]]) -> dict[str, Any]:
        """Remove user-defined networks without endpoints. As with docker, a network that
        only stopped or created containers name is removed, and their next start fails."""
        _check_filters(filters, PRUNE_FILTERS)
        until = _prune_until(filters.get("until", []))
        deleted = []
        for network in self._networking.networks():
            if network.name == DEFAULT_NETWORK:
                continue
            if self._networking.endpoints(network.id):
                continue
            if not _prune_labels_match(network.labels, filters):
                continue
            if until is not None and (timestamps.to_epoch(network.created) or 0) >= until:
                continue
            await self._networking.driver.remove_network(network)
            self._emit(network, "destroy")
            deleted.append(network.name)
        return {"NetworksDeleted": deleted}

    async def connect(self, reference: str, body: Any) -> None:
        """Connect a container (``body.Container``) with ``body.EndpointConfig``."""
        container_ref, config = _container_and_config(body, "EndpointConfig")
        if _namespace_network(reference) is not None:
            raise Forbidden(
                "container cannot be disconnected from host network or connected to host network"
            )
        network = await self._networking.network_by_reference(reference)
        container = self._containers.resolve(container_ref)
        hosts = self._paths.hosts(container.id)
        await self._networking.connect_network(container, network, config or {}, hosts)
        self._containers.save(container)
        self._emit(network, "connect", container=container.id)

    async def disconnect(self, reference: str, body: Any) -> None:
        # Limitation: Force does not disconnect endpoints of containers that are gone; the
        # container must exist.
        container_ref, _ = _container_and_config(body, "Force")
        if _namespace_network(reference) is not None:
            raise Forbidden(
                "container cannot be disconnected from host network or connected to host network"
            )
        network = await self._networking.network_by_reference(reference)
        container = self._containers.resolve(container_ref)
        await self._networking.disconnect_network(container, network)
        self._containers.save(container)
        ports = self._containers.ports
        if ports is not None and container.running:
            await ports.follow_address(container)
        self._emit(network, "disconnect", container=container.id)

    def _emit(self, network: Network, action: str, **values: str) -> None:
        attributes = {"name": network.name, "type": network.driver, **values}
        self._containers.events.publish("network", action, network.id, attributes)


# Parsing


def parse_create_body(body: Any) -> NetworkRequest:
    """Check a ``POST /networks/create`` body; InvalidArgument names the wrong field."""
    if not isinstance(body, dict):
        raise InvalidArgument("invalid network config: the request body must be a JSON object")
    name = body.get("Name")
    if not isinstance(name, str) or not name:
        raise InvalidArgument("invalid network config: Name is required")
    if not NETWORK_NAME.match(name):
        raise InvalidArgument(
            f"invalid network name {name!r}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
        )

    driver = body.get("Driver") or "bridge"
    if driver != "bridge":
        raise NotFound(f'plugin "{driver}" not found: ketch supports only the bridge driver')
    for field in ("EnableIPv6", "Ingress", "ConfigOnly"):
        if body.get(field):
            raise InvalidArgument(f"invalid network config: {field} is not supported by ketch")
    if (body.get("ConfigFrom") or {}).get("Network"):
        raise InvalidArgument("invalid network config: ConfigFrom is not supported by ketch")

    options = _string_map(body.get("Options"), "Options")
    subnet, gateway, ip_range = _parse_ipam(body.get("IPAM") or {})
    return NetworkRequest(
        name=name,
        subnet=subnet,
        gateway=gateway,
        ip_range=ip_range,
        internal=bool(body.get("Internal")),
        attachable=bool(body.get("Attachable")),
        labels=_string_map(body.get("Labels"), "Labels"),
        options=options,
        mtu=_check_options(options),
    )


def _parse_ipam(ipam_body: Any) -> tuple[Any, Any, Any]:
    if not isinstance(ipam_body, dict):
        raise InvalidArgument("invalid network config: IPAM must be an object")
    if (ipam_body.get("Driver") or "default") != "default":
        raise InvalidArgument(
            f"invalid network config: IPAM driver {ipam_body['Driver']!r} is not supported; "
            "expected default"
        )
    configs = ipam_body.get("Config") or []
    if not isinstance(configs, list) or not all(isinstance(c, dict) for c in configs):
        raise InvalidArgument("invalid network config: IPAM.Config must be a list of objects")
    if len(configs) > 1:
        raise InvalidArgument(
            "invalid network config: ketch supports one IPAM.Config entry (one IPv4 subnet)"
        )
    if not configs:
        return None, None, None

    config = configs[0]
    if config.get("AuxiliaryAddresses"):
        raise InvalidArgument("invalid network config: AuxiliaryAddresses is not supported")
    subnet_text, range_text, gateway_text = (
        config.get("Subnet") or "",
        config.get("IPRange") or "",
        config.get("Gateway") or "",
    )
    if not subnet_text:
        if range_text or gateway_text:
            raise InvalidArgument(
                "invalid network config: a gateway or ip-range needs a subnet (--subnet)"
            )
        return None, None, None

    subnet = ipam.parse_subnet(subnet_text, "subnet")
    gateway = ipam.parse_address(gateway_text, "gateway") if gateway_text else None
    if gateway is not None:
        ipam.check_in_subnet(gateway, subnet, "gateway")
    ip_range = ipam.parse_subnet(range_text, "ip-range") if range_text else None
    if ip_range is not None and not ip_range.subnet_of(subnet):
        raise InvalidArgument(f"invalid ip-range {ip_range}: it is not inside subnet {subnet}")
    return subnet, gateway, ip_range


def _check_options(options: dict[str, str]) -> int:
    """Check the bridge driver's options and return the MTU they set."""
    bridge = options.get(BRIDGE_NAME_OPTION)
    if bridge is not None and not (
        0 < len(bridge) <= MAX_INTERFACE_NAME_BYTES and re.fullmatch(r"[a-zA-Z0-9_.-]+", bridge)
    ):
        raise InvalidArgument(
            f"invalid option {BRIDGE_NAME_OPTION}={bridge!r}: expected an interface name of "
            f"1 to {MAX_INTERFACE_NAME_BYTES} letters, digits, '_', '.' or '-'"
        )
    # enable_icc=false is enforced by the firewall's rules (ketch.network.firewall).
    icc = options.get(ICC_OPTION)
    if icc is not None and icc.lower() not in ("true", "false"):
        raise InvalidArgument(f"invalid option {ICC_OPTION}={icc!r}: expected true or false")
    text = options.get(MTU_OPTION)
    if text is None:
        return DEFAULT_MTU
    try:
        mtu = int(text)
    except ValueError:
        mtu = 0
    if not 68 <= mtu <= 65535:
        raise InvalidArgument(
            f"invalid option {MTU_OPTION}={text!r}: expected a number of bytes from 68 to 65535"
        )
    return mtu


def _string_map(value: Any, field: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise InvalidArgument(f"invalid network config: {field} must map strings to strings")
    return dict(value)


def _container_and_config(body: Any, extra: str) -> tuple[str, Any]:
    if not isinstance(body, dict):
        raise InvalidArgument("invalid request: the body must be a JSON object")
    container = body.get("Container")
    if not isinstance(container, str) or not container:
        raise InvalidArgument("invalid request: Container is required")
    return container, body.get(extra)


def _check_filters(filters: dict[str, list[str]], allowed: tuple[str, ...]) -> None:
    for name in filters:
        if name not in allowed:
            raise InvalidArgument(f"invalid filter '{name}'")


def _name_matches(name: str, pattern: str) -> bool:
    # Docker matches the name filter as a regular expression; text that is not one is
    # matched as a substring instead of failing the request.
    try:
        return re.search(pattern, name) is not None
    except re.error:
        return pattern in name


def _label_matches(labels: dict[str, str], value: str) -> bool:
    key, has_value, expected = value.partition("=")
    if key not in labels:
        return False
    return not has_value or labels[key] == expected


def _type_matches(name: str, value: str) -> bool:
    if value not in ("custom", "builtin"):
        raise InvalidArgument(f"invalid filter: 'type' must be custom or builtin, not {value!r}")
    return (name in PREDEFINED) == (value == "builtin")


def _dangling_matches(in_use: bool, view: dict[str, Any], value: str) -> bool:
    if value.lower() not in ("true", "false", "1", "0"):
        raise InvalidArgument(f"invalid filter: 'dangling' must be true or false, not {value!r}")
    expected = value.lower() in ("true", "1")
    # Docker never counts the predefined networks as dangling.
    dangling = view["Name"] not in PREDEFINED and not in_use and not view["Containers"]
    return dangling == expected


def _prune_labels_match(labels: dict[str, str], filters: dict[str, list[str]]) -> bool:
    if not all(_label_matches(labels, value) for value in filters.get("label", [])):
        return False
    return not any(_label_matches(labels, value) for value in filters.get("label!", []))


GO_DURATION = re.compile(r"^(?:\d+(?:\.\d+)?(?:h|m|s|ms))+$")
GO_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(h|ms|m|s)")
SECONDS_PER_UNIT = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


def _prune_until(values: list[str]) -> float | None:
    """Return the epoch time of an ``until`` filter: a Unix time, an RFC 3339 timestamp or
    a Go duration before now (``24h``, ``1h30m``)."""
    if not values:
        return None
    value = values[-1]
    epoch = timestamps.to_epoch(value)
    if epoch is not None:
        return epoch
    if GO_DURATION.match(value):
        parts = GO_DURATION_PART.findall(value)
        return time.time() - sum(float(n) * SECONDS_PER_UNIT[unit] for n, unit in parts)
    try:
        return float(value)
    except ValueError:
        raise InvalidArgument(
            f"invalid filter 'until={value}': expected a Unix time, an RFC 3339 timestamp "
            "or a duration such as 24h"
        ) from None


def _namespace_network(reference: str) -> str | None:
    """Return "host" or "none" when ``reference`` is that network's name or id, else None."""
    for name in NAMESPACE_NETWORKS:
        if reference in (name, fixed_id(name)):
            return name
    return None
