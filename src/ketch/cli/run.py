"""``ketch run``: create a container, pull its image if needed, run it and pass on its
streams and exit status.

The order of requests is docker's, and it matters:

1. ``POST /containers/create``; on 404 "No such image", pull the image (progress on
   stderr) and create again;
2. ``POST /containers/{id}/attach`` hijacked, before the start, so no output is missed;
3. ``POST /containers/{id}/wait`` (``removed`` with ``--rm``, else ``next-exit``), whose
   headers arrive once the daemon has registered the waiter, so the exit cannot be missed;
4. ``POST /containers/{id}/start``;
5. copy the output to stdout and stderr (and, with ``-i``, stdin to the container)
   until the daemon closes the stream;
6. read the wait's body and exit with the container's status.

With ``-d`` only create and start happen and the container's ID is printed. Without a
TTY, SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1 and SIGUSR2 sent to the CLI are passed on
to the container (``--sig-proxy``, on by default). With ``-t`` the output is one raw
stream. When stdin is a terminal too, it is put in raw mode so that keys such as Ctrl-C
reach the container's terminal, and the container's terminal follows the window size.
"""

from __future__ import annotations

import os
import signal
import sys

from ketch.cli.containerflags import FLAGS, create_body
from ketch.cli.errors import (
    ApiError,
    ConflictingOptions,
    ProtocolFailure,
    StartFailed,
    UsageError,
)
from ketch.cli.options import Command, Flag

# Not typing.TYPE_CHECKING: importing typing costs about 3 ms of start-up.
TYPE_CHECKING = False

if TYPE_CHECKING:
    from collections.abc import Iterator

    from ketch.cli.client import Client, Hijacked
    from ketch.cli.main import Context

COMMAND = Command(
    "run",
    "ketch run [OPTIONS] IMAGE [COMMAND] [ARG...]",
    "Create and run a new container from an image",
    (
        Flag("detach", "Run container in background and print container ID", short="d"),
        Flag(
            "detach-keys", "Override the key sequence for detaching a container", metavar="string"
        ),
        Flag("sig-proxy", "Proxy received signals to the process", default=True),
        *FLAGS,
    ),
    min_args=1,
    interspersed=False,
)

STDOUT_STREAMS = (0, 1)
STDERR_STREAM = 2
DAEMON_ERROR_STREAM = 3
PROXIED_SIGNALS = ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2")
PULL_POLICIES = ("missing", "always", "never")


def create_container(client: Client, body: dict, name: str | None, pull: str = "missing") -> str:
    """Create the container, pulling its image first when the daemon does not have it
    (``missing``), always (``always``) or never (``never``)."""
    from ketch.cli.pull import pull_image, with_default_tag

    query = {"name": name} if name else None
    if pull == "always":
        pull_image(client, body["Image"], sys.stderr)
    try:
        created = client.call("POST", "/containers/create", query, body)
    except ApiError as error:
        if pull != "missing" or error.status != 404 or "No such image" not in error.message:
            raise
        sys.stderr.write(f"Unable to find image '{with_default_tag(body['Image'])}' locally\n")
        pull_image(client, body["Image"], sys.stderr)
        created = client.call("POST", "/containers/create", query, body)
    if not isinstance(created, dict) or not isinstance(created.get("Id"), str):
        raise ProtocolFailure(f"invalid reply to container create: {created!r}")
    for warning in created.get("Warnings") or []:
        sys.stderr.write(f"WARNING: {warning}\n")
    return created["Id"]


def pull_policy(options: dict) -> str:
    policy = options["pull"] or "missing"
    if policy not in PULL_POLICIES:
        raise UsageError(
            f'invalid pull option: "{policy}": expected "always", "missing" or "never"'
        )
    return policy


def execute(context: Context, options: dict, args: list[str]) -> int:
    detached = bool(options["detach"])
    body = create_body(args[0], args[1:], options, detached)
    if detached and options["attach"]:
        raise ConflictingOptions("cannot specify both --attach and --detach")
    check_terminal(body["Tty"], body["AttachStdin"])
    size = console_size() if body["Tty"] and not detached else None
    if size:
        body["HostConfig"]["ConsoleSize"] = size
    policy = pull_policy(options)
    client = context.client()
    container_id = create_container(client, body, options["name"], policy)
    if detached:
        start_container(client, container_id, remove_on_failure=bool(options["rm"]))
        print(container_id)
        return 0
    return run_attached(client, container_id, body, options)


