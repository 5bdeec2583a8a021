"""``ketch exec``: run a command in a running container.

``POST /containers/{id}/exec`` creates the exec and ``POST /exec/{id}/start`` runs it.
The start is hijacked, so its streams are copied as ``run`` copies them. Then
``GET /exec/{id}/json`` returns the exec's exit code, which becomes ours. With ``-d``
the start returns at once.
"""

from __future__ import annotations

import os
import sys

from ketch.cli.errors import ProtocolFailure, StartFailed
from ketch.cli.options import Command, Flag

# Not typing.TYPE_CHECKING: importing typing costs about 3 ms of start-up.
TYPE_CHECKING = False

if TYPE_CHECKING:
    from ketch.cli.main import Context

COMMAND = Command(
    "exec",
    "ketch exec [OPTIONS] CONTAINER COMMAND [ARG...]",
    "Execute a command in a running container",
    (
        Flag("detach", "Detached mode: run command in the background", short="d"),
        Flag(
            "detach-keys", "Override the key sequence for detaching a container", metavar="string"
        ),
        Flag("env", "Set environment variables", short="e", metavar="list", repeated=True),
        Flag("env-file", "Read in a file of environment variables", metavar="list", repeated=True),
        Flag("interactive", "Keep STDIN open even if not attached", short="i"),
        Flag("privileged", "Give extended privileges to the command"),
        Flag("tty", "Allocate a pseudo-TTY", short="t"),
        Flag(
            "user",
            "Username or UID (format: <name|uid>[:<group|gid>])",
            short="u",
            metavar="string",
        ),
        Flag("workdir", "Working directory inside the container", short="w", metavar="string"),
    ),
    min_args=2,
    interspersed=False,
)


def exec_body(command: list[str], options: dict) -> dict:
    from ketch.cli.containerflags import environment_entries, read_env_file

    detached = bool(options["detach"])
    body: dict = {
        "AttachStdin": bool(options["interactive"]) and not detached,
        "AttachStdout": not detached,
        "AttachStderr": not detached,
        "Tty": bool(options["tty"]),
        "Cmd": command,
    }
    environment = [entry for path in options["env-file"] for entry in read_env_file(path)]
    environment += environment_entries(options["env"])
    if environment:
        body["Env"] = environment
    for flag, field in (("user", "User"), ("workdir", "WorkingDir"), ("detach-keys", "DetachKeys")):
        if options[flag]:
            body[field] = options[flag]
    if options["privileged"]:
        body["Privileged"] = True
    if body["Tty"]:
        from ketch.cli.run import console_size

        size = console_size()
        if size:
            body["ConsoleSize"] = size
    return body


def execute(context: Context, options: dict, args: list[str]) -> int:
    from ketch.cli.errors import ApiError
    from ketch.cli.run import check_terminal

    client = context.client()
    body = exec_body(args[1:], options)
    check_terminal(body["Tty"], body["AttachStdin"])
    created = client.call("POST", f"/containers/{args[0]}/exec", body=body)
    if not isinstance(created, dict) or not isinstance(created.get("Id"), str):
        raise ProtocolFailure(f"invalid reply to exec create: {created!r}")
    exec_id = created["Id"]
    start = {"Detach": bool(options["detach"]), "Tty": body["Tty"]}
    if options["detach"]:
        client.open("POST", f"/exec/{exec_id}/start", body=start).close()
        return 0
    try:
        attached = client.hijack(f"/exec/{exec_id}/start", {}, body=start)
    except ApiError as error:
        raise StartFailed(error.message) from None
    copy_exec_streams(client, exec_id, attached, body)
    inspected = client.call("GET", f"/exec/{exec_id}/json")
    if not isinstance(inspected, dict) or not isinstance(inspected.get("ExitCode"), int):
        raise ProtocolFailure(f"invalid reply to exec inspect: {inspected!r}")
    return inspected["ExitCode"]


def copy_exec_streams(client: object, exec_id: str, attached: object, body: dict) -> None:
    from ketch.cli.run import _NoTerminal, _Terminal, copy_output, copy_raw_output, start_stdin_copy

    tty = body["Tty"]
    stdin = body["AttachStdin"]
    terminal = None
    if tty and stdin and os.isatty(0):
        terminal = _Terminal(client, "", path=f"/exec/{exec_id}/resize")  # type: ignore[arg-type]
    try:
        with terminal or _NoTerminal():
            if stdin:
                start_stdin_copy(attached)  # type: ignore[arg-type]
            if tty:
                copy_raw_output(attached)  # type: ignore[arg-type]
            else:
                copy_output(attached.iter_frames())  # type: ignore[attr-defined]
    finally:
        attached.close()  # type: ignore[attr-defined]
        sys.stdout.flush()
