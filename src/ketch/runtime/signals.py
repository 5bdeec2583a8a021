"""Parsing signal arguments as runc's kill takes them: 9, KILL, SIGKILL, kill."""

from __future__ import annotations

import signal

from ketch.errors import InvalidArgument


def parse_signal(text: str | int) -> int:
    if isinstance(text, int):
        number = text
    elif text.isdigit():
        number = int(text)
    else:
        name = text.upper()
        if not name.startswith("SIG"):
            name = "SIG" + name
        member = getattr(signal.Signals, name, None) if name.isidentifier() else None
        if member is None:
            raise InvalidArgument(f"invalid signal {text!r}: expected a number or a name")
        number = int(member)
    if number not in {int(s) for s in signal.valid_signals()} or number == 0:
        raise InvalidArgument(f"invalid signal {text!r}: not a signal of this system")
    return number
