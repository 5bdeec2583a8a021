"""``ketch attach``: attach our streams to a running container until it exits.

The wait is registered before the streams are read, as in ``run``, so the exit status
that ends the attach is the container's.
"""

from __future__ import annotations

import os

from ketch.cli.errors import ProtocolFailure
from ketch.cli.options import Command, Flag

# Not typing.TYPE_CHECKING: importing typing costs about 3 ms of start-up.
TYPE_CHECKING = False

if TYPE_CHECKING:
    from ketch.cli.client import Client, Response
    from ketch.cli.main import Context

DETACH_GRACE_SECONDS = 2.0

COMMAND = Command(
    "attach",
    "ketch attach [OPTIONS] CONTAINER",
    "Attach local standard input, output, and error streams to a running container",
    (
        Flag(
            "detach-keys", "Override the key sequence for detaching a container", metavar="string"
        ),
        Flag("no-stdin", "Do not attach STDIN"),
        Flag("sig-proxy", "Proxy all received signals to the process", default=True),
    ),
    min_args=1,
    max_args=1,
)


def execute(context: Context, options: dict, args: list[str]) -> int:
    from ketch.cli.run import (
        _NoTerminal,
        _SignalProxy,
        _Terminal,
        copy_output,
        copy_raw_output,
        exit_status,
        start_stdin_copy,
    )

    client = context.client()
    container = client.call("GET", f"/containers/{args[0]}/json")
    if not isinstance(container, dict) or not isinstance(container.get("Id"), str):
        raise ProtocolFailure(f"invalid reply to container inspect: {container!r}")
    state = container.get("State") or {}
    if not state.get("Running"):
        from ketch.cli.errors import UsageError

        raise UsageError("You cannot attach to a stopped container, start it first")
    container_id = container["Id"]
    config = container.get("Config") or {}
    tty = bool(config.get("Tty"))
    stdin = bool(config.get("OpenStdin")) and not options["no-stdin"]
    query = {"stream": "1", "stdout": "1", "stderr": "1", **({"stdin": "1"} if stdin else {})}
    if options["detach-keys"]:
        query["detachKeys"] = options["detach-keys"]
    wait = client.open("POST", f"/containers/{container_id}/wait", {"condition": "next-exit"})
    try:
        attached = client.hijack(f"/containers/{container_id}/attach", query)
    except BaseException:
        wait.close()
        raise
    terminal = _Terminal(client, container_id) if tty and stdin and os.isatty(0) else None
    proxy = options["sig-proxy"] and not tty
    try:
        with terminal or _NoTerminal():
            if stdin:
                start_stdin_copy(attached)
            with _SignalProxy(client, container_id) if proxy else _NoTerminal():
                if tty:
                    copy_raw_output(attached)
                else:
                    copy_output(attached.iter_frames())
                result = wait_result(client, container_id, wait, stdin)
                if result is None:
                    return 0
    finally:
        attached.close()
        wait.close()
    return exit_status(result)


def wait_result(client: Client, container_id: str, wait: Response, stdin: bool) -> object:
    """Read the wait's result, or return None when the user detached with the detach
    keys: the stream has ended, but after a grace period the container still runs."""
    if not stdin:
        return wait.json()
    import select

    # The body of the wait arrives only when the container exits.
    # NOTE: a container that exits but is still marked running after the grace period
    # is taken as detached, and the command then exits 0 instead of with its status.
    readable, _, _ = select.select([wait.socket], [], [], DETACH_GRACE_SECONDS)
    if not readable:
        container = client.call("GET", f"/containers/{container_id}/json")
        if isinstance(container, dict) and (container.get("State") or {}).get("Running"):
            return None
    return wait.json()
