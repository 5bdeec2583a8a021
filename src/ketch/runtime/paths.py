"""Path and environment helpers for the modules that every ``ketch-runc`` call loads.

These modules make their system calls through :mod:`posix`, the built-in module that
:mod:`os` re-exports, and use the helpers below in place of ``os.path`` and
``os.environ``. Importing :mod:`os` also loads ``_collections_abc``, ``posixpath``,
``genericpath`` and ``stat``. That took 1.0 to 1.9 ms of CPU time per call (``python -I
-S -c "import os"`` against ``-c pass``, medians of 150 alternating runs, three runs on
the loaded 2-core test machine, Python 3.11), while ``ketch-runc start`` does about
0.3 ms of work. The verbs that need more of the standard library (create, exec, run)
import :mod:`os` anyway.

The string forms of two path checks that the cgroup managers and the rootfs setup share,
:func:`is_within` and :func:`unescape_mountinfo`, are here too.
"""

from __future__ import annotations

import posix
import sys

# False at run time, so that this module does not import typing or pathlib. Type
# checkers take the branch below as true.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from os import PathLike

_S_IFMT = 0o170000
_S_IFDIR = 0o040000


def join(directory: str | PathLike[str], name: str) -> str:
    """Return ``os.path.join(directory, name)`` for a ``name`` without a leading slash."""
    directory = posix.fspath(directory)
    if not directory or directory.endswith("/"):
        return directory + name
    return f"{directory}/{name}"


def exists(path: str) -> bool:
    """Return ``os.path.exists(path)``: False for a missing path or a failing stat."""
    try:
        posix.stat(path)
    except (OSError, ValueError):
        return False
    return True


def is_directory(path: str) -> bool:
    """Return ``os.path.isdir(path)``, which follows a symbolic link."""
    try:
        mode = posix.stat(path).st_mode
    except (OSError, ValueError):
        return False
    return mode & _S_IFMT == _S_IFDIR


def getenv(name: str, default: str) -> str:
    """Return ``os.environ.get(name, default)``, decoded as :mod:`os` decodes it."""
    os = sys.modules.get("os")
    if os is not None:
        # os.environ, unlike posix.environ, follows the changes made through it.
        return os.environ.get(name, default)
    value = posix.environ.get(name.encode())
    if value is None:
        return default
    return value.decode(sys.getfilesystemencoding(), sys.getfilesystemencodeerrors())


def is_within(path: str, directory: str) -> bool:
    """Return True when the normalized absolute ``path`` is ``directory`` or below it."""
    return path == directory or path.startswith(directory.rstrip("/") + "/")


def unescape_mountinfo(field: str) -> str:
    """Undo the octal escapes of space, tab, newline and backslash in a mountinfo field.

    Other characters, UTF-8 included, appear in mountinfo as they are.
    """
    if "\\" not in field:
        return field
    # The backslash goes last, so that an escaped backslash before digits such as
    # "\134040" does not become a space.
    for escape, character in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n")):
        field = field.replace(escape, character)
    return field.replace("\\134", "\\")
