"""Network namespaces that the engine makes for containers, pinned by a bind mount.

Layout::

    <exec_root>/netns/<container id>    bind mount of the namespace, kept while the container
                                        runs (see ketch.engine.networking)

A namespace is made on a short-lived thread of its own. unshare(2) with CLONE_NEWNET moves
only the calling thread, so ketchd's other threads stay in their namespace. The thread
ends afterwards, so it never returns to a pool in the wrong namespace. The same holds for
``run_in_namespace``, which does netlink work inside a container's namespace.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from ketch.errors import SystemFailure
from ketch.linux import syscalls

logger = logging.getLogger(__name__)

T = TypeVar("T")


def _run_on_new_thread(work: Callable[[], T], thread_name: str) -> T:
    """Run ``work`` on a thread that exits afterwards, and return its result or raise."""
    results: list[T] = []
    errors: list[BaseException] = []

    def target() -> None:
        try:
            results.append(work())
        except BaseException as error:  # re-raised on the calling thread below
            errors.append(error)

    thread = threading.Thread(target=target, name=thread_name, daemon=True)
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return results[0]


def create_namespace(path: Path, setup: Callable[[], None]) -> None:
    """Make a network namespace, pin it at ``path`` and run ``setup`` inside it.

    On failure nothing is left at ``path``.
    """
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.touch(mode=0o444, exist_ok=False)

    def work() -> None:
        syscalls.unshare(syscalls.CLONE_NEWNET)
        own = f"/proc/self/task/{threading.get_native_id()}/ns/net"
        syscalls.mount(own, path, None, syscalls.MS_BIND)
        setup()

    try:
        _run_on_new_thread(work, "ketch-netns-create")
    except BaseException:
        remove_namespace(path)
        raise


def run_in_namespace(path: Path, work: Callable[[], T]) -> T:
    """Run ``work`` with the calling thread in the namespace pinned at ``path``."""

    def enter_and_work() -> T:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            syscalls.setns(fd, syscalls.CLONE_NEWNET)
        finally:
            os.close(fd)
        return work()

    return _run_on_new_thread(enter_and_work, "ketch-netns-enter")


def is_pinned(path: Path) -> bool:
    """Return whether a namespace is bind-mounted at ``path``.

    ``Path.is_mount`` cannot tell, because before Python 3.12 it returns False for
    anything that is not a directory. A mounted namespace file is on nsfs, so its device
    differs from its directory's.
    """
    try:
        return path.stat().st_dev != path.parent.stat().st_dev
    except FileNotFoundError:
        return False


def remove_namespace(path: Path) -> None:
    """Unpin the namespace at ``path``; the kernel frees it once nothing else uses it."""
    try:
        syscalls.umount(path, syscalls.MNT_DETACH)
    except OSError as error:
        if error.errno not in (errno.EINVAL, errno.ENOENT):  # not a mount point, or gone
            raise SystemFailure(f"cannot unmount network namespace {path}: {error}") from error
    try:
        path.unlink()
    except FileNotFoundError:
        pass
