"""Healthchecks: ``Config.Healthcheck`` probes run in running containers.

A probe is an exec of the healthcheck's test (``["CMD", argv...]`` or ``["CMD-SHELL",
command]``, run by ``/bin/sh -c``) through the supervisor, every ``Interval`` after the
container starts (``StartInterval`` during the start period). A probe passes when it
exits with 0 within ``Timeout``; a probe that takes longer is killed and fails.

The result is ``State.Health`` in inspect, as dockerd has it: ``Status`` is ``starting``
until the first passing probe, then ``healthy``, or ``unhealthy`` after ``Retries``
failures in a row; failures during ``StartPeriod`` do not count until a probe has
passed. ``FailingStreak`` counts the current failures in a row, and ``Log`` keeps the
last five results with up to 4096 bytes of output each. Each change of status publishes
a ``health_status: <status>`` event. Durations in the config are nanoseconds, as in the
Engine API; zero means docker's default.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import TYPE_CHECKING, Any

from ketch.engine import timestamps
from ketch.engine.attach import frame_payloads
from ketch.errors import KetchError

if TYPE_CHECKING:
    from ketch.engine.containers import ContainerService
    from ketch.engine.execs import ExecService
    from ketch.engine.store import Container

logger = logging.getLogger(__name__)

NANOSECONDS = 1_000_000_000
DEFAULT_INTERVAL = 30 * NANOSECONDS
DEFAULT_TIMEOUT = 30 * NANOSECONDS
DEFAULT_RETRIES = 3
MAX_LOG_ENTRIES = 5
MAX_OUTPUT_BYTES = 4096

STARTING, HEALTHY, UNHEALTHY = "starting", "healthy", "unhealthy"


def probe_command(healthcheck: dict[str, Any] | None) -> list[str] | None:
    """Return the argv of a healthcheck's test, or None when it has no check."""
    test = list((healthcheck or {}).get("Test") or [])
    if not test or test[0] == "NONE":
        return None
    if test[0] == "CMD-SHELL":
        return ["/bin/sh", "-c", " ".join(test[1:])]
    if test[0] == "CMD":
        return test[1:] or None
    return None


class HealthMonitor:
    """One probe loop per running container that has a healthcheck."""

    def __init__(self, containers: ContainerService, execs: ExecService) -> None:
        self._containers = containers
        self._execs = execs
        self._loops: dict[str, asyncio.Task[None]] = {}

    def watch(self, container: Container) -> None:
        """Start probing a container that just started (or runs after a ketchd restart)."""
        healthcheck = container.config.get("Healthcheck")
        if probe_command(healthcheck) is None or container.id in self._loops:
            return
        if container.state.health is None or container.state.health.get("Status") != HEALTHY:
            container.state.health = {"Status": STARTING, "FailingStreak": 0, "Log": []}
            self._containers.save(container)
        task = asyncio.get_running_loop().create_task(self._probe_loop(container.id))
        self._loops[container.id] = task

    def forget(self, container_id: str) -> None:
        task = self._loops.pop(container_id, None)
        if task is not None:
            task.cancel()

    async def close(self) -> None:
        tasks = list(self._loops.values())
        self._loops.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _probe_loop(self, container_id: str) -> None:
        started = asyncio.get_running_loop().time()
        try:
            while True:
                container = self._containers.find(container_id)
                if container is None or not container.running:
                    return
                settings = _settings(container.config.get("Healthcheck") or {})
                in_start_period = asyncio.get_running_loop().time() - started < settings["start"]
                status = (container.state.health or {}).get("Status")
                waiting_to_start = in_start_period and status == STARTING
                wait = settings["start_interval"] if waiting_to_start else settings["interval"]
                await asyncio.sleep(wait)
                container = self._containers.find(container_id)
                if container is None or not container.running or container.state.paused:
                    continue
                result = await self._probe(container, settings["timeout"])
                self._record(container, result, settings["retries"], in_start_period)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("healthcheck of container %s stopped", container_id)
        finally:
            if self._loops.get(container_id) is asyncio.current_task():
                del self._loops[container_id]

    async def _probe(self, container: Container, timeout: float) -> dict[str, Any]:
        command = probe_command(container.config.get("Healthcheck")) or []
        start = timestamps.now()
        body = {"Cmd": command, "AttachStdout": True, "AttachStderr": True}
        output = bytearray()
        exit_code = -1
        try:
            exec_id = self._execs.create(container.id, body)["Id"]
            session = await self._execs.start(exec_id, detach=False)

            async def collect() -> None:
                async for piece in session.output:
                    if len(output) < MAX_OUTPUT_BYTES:
                        output.extend(frame_payloads(piece)[0])

            try:
                await asyncio.wait_for(collect(), timeout)
                exit_code = self._execs.get(exec_id).exit_code
                exit_code = -1 if exit_code is None else exit_code
            except TimeoutError:
                await self._kill_probe(exec_id)
                output[:] = f"Health check exceeded timeout ({timeout:g}s)".encode()
        except KetchError as error:
            output[:] = str(error).encode()
        return {
            "Start": start,
            "End": timestamps.now(),
            "ExitCode": exit_code,
            "Output": bytes(output[:MAX_OUTPUT_BYTES]).decode(errors="replace"),
        }

    async def _kill_probe(self, exec_id: str) -> None:
        try:
            await self._containers.supervisor.kill(exec_id, signal.SIGKILL)
        except KetchError as error:
            logger.debug("cannot kill healthcheck exec %s: %s", exec_id, error)

    def _record(
        self, container: Container, result: dict[str, Any], retries: int, in_start_period: bool
    ) -> None:
        health = container.state.health or {"Status": STARTING, "FailingStreak": 0, "Log": []}
        previous = health["Status"]
        health["Log"] = (list(health.get("Log") or []) + [result])[-MAX_LOG_ENTRIES:]
        if result["ExitCode"] == 0:
            health["Status"] = HEALTHY
            health["FailingStreak"] = 0
        elif not (in_start_period and previous == STARTING):
            health["FailingStreak"] = int(health.get("FailingStreak") or 0) + 1
            if health["FailingStreak"] >= retries:
                health["Status"] = UNHEALTHY
        container.state.health = health
        self._containers.save(container)
        if health["Status"] != previous:
            logger.info("container %s is %s", container.id, health["Status"])
            self._containers.emit(container, f"health_status: {health['Status']}")


def _settings(healthcheck: dict[str, Any]) -> dict[str, float]:
    def seconds(key: str, default: int) -> float:
        value = healthcheck.get(key) or 0
        return (value if value > 0 else default) / NANOSECONDS

    return {
        "interval": seconds("Interval", DEFAULT_INTERVAL),
        "timeout": seconds("Timeout", DEFAULT_TIMEOUT),
        "start": seconds("StartPeriod", 0),
        # Without a StartInterval, the start period probes at the Interval, as dockerd does.
        "start_interval": seconds("StartInterval", healthcheck.get("Interval") or DEFAULT_INTERVAL),
        "retries": float(healthcheck.get("Retries") or DEFAULT_RETRIES),
    }
