"""A logger that imports :mod:`logging` only when a record could be written.

Importing logging (with threading, traceback, string and weakref) costs more than a
whole ``ketch-runc start``. The modules that the short verbs load use this logger
instead of ``logging.getLogger(__name__)``. Debug records are dropped while logging
has not been imported: no handler can exist then, and logging's last-resort handler
writes only warnings and above. Warnings and errors import logging and go through it.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


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

        logging.getLogger(self.name).warning(message, *args)

    def error(self, message: str, *args: Any) -> None:
        import logging

        logging.getLogger(self.name).error(message, *args)
