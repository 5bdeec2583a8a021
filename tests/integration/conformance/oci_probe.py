"""Parsers for what the conformance probes print from inside a container, and the
receiving end of a console socket.

A probe is ``sh -c`` running busybox commands, each under a header line ``=== <name>``
(see :func:`probe_script`), so one container reports several files at once.
"""

from __future__ import annotations

import array
import socket
from dataclasses import dataclass

SECTION_MARK = "=== "


def parse_sections(output: str) -> dict[str, str]:
    """Split probe output into sections headed by lines ``=== <name>``."""
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in output.splitlines():
        if line.startswith(SECTION_MARK):
            current = sections.setdefault(line[len(SECTION_MARK) :].strip(), [])
        elif current is not None:
            current.append(line)
    return {name: "\n".join(lines) for name, lines in sections.items()}


def probe_script(commands: dict[str, str]) -> list[str]:
    """Return argv for ``sh -c`` that prints each command's output under its section."""
    parts = [f"echo '{SECTION_MARK}{name}'; {command}" for name, command in commands.items()]
    # The trailing `true` keeps sh as pid 1: busybox sh execs a lone last command in
    # place of itself, and /proc/1 would then describe that command.
    return ["sh", "-c", "; ".join([*parts, "true"])]


def status_fields(text: str) -> dict[str, str]:
    """Parse /proc/<pid>/status into {field: value}."""
    fields = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
    return fields


@dataclass
class Mount:
    mount_point: str
    root: str
    options: set[str]
    fstype: str
    source: str
    super_options: set[str]


def parse_mountinfo(text: str) -> dict[str, Mount]:
    """Parse /proc/<pid>/mountinfo into {mount point: Mount}; a later mount wins."""
    mounts = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        before, _, after = line.partition(" - ")
        fields = before.split()
        fstype, source, super_options = after.split(" ", 2)
        mounts[fields[4]] = Mount(
            mount_point=fields[4],
            root=fields[3],
            options=set(fields[5].split(",")),
            fstype=fstype,
            source=source,
            super_options=set(super_options.split(",")),
        )
    return mounts


def receive_console(listener: socket.socket) -> int:
    """Accept one connection and return the terminal fd it carries (SCM_RIGHTS)."""
    connection, _ = listener.accept()
    with connection:
        fds = array.array("i")
        _, ancillary, _, _ = connection.recvmsg(4096, socket.CMSG_SPACE(fds.itemsize))
        for level, kind, data in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
    return fds[0]
