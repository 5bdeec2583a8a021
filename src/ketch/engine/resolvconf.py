"""A container's /etc/resolv.conf, and the upstream servers of ketchd's network name server.

Each container gets a file of its own (``<container dir>/resolv.conf``, bind-mounted over
/etc/resolv.conf), written at create from its network mode:

    user-defined network   ``nameserver <gateway>``, where ketchd's name server for the
                           network listens. ``ndots:0`` is added unless an ndots option is
                           there, as docker's embedded server does (libnetwork resolver.go,
                           ResolverOptions), so that a container name is looked up as it is
                           before any search domain is tried.
    host                   the host's file
    anything else          nameservers from the daemon's ``dns`` setting, or else the
                           host's nameservers without loopback ones, which the container
                           cannot reach from its own network namespace

Outside host mode, search domains come from the container's DnsSearch, or else the daemon's
``dns-search``, or else the host's file, and options likewise from DnsOptions, ``dns-opts``
and the host's file. A container's Dns replaces the nameservers except on a user-defined
network, where the name server forwards to those servers instead. In host mode the
container's Dns, DnsSearch and DnsOptions replace the host's lines.

The file is written at create and rewritten in place when the container joins or leaves a
network (``ketch.engine.dnsnames.ResolvConfUpdater``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address, ip_address
from pathlib import Path

from ketch.engine.hostconfig import HostOptions
from ketch.errors import InvalidArgument
from ketch.network.store import Network

logger = logging.getLogger(__name__)

HOST_RESOLV_CONF = Path("/etc/resolv.conf")
# Network modes that do not name a user-defined network.
BUILTIN_MODES = ("default", "bridge", "host", "none")
NO_NAMESERVER_COMMENT = (
    "# No nameserver: the host's resolvers are loopback addresses, which this container\n"
    "# cannot reach, and ketchd has no dns setting. Set one with ketchd --dns or --dns on\n"
    "# the container.\n"
)


@dataclass
class ResolvConf:
    """The parts of a resolv.conf file that ketch reads and writes."""

    nameservers: list[str] = field(default_factory=list)
    search: list[str] = field(default_factory=list)
    options: list[str] = field(default_factory=list)

    def render(self, comment: str = "") -> str:
        lines = [f"nameserver {server}" for server in self.nameservers]
        if self.search:
            lines.append("search " + " ".join(self.search))
        if self.options:
            lines.append("options " + " ".join(self.options))
        return comment + "".join(line + "\n" for line in lines)


def parse_resolv_conf(text: str) -> ResolvConf:
    """Read nameserver, search, domain and options lines; the last search or domain line
    wins, as in glibc's resolver."""
    parsed = ResolvConf()
    for line in text.splitlines():
        words = line.split()
        if not words or words[0].startswith(("#", ";")):
            continue
        keyword, values = words[0], words[1:]
        if keyword == "nameserver" and values:
            parsed.nameservers.append(values[0])
        elif keyword in ("search", "domain"):
            parsed.search = values
        elif keyword == "options":
            parsed.options += values
    return parsed


def is_loopback(server: str) -> bool:
    try:
        return ip_address(server.split("%")[0]).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class DnsSettings:
    """ketchd's DNS settings: dockerd's ``dns``, ``dns-search`` and ``dns-opts`` lists, which
    containers get unless they set their own, and the host's resolv.conf path."""

    servers: tuple[str, ...] = ()
    host_resolv_conf: Path = HOST_RESOLV_CONF
    search: tuple[str, ...] = ()
    options: tuple[str, ...] = ()

    def host_file(self) -> ResolvConf:
        """Return the host's resolv.conf, or an empty one when it cannot be read."""
        try:
            return parse_resolv_conf(self.host_resolv_conf.read_text())
        except OSError as error:
            logger.warning("cannot read %s: %s", self.host_resolv_conf, error)
            return ResolvConf()

    def upstream_servers(self) -> list[str]:
        """Return the servers the name server forwards to: the ``dns`` setting, or else the
        host's nameservers, loopback ones included, because ketchd runs in the host's network
        namespace."""
        if self.servers:
            return list(self.servers)
        return [server for server in self.host_file().nameservers if _is_address(server)]


