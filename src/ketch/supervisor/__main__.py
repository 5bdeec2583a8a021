"""Command line of the supervisor process: ``python -m ketch.supervisor --exec-root DIR``.

With ``--detach`` the command forks: the parent waits until the supervisor is serving (or
has failed to start), exits 0 or 1 accordingly, and leaves the supervisor running in a new
session. ``ensure_supervisor`` starts it that way, so it is nobody's child but init's (or
the nearest subreaper's) and outlives ketchd.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from types import SimpleNamespace

from ketch.errors import KetchError
from ketch.linux.malloc import map_large_buffers_separately
from ketch.supervisor import plainlog
from ketch.supervisor.plainlog import get_logger

log = get_logger("ketch.supervisor")

READY_MESSAGE = b"ready"


LOG_LEVELS = ("debug", "info", "warning", "error")
DEFAULT_EXEC_ROOT = "/run/ketch"
DEFAULT_SHUTDOWN_TIMEOUT = 5.0


def parse_arguments(argv: list[str] | None) -> SimpleNamespace:
    """Parse the command line. The forms ``ensure_supervisor`` uses are parsed here, and
    anything else (``--help``, an abbreviation, an invalid value) goes to argparse, which
    prints the help or the error. argparse and what it imports (shutil, gettext) would
    otherwise stay in the supervisor for its whole life, about 0.6 MiB of memory."""
    arguments = sys.argv[1:] if argv is None else argv
    parsed = _parse_plain_forms(arguments)
    if parsed is not None:
        return parsed
    return _parse_with_argparse(arguments)


def _parse_plain_forms(argv: list[str]) -> SimpleNamespace | None:
    """Return the options when every argument is ``--detach`` or one of the other
    options followed by a valid value (``--name value`` or ``--name=value``), else None."""
    values = SimpleNamespace(
        exec_root=Path(DEFAULT_EXEC_ROOT),
        log_level="info",
        shutdown_timeout=DEFAULT_SHUTDOWN_TIMEOUT,
        detach=False,
    )
    remaining = iter(argv)
    for argument in remaining:
        if argument == "--detach":
            values.detach = True
            continue
        name, equals, value = argument.partition("=")
        if not equals:
            value = next(remaining, "")
        if not value or value.startswith("-"):
            return None
        if name == "--exec-root":
            values.exec_root = Path(value)
        elif name == "--log-level" and value in LOG_LEVELS:
            values.log_level = value
        elif name == "--shutdown-timeout":
            try:
                values.shutdown_timeout = float(value)
            except ValueError:
                return None
        else:
            return None
    return values


def _parse_with_argparse(argv: list[str]) -> SimpleNamespace:
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m ketch.supervisor",
        description="Run ketch's container supervisor for one exec root.",
    )
    parser.add_argument(
        "--exec-root",
        type=Path,
        default=Path(DEFAULT_EXEC_ROOT),
        help="directory for the socket, pid file, records and runtime state (default: %(default)s)",
    )
    parser.add_argument(
        "--log-level",
        default="info",
        choices=LOG_LEVELS,
        help="minimum level of the messages written to stderr (default: %(default)s)",
    )
    parser.add_argument(
        "--shutdown-timeout",
        type=float,
        default=DEFAULT_SHUTDOWN_TIMEOUT,
        help="seconds a container gets after SIGTERM before SIGKILL when the supervisor "
        "stops (default: %(default)s)",
    )
    parser.add_argument(
        "--detach",
        action="store_true",
        help="fork into the background and exit once the supervisor is serving",
    )
    return SimpleNamespace(**vars(parser.parse_args(argv)))


def main(argv: list[str] | None = None) -> int:
    map_large_buffers_separately()
    arguments = parse_arguments(argv)
    plainlog.configure(arguments.log_level)
    ready_fd = _detach() if arguments.detach else -1

    from ketch.supervisor.server import Supervisor

    exec_root = arguments.exec_root.absolute()
    try:
        supervisor = Supervisor(exec_root, shutdown_timeout=arguments.shutdown_timeout)
        supervisor.start()
    except (KetchError, OSError) as error:
        log.error("supervisor cannot start for exec root %s: %s", exec_root, error)
        return 1
    if ready_fd >= 0:
        os.write(ready_fd, READY_MESSAGE)
        os.close(ready_fd)
    supervisor.run()
    return 0


def _detach() -> int:
    """Fork; in the parent, exit with the child's start-up result. Return the child's
    end of the readiness pipe."""
    read_fd, write_fd = os.pipe()
    if os.fork() > 0:
        os.close(write_fd)
        with os.fdopen(read_fd, "rb") as ready:
            message = ready.read()
        os._exit(0 if message == READY_MESSAGE else 1)
    os.close(read_fd)
    os.setsid()
    # The supervisor outlives its launcher and must not keep the launcher's working
    # directory (and the mount it is on) busy.
    os.chdir("/")
    return write_fd


if __name__ == "__main__":
    sys.exit(main())
