"""Container kill and stop: signal the container's process, thaw it if paused, and wait
for its exit, with SIGKILL after the stop timeout.

``ContainerStops`` is mixed into ``ContainerService`` (engine/containers.py), which owns
the state used here.
"""

from __future__ import annotations

import asyncio
import logging
import signal

from ketch.engine.interfaces import Supervisor
from ketch.engine.options import parse_signal
from ketch.engine.spec import DEFAULT_STOP_SIGNAL, DEFAULT_STOP_TIMEOUT
from ketch.engine.store import Container, ContainerStore
from ketch.engine.waits import Waiters
from ketch.errors import Conflict, NotFound, SystemFailure

logger = logging.getLogger(__name__)

# How long remove --force and kill wait for an exit after SIGKILL before giving up.
KILL_WAIT_SECONDS = 30.0


class ContainerStops:
    """The kill and stop steps of ``ContainerService``."""

    _store: ContainerStore
    _supervisor: Supervisor
    waiters: Waiters

    async def kill(self, reference: str, signal_value: str | int = "SIGKILL") -> None:
        container = self.resolve(reference)
        # Docker reads an empty signal parameter as the default, SIGKILL.
        number = parse_signal(signal_value or "SIGKILL", "signal")
        if container.state.restarting:
            raise Conflict(
                f"Container {container.id} is restarting, wait until the container is running"
            )
        if not container.running:
            raise Conflict(
                f"Cannot kill container: {reference}: Container {container.id} is not running"
            )
        container.state.manually_stopped = True
        self._store.save(container)
        self.emit(container, "kill", signal=str(number))
        if number == signal.SIGKILL:
            await self._kill_and_wait(container, number, KILL_WAIT_SECONDS)
            return
        await self._supervisor.kill(container.id, number)

    async def stop(
        self, reference: str, timeout: int | None = None, signal_name: str | None = None
    ) -> bool:
        """Stop a container with ``signal_name`` or its StopSignal, then SIGKILL after the
        timeout.

        Returns False when it was not running (HTTP 304). A negative timeout waits for
        the exit without a SIGKILL.
        """
        container = self.resolve(reference)
        if container.state.restarting:
            self.restarts.cancel(container)
            container.state.manually_stopped = True
            self._store.save(container)
            return True
        if not container.running:
            return False
        container.state.manually_stopped = True
        self._store.save(container)
        stop_signal = parse_signal(
            signal_name or container.config.get("StopSignal") or DEFAULT_STOP_SIGNAL,
            "signal" if signal_name else "StopSignal",
        )
        if timeout is None:
            timeout = container.config.get("StopTimeout")
        if timeout is None:
            timeout = DEFAULT_STOP_TIMEOUT
        stopped = self.waiters.register(container, "not-running")
        self.emit(container, "kill", signal=str(stop_signal))
        await self._signal(container, stop_signal)
        try:
            await asyncio.wait_for(asyncio.shield(stopped), None if timeout < 0 else timeout)
        except TimeoutError:
            logger.info(
                "container %s did not exit %d s after signal %d; sending SIGKILL",
                container.id,
                timeout,
                stop_signal,
            )
            self.emit(container, "kill", signal=str(int(signal.SIGKILL)))
            await self._kill_and_wait(container, signal.SIGKILL, KILL_WAIT_SECONDS)
        self.emit(container, "stop")
        return True

    async def _signal(self, container: Container, number: int) -> None:
        try:
            await self._supervisor.kill(container.id, number)
        except (NotFound, Conflict) as error:
            # The process exited meanwhile; its exit event is on its way.
            logger.debug("signal %d to container %s: %s", number, container.id, error)
            return
        if container.state.paused:
            # A frozen process handles no signal, so the container is thawed to let it act,
            # as dockerd does for stop and kill of a paused container.
            await self.resume_paused(container)

    async def resume_paused(self, container: Container) -> None:
        """Thaw a paused container and record it as running again."""
        try:
            await self._supervisor.resume(container.id)
        except Conflict as error:
            logger.debug("resume of container %s: %s", container.id, error)
        container.state.paused = False
        self._store.save(container)

    async def _kill_and_wait(self, container: Container, number: int, timeout: float) -> None:
        stopped = self.waiters.register(container, "not-running")
        await self._signal(container, number)
        try:
            await asyncio.wait_for(asyncio.shield(stopped), timeout)
        except TimeoutError:
            raise SystemFailure(
                f"container {container.id} did not exit within {timeout:g} s of signal {number}"
            ) from None
