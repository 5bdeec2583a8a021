"""Egress rules for bridge networks, in an nftables table of ketch's own (``ip ketch``).

The tables are named after the ketchd instance: ``ketch`` for the default data root and
``ketch-<tag>`` for others (see ketch.network.instance), and each instance rewrites only
its own, so several ketchd instances can share one network namespace.

For each network that is up, the table holds::

    chain postrouting   nat, hook postrouting
        ip saddr <subnet> oifname != <bridge> masquerade     (not for internal networks)
    chain forward       filter, hook forward
        iifname <bridge> accept                               (not internal)
        oifname <bridge> ct state established,related accept  (not internal)
        iifname <bridge> oifname != <bridge> drop             (internal only)
        oifname <bridge> iifname != <bridge> drop             (internal only)

A network whose ``com.docker.network.bridge.enable_icc`` option is false also gets a rule
in a second table, ``bridge ketch``, because traffic between two ports of one bridge is
switched and never passes the ``ip`` family's forward hook::

    chain forward       filter, hook forward (frames between ports of a bridge)
        ip saddr <subnet> ip daddr <subnet> drop

Traffic to the gateway is delivered to the host, not forwarded, so it still passes. The
rule matches the subnet and not the bridge, because the bridge-name match (``meta
ibrname``) needs the kernel's nft_meta_bridge module, which some kernels lack. Subnets of
ketch's networks never overlap, so the subnet names one bridge.

With ketchd's ``userland-proxy`` set to false, published ports are kernel rules too: each
binding is a ``dnat`` rule in a ``prerouting`` chain (traffic from elsewhere) and in an
``output`` chain (connections from this host). A connection to 127.0.0.1 is then routed to
the bridge, which needs ``route_localnet`` on the bridge and a masquerade rule for
127.0.0.0/8 leaving by it, so that replies come back.

Every change rewrites the whole table in one ``nft -f -`` transaction (declare, delete,
then add the table again), so the kernel never contains half of an update, and a table left
by an earlier ketchd is replaced by the first change. The tables are deleted when the last
network goes. Rules of other tables are not touched: an accept here does not override a
drop in another table's forward chain.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from ketch.errors import InvalidArgument, SystemFailure
from ketch.network.bridge import ICC_OPTION
from ketch.network.instance import DEFAULT_TABLE
from ketch.network.store import Network

logger = logging.getLogger(__name__)

TABLE_FAMILY = "ip"
TABLE_NAME = DEFAULT_TABLE
# The table of the rules that apply to frames switched between the ports of a bridge.
BRIDGE_TABLE_FAMILY = "bridge"
IP_FORWARD_PATH = Path("/proc/sys/net/ipv4/ip_forward")
INTERFACE_SYSCTL_ROOT = Path("/proc/sys/net/ipv4/conf")
NFT_TIMEOUT_SECONDS = 30.0


def _quoted(text: str) -> str:
    # Interface names and docker's network names have no quotes, but anything
    # else is replaced too, so that no name can end the string and add nft syntax.
    return '"' + re.sub(r"[^A-Za-z0-9 _.:-]", "_", text) + '"'


def network_rules(network: Network) -> tuple[list[str], list[str]]:
    """Return the postrouting and forward rules of one network, in nft syntax."""
    bridge = _quoted(network.bridge)
    comment = f"comment {_quoted('network ' + network.name)}"
    if network.internal:
        forward = [
            f"iifname {bridge} oifname != {bridge} drop {comment}",
            f"oifname {bridge} iifname != {bridge} drop {comment}",
        ]
        return [], forward
    postrouting = [f"ip saddr {network.subnet} oifname != {bridge} masquerade {comment}"]
    forward = [
        f"iifname {bridge} accept {comment}",
        f"oifname {bridge} ct state established,related accept {comment}",
    ]
    return postrouting, forward


def isolation_rule(network: Network) -> str | None:
    """Return the bridge-family rule that drops traffic between the network's containers,
    or None when its enable_icc option allows that traffic (the default)."""
    if network.options.get(ICC_OPTION, "true").lower() != "false":
        return None
    comment = f"comment {_quoted('network ' + network.name)}"
    return f"ip saddr {network.subnet} ip daddr {network.subnet} drop {comment}"


@dataclass(frozen=True)
class PortRule:
    """A published port forwarded by the kernel: host side to the container's address."""

    protocol: str
    host_ip: str  # "0.0.0.0" means every local address
    host_port: int
    container_ip: str
    container_port: int
    # The network of the container's address; the rule applies while that network is up.
    network_id: str


