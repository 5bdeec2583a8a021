"""Command line of the supervisor process: ``python -m ketch.supervisor --exec-root DIR``.

With ``--detach`` the command forks: the parent waits until the supervisor is serving (or
has failed to start), exits 0 or 1 accordingly, and leaves the supervisor running in a new
session. ``ensure_supervisor`` starts it that way, so it is nobody's child but init's (or
the nearest subreaper's) and outlives ketchd.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from ketch.errors import KetchError

log = logging.getLogger("ketch.supervisor")

READY_MESSAGE = b"ready"


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m ketch.supervisor",
        description="Run ketch's container supervisor for one exec root.",
    )
    parser.add_argument(
        "--exec-root",
        type=Path,
        default=Path("/run/ketch"),
        help="directory for the socket, pid file, records and runtime state (default: %(default)s)",
    )
    parser.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="minimum level of the messages written to stderr (default: %(default)s)",
    )
    parser.add_argument(
        "--shutdown-timeout",
        type=float,
        default=5.0,
        help="seconds a container gets after SIGTERM before SIGKILL when the supervisor "
        "stops (default: %(default)s)",
    )
    parser.add_argument(
        "--detach",
        action="store_true",
        help="fork into the background and exit once the supervisor is serving",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    logging.basicConfig(
        stream=sys.stderr,
        level=arguments.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
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
