"""The hook that other parts of ketchd use to follow networks as their bridges come and go.

A service (the DNS server, the firewall rules) is registered in
``ContainerNetworking.services``. The engine awaits ``network_up`` once a network's bridge
exists and has its gateway address: when the network is created, when the default
``bridge`` network is first used, and for every existing network when ketchd starts. It
awaits ``network_down`` when a network is removed, before its bridge is deleted. An
exception from a service is logged and does not fail the operation.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Protocol

from ketch.network.store import Network

logger = logging.getLogger(__name__)


class NetworkService(Protocol):
    async def network_up(self, network: Network) -> None:
        """Start serving ``network``; its bridge exists and has the gateway address."""
        ...

    async def network_down(self, network: Network) -> None:
        """Stop serving ``network``; its bridge still exists."""
        ...


async def notify_up(services: Iterable[NetworkService], network: Network) -> None:
    """Await ``network_up`` of each service; log and go on when one fails."""
    for service in services:
        try:
            await service.network_up(network)
        except Exception:
            logger.exception(
                "network service %r failed to set up network %s", service, network.name
            )


async def notify_down(services: Iterable[NetworkService], network: Network) -> None:
    """Await ``network_down`` of each service; log and go on when one fails."""
    for service in services:
        try:
            await service.network_down(network)
        except Exception:
            logger.exception(
                "network service %r failed to tear down network %s", service, network.name
            )
