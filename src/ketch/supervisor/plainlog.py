"""The supervisor's log records, written to stderr without the logging package.

The supervisor is one process for all containers, and the logging package (with
threading, traceback, string and weakref) took about 1 MiB of its memory. Its records go
to ``<exec_root>/supervisor.log`` through stderr in the format that
``logging.basicConfig`` gave them before::

    2026-12-05 02:28:45,514 INFO ketch.supervisor.server: container 6d1c... created

The runtime library's records (``ketch.runtime.lazylog``) still go through logging, set
up in the same format when the first of them is written, or at once at debug level,
where the runtime's debug records need logging's handler from the start.
"""

from __future__ import annotations

import sys
import time

DEBUG = 10
INFO = 20
WARNING = 30
ERROR = 40
LEVELS = {"debug": DEBUG, "info": INFO, "warning": WARNING, "error": ERROR}
LEVEL_NAMES = {DEBUG: "DEBUG", INFO: "INFO", WARNING: "WARNING", ERROR: "ERROR"}
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

_threshold = INFO


def configure(level_name: str) -> None:
    """Write records at ``level_name`` ("debug", "info", "warning" or "error") and above."""
    global _threshold
    _threshold = LEVELS[level_name]

    from ketch.runtime import lazylog

    if _threshold <= DEBUG:
        _configure_logging()
    else:
        lazylog.defer_setup(_configure_logging)


def _configure_logging() -> None:
    import logging

    logging.basicConfig(stream=sys.stderr, level=LEVEL_NAMES[_threshold], format=LOG_FORMAT)


def get_logger(name: str) -> PlainLogger:
    return PlainLogger(name)


class PlainLogger:
    """The part of ``logging.Logger`` that the supervisor uses."""

    def __init__(self, name: str) -> None:
        self.name = name

    def debug(self, message: str, *args: object) -> None:
        self.log(DEBUG, message, *args)

    def info(self, message: str, *args: object) -> None:
        self.log(INFO, message, *args)

    def warning(self, message: str, *args: object) -> None:
        self.log(WARNING, message, *args)

    def error(self, message: str, *args: object) -> None:
        self.log(ERROR, message, *args)

    def exception(self, message: str, *args: object) -> None:
        """Write an error record followed by the traceback of the exception in hand."""
        if ERROR < _threshold:
            return
        import traceback

        self._write(ERROR, message, args, traceback.format_exc())

    def log(self, level: int, message: str, *args: object) -> None:
        if level >= _threshold:
            self._write(level, message, args, "")

    def _write(self, level: int, message: str, args: tuple[object, ...], suffix: str) -> None:
        try:
            text = message % args if args else message
        except (TypeError, ValueError):
            # A bad format string must not fail the caller. logging also reports one on
            # stderr instead of raising.
            text = f"{message} {args!r}"
        now = time.time()
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now))
        milliseconds = int(now * 1000) % 1000
        line = f"{stamp},{milliseconds:03d} {LEVEL_NAMES[level]} {self.name}: {text}\n"
        try:
            sys.stderr.write(line + suffix)
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
