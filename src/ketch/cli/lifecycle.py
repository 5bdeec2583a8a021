"""Container verbs that take names and print them back: stop, kill, restart, pause,
unpause, wait and rename.

Each container is handled on its own, as docker does: a failure is printed and the rest
are still handled, and the exit status is 1 if any failed.
"""

from __future__ import annotations

import sys

from ketch.cli.errors import ApiError, ProtocolFailure, UsageError
from ketch.cli.options import Command, Flag

# Not typing.TYPE_CHECKING: importing typing costs about 3 ms of start-up.
TYPE_CHECKING = False

if TYPE_CHECKING:
    from collections.abc import Callable

    from ketch.cli.client import Client
    from ketch.cli.main import Context

_TIME = Flag(
    "time",
    "Seconds to wait before killing the container (default: the container's stop timeout)",
    short="t",
    metavar="int",
)
_STOP_SIGNAL = Flag("signal", "Signal to send to the container", short="s", metavar="string")


def for_each(args: list[str], action: Callable[[str], str | None]) -> int:
    """Run ``action`` on each name; print its result (or the error); 1 if any failed."""
    failed = False
    for name in args:
        try:
            result = action(name)
        except ApiError as error:
            failed = True
            sys.stderr.write(f"{error}\n")
            continue
        if result is not None:
            sys.stdout.write(f"{result}\n")
            sys.stdout.flush()
    return 1 if failed else 0


def delete_each(
    client: Client, names: list[str], path_template: str, query: dict[str, str] | None = None
) -> int:
    """Send a DELETE of ``path_template``, with ``{name}`` replaced, for each name.

    Print each deleted name, or the error, and return 1 if any failed.
    """

    def delete(name: str) -> str:
        client.open("DELETE", path_template.format(name=name), query).close()
        return name

    return for_each(names, delete)


def stop_query(options: dict) -> dict[str, str]:
    query = {}
    if options["time"] is not None:
        query["t"] = str(parse_seconds(options["time"]))
    if options["signal"]:
        query["signal"] = options["signal"]
    return query


def parse_seconds(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise UsageError(
            f'invalid argument "{text}" for "-t, --time" flag: expected an integer'
        ) from None


def post(client: Client, path: str, query: dict[str, str] | None = None) -> None:
    client.open("POST", path, query).close()


def stop(context: Context, options: dict, args: list[str]) -> int:
    client, query = context.client(), stop_query(options)
    return for_each(args, lambda name: post(client, f"/containers/{name}/stop", query) or name)


def restart(context: Context, options: dict, args: list[str]) -> int:
    client, query = context.client(), stop_query(options)
    return for_each(args, lambda name: post(client, f"/containers/{name}/restart", query) or name)


def kill(context: Context, options: dict, args: list[str]) -> int:
    client = context.client()
    query = {"signal": options["signal"]} if options["signal"] else {}
    return for_each(args, lambda name: post(client, f"/containers/{name}/kill", query) or name)


def pause(context: Context, options: dict, args: list[str]) -> int:
    client = context.client()
    return for_each(args, lambda name: post(client, f"/containers/{name}/pause") or name)


def unpause(context: Context, options: dict, args: list[str]) -> int:
    client = context.client()
    return for_each(args, lambda name: post(client, f"/containers/{name}/unpause") or name)


def wait(context: Context, options: dict, args: list[str]) -> int:
    client = context.client()

    def wait_one(name: str) -> str:
        result = client.call("POST", f"/containers/{name}/wait")
        if not isinstance(result, dict) or not isinstance(result.get("StatusCode"), int):
            raise ProtocolFailure(f"invalid reply to container wait: {result!r}")
        return str(result["StatusCode"])

    return for_each(args, wait_one)


def rename(context: Context, options: dict, args: list[str]) -> int:
    old, new = args
    if not new.strip():
        raise UsageError("Error: Neither old nor new names may be empty")
    context.client().open("POST", f"/containers/{old}/rename", {"name": new}).close()
    return 0


def _command(name: str, summary: str, flags: tuple[Flag, ...] = ()) -> Command:
    return Command(
        name, f"ketch {name} [OPTIONS] CONTAINER [CONTAINER...]", summary, flags, min_args=1
    )


VERBS = {
    "stop": (_command("stop", "Stop one or more running containers", (_STOP_SIGNAL, _TIME)), stop),
    "restart": (
        _command("restart", "Restart one or more containers", (_STOP_SIGNAL, _TIME)),
        restart,
    ),
    "kill": (
        _command(
            "kill",
            "Kill one or more running containers",
            (
                Flag(
                    "signal",
                    "Signal to send to the container (default: SIGKILL)",
                    short="s",
                    metavar="string",
                ),
            ),
        ),
        kill,
    ),
    "pause": (_command("pause", "Pause all processes within one or more containers"), pause),
    "unpause": (
        _command("unpause", "Unpause all processes within one or more containers"),
        unpause,
    ),
    "wait": (
        _command("wait", "Block until one or more containers stop, then print their exit codes"),
        wait,
    ),
    "rename": (
        Command(
            "rename",
            "ketch rename CONTAINER NEW_NAME",
            "Rename a container",
            min_args=2,
            max_args=2,
        ),
        rename,
    ),
}
