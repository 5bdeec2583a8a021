"""``ketch events``: the daemon's event stream, printed as docker prints it.

Each event is one line: its time (RFC 3339 with nanoseconds, local zone, ``Z`` for UTC),
type, action, actor ID and sorted attributes, ``2024-05-01T10:00:00.000000000Z container
start 3f2a... (image=busybox, name=web)``. ``--since`` and ``--until`` take what ``logs``
takes; without ``--until`` the stream runs until interrupted.
"""

from __future__ import annotations

import sys
import time

from ketch.cli.options import Command, Flag

# Not typing.TYPE_CHECKING: importing typing costs about 3 ms of start-up.
TYPE_CHECKING = False

if TYPE_CHECKING:
    from ketch.cli.main import Context

COMMAND = Command(
    "events",
    "ketch events [OPTIONS]",
    "Get real time events from the server",
    (
        Flag(
            "filter",
            "Filter output based on conditions provided",
            short="f",
            metavar="filter",
            repeated=True,
        ),
        Flag(
            "format", "Format output using a Go template, or 'json'", metavar="string", default=""
        ),
        Flag("since", "Show all events created since timestamp", metavar="string"),
        Flag("until", "Stream events until this timestamp", metavar="string"),
    ),
    max_args=0,
)


def events_query(options: dict, now: float) -> dict[str, str]:
    from ketch.cli.logs import parse_time
    from ketch.cli.ps import filters_json

    query = {}
    if options["since"]:
        query["since"] = parse_time(options["since"], now, "--since")
    if options["until"]:
        query["until"] = parse_time(options["until"], now, "--until")
    if options["filter"]:
        query["filters"] = filters_json(options["filter"])
    return query


def execute(context: Context, options: dict, args: list[str]) -> int:
    query = events_query(options, time.time())
    response = context.client().open("GET", "/events", query)
    template = None
    if options["format"] and options["format"].strip() != "json":
        from ketch.cli.formatter import compile_template, expand_escapes

        template = compile_template(expand_escapes(options["format"]))
    for event in response.iter_json_lines():
        if template is not None:
            line = template.execute(event)
        elif options["format"]:
            from ketch.cli.template_functions import to_json

            line = to_json(event)
        else:
            line = format_event(event)
        sys.stdout.write(line + "\n")
        sys.stdout.flush()
    return 0


def format_event(event: dict) -> str:
    """Format one event as docker's default line."""
    nanoseconds = event.get("timeNano") or int((event.get("time") or 0) * 1_000_000_000)
    actor = event.get("Actor") or {}
    kind = event.get("Type") or ""
    action = event.get("Action") or event.get("status") or ""
    identifier = actor.get("ID") or event.get("id") or ""
    attributes = actor.get("Attributes") or {}
    line = f"{kind} {action} {identifier}"
    # Docker leaves the time out of the line when the event has none.
    if nanoseconds:
        line = f"{format_time(int(nanoseconds))} {line}"
    if attributes:
        line += " (" + ", ".join(f"{key}={attributes[key]}" for key in sorted(attributes)) + ")"
    return line


def format_time(nanoseconds: int) -> str:
    """Format a time as Go's ``2006-01-02T15:04:05.000000000Z07:00`` in the local zone,
    the layout of docker 28's events: ``Z`` for a zero UTC offset, else ``+01:00``."""
    seconds, fraction = divmod(nanoseconds, 1_000_000_000)
    moment = time.localtime(seconds)
    offset = time.strftime("%z", moment)
    zone = "Z" if offset in ("+0000", "-0000") else f"{offset[:3]}:{offset[3:]}"
    return time.strftime("%Y-%m-%dT%H:%M:%S", moment) + f".{fraction:09d}{zone}"
