"""``ketch logs``: a container's output, optionally followed, cut by time or line count.

The reply is the multiplexed frame stream, or the raw output when the container has a
TTY. The container's ``Config.Tty`` decides which, so it is read first.
``--since`` and ``--until`` take what docker takes: a Unix time (``1700000000.5``), an
RFC 3339 time (``2024-05-01T10:00:00Z``), a date, or a duration before now (``10m``).
"""

from __future__ import annotations

import re
import sys
import time

from ketch.cli.errors import UsageError
from ketch.cli.options import Command, Flag

# Not typing.TYPE_CHECKING: importing typing costs about 3 ms of start-up.
TYPE_CHECKING = False

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    from ketch.cli.main import Context

COMMAND = Command(
    "logs",
    "ketch logs [OPTIONS] CONTAINER",
    "Fetch the logs of a container",
    (
        Flag("details", "Show extra details provided to logs"),
        Flag("follow", "Follow log output", short="f"),
        Flag(
            "since",
            "Show logs since timestamp or relative time (e.g. 42m for 42 minutes)",
            metavar="string",
        ),
        Flag(
            "tail",
            'Number of lines to show from the end of the logs (default "all")',
            short="n",
            metavar="string",
        ),
        Flag("timestamps", "Show timestamps", short="t"),
        Flag(
            "until",
            "Show logs before a timestamp or relative time (e.g. 42m for 42 minutes)",
            metavar="string",
        ),
    ),
    min_args=1,
    max_args=1,
)

STDERR_STREAM = 2
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}


def execute(context: Context, options: dict, args: list[str]) -> int:
    query = logs_query(options, time.time())
    client = context.client()
    container = client.call("GET", f"/containers/{args[0]}/json")
    tty = isinstance(container, dict) and bool((container.get("Config") or {}).get("Tty"))
    response = client.open("GET", f"/containers/{args[0]}/logs", query)
    try:
        if tty:
            copy_raw(response.iter_body())
        else:
            copy_frames(iter_frames(response.iter_body()))
    finally:
        response.close()
    return 0


def logs_query(options: dict, now: float) -> dict[str, str]:
    """Build the ``GET /containers/{id}/logs`` query from the flags."""
    query = {"stdout": "1", "stderr": "1"}
    if options["follow"]:
        query["follow"] = "1"
    if options["timestamps"]:
        query["timestamps"] = "1"
    if options["details"]:
        query["details"] = "1"
    if options["since"]:
        query["since"] = parse_time(options["since"], now, "--since")
    if options["until"]:
        query["until"] = parse_time(options["until"], now, "--until")
    tail = options["tail"]
    if tail is not None and tail != "all":
        if not tail.lstrip("-").isdigit():
            raise UsageError(
                f'invalid argument "{tail}" for "-n, --tail" flag: expected a number or "all"'
            )
        query["tail"] = tail
    return query


def parse_time(value: str, now: float, flag: str) -> str:
    """Turn a ``--since``/``--until`` value into the Unix time (seconds) the API takes."""
    text = value.strip()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return text
    duration = parse_duration(text)
    if duration is not None:
        return _seconds_text(now - duration)
    from datetime import UTC, datetime

    try:
        moment = datetime.fromisoformat(text.replace("z", "Z"))
    except ValueError:
        raise UsageError(
            f'invalid value for "{flag}": {value!r}: expected a Unix time, an RFC 3339 time '
            "such as 2024-05-01T10:00:00Z, or a duration such as 10m"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return _seconds_text(moment.timestamp())


def parse_duration(text: str) -> float | None:
    """Parse a Go duration (``1h30m``, ``90s``, ``250ms``) into seconds; None if not one."""
    if not text or _DURATION_PART.sub("", text) != "":
        return None
    return sum(float(number) * _UNIT_SECONDS[unit] for number, unit in _DURATION_PART.findall(text))


def _seconds_text(seconds: float) -> str:
    whole = int(seconds)
    nanoseconds = int(round((seconds - whole) * 1e9))
    return f"{whole}.{nanoseconds:09d}" if nanoseconds else str(whole)


def iter_frames(chunks: Iterable[bytes]) -> Iterator[tuple[int, bytes]]:
    """Split a multiplexed stream (8-byte header, then the payload) into frames."""
    pending = b""
    for chunk in chunks:
        pending += chunk
        while len(pending) >= 8:
            length = int.from_bytes(pending[4:8], "big")
            if len(pending) < 8 + length:
                break
            yield pending[0], pending[8 : 8 + length]
            pending = pending[8 + length :]
    if pending:
        from ketch.cli.errors import ProtocolFailure

        raise ProtocolFailure(f"the log stream ended in the middle of a frame: {pending[:40]!r}")


def copy_frames(frames: Iterable[tuple[int, bytes]]) -> None:
    for stream, payload in frames:
        target = sys.stderr.buffer if stream == STDERR_STREAM else sys.stdout.buffer
        target.write(payload)
        target.flush()


def copy_raw(chunks: Iterable[bytes]) -> None:
    for chunk in chunks:
        sys.stdout.buffer.write(chunk)
        sys.stdout.buffer.flush()
