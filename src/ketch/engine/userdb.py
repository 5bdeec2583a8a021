"""User and group lookup in a container's rootfs, for the OCI spec's ``process.user``.

The rootfs comes from an image, so its files are untrusted: ``/etc/passwd`` may be a
symlink to ``/etc/shadow`` of the host, a FIFO that blocks a reader forever, or a huge
file. :func:`read_file_in_root` resolves the path the way the container itself would see
it (symlinks, absolute ones too, are followed relative to the rootfs, and ``..`` stops at
its top), opening each component with ``O_NOFOLLOW`` relative to its parent's fd, and
reads only regular files of bounded size.

User strings follow docker's ``--user`` forms: ``uid``, ``uid:gid``, ``name``,
``name:group`` and the mixed forms, with the errors runc reports for unknown names.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from ketch.errors import InvalidArgument

MAX_SYMLINKS = 40
MAX_FILE_BYTES = 4 * 1024 * 1024
MAX_ID = 2**31 - 1


@dataclass(frozen=True)
class ExecUser:
    """The uid, gid, supplementary gids and home directory a container process runs with."""

    uid: int = 0
    gid: int = 0
    additional_gids: list[int] = field(default_factory=list)
    home: str = "/"


@dataclass(frozen=True)
class PasswdEntry:
    name: str
    uid: int
    gid: int
    home: str


@dataclass(frozen=True)
class GroupEntry:
    name: str
    gid: int
    members: tuple[str, ...]


def _open_component(dir_fd: int, name: str) -> int:
    return os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)


def _resolve_in_root(root_fd: int, relative: str) -> tuple[int, str] | None:
    """Walk ``relative`` from ``root_fd`` and return (parent dir fd, last component).

    Returns None when a component is missing. The caller closes the returned fd.
    """
    pending = [part for part in relative.split("/") if part not in ("", ".")]
    stack = [os.dup(root_fd)]  # stack[-1] is the current directory; stack[0] the root
    links_followed = 0
    try:
        while pending:
            part = pending.pop(0)
            if part == "..":
                # ".." at the top of the rootfs stays there, as it does for the container.
                if len(stack) > 1:
                    os.close(stack.pop())
                continue
            try:
                fd = _open_component(stack[-1], part)
            except FileNotFoundError:
                return None
            mode = os.fstat(fd).st_mode
            if stat.S_ISLNK(mode):
                os.close(fd)
                links_followed += 1
                if links_followed > MAX_SYMLINKS:
                    raise InvalidArgument(f"too many levels of symbolic links in /{relative}")
                target = os.readlink(part, dir_fd=stack[-1])
                if target.startswith("/"):
                    while len(stack) > 1:
                        os.close(stack.pop())
                pending = [p for p in target.split("/") if p not in ("", ".")] + pending
                continue
            if not pending:
                os.close(fd)
                parent = stack.pop()
                return parent, part
            if not stat.S_ISDIR(mode):
                os.close(fd)
                return None
            stack.append(fd)
        return None
    finally:
        for fd in stack:
            os.close(fd)


def read_file_in_root(root: Path, relative: str, max_bytes: int = MAX_FILE_BYTES) -> str | None:
    """Return the text of ``relative`` as seen inside ``root``, or None when it is missing.

    Raises InvalidArgument when the path is not a regular file or is larger than
    ``max_bytes``.
    """
    root_fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        resolved = _resolve_in_root(root_fd, relative)
    finally:
        os.close(root_fd)
    if resolved is None:
        return None
    parent_fd, name = resolved
    try:
        # O_NONBLOCK so that a FIFO planted in the image cannot block the engine; O_NOFOLLOW
        # because the walk above already resolved every symlink.
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        fd = os.open(name, flags, dir_fd=parent_fd)
    finally:
        os.close(parent_fd)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise InvalidArgument(f"/{relative} in the container's rootfs is not a regular file")
        if info.st_size > max_bytes:
            raise InvalidArgument(
                f"/{relative} in the container's rootfs is larger than {max_bytes} bytes"
            )
        with os.fdopen(fd, "rb", closefd=False) as stream:
            data = stream.read(max_bytes + 1)
    finally:
        os.close(fd)
    return data.decode("utf-8", errors="replace")


def _parse_id(text: str) -> int | None:
    if not text.isdigit():
        return None
    value = int(text)
    return value if value <= MAX_ID else None


def parse_passwd(text: str) -> list[PasswdEntry]:
    """Parse passwd(5) lines, skipping comments and malformed lines as libc does."""
    entries = []
    for line in text.splitlines():
        fields = line.split(":")
        if line.startswith("#") or len(fields) < 7:
            continue
        uid, gid = _parse_id(fields[2]), _parse_id(fields[3])
        if uid is None or gid is None:
            continue
        entries.append(PasswdEntry(fields[0], uid, gid, fields[5] or "/"))
    return entries


def parse_group(text: str) -> list[GroupEntry]:
    """Parse group(5) lines, skipping comments and malformed lines as libc does."""
    entries = []
    for line in text.splitlines():
        fields = line.split(":")
        if line.startswith("#") or len(fields) < 4:
            continue
        gid = _parse_id(fields[2])
        if gid is None:
            continue
        members = tuple(member for member in fields[3].split(",") if member)
        entries.append(GroupEntry(fields[0], gid, members))
    return entries


def _parse_numeric(text: str, what: str, spec: str) -> int | None:
    """Return the id when ``text`` is numeric; raise when it is a number out of range."""
    if not text.lstrip("-").isdigit():
        return None
    value = int(text)
    if value < 0 or value > MAX_ID:
        raise InvalidArgument(f"invalid user {spec!r}: {what} {value} is out of range 0..{MAX_ID}")
    return value


def _find_passwd_entry(user: str, uid: int | None, passwd: list[PasswdEntry]) -> PasswdEntry:
    for entry in passwd:
        if (uid is None and entry.name == user) or (uid is not None and entry.uid == uid):
            return entry
    raise InvalidArgument(f"unable to find user {user}: no matching entries in passwd file")


def resolve_user(spec: str, passwd_text: str | None, group_text: str | None) -> ExecUser:
    """Resolve a docker ``User`` string against the rootfs's passwd and group files.

    A numeric uid or gid needs no entry in the files; a name does. Supplementary groups
    are the groups that list the user's name as a member, and the home directory comes
    from the passwd entry ("/" when there is none).
    """
    user_part, _, group_part = (spec or "").partition(":")
    user_part = user_part or "0"
    passwd = parse_passwd(passwd_text or "")
    groups = parse_group(group_text or "")

    uid = _parse_numeric(user_part, "uid", spec)
    try:
        entry: PasswdEntry | None = _find_passwd_entry(user_part, uid, passwd)
    except InvalidArgument:
        if uid is None:
            raise
        entry = None
    uid = entry.uid if entry is not None else uid
    gid = entry.gid if entry is not None else 0
    home = entry.home if entry is not None else "/"

    if group_part:
        numeric_gid = _parse_numeric(group_part, "gid", spec)
        if numeric_gid is not None:
            gid = numeric_gid
        else:
            matches = [group for group in groups if group.name == group_part]
            if not matches:
                raise InvalidArgument(
                    f"unable to find group {group_part}: no matching entries in group file"
                )
            gid = matches[0].gid

    additional: list[int] = []
    if entry is not None:
        for group in groups:
            if entry.name in group.members and group.gid not in additional:
                additional.append(group.gid)
    assert uid is not None
    return ExecUser(uid=uid, gid=gid, additional_gids=additional, home=home)


def resolve_user_in_rootfs(spec: str, rootfs: Path) -> ExecUser:
    """Resolve ``spec`` with the /etc/passwd and /etc/group found inside ``rootfs``."""
    passwd_text = read_file_in_root(rootfs, "etc/passwd")
    group_text = read_file_in_root(rootfs, "etc/group")
    return resolve_user(spec, passwd_text, group_text)