def check_ipv4_host_ip(rule: PortRule) -> None:
    """Raise InvalidArgument when the rule's host address is IPv6.

    The dnat rules live in an ``ip`` table, and ketch's networks give containers no IPv6
    address, so nft would reject the rule and the container would fail to start on an nft
    syntax error. dockerd with the userland proxy disabled skips such a binding silently
    (moby's libnetwork/drivers/bridge/port_mapping.go, whose TODO comment proposes an
    error instead), so ketch raises one.
    """
    if ipaddress.ip_address(rule.host_ip).version == 4:
        return
    raise InvalidArgument(
        f"cannot publish port {rule.container_port}/{rule.protocol} on IPv6 host address "
        f"{rule.host_ip}: with ketchd's userland-proxy set to false, published ports are "
        "forwarded by IPv4 kernel rules, and ketch's networks have no IPv6. Publishing on "
        'an IPv6 address needs the userland proxy ("userland-proxy": true in daemon.json); '
        "otherwise publish on an IPv4 address"
    )


def port_rule_text(rule: PortRule) -> str:
    """Return the dnat rule of one published port, in nft syntax."""
    if rule.host_ip == "0.0.0.0":
        destination = "fib daddr type local"
    else:
        destination = f"ip daddr {rule.host_ip}"
    return (
        f"{destination} {rule.protocol} dport {rule.host_port} "
        f"dnat to {rule.container_ip}:{rule.container_port}"
    )


def _chain(name: str, hook: str, rules: list[str]) -> list[str]:
    return (
        [f"  chain {name} {{", f"    {hook}; policy accept;"]
        + [f"    {rule}" for rule in rules]
        + ["  }"]
    )


def render_ruleset(
    networks: list[Network],
    port_rules: list[PortRule] | None = None,
    table_name: str = TABLE_NAME,
) -> str:
    """Return the nft script that replaces the tables named ``table_name`` with the rules of
    ``networks`` and of the ``port_rules`` on them. With no networks, it deletes the tables."""
    bridges = {network.id: network.bridge for network in networks}
    port_rules = [rule for rule in port_rules or [] if rule.network_id in bridges]
    table = f"table {TABLE_FAMILY} {table_name}"
    bridge_table = f"table {BRIDGE_TABLE_FAMILY} {table_name}"
    # Declaring a table first makes its delete valid when the table does not exist.
    lines = [f"{table} {{}}", f"delete {table}", f"{bridge_table} {{}}", f"delete {bridge_table}"]
    if not networks:
        return "\n".join(lines) + "\n"
    postrouting: list[str] = []
    forward: list[str] = []
    for network in sorted(networks, key=lambda n: n.name):
        nat_rules, filter_rules = network_rules(network)
        postrouting += nat_rules
        forward += filter_rules
    for bridge in sorted({bridges[rule.network_id] for rule in port_rules}):
        postrouting.append(f"ip saddr 127.0.0.0/8 oifname {_quoted(bridge)} masquerade")
    dnat = [port_rule_text(rule) for rule in port_rules]

    lines.append(f"{table} {{")
    if dnat:
        lines += _chain("prerouting", "type nat hook prerouting priority dstnat", dnat)
        lines += _chain("output", "type nat hook output priority -100", dnat)
    lines += _chain("postrouting", "type nat hook postrouting priority srcnat", postrouting)
    lines += _chain("forward", "type filter hook forward priority filter", forward)
    lines.append("}")

    ordered = sorted(networks, key=lambda n: n.name)
    isolation = [rule for rule in map(isolation_rule, ordered) if rule is not None]
    if isolation:
        lines.append(f"{bridge_table} {{")
        lines += _chain("forward", "type filter hook forward priority filter", isolation)
        lines.append("}")
    return "\n".join(lines) + "\n"


