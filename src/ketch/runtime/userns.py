"""Creating a container's init inside a user namespace (linux.namespaces "user").

Every namespace the init makes must belong to the container's user namespace, or the
container's root could not use it. procfs, for one, can only be mounted by a process
with CAP_SYS_ADMIN in the user namespace that owns the pid namespace. The pid
namespace is made for a child (unshare(CLONE_NEWPID) affects the caller's next child),
so the user namespace must exist before the fork of the init. An intermediate process
does that part:

1. The parent forks the intermediate, which unshares a user namespace (or joins the one
   the config names) and reports ``userns``.
2. The parent writes linux.uidMappings and linux.gidMappings to the intermediate's
   /proc/<pid>/uid_map and gid_map, and replies ``mapped``.
   It also moves the intermediate into the container's cgroups, which the init inherits.
3. The intermediate becomes uid and gid 0 in the namespace, unshares (or joins) the pid
   namespace, forks the init, reports ``init`` with the init's pid, releases the init
   and exits. The parent reaps the intermediate.

So the init is not the caller's child: it is re-parented to the nearest child subreaper
(the supervisor, ``ketch-runc run``) or to PID 1. The messages go over the same socket
pair as the init's own (see :mod:`ketch.runtime.sync`):

==================  ==========  ==========================================================
sender              message     meaning
==================  ==========  ==========================================================
intermediate ->     ``userns``  ``{"type": "userns"}``: in the new user namespace, waiting
parent                          for its id mappings.
parent ->           ``mapped``  ``{"type": "mapped"}``: uid_map and gid_map are written.
intermediate
intermediate ->     ``init``    ``{"type": "init", "pid": P}``: the init is forked, with
parent                          pid P in the caller's pid namespace.
==================  ==========  ==========================================================

The init waits on a pipe from the intermediate until ``init`` is sent, so its own
messages always come after it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
from collections.abc import Callable

from ketch.errors import SystemFailure
from ketch.linux import syscalls
from ketch.runtime import sync
from ketch.runtime.config import IdMapping, Spec

# False at run time, so that this module does not import typing: every ketch-runc call
# pays for what it imports. Type checkers take the branch below as true.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, NoReturn

USERNS = "userns"
MAPPED = "mapped"
INIT = "init"


def fork_init(
    spec: Spec,
    namespace_fds: dict[str, int],
    parent_end: socket.socket,
    child_end: socket.socket,
    run_init: Callable[[int], NoReturn],
    timeout: float,
    join_cgroups: Callable[[int], None],
) -> int:
    """Fork the intermediate and return the init's pid once it is forked.

    ``run_init(release_fd)`` runs in the init; it must wait for a byte (or end of file)
    on ``release_fd`` before it sends anything. ``join_cgroups(pid)`` moves the
    intermediate into the container's cgroups before it forks, so that the init starts
    in them: a process inside the user namespace may lack the right to move itself.
    """
    intermediate = os.fork()
    if intermediate == 0:
        _run_intermediate(spec, namespace_fds, child_end, run_init)
    succeeded = False
    try:
        _expect(parent_end, USERNS, timeout)
        join_cgroups(intermediate)
        if spec.namespace("user").path is None:  # type: ignore[union-attr]
            _write_mappings(intermediate, spec)
        sync.send(parent_end, MAPPED)
        message = _expect(parent_end, INIT, timeout)
        succeeded = True
        return int(message["pid"])
    finally:
        _end_intermediate(intermediate, succeeded)


def _end_intermediate(pid: int, succeeded: bool) -> None:
    """Reap the intermediate; it exits by itself after ``init``, else it is killed."""
    if not succeeded:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


def _expect(parent_end: socket.socket, message_type: str, timeout: float) -> dict[str, Any]:
    try:
        message = sync.receive(parent_end, timeout)
    except TimeoutError:
        raise SystemFailure(
            f"the user namespace setup did not report {message_type!r} within {timeout} s"
        ) from None
    if message is None:
        raise SystemFailure("the user namespace setup exited without a report")
    if message["type"] == sync.ERROR:
        raise sync.error_from_message(message)
    if message["type"] != message_type:
        raise SystemFailure(f"unexpected message during user namespace setup: {message}")
    return message


def _write_mappings(pid: int, spec: Spec) -> None:
    for name, mappings in (("uid_map", spec.uid_mappings), ("gid_map", spec.gid_mappings)):
        text = "".join(_map_line(mapping) for mapping in mappings)
        try:
            with open(f"/proc/{pid}/{name}", "w") as handle:
                handle.write(text)
        except OSError as error:
            field = "linux.uidMappings" if name == "uid_map" else "linux.gidMappings"
            raise SystemFailure(
                f"cannot write {field} to /proc/{pid}/{name}: {error.strerror}"
            ) from None


def _map_line(mapping: IdMapping) -> str:
    return f"{mapping.container_id} {mapping.host_id} {mapping.size}\n"


def _run_intermediate(
    spec: Spec,
    namespace_fds: dict[str, int],
    child_end: socket.socket,
    run_init: Callable[[int], NoReturn],
) -> NoReturn:
    try:
        # Non-dumpable for the reason the init gives: this is the host's Python binary.
        syscalls.set_dumpable(False)
        _enter_user_namespace(namespace_fds.get("user"), child_end)
        os.setresgid(0, 0, 0)
        os.setresuid(0, 0, 0)
        release_read, release_write = os.pipe()
        _enter_pid_namespace(spec, namespace_fds.get("pid"))
        init_pid = os.fork()
        if init_pid == 0:
            os.close(release_write)
            run_init(release_read)
        os.close(release_read)
        sync.send(child_end, INIT, pid=init_pid)
        os.write(release_write, b"0")
    except BaseException as error:
        with contextlib.suppress(OSError):
            sync.send_error(child_end, error)
        os._exit(1)
    os._exit(0)


def _enter_user_namespace(user_fd: int | None, child_end: socket.socket) -> None:
    if user_fd is not None:
        syscalls.setns(user_fd, syscalls.CLONE_NEWUSER)
    else:
        syscalls.unshare(syscalls.CLONE_NEWUSER)
    sync.send(child_end, USERNS)
    message = sync.receive(child_end, 60.0)
    if message is None or message.get("type") != MAPPED:
        raise SystemFailure(f"the runtime did not write the id mappings: {message}")


def _enter_pid_namespace(spec: Spec, pid_fd: int | None) -> None:
    if pid_fd is not None:
        syscalls.setns(pid_fd, syscalls.CLONE_NEWPID)
    elif spec.namespace("pid") is not None:
        syscalls.unshare(syscalls.CLONE_NEWPID)


def wait_for_release(release_fd: int) -> None:
    """In the init: block until the intermediate has reported the init's pid."""
    try:
        data = os.read(release_fd, 1)
    finally:
        os.close(release_fd)
    if not data:
        raise SystemFailure("the user namespace setup ended before releasing the init")
