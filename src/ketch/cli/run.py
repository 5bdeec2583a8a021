"""``ketch run``: create a container, pull its image if needed, run it and pass on its
output and exit status.

The order of requests is docker's, and it matters:

1. ``POST /containers/create``; on 404 "No such image", pull the image (progress on
   stderr) and create again;
2. ``POST /containers/{id}/attach`` hijacked, before the start, so no output is missed;
3. ``POST /containers/{id}/wait`` (``removed`` with ``--rm``, else ``next-exit``), whose
   headers arrive once the daemon has registered the waiter, so the exit cannot be missed;
4. ``POST /containers/{id}/start``;
5. copy the output frames to stdout and stderr until the daemon closes the stream;
6. read the wait's body and exit with the container's status.

With ``-d`` only create and start happen and the container's ID is printed. While the
container runs, SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1 and SIGUSR2 sent to the CLI are
passed on to the container (docker's ``--sig-proxy``, on by default).
"""

from __future__ import annotations

import os
import signal
import sys

from ketch.cli.errors import ApiError, ProtocolFailure, StartFailed
from ketch.cli.options import Command, Flag

# Not typing.TYPE_CHECKING: importing typing costs about 3 ms of start-up.
TYPE_CHECKING = False

if TYPE_CHECKING:
    from collections.abc import Iterator

    from ketch.cli.client import Client
    from ketch.cli.main import Context

COMMAND = Command(
    "run",
    "ketch run [OPTIONS] IMAGE [COMMAND] [ARG...]",
    "Create and run a new container from an image",
    (
        Flag("detach", "Run container in background and print container ID", short="d"),
        Flag("env", "Set environment variables", short="e", metavar="list", repeated=True),
        Flag("name", "Assign a name to the container", metavar="string"),
        Flag(
            "network",
            "Connect a container to a network: none, bridge or default",
            metavar="network",
            default="default",
        ),
        Flag("rm", "Automatically remove the container and its resources when it exits"),
    ),
    min_args=1,
    interspersed=False,
)

STDOUT_STREAMS = (0, 1)
STDERR_STREAM = 2
DAEMON_ERROR_STREAM = 3
PROXIED_SIGNALS = ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2")


def environment_entries(values: list[str]) -> list[str]:
    """Turn ``-e`` values into Env entries: ``KEY`` alone takes the CLI's own value of
    KEY, and stays ``KEY`` (which unsets it) when the CLI has none, as in docker."""
    entries = []
    for value in values:
        if "=" not in value and value in os.environ:
            value = f"{value}={os.environ[value]}"
        entries.append(value)
    return entries


def create_body(image: str, command: list[str], options: dict) -> dict:
    """Build the ``POST /containers/create`` body for the parsed flags."""
    attached = not options["detach"]
    return {
        "Image": image,
        "Cmd": command or None,
        "Env": environment_entries(options["env"]),
        "AttachStdin": False,
        "AttachStdout": attached,
        "AttachStderr": attached,
        "Tty": False,
        "OpenStdin": False,
        "StdinOnce": False,
        "HostConfig": {"AutoRemove": bool(options["rm"]), "NetworkMode": options["network"]},
    }


def create_container(client: Client, body: dict, name: str | None) -> str:
    """Create the container, pulling its image first when the daemon does not have it."""
    query = {"name": name} if name else None
    try:
        created = client.call("POST", "/containers/create", query, body)
    except ApiError as error:
        if error.status != 404 or "No such image" not in error.message:
            raise
        from ketch.cli.pull import pull_image, with_default_tag

        sys.stderr.write(f"Unable to find image '{with_default_tag(body['Image'])}' locally\n")
        pull_image(client, body["Image"], sys.stderr)
        created = client.call("POST", "/containers/create", query, body)
    if not isinstance(created, dict) or not isinstance(created.get("Id"), str):
        raise ProtocolFailure(f"invalid reply to container create: {created!r}")
    for warning in created.get("Warnings") or []:
        sys.stderr.write(f"WARNING: {warning}\n")
    return created["Id"]


def execute(context: Context, options: dict, args: list[str]) -> int:
    client = context.client()
    container_id = create_container(
        client, create_body(args[0], args[1:], options), options["name"]
    )
    if options["detach"]:
        start_container(client, container_id, remove_on_failure=bool(options["rm"]))
        print(container_id)
        return 0

    attached = client.hijack(
        f"/containers/{container_id}/attach", {"stream": "1", "stdout": "1", "stderr": "1"}
    )
    condition = "removed" if options["rm"] else "next-exit"
    try:
        wait = client.open("POST", f"/containers/{container_id}/wait", {"condition": condition})
    except BaseException:
        attached.close()
        raise
    try:
        start_container(client, container_id, remove_on_failure=bool(options["rm"]))
        with _SignalProxy(client, container_id):
            copy_output(attached.iter_frames())
            result = wait.json()
    finally:
        attached.close()
        wait.close()
    return exit_status(result)


def start_container(client: Client, container_id: str, remove_on_failure: bool) -> None:
    """Start the container; StartFailed carries docker's exit code for the failure.

    With ``--rm`` the container is removed after a failed start, since it never ran and
    so will never exit and be removed by the daemon.
    """
    try:
        client.open("POST", f"/containers/{container_id}/start").close()
    except ApiError as error:
        if remove_on_failure:
            _remove_quietly(client, container_id)
        raise StartFailed(error.message) from None


def _remove_quietly(client: Client, container_id: str) -> None:
    try:
        client.open("DELETE", f"/containers/{container_id}", {"force": "1"}).close()
    except ApiError as error:
        if error.status != 404:
            sys.stderr.write(f"ketch: could not remove container {container_id}: {error}\n")


def copy_output(frames: Iterator[tuple[int, bytes]]) -> None:
    """Write each frame's payload to stdout or stderr as it arrives."""
    stdout = sys.stdout.buffer
    stderr = sys.stderr.buffer
    for stream, payload in frames:
        if stream == DAEMON_ERROR_STREAM:
            raise ProtocolFailure(
                f"error from the daemon while attached: {payload.decode(errors='replace')}"
            )
        target = stderr if stream == STDERR_STREAM else stdout
        target.write(payload)
        target.flush()


def exit_status(result: object) -> int:
    """Return the container's status from the wait's body; 125 when the wait failed."""
    if not isinstance(result, dict) or not isinstance(result.get("StatusCode"), int):
        raise ProtocolFailure(f"invalid reply to container wait: {result!r}")
    error = result.get("Error")
    if isinstance(error, dict) and error.get("Message"):
        sys.stderr.write(f"ketch: error waiting for container: {error['Message']}\n")
        return 125
    return result["StatusCode"]


class _SignalProxy:
    """Pass signals the CLI receives on to the container while it runs."""

    def __init__(self, client: Client, container_id: str) -> None:
        self._client = client
        self._container_id = container_id
        self._previous: dict[signal.Signals, object] = {}

    def __enter__(self) -> _SignalProxy:
        for name in PROXIED_SIGNALS:
            number = signal.Signals[name]
            self._previous[number] = signal.signal(number, self._forward)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)  # type: ignore[arg-type]

    def _forward(self, number: int, frame: object) -> None:
        name = signal.Signals(number).name
        try:
            query = {"signal": name}
            self._client.open("POST", f"/containers/{self._container_id}/kill", query).close()
        except (ApiError, OSError) as error:
            # The container may have exited between the signal and the request.
            sys.stderr.write(f"ketch: could not pass {name} to the container: {error}\n")
