"""Egress rules for bridge networks, in an nftables table of ketch's own (``ip ketch``).

For each network that is up, the table holds::

    chain postrouting   nat, hook postrouting
        ip saddr <subnet> oifname != <bridge> masquerade     (not for internal networks)
    chain forward       filter, hook forward
        iifname <bridge> accept                               (not internal)
        oifname <bridge> ct state established,related accept  (not internal)
        iifname <bridge> oifname != <bridge> drop             (internal only)
        oifname <bridge> iifname != <bridge> drop             (internal only)

Every change rewrites the whole table in one ``nft -f -`` transaction (declare, delete,
then add the table again), so the kernel never contains half of an update, and a table left
by an earlier ketchd is replaced by the first change. The table is deleted when the last
network goes. Rules of other tables are not touched: an accept here does not override a
drop in another table's forward chain.
"""

from __future__ import annotations

import asyncio
import logging
import re
import shutil
from pathlib import Path

from ketch.errors import SystemFailure
from ketch.network.store import Network

logger = logging.getLogger(__name__)

TABLE_FAMILY = "ip"
TABLE_NAME = "ketch"
IP_FORWARD_PATH = Path("/proc/sys/net/ipv4/ip_forward")
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


def render_ruleset(networks: list[Network]) -> str:
    """Return the nft script that replaces ketch's table with the rules of ``networks``;
    with no networks, the script deletes the table."""
    table = f"table {TABLE_FAMILY} {TABLE_NAME}"
    # Declaring the table first makes the delete valid when the table does not exist.
    lines = [f"{table} {{}}", f"delete {table}"]
    if not networks:
        return "\n".join(lines) + "\n"
    postrouting: list[str] = []
    forward: list[str] = []
    for network in sorted(networks, key=lambda n: n.name):
        nat_rules, filter_rules = network_rules(network)
        postrouting += nat_rules
        forward += filter_rules
    lines.append(f"{table} {{")
    lines.append("  chain postrouting {")
    lines.append("    type nat hook postrouting priority srcnat; policy accept;")
    lines += [f"    {rule}" for rule in postrouting]
    lines.append("  }")
    lines.append("  chain forward {")
    lines.append("    type filter hook forward priority filter; policy accept;")
    lines += [f"    {rule}" for rule in forward]
    lines.append("  }")
    lines.append("}")
    return "\n".join(lines) + "\n"


class Firewall:
    """The ``NetworkService`` that keeps ketch's nftables table in step with the networks
    that are up. Used from the event loop."""

    def __init__(self, nft: str | None = None, ip_forward_path: Path = IP_FORWARD_PATH) -> None:
        self._nft = nft or shutil.which("nft") or "/usr/sbin/nft"
        self._ip_forward_path = ip_forward_path
        self._networks: dict[str, Network] = {}
        self._lock = asyncio.Lock()

    async def network_up(self, network: Network) -> None:
        """Add the network's rules; turn on IPv4 forwarding for a network with egress."""
        async with self._lock:
            self._networks[network.id] = network
            await self._apply()
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
                logger.error("cannot reconcile ketch's firewall rules: %s", error)

    async def _apply(self) -> None:
        script = render_ruleset(list(self._networks.values()))
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
