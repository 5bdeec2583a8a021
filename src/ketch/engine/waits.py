"""Waiters for ``POST /containers/{id}/wait``: futures resolved when a container stops or
is removed.

Conditions follow docker:

* ``not-running``: resolved at once when the container is not running, else at its exit.
* ``next-exit``: resolved at the container's next exit, even when it is not running now
  (the docker CLI registers it before ``start`` so that it cannot miss a fast exit).
* ``removed``: resolved when the container is removed.

Removal resolves every waiter of the container, because a container removed before it
ever ran never exits. The result is the Engine API's wait body,
``{"StatusCode": n, "Error": None | {"Message": text}}``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from ketch.engine.store import Container
from ketch.errors import InvalidArgument

CONDITIONS = ("not-running", "next-exit", "removed")


def wait_result(container: Container) -> dict[str, Any]:
    """Return the wait response body for the container's last exit."""
    error = {"Message": container.state.error} if container.state.error else None
    return {"StatusCode": container.state.exit_code, "Error": error}


def check_condition(condition: str | None) -> str:
    """Return the condition, "not-running" when empty, or raise InvalidArgument."""
    condition = condition or "not-running"
    if condition not in CONDITIONS:
        raise InvalidArgument(
            f"invalid condition: {condition!r}; expected not-running, next-exit or removed"
        )
    return condition


class Waiters:
    """Futures waiting on containers, by container id. Used from the event loop only."""

    def __init__(self) -> None:
        self._waiting: dict[str, list[tuple[str, asyncio.Future[dict[str, Any]]]]] = {}

    def register(self, container: Container, condition: str) -> asyncio.Future[dict[str, Any]]:
        """Return a future for ``condition``, already resolved when it is already met."""
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        if condition == "not-running" and not container.running:
            future.set_result(wait_result(container))
            return future
        self._waiting.setdefault(container.id, []).append((condition, future))
        return future

    def notify_stopped(self, container: Container) -> None:
        """Resolve the container's not-running and next-exit waiters."""
        self._resolve(container, ("not-running", "next-exit"))

    def notify_removed(self, container: Container) -> None:
        """Resolve every waiter of the container, since it can no longer exit."""
        self._resolve(container, CONDITIONS)
        self._waiting.pop(container.id, None)

    def count(self, container_id: str) -> int:
        return len(self._waiting.get(container_id, []))

    def _resolve(self, container: Container, conditions: tuple[str, ...]) -> None:
        remaining = []
        for condition, future in self._waiting.get(container.id, []):
            if future.done():
                continue  # the waiting client went away and cancelled it
            if condition in conditions:
                future.set_result(wait_result(container))
            else:
                remaining.append((condition, future))
        if remaining:
            self._waiting[container.id] = remaining
        else:
            self._waiting.pop(container.id, None)