def run_attached(client: Client, container_id: str, body: dict, options: dict) -> int:
    streams = {
        "stdin": body["AttachStdin"],
        "stdout": body["AttachStdout"],
        "stderr": body["AttachStderr"],
    }
    query = {"stream": "1", **{name: "1" for name, on in streams.items() if on}}
    if options["detach-keys"]:
        query["detachKeys"] = options["detach-keys"]
    attached = client.hijack(f"/containers/{container_id}/attach", query)
    condition = "removed" if options["rm"] else "next-exit"
    try:
        wait = client.open("POST", f"/containers/{container_id}/wait", {"condition": condition})
    except BaseException:
        attached.close()
        raise
    tty = bool(body["Tty"])
    terminal = (
        _Terminal(client, container_id) if tty and os.isatty(0) and body["AttachStdin"] else None
    )
    try:
        start_container(client, container_id, remove_on_failure=bool(options["rm"]))
        with terminal or _NoTerminal():
            if body["AttachStdin"]:
                start_stdin_copy(attached)
            proxy = options["sig-proxy"] and not tty
            with _SignalProxy(client, container_id) if proxy else _NoTerminal():
                if tty:
                    copy_raw_output(attached)
                else:
                    copy_output(attached.iter_frames())
                from ketch.cli.attach import wait_result

                result = wait_result(client, container_id, wait, body["AttachStdin"])
    finally:
        attached.close()
        wait.close()
    if result is None:
        # Detached with the detach keys: the container runs on, as after ``run -d``.
        return 0
    return exit_status(result)


def console_size() -> list[int] | None:
    """Return stdin's terminal size as [rows, columns], or None when stdin is not a terminal.

    The engine sizes the terminal before the process starts. A resize sent after the start
    comes too late for a command that reads the size at once.
    """
    if not os.isatty(0):
        return None
    size = os.get_terminal_size(0)
    return [size.lines, size.columns]


def check_terminal(tty: bool, stdin: bool) -> None:
    """Raise NotATerminal for ``-it`` when stdin is not a terminal, before anything is
    created, as docker does: raw mode and window sizes need a terminal."""
    if tty and stdin and not os.isatty(0):
        from ketch.cli.errors import NotATerminal

        raise NotATerminal()


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


def start_stdin_copy(attached: Hijacked) -> None:
    """Copy our stdin to the container in a thread; at its end, half-close the socket so
    the container reads end-of-file, as ``docker run -i`` does."""
    import socket
    import threading

    sock = attached.socket

    def copy() -> None:
        try:
            while data := os.read(0, 65536):
                sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            # The container has exited and the daemon closed the stream.
            return

    threading.Thread(target=copy, name="stdin", daemon=True).start()


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


def copy_raw_output(attached: Hijacked) -> None:
    """Write a TTY container's output (one raw stream, no frames) to stdout."""
    stdout = sys.stdout.buffer
    while data := attached.read_raw():
        stdout.write(data)
        stdout.flush()


def exit_status(result: object) -> int:
    """Return the container's status from the wait's body; 125 when the wait failed."""
    if not isinstance(result, dict) or not isinstance(result.get("StatusCode"), int):
        raise ProtocolFailure(f"invalid reply to container wait: {result!r}")
    error = result.get("Error")
    if isinstance(error, dict) and error.get("Message"):
        sys.stderr.write(f"ketch: error waiting for container: {error['Message']}\n")
        return 125
    return result["StatusCode"]


class _NoTerminal:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc_info: object) -> None:
        return None


class _Terminal:
    """Our terminal in raw mode while attached, with its size passed on to the
    container at the start and on every SIGWINCH."""

    def __init__(self, client: Client, container_id: str, path: str = "") -> None:
        self._client = client
        self._path = path or f"/containers/{container_id}/resize"
        self._saved: list | None = None
        self._previous_handler: object = None

    def __enter__(self) -> _Terminal:
        import termios
        import tty

        self._saved = termios.tcgetattr(0)
        # TCSANOW, not setraw's default TCSAFLUSH, so that keys typed before the
        # container started still reach it, as with docker.
        tty.setraw(0, termios.TCSANOW)
        self._previous_handler = signal.signal(signal.SIGWINCH, self._resize)
        self._resize()
        return self

    def __exit__(self, *exc_info: object) -> None:
        import termios

        signal.signal(signal.SIGWINCH, self._previous_handler)  # type: ignore[arg-type]
        if self._saved is not None:
            termios.tcsetattr(0, termios.TCSADRAIN, self._saved)

    def _resize(self, *_: object) -> None:
        size = os.get_terminal_size(0)
        query = {"h": str(size.lines), "w": str(size.columns)}
        try:
            self._client.open("POST", self._path, query).close()
        except (ApiError, OSError):
            # Resizing is best effort: the container may have exited already.
            return


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
