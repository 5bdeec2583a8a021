"""``ketch cp``: copy files between a container and the local filesystem via tar.

From a container, ``GET /containers/{id}/archive?path=SRC`` returns a tar whose top
entry is SRC's base name. It is unpacked into DEST when DEST is a directory, else next
to DEST under DEST's name (a copy that renames). ``-`` as DEST writes the tar to stdout.

Into a container, ``HEAD /containers/{id}/archive?path=DEST`` reports whether DEST exists
and is a directory (the ``X-Docker-Container-Path-Stat`` header). The local SRC is
packed under its base name and unpacked into DEST if DEST is a directory, else under
DEST's base name into DEST's parent. ``-`` as SRC reads a tar from stdin.

The archive from the daemon comes from inside the container, so it is checked before
anything is unpacked, because Python 3.11.2 predates tarfile's extraction filters. A
name must be relative without ``..`` and must not pass through or replace a link made
by the same archive, so unpacking never follows a link the container planted. Links
themselves are kept as they are, as ``docker cp`` keeps them. Devices are skipped.
"""

from __future__ import annotations

import base64
import json
import os
import posixpath
import sys

from ketch.cli.errors import ApiError, CommandFailed
from ketch.cli.options import Command, Flag

# Not typing.TYPE_CHECKING: importing typing costs about 3 ms of start-up.
TYPE_CHECKING = False

if TYPE_CHECKING:
    import tarfile

    from ketch.cli.client import Client
    from ketch.cli.main import Context

COMMAND = Command(
    "cp",
    "ketch cp [OPTIONS] CONTAINER:SRC_PATH DEST_PATH|-\n"
    "       ketch cp [OPTIONS] SRC_PATH|- CONTAINER:DEST_PATH",
    "Copy files/folders between a container and the local filesystem",
    (
        Flag("archive", "Archive mode (copy all uid/gid information)", short="a"),
        Flag("follow-link", "Always follow symbol link in SRC_PATH", short="L"),
        Flag("quiet", "Suppress progress output during copy", short="q"),
    ),
    min_args=2,
    max_args=2,
)

STAT_HEADER = "x-docker-container-path-stat"
DIRECTORY_MODE_BIT = 1 << 31  # Go's os.ModeDir in the stat header's mode


def split_container_path(argument: str) -> tuple[str, str] | None:
    """Split ``CONTAINER:PATH``; None for a local path (absolute, ``./`` or no colon)."""
    if argument.startswith(("/", ".")) or ":" not in argument:
        return None
    container, path = argument.split(":", 1)
    return (container, path) if container else None


def execute(context: Context, options: dict, args: list[str]) -> int:
    source, destination = split_container_path(args[0]), split_container_path(args[1])
    if source and destination:
        raise CommandFailed("copying between containers is not supported")
    if not source and not destination:
        raise CommandFailed("must specify at least one container source")
    client = context.client()
    if source:
        copy_from_container(client, source[0], source[1], args[1], bool(options["follow-link"]))
    else:
        copy_to_container(client, args[0], destination[0], destination[1])  # type: ignore[index]
    return 0


def copy_from_container(
    client: Client, container: str, path: str, destination: str, follow: bool
) -> None:
    # Limitation: -L is accepted, but a link in SRC_PATH is copied as the link itself.
    response = client.open("GET", f"/containers/{container}/archive", {"path": path})
    if destination == "-":
        for block in response.iter_body():
            sys.stdout.buffer.write(block)
        sys.stdout.buffer.flush()
        response.close()
        return
    import io
    import tarfile

    # Limitation: the archive is held in memory while it is unpacked.
    data = io.BytesIO(response.read())
    with tarfile.open(fileobj=data, mode="r:") as archive:
        members = archive.getmembers()
        if not members:
            return
        top = members[0].name.split("/", 1)[0]
        members = safe_members(members)
        if os.path.isdir(destination):
            archive.extractall(destination, members=members)
            return
        if destination.endswith("/"):
            raise CommandFailed(f"destination directory {destination} does not exist")
        parent = os.path.dirname(os.path.abspath(destination))
        if not os.path.isdir(parent):
            raise CommandFailed(f"destination directory {parent} does not exist")
        new_name = os.path.basename(destination)
        for member in members:
            first, _, rest = member.name.partition("/")
            if first == top:
                member.name = posixpath.join(new_name, rest) if rest else new_name
        archive.extractall(parent, members=safe_members(members))


def safe_members(members: list[tarfile.TarInfo]) -> list[tarfile.TarInfo]:
    """Return the members to unpack.

    Raises CommandFailed for a name that could write outside the destination (absolute,
    ``..``, or through a link made by this archive).
    """
    links: set[str] = set()
    safe = []
    for member in members:
        name = member.name.rstrip("/")
        _check_relative(name, member.name)
        parts = name.split("/")
        prefixes = {"/".join(parts[:index]) for index in range(1, len(parts) + 1)}
        if prefixes & links:
            raise CommandFailed(
                f"invalid archive from the daemon: {member.name!r} passes through a link"
            )
        if member.islnk():
            _check_relative(member.linkname, member.linkname)
        if member.issym() or member.islnk():
            links.add(name)
        if member.isdev():
            continue
        safe.append(member)
    return safe


def _check_relative(name: str, member_name: str) -> None:
    if name.startswith("/") or ".." in name.split("/"):
        raise CommandFailed(f"invalid archive from the daemon: unsafe path {member_name!r}")


def check_local_source(source: str) -> None:
    """Raise CommandFailed with the message of Go's lstat, as docker 28 does, when the
    local source cannot be read: ``lstat /tmp/x: no such file or directory``."""
    absolute = os.path.abspath(source)
    try:
        os.lstat(absolute)
    except OSError as error:
        reason = (error.strerror or str(error)).lower()
        raise CommandFailed(f"lstat {absolute}: {reason}") from None


def copy_to_container(client: Client, source: str, container: str, path: str) -> None:
    if source == "-":
        client.open(
            "PUT", f"/containers/{container}/archive", {"path": path}, data=sys.stdin.buffer
        ).close()
        return
    check_local_source(source)
    is_directory = _container_path_is_directory(client, container, path)
    if is_directory:
        target, name = path, os.path.basename(os.path.normpath(source))
    else:
        target, name = (
            posixpath.dirname(path.rstrip("/")) or "/",
            posixpath.basename(path.rstrip("/")),
        )
    data = _pack(source, name)
    client.open("PUT", f"/containers/{container}/archive", {"path": target}, data=data).close()


def _container_path_is_directory(client: Client, container: str, path: str) -> bool:
    try:
        response = client.open("HEAD", f"/containers/{container}/archive", {"path": path})
    except ApiError as error:
        if error.status == 404 and "No such container" not in error.message:
            return False
        raise
    response.close()
    header = response.headers.get(STAT_HEADER)
    if not header:
        return False
    stat = json.loads(base64.b64decode(header))
    return bool((stat.get("mode") or 0) & DIRECTORY_MODE_BIT)


def _pack(source: str, name: str) -> object:
    import tarfile
    import tempfile

    spool = tempfile.TemporaryFile()
    with tarfile.open(fileobj=spool, mode="w:") as archive:
        archive.add(source, arcname=name)
    spool.seek(0)
    return spool
