"""Timestamps in the form the Engine API uses: RFC 3339 in UTC with nanoseconds.

Docker writes ``2026-01-06T09:06:59.461876391Z`` for a set time and
``0001-01-01T00:00:00Z`` (Go's zero time) for a time that never happened, such as the
StartedAt of a container that was never started. Clients (the docker CLI, docker-py)
match on that zero value, so ketch uses it too.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime

ZERO_TIME = "0001-01-01T00:00:00Z"

_RFC3339 = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?([Zz]|[+-]\d{2}:\d{2})$"
)


def format_ns(epoch_ns: int) -> str:
    """Format nanoseconds since the epoch as RFC 3339 UTC with nine fraction digits."""
    seconds, nanoseconds = divmod(epoch_ns, 1_000_000_000)
    moment = datetime.fromtimestamp(seconds, UTC)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{nanoseconds:09d}Z"


def now() -> str:
    """Return the current time as RFC 3339 UTC with nanoseconds."""
    return format_ns(time.time_ns())


def to_epoch(timestamp: str) -> float | None:
    """Parse an RFC 3339 timestamp into seconds since the epoch.

    Returns None for the zero time, an empty string or text that is not RFC 3339, because
    every caller shows such a time as "never".
    """
    match = _RFC3339.match(timestamp or "")
    if match is None or timestamp == ZERO_TIME:
        return None
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    moment = datetime(
        int(year), int(month), int(day), int(hour), int(minute), int(second), tzinfo=UTC
    )
    epoch = moment.timestamp()
    if fraction:
        epoch += int(fraction[:9].ljust(9, "0")) / 1e9
    if zone not in ("Z", "z"):
        sign = 1 if zone[0] == "+" else -1
        offset_hours, offset_minutes = zone[1:].split(":")
        epoch -= sign * (int(offset_hours) * 3600 + int(offset_minutes) * 60)
    return epoch


def human_duration(seconds: float) -> str:
    """Describe a duration the way ``docker ps`` does ("3 seconds", "About an hour")."""
    if seconds < 1:
        return "Less than a second"
    if seconds < 2:
        return "1 second"
    if seconds < 60:
        return f"{int(seconds)} seconds"
    minutes = seconds / 60
    if minutes < 2:
        return "About a minute"
    if minutes < 60:
        return f"{int(minutes)} minutes"
    hours = minutes / 60
    if hours < 2:
        return "About an hour"
    if hours < 48:
        return f"{int(hours)} hours"
    if hours < 24 * 7 * 2:
        return f"{int(hours / 24)} days"
    if hours < 24 * 30 * 2:
        return f"{int(hours / 24 / 7)} weeks"
    if hours < 24 * 365 * 2:
        return f"{int(hours / 24 / 30)} months"
    return f"{int(hours / 24 / 365)} years"
