"""The errors the CLI reports, each with the text docker prints for the same failure.

``main`` is the one place that prints them and turns them into exit codes, as docker
does. A usage error, and any failure of ``run`` before the container runs, exits 125.
``run`` exits 126 when the container's command cannot be invoked and 127 when it is not
found. A failure of any other command exits 1, and so does a conflict between two flags
of ``run``, which docker finds only after parsing.
"""

from __future__ import annotations

from ketch.errors import InvalidArgument, KetchError, Unavailable


class UsageError(InvalidArgument):
    """The command line is invalid (an unknown flag, a missing argument)."""


class ApiError(KetchError):
    """The daemon replied with an error status; ``message`` is its ``message`` field."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"Error response from daemon: {message}")
        self.status = status
        self.message = message


class DaemonUnreachable(Unavailable):
    """Nothing responds on the daemon's socket."""


class ProtocolFailure(KetchError):
    """The daemon's reply is not valid HTTP or not the JSON the API defines."""


class StreamError(KetchError):
    """A streamed reply (image pull progress) ended with an error message."""


class NotATerminal(KetchError):
    """``-it`` was given but stdin is not a terminal; docker exits 1 for this."""

    exit_code = 1

    def __init__(self) -> None:
        super().__init__("the input device is not a TTY")


class CommandFailed(KetchError):
    """A failure of a valid command line, such as a missing local file or stdout being a
    terminal. Docker exits 1 for these and prints no usage hint."""


class ConflictingOptions(KetchError):
    """A pair of flags that exclude each other, such as ``run -d -a stdout``. Docker 28
    reports this after parsing, without a usage hint and with exit status 1."""

    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(f"conflicting options: {message}")


class StartFailed(KetchError):
    """The container was created but did not start. ``exit_code`` is docker's: 127 when
    the command was not found, 126 when it could not be invoked, else 125."""

    def __init__(self, message: str) -> None:
        super().__init__(f"Error response from daemon: {message}")
        self.exit_code = start_failure_exit_code(message)


def start_failure_exit_code(message: str) -> int:
    """Pick docker's exit code for a start error from the runtime's message."""
    if "executable file not found" in message or "no such file or directory" in message:
        return 127
    if "permission denied" in message or "is a directory" in message:
        return 126
    return 125