def _is_address(server: str) -> bool:
    try:
        ip_address(server)
    except ValueError:
        return False
    return True


def check_dns_options(host: HostOptions) -> None:
    """Raise InvalidArgument for a Dns entry that is not an IP address, or an entry of Dns,
    DnsSearch or DnsOptions with white space, which would add lines to the file."""
    for field_name, values in (
        ("Dns", host.dns),
        ("DnsSearch", host.dns_search),
        ("DnsOptions", host.dns_options),
    ):
        for value in values:
            if not value or any(character.isspace() for character in value):
                raise InvalidArgument(
                    f"invalid HostConfig.{field_name} entry {value!r}: expected a non-empty "
                    "value without white space"
                )
    for server in host.dns:
        if not _is_address(server):
            raise InvalidArgument(
                f"invalid HostConfig.Dns entry {server!r}: expected an IP address"
            )


def container_resolv_conf(
    host: HostOptions,
    network_mode: str,
    gateway: IPv4Address | None,
    settings: DnsSettings,
) -> str:
    """Return the text of a container's /etc/resolv.conf.

    ``gateway`` is the gateway of the user-defined network that ``network_mode`` names, or
    None for the other modes.
    """
    check_dns_options(host)
    host_file = settings.host_file()
    if network_mode == "host":
        return _apply_container_options(host_file, host).render()
    search = list(host.dns_search) or list(settings.search) or host_file.search
    options = list(host.dns_options) or list(settings.options) or host_file.options
    if gateway is not None:
        # The name server forwards to the container's Dns servers, as docker's does, so they
        # do not replace the gateway here.
        return ResolvConf([str(gateway)], search, _with_ndots_zero(options)).render()
    reachable = [server for server in host_file.nameservers if not is_loopback(server)]
    servers = list(host.dns) or list(settings.servers) or reachable
    comment = ""
    if not servers:
        # Limitation: docker falls back to public resolvers here. ketch adds none, so such a
        # container resolves no names until a dns setting names a server.
        comment = NO_NAMESERVER_COMMENT
    return ResolvConf(servers, search, options).render(comment)


def _with_ndots_zero(options: Sequence[str]) -> list[str]:
    if any(option.startswith("ndots:") for option in options):
        return list(options)
    return [*options, "ndots:0"]


def _apply_container_options(resolv: ResolvConf, host: HostOptions) -> ResolvConf:
    return ResolvConf(
        list(host.dns) or resolv.nameservers,
        list(host.dns_search) or resolv.search,
        list(host.dns_options) or resolv.options,
    )


class ResolvConfRenderer:
    """Containers' resolv.conf text from the daemon's settings and the gateways of the
    user-defined networks that ``networks`` returns (None: no such networks)."""

    def __init__(
        self,
        settings: DnsSettings | None = None,
        networks: Callable[[], Sequence[Network]] | None = None,
    ) -> None:
        self.settings = settings or DnsSettings()
        self._networks = networks

    def render(self, host: HostOptions, network_mode: str) -> str:
        """Return the resolv.conf text of a container, or raise InvalidArgument for its
        Dns options."""
        return container_resolv_conf(
            host, network_mode, self.gateway_of(network_mode), self.settings
        )

    def gateway_of(self, network_mode: str) -> IPv4Address | None:
        """Return the gateway of the user-defined network that a mode names by name, id or
        id prefix, or None."""
        if self._networks is None or network_mode in BUILTIN_MODES:
            return None
        if network_mode.startswith("container:"):
            # Limitation: the container gets a file of its own, not the other container's.
            return None
        networks = list(self._networks())
        for network in networks:
            if network.name == network_mode:
                return network.gateway
        for network in networks:
            if network.id.startswith(network_mode):
                return network.gateway
        return None
