"""The paths a container's set-up adds to its rootfs, which commit and diff leave out.

The engine bind-mounts its own /etc/hostname, /etc/hosts and /etc/resolv.conf into every
container, and the runtime creates each mount target (and /dev, /proc or /sys when the
image lacks them) in the container's writable layer. dockerd keeps such targets in a
separate init layer below the container's layer, so neither ``docker commit`` nor
``docker diff`` shows them. ketch has no init layer, so it drops them from the layer tar
that its diff writes.
"""

from __future__ import annotations

import tarfile
from collections.abc import Iterable
from typing import BinaryIO

# Files that only exist in the writable layer as targets of the engine's bind mounts.
# A container cannot write to them there, because its writes go to the mounted files.
INIT_FILES = frozenset({"etc/hostname", "etc/hosts", "etc/resolv.conf"})

# Directories that hold mount targets. Creating a target copies the directory up into the
# writable layer, so the diff lists it even when nothing else in it changed.
INIT_DIRECTORIES = frozenset({"etc", "dev", "proc", "sys"})


def member_path(name: str) -> str:
    """Return a layer tar member's name as a path relative to the root, without "./"."""
    return name.strip("/").removeprefix("./")


def init_paths(names: Iterable[str]) -> set[str]:
    """Return the paths among a layer tar's member ``names`` that the container's set-up
    made: the mount target files, and their directories when nothing else in them is in
    the tar."""
    paths = {member_path(name) for name in names}
    dropped = paths & INIT_FILES
    kept = paths - dropped
    for directory in INIT_DIRECTORIES & kept:
        # NOTE: a container that only changed the mode or owner of such a directory loses
        # that change, because its entry alone cannot tell a copy-up from a change.
        if not any(path.startswith(directory + "/") for path in kept):
            dropped.add(directory)
    return dropped


def copy_without_init_paths(source: BinaryIO, out: BinaryIO) -> bool:
    """Copy the layer tar ``source`` to ``out`` without the set-up's paths.

    Returns False, writing nothing, when ``source`` has none of them, so that the
    caller can use ``source`` as it is. ``source`` must be seekable.
    """
    with tarfile.open(fileobj=source, mode="r:") as reader:
        dropped = init_paths(reader.getnames())
        if not dropped:
            return False
        with tarfile.open(fileobj=out, mode="w:", format=tarfile.PAX_FORMAT) as writer:
            for member in reader:
                if member_path(member.name) in dropped:
                    continue
                content = reader.extractfile(member) if member.isreg() else None
                writer.addfile(member, content)
    return True
