"""``ketch start``: start containers, or with ``-a`` start one and stay attached.

Attached, the order is ``run``'s: attach, register the wait, start, copy the streams,
then exit with the container's status.
"""

from __future__ import annotations

import os

from ketch.cli.errors import UsageError
from ketch.cli.options import Command, Flag

# Not typing.TYPE_CHECKING: importing typing costs about 3 ms of start-up.
TYPE_CHECKING = False

if TYPE_CHECKING:
    from ketch.cli.main import Context

COMMAND = Command(
    "start",
    "ketch start [OPTIONS] CONTAINER [CONTAINER...]",
    "Start one or more stopped containers",
    (
        Flag("attach", "Attach STDOUT/STDERR and forward signals", short="a"),
        Flag("interactive", "Attach container's STDIN", short="i"),
    ),
    min_args=1,
)


def execute(context: Context, options: dict, args: list[str]) -> int:
    client = context.client()
    if not options["attach"] and not options["interactive"]:
        from ketch.cli.lifecycle import for_each, post

        return for_each(args, lambda name: post(client, f"/containers/{name}/start") or name)
    if len(args) > 1:
        raise UsageError("you cannot start and attach multiple containers at once")
    return start_attached(context, args[0], bool(options["interactive"]))


def start_attached(context: Context, name: str, interactive: bool) -> int:
    from ketch.cli.errors import ProtocolFailure
    from ketch.cli.run import (
        _NoTerminal,
        _SignalProxy,
        _Terminal,
        copy_output,
        copy_raw_output,
        exit_status,
        start_container,
        start_stdin_copy,
    )

    client = context.client()
    container = client.call("GET", f"/containers/{name}/json")
    if not isinstance(container, dict) or not isinstance(container.get("Id"), str):
        raise ProtocolFailure(f"invalid reply to container inspect: {container!r}")
    container_id = container["Id"]
    config = container.get("Config") or {}
    tty = bool(config.get("Tty"))
    stdin = interactive and bool(config.get("OpenStdin"))
    query = {"stream": "1", "stdout": "1", "stderr": "1", **({"stdin": "1"} if stdin else {})}
    attached = client.hijack(f"/containers/{container_id}/attach", query)
    try:
        wait = client.open("POST", f"/containers/{container_id}/wait", {"condition": "next-exit"})
    except BaseException:
        attached.close()
        raise
    terminal = _Terminal(client, container_id) if tty and stdin and os.isatty(0) else None
    try:
        start_container(client, container_id, remove_on_failure=False)
        with terminal or _NoTerminal():
            if stdin:
                start_stdin_copy(attached)
            with _SignalProxy(client, container_id) if not tty else _NoTerminal():
                if tty:
                    copy_raw_output(attached)
                else:
                    copy_output(attached.iter_frames())
                result = wait.json()
    finally:
        attached.close()
        wait.close()
    return exit_status(result)
