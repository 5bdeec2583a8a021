"""Running a command with a pseudo-terminal as its stdio, as a user at a terminal would."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import struct
import subprocess
import termios
import time


def run_in_terminal(
    command: list[str],
    env: dict[str, str],
    timeout: float = 60,
    keys: list[bytes] | None = None,
) -> tuple[str, int]:
    """Run ``command`` with a 24x80 pseudo-terminal as its stdio; return its output and
    exit status.

    Each of ``keys`` is typed half a second after the previous one (the first after one
    second).
    """
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    process = subprocess.Popen(
        command, stdin=slave, stdout=slave, stderr=slave, env=env, start_new_session=True
    )
    os.close(slave)

    output = bytearray()
    deadline = time.monotonic() + timeout
    pending = list(keys or [])
    next_key = time.monotonic() + 1.0
    try:
        while time.monotonic() < deadline:
            if pending and time.monotonic() >= next_key:
                os.write(master, pending.pop(0))
                next_key = time.monotonic() + 0.5
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    data = os.read(master, 4096)
                except OSError:
                    break  # EIO: the command and its children closed the terminal
                if not data:
                    break
                output += data
            elif process.poll() is not None:
                break
    finally:
        os.close(master)
        if process.poll() is None:
            process.kill()
        returncode = process.wait(timeout=10)
    return output.decode(errors="replace"), returncode
