"""The engine's event bus: publishing, filters, since and until."""

from __future__ import annotations

import asyncio
import time

import pytest

from ketch.engine.events import EventBus, matches
from ketch.errors import InvalidArgument


def collect(bus: EventBus, filters: dict[str, list[str]], since_ns: int, until_ns: int) -> list:
    async def run() -> list:
        subscription = bus.subscribe(filters, since_ns, until_ns)
        return [event async for event in subscription.events()]

    return asyncio.run(run())


def test_event_has_legacy_fields() -> None:
    event = EventBus().publish("container", "start", "abc", {"image": "busybox", "name": "x"})
    assert (event["status"], event["id"], event["from"]) == ("start", "abc", "busybox")


def test_since_replays_until_ends() -> None:
    bus = EventBus()
    start = time.time_ns()
    bus.publish("container", "create", "abc", {"name": "x"})
    bus.publish("container", "start", "abc", {"name": "x"})
    events = collect(bus, {}, start, time.time_ns())
    assert [event["Action"] for event in events] == ["create", "start"]


def test_live_event_reaches_subscriber() -> None:
    async def run() -> list:
        bus = EventBus()
        subscription = bus.subscribe({}, 0, time.time_ns() + 2_000_000_000)
        bus.publish("image", "pull", "busybox:latest", {"name": "busybox:latest"})
        iterator = subscription.events()
        return [await anext(iterator)]

    assert asyncio.run(run())[0]["Action"] == "pull"


def test_subscriber_leaves_after_until() -> None:
    bus = EventBus()
    collect(bus, {}, 0, time.time_ns() + 50_000_000)
    assert bus.listener_count == 0


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({"type": ["container"]}, True),
        ({"type": ["image"]}, False),
        ({"event": ["die"]}, True),
        ({"container": ["web"]}, True),
        ({"container": ["abc"]}, True),
        ({"container": ["other"]}, False),
        ({"image": ["busybox"]}, True),
        ({"label": ["tier=front"]}, True),
        ({"label": ["tier=back"]}, False),
        ({"label": ["tier"]}, True),
    ],
)
def test_filter_matches(filters: dict[str, list[str]], expected: bool) -> None:
    attributes = {"name": "web", "image": "busybox:latest", "tier": "front", "exitCode": "0"}
    event = EventBus().publish("container", "die", "abcdef", attributes)
    assert matches(event, filters) is expected


def test_health_status_filter_matches_prefix() -> None:
    event = EventBus().publish("container", "health_status: healthy", "abc", {"name": "x"})
    assert matches(event, {"event": ["health_status"]})


def test_unknown_filter_rejected() -> None:
    with pytest.raises(InvalidArgument, match="colour"):
        EventBus().subscribe({"colour": ["red"]})