class Firewall:
    """The ``NetworkService`` that keeps ketch's nftables table in step with the networks
    that are up. Used from the event loop."""

    def __init__(
        self,
        nft: str | None = None,
        ip_forward_path: Path = IP_FORWARD_PATH,
        interface_sysctl_root: Path = INTERFACE_SYSCTL_ROOT,
        table_name: str = TABLE_NAME,
    ) -> None:
        self._nft = nft or shutil.which("nft") or "/usr/sbin/nft"
        self.table_name = table_name
        self._ip_forward_path = ip_forward_path
        self._interface_sysctl_root = interface_sysctl_root
        self._networks: dict[str, Network] = {}
        # Published ports forwarded by the kernel, per container id.
        self._port_rules: dict[str, list[PortRule]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._lock = asyncio.Lock()

    async def set_port_rules(self, container_id: str, rules: list[PortRule]) -> None:
        """Forward the container's published ports in the kernel. Raises SystemFailure, or
        InvalidArgument for a port published on an IPv6 host address.

        Rules of a network that is not up yet apply once ``network_up`` adds it.
        """
        # The create checks this too. This check still catches a container created while
        # ketchd ran with the userland proxy and started after a restart without it.
        for rule in rules:
            check_ipv4_host_ip(rule)
        self._port_rules[container_id] = list(rules)
        try:
            for network_id in {rule.network_id for rule in rules}:
                await self._enable_route_localnet(network_id)
            async with self._lock:
                await self._apply()
        except BaseException:
            self._port_rules.pop(container_id, None)
            raise

    def remove_port_rules(self, container_id: str) -> None:
        """Stop forwarding the container's ports; the table is rewritten in the background.

        The rules are dropped from the state at once, so a later ``set_port_rules`` of the
        same container, applied after this rewrite or before it, is never undone by it.
        """
        if self._port_rules.pop(container_id, None) is None:
            return
        task = asyncio.get_running_loop().create_task(self._apply_logged(container_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _apply_logged(self, container_id: str) -> None:
        try:
            async with self._lock:
                await self._apply()
        except SystemFailure as error:
            logger.error("failed to remove the port rules of container %s: %s", container_id, error)

    async def network_up(self, network: Network) -> None:
        """Add the network's rules; turn on IPv4 forwarding for a network with egress."""
        async with self._lock:
            self._networks[network.id] = network
            await self._apply()
        await self._enable_route_localnet(network.id)
        if not network.internal:
            await asyncio.to_thread(self._enable_forwarding)
        logger.info("added firewall rules for network %s (%s)", network.name, network.subnet)

    async def network_down(self, network: Network) -> None:
        """Remove the network's rules, and the table with the last network."""
        async with self._lock:
            self._networks.pop(network.id, None)
            await self._apply()
        logger.info("removed firewall rules for network %s", network.name)

    async def reconcile(self) -> None:
        """Replace whatever table an earlier ketchd left with the rules of the networks up
        now (none at start, which deletes it). A failure is logged, so ketchd still starts."""
        async with self._lock:
            try:
                await self._apply()
            except SystemFailure as error:
                logger.error("failed to reconcile ketch's firewall rules: %s", error)

    async def _apply(self) -> None:
        port_rules = [rule for rules in self._port_rules.values() for rule in rules]
        script = render_ruleset(list(self._networks.values()), port_rules, self.table_name)
        try:
            process = await asyncio.create_subprocess_exec(
                self._nft,
                "-f",
                "-",
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
        except OSError as error:
            raise SystemFailure(
                f"cannot run {self._nft} for ketch's firewall rules: {error}; install nftables"
            ) from error
        try:
            _, stderr = await asyncio.wait_for(
                process.communicate(script.encode()), NFT_TIMEOUT_SECONDS
            )
        except TimeoutError:
            process.kill()
            await process.wait()
            raise SystemFailure(
                f"{self._nft} -f - timed out after {NFT_TIMEOUT_SECONDS:g} s"
            ) from None
        if process.returncode != 0:
            raise SystemFailure(
                f"{self._nft} rejected ketch's firewall rules (exit {process.returncode}): "
                f"{stderr.decode(errors='replace').strip()}"
            )

    def _enable_forwarding(self) -> None:
        try:
            if self._ip_forward_path.read_text().strip() == "1":
                return
            self._ip_forward_path.write_text("1\n")
        except OSError as error:
            raise SystemFailure(
                f"cannot enable IPv4 forwarding in {self._ip_forward_path}: {error}"
            ) from error
        logger.info("enabled IPv4 forwarding (%s)", self._ip_forward_path)

    async def _enable_route_localnet(self, network_id: str) -> None:
        """Set route_localnet on the network's bridge if the network is up and has port rules.

        A connection to 127.0.0.1 that a dnat rule sends to a container keeps its loopback
        source, and the kernel drops such packets on other interfaces unless this is set.
        """
        network = self._networks.get(network_id)
        rules = (rule for rules in self._port_rules.values() for rule in rules)
        if network is None or not any(rule.network_id == network_id for rule in rules):
            return
        path = self._interface_sysctl_root / network.bridge / "route_localnet"
        try:
            await asyncio.to_thread(path.write_text, "1\n")
        except OSError as error:
            raise SystemFailure(f"cannot enable route_localnet in {path}: {error}") from error
