"""Parsing signal arguments as runc's kill takes them (9, KILL, SIGKILL, kill), and sending
signals and setting their handlers without importing :mod:`signal`.

The names and numbers come from ``_signal``, the C module that :mod:`signal` wraps,
because importing :mod:`signal` builds its enum classes (with :mod:`enum`, about 3 ms of
a ``ketch-runc kill`` on the loaded 2-core test machine). ``_signal`` is loaded at
interpreter start-up anyway. Where it is missing, as outside CPython, :mod:`signal` is
used instead.
"""

from __future__ import annotations

import posix

from ketch.errors import InvalidArgument

# False at run time, so that this module does not import typing. Type checkers take the
# branch below as true.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

try:
    import _signal as _signals
except ImportError:
    import signal as _signals

SIGKILL: int = _signals.SIGKILL
SIGSTOP: int = _signals.SIGSTOP
SIGPIPE: int = _signals.SIGPIPE
SIGXFSZ: int = _signals.SIGXFSZ
SIGWINCH: int = _signals.SIGWINCH
SIG_DFL = _signals.SIG_DFL


def all_signals() -> set[int]:
    """Return the numbers of every signal of this system, as plain ints."""
    return {int(number) for number in _signals.valid_signals()}


def set_handler(number: int, handler: Any) -> None:
    """Set the action for signal ``number``: SIG_DFL, SIG_IGN or a Python callable."""
    _signals.signal(number, handler)


def stop_wakeup_fd() -> None:
    """Stop writing signal numbers to the descriptor that set_wakeup_fd installed."""
    _signals.set_wakeup_fd(-1)


def unblock_all() -> None:
    """Clear this thread's signal mask."""
    _signals.pthread_sigmask(_signals.SIG_SETMASK, [])


def send_if_alive(pid: int, number: int) -> None:
    """Send signal ``number`` to ``pid``, ignoring a process that has already exited."""
    try:
        posix.kill(pid, number)
    except ProcessLookupError:
        pass


def pidfd_send_signal(pidfd: int, number: int) -> None:
    """Send signal ``number`` to the process that the pidfd ``pidfd`` refers to."""
    _signals.pidfd_send_signal(pidfd, number)


def parse_signal(text: str | int) -> int:
    if isinstance(text, int):
        number = text
    elif text.isascii() and text.isdigit():
        number = int(text)
    else:
        name = text.upper()
        if not name.startswith("SIG"):
            name = "SIG" + name
        number = _signal_number(name)
        if number is None:
            raise InvalidArgument(f"invalid signal {text!r}: expected a number or a name")
    if number not in _signals.valid_signals() or number == 0:
        raise InvalidArgument(f"invalid signal {text!r}: not a signal of this system")
    return number


def _signal_number(name: str) -> int | None:
    # SIG_DFL, SIG_IGN, SIG_BLOCK and the like are handler and mask constants, not
    # signals, and no signal name has an underscore.
    if not name.isidentifier() or "_" in name:
        return None
    value = getattr(_signals, name, None)
    return value if isinstance(value, int) else None
