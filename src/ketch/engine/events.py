"""Engine events for ``GET /events``: what happened to containers and images, in order.

An event is the Engine API's message::

    {"Type": "container", "Action": "die", "Actor": {"ID": id, "Attributes": {...}},
     "scope": "local", "time": seconds, "timeNano": nanoseconds,
     "status": "die", "id": id, "from": image}

``status``, ``id`` and ``from`` are the pre-1.22 fields that dockerd still sends for
container and image events, and the docker CLI's default format prints them. Container
attributes are the container's labels plus ``name`` and ``image``, and an action's own
values (``exitCode`` for die, ``signal`` for kill, ``oldName`` for rename).

The bus keeps the last ``HISTORY_SIZE`` events in memory, so ``since`` replays recent
ones; older events and events from before ketchd started are not kept. Filters follow
``docker events --filter``: ``type``, ``event`` (the action; ``health_status`` matches
every ``health_status: ...``), ``container`` (id, id prefix or name), ``image``,
``label`` (``key`` or ``key=value``). Values of one filter are alternatives, and
different filters must all match.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from ketch.errors import InvalidArgument

logger = logging.getLogger(__name__)

HISTORY_SIZE = 1024
# Events queued for one subscriber that does not read before it is dropped.
MAX_QUEUED_EVENTS = 4096

FILTERS = ("type", "event", "container", "image", "label")
TYPES = ("container", "image", "volume", "network", "daemon", "plugin", "node", "service")


def check_filters(filters: dict[str, list[str]]) -> dict[str, list[str]]:
    """Return the filters with empty ones dropped; raise InvalidArgument for unknown ones."""
    for name in filters:
        if name not in FILTERS:
            raise InvalidArgument(f"invalid filter {name!r}: events support {', '.join(FILTERS)}")
    for value in filters.get("type", []):
        if value not in TYPES:
            raise InvalidArgument(
                f"invalid filter 'type={value}': expected one of {', '.join(TYPES)}"
            )
    return {name: values for name, values in filters.items() if values}


def matches(event: dict[str, Any], filters: dict[str, list[str]]) -> bool:
    """Return whether ``event`` passes every filter."""
    actor = event["Actor"]
    attributes = actor["Attributes"]
    for name, values in filters.items():
        if name == "type" and event["Type"] not in values:
            return False
        if name == "event" and not any(_action_matches(event["Action"], v) for v in values):
            return False
        if name == "container":
            if event["Type"] != "container" or not any(
                _container_matches(actor["ID"], attributes.get("name", ""), v) for v in values
            ):
                return False
        if name == "image" and not _image_matches(event, values):
            return False
        if name == "label" and not any(_label_matches(attributes, v) for v in values):
            return False
    return True


def _action_matches(action: str, value: str) -> bool:
    return action == value or action.split(":", 1)[0] == value


def _container_matches(container_id: str, name: str, value: str) -> bool:
    return container_id.startswith(value) or name == value.lstrip("/")


def _image_matches(event: dict[str, Any], values: list[str]) -> bool:
    if event["Type"] == "image":
        candidates = {event["Actor"]["ID"], event["Actor"]["Attributes"].get("name", "")}
    else:
        candidates = {event["Actor"]["Attributes"].get("image", "")}
    for value in values:
        tagged = value if ":" in value.rsplit("/", 1)[-1] else f"{value}:latest"
        if value in candidates or tagged in candidates:
            return True
    return False


def _label_matches(attributes: dict[str, str], value: str) -> bool:
    key, has_value, expected = value.partition("=")
    if key not in attributes:
        return False
    return not has_value or attributes[key] == expected


class Subscription:
    """One client's events: a queue fed by the bus, read until ``until`` or close."""

    def __init__(self, bus: EventBus, filters: dict[str, list[str]], until_ns: int) -> None:
        self.queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self.filters = filters
        self.until_ns = until_ns
        self._bus = bus

    async def _next_event(self) -> dict[str, Any] | None:
        """Return the next queued event; None at ``until`` or when the bus dropped this."""
        if not self.queue.empty():
            return self.queue.get_nowait()  # events replayed for since come before until
        timeout = None
        if self.until_ns:
            timeout = max(0.0, (self.until_ns - time.time_ns()) / 1e9)
        try:
            return await asyncio.wait_for(self.queue.get(), timeout)
        except TimeoutError:
            return None

    def offer(self, event: dict[str, Any]) -> None:
        if not matches(event, self.filters):
            return
        if self.queue.qsize() >= MAX_QUEUED_EVENTS:
            logger.warning(
                "dropping an events subscriber: it fell %d events behind", MAX_QUEUED_EVENTS
            )
            self.queue.put_nowait(None)
            self._bus.unsubscribe(self)
            return
        self.queue.put_nowait(event)

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        """Yield events until ``until`` passes (when set) or the bus drops this subscriber."""
        try:
            while True:
                event = await self._next_event()
                if event is None:
                    return
                if self.until_ns and event["timeNano"] > self.until_ns:
                    return
                yield event
        finally:
            self._bus.unsubscribe(self)


class EventBus:
    """Publishes engine events to subscribers and keeps the recent ones for ``since``."""

    def __init__(self, history_size: int = HISTORY_SIZE) -> None:
        self._history: collections.deque[dict[str, Any]] = collections.deque(maxlen=history_size)
        self._subscribers: list[Subscription] = []

    @property
    def listener_count(self) -> int:
        return len(self._subscribers)

    def publish(
        self,
        event_type: str,
        action: str,
        actor_id: str,
        attributes: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """Record an event and send it to every subscriber whose filters it passes."""
        now = time.time_ns()
        event: dict[str, Any] = {
            "Type": event_type,
            "Action": action,
            "Actor": {"ID": actor_id, "Attributes": dict(attributes or {})},
            "scope": "local",
            "time": now // 1_000_000_000,
            "timeNano": now,
        }
        if event_type in ("container", "image"):
            event["status"] = action
            event["id"] = actor_id
            if event_type == "container":
                event["from"] = event["Actor"]["Attributes"].get("image", "")
        self._history.append(event)
        for subscriber in list(self._subscribers):
            subscriber.offer(event)
        return event

    def subscribe(
        self, filters: dict[str, list[str]], since_ns: int = 0, until_ns: int = 0
    ) -> Subscription:
        """Start a subscription; with ``since``, the kept events from then on come first."""
        subscription = Subscription(self, check_filters(filters), until_ns)
        if since_ns:
            for event in self._history:
                if event["timeNano"] >= since_ns:
                    subscription.offer(event)
        if until_ns and until_ns <= time.time_ns():
            subscription.queue.put_nowait(None)  # a window wholly in the past: replay only
        else:
            self._subscribers.append(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        if subscription in self._subscribers:
            self._subscribers.remove(subscription)
