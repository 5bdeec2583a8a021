"""Restart policies: ``HostConfig.RestartPolicy`` applied when a container stops.

The policies are docker's:

- ``no``: never restart.
- ``always``: restart after any exit, unless a user stopped or killed the container.
- ``unless-stopped``: the same while ketchd runs. When ketchd starts, ``always``
  containers that a user stopped are not started again either (dockerd would), so the two
  differ only in what ``docker inspect`` shows.
- ``on-failure[:N]``: restart after a non-zero exit, at most N times (no limit for 0).

Restarts back off as dockerd's do: the first waits 100 ms and each next one twice as
long, up to one minute, and a container that ran for 10 s or more starts over at 100 ms.
While it waits the container's status is ``restarting``. A start, stop, kill or removal
by a user cancels a pending restart. ``RestartCount`` counts the restarts made by the
policy.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from ketch.engine import timestamps
from ketch.errors import KetchError

if TYPE_CHECKING:
    from ketch.engine.containers import ContainerService
    from ketch.engine.store import Container

logger = logging.getLogger(__name__)

FIRST_DELAY_SECONDS = 0.1
MAX_DELAY_SECONDS = 60.0
# A container that ran at least this long is restarted after the first delay again.
RESET_AFTER_SECONDS = 10.0


def policy_of(container: Container) -> tuple[str, int]:
    policy = container.host_config.get("RestartPolicy") or {}
    return str(policy.get("Name") or "no"), int(policy.get("MaximumRetryCount") or 0)


def wants_restart(container: Container) -> bool:
    """Return whether the policy restarts the container after the exit just recorded."""
    name, max_retries = policy_of(container)
    if name == "no" or container.state.manually_stopped or container.state.removing:
        return False
    if name in ("always", "unless-stopped"):
        return True
    if container.state.exit_code == 0:
        return False
    return max_retries == 0 or container.restart_count < max_retries


def wants_start_at_boot(container: Container) -> bool:
    """Return whether ketchd starts the stopped container when it starts itself."""
    name, _ = policy_of(container)
    return name in ("always", "unless-stopped") and not container.state.manually_stopped


class RestartPolicies:
    """Pending restarts by container id, with each container's current back-off."""

    def __init__(self, service: ContainerService) -> None:
        self._service = service
        self._pending: dict[str, asyncio.TimerHandle] = {}
        self._delays: dict[str, float] = {}

    def on_exit(self, container: Container) -> None:
        """Schedule a restart if the container's policy asks for one."""
        if not wants_restart(container):
            self._delays.pop(container.id, None)
            return
        delay = self._next_delay(container)
        container.state.restarting = True
        self._service.save(container)
        logger.info(
            "container %s exited with %d; restarting it in %g s (policy %s)",
            container.id,
            container.state.exit_code,
            delay,
            policy_of(container)[0],
        )
        loop = asyncio.get_running_loop()
        self._pending[container.id] = loop.call_later(
            delay, lambda: self._service.spawn(self._restart(container.id))
        )

    def cancel(self, container: Container) -> None:
        """Drop a pending restart, because a user acted on the container."""
        handle = self._pending.pop(container.id, None)
        if handle is not None:
            handle.cancel()
        if container.state.restarting:
            container.state.restarting = False
            self._service.save(container)

    def _next_delay(self, container: Container) -> float:
        started = timestamps.to_epoch(container.state.started_at) or 0.0
        finished = timestamps.to_epoch(container.state.finished_at) or started
        previous = self._delays.get(container.id)
        if previous is None or finished - started >= RESET_AFTER_SECONDS:
            delay = FIRST_DELAY_SECONDS
        else:
            delay = min(previous * 2, MAX_DELAY_SECONDS)
        self._delays[container.id] = delay
        return delay

    async def _restart(self, container_id: str) -> None:
        self._pending.pop(container_id, None)
        container = self._service.find(container_id)
        if container is None or not container.state.restarting:
            return
        container.restart_count += 1
        try:
            await self._service.start(container_id, by_policy=True)
        except KetchError as error:
            logger.warning("restart of container %s failed: %s", container_id, error)
            container.state.restarting = False
            self._service.save(container)
            return
        self._service.emit(container, "restart")
