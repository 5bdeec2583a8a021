"""A logger that imports :mod:`logging` only when a record could be written.

Importing logging (with threading, traceback, string and weakref) costs more than a
whole ``ketch-runc start``. The modules that the short verbs load use this logger
instead of ``logging.getLogger(__name__)``. Debug records are dropped while logging
has not been imported: no handler can exist then, and logging's last-resort handler
writes only warnings and above. Warnings and errors import logging and go through it.
"""

from __future__ import annotations

import posix
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

# The handler setup that ketch-runc postpones until a record is written, with the pid of
# the process that may run it (see defer_setup).
_deferred_setup: tuple[int, Callable[[], None]] | None = None


def defer_setup(setup: Callable[[], None]) -> None:
    """Register ``setup``, which attaches log handlers, to run at the first warning or error.

    Debug records need no setup, because without a handler they are dropped anyway. Only
    this process runs it, not a forked child such as the container's init, where it would
    open the host's log path inside the container's mount namespace.
    """
    global _deferred_setup
    _deferred_setup = (posix.getpid(), setup)


def run_deferred_setup() -> None:
    """Run the setup given to :func:`defer_setup` once, in the process that gave it."""
    global _deferred_setup
    if _deferred_setup is None or _deferred_setup[0] != posix.getpid():
        return
    setup = _deferred_setup[1]
    _deferred_setup = None
    setup()


class LazyLogger:
    """``logging.getLogger(name)``, fetched on first use."""

    def __init__(self, name: str) -> None:
        self.name = name

    def debug(self, message: str, *args: Any) -> None:
        logging = sys.modules.get("logging")
        if logging is not None:
            logging.getLogger(self.name).debug(message, *args)

    def warning(self, message: str, *args: Any) -> None:
        import logging

        run_deferred_setup()
        logging.getLogger(self.name).warning(message, *args)

    def error(self, message: str, *args: Any) -> None:
        import logging

        run_deferred_setup()
        logging.getLogger(self.name).error(message, *args)
