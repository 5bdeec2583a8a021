"""``Runtime.exec``: another process in a container that is already created or running.

The caller forks a child straight into the container's pid namespace, as ``create`` does
for the init. The child puts itself into the container's cgroups, joins the init's other
namespaces (the mount namespace last, which makes the container's root its root), and
then goes through the init's last steps: terminal or stdio, rlimits, user and
capabilities, working directory, executable lookup, and the exec through the sealed exec
helper (see :mod:`ketch.runtime.exechelper`). The same defences as the init's apply, for
the same reasons: it is non-dumpable from its first instruction, it closes every
descriptor the caller had, and it checks that its working directory is inside the root.

The child reports over a SOCK_SEQPACKET socket pair whose ends are close-on-exec:

==============  ==========  =============================================================
sender          message     meaning
==============  ==========  =============================================================
child -> parent ``error``   ``{"type": "error", "kind": K, "message": M}`` as in
                            :mod:`ketch.runtime.sync`; the child exits right after.
(end of file)               the child exec'd the helper, or died without a report; either
                            way its exit status, which the caller reaps, tells the rest.
==============  ==========  =============================================================
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from ketch.errors import Conflict, SystemFailure
from ketch.linux import syscalls
from ketch.runtime import console, exechelper, init, process, seccomp, state, sync
from ketch.runtime.cgroups import CgroupManager, manager_from_state
from ketch.runtime.config import Process, parse_process
from ketch.runtime.create import compile_seccomp, fork_into_pid_namespace, write_pid_file
from ketch.runtime.lifecycle import reap
from ketch.runtime.record import Record

if TYPE_CHECKING:
    from ketch.runtime.lifecycle import Runtime

log = logging.getLogger(__name__)

# Seconds the parent waits for the child to exec or report.
EXEC_TIMEOUT = 60.0


class _ExecContext(Record):
    process: Process
    cgroups: CgroupManager
    # Namespace type -> open /proc/<init pid>/ns/<type>, for those that differ from ours.
    namespace_fds: dict[str, int]
    report_socket: socket.socket
    stdio: tuple[int, int, int] | None
    console: socket.socket | None
    preserve_fds: int
    seccomp_filter: seccomp.Filter | None


def exec_in_container(
    runtime: Runtime,
    container_id: str,
    process_object: dict[str, Any],
    *,
    stdio: tuple[int, int, int] | None,
    console_socket: Path | None,
    pid_file: Path | None,
    preserve_fds: int = 0,
) -> int:
    """Do :meth:`Runtime.exec <ketch.runtime.lifecycle.Runtime.exec>`."""
    record = state.read_record(runtime.state_root, container_id)
    directory = state.container_dir(runtime.state_root, container_id)
    status = state.status_of(directory, record)
    if status not in ("created", "running"):
        raise Conflict(f"cannot exec in container {container_id}: it is {status}")
    spec_process = parse_process(process_object)
    _check_console(spec_process, console_socket)
    # The container's profile applies to every process in it, as runc applies it.
    seccomp_filter = compile_seccomp(record.seccomp)

    namespace_fds = _open_init_namespaces(record)
    pid_namespace_fd = namespace_fds.pop("pid", None)
    console_connection = None
    parent_end, child_end = sync.socket_pair()
    pid = 0
    try:
        if console_socket is not None:
            console_connection = console.connect(console_socket)
        context = _ExecContext(
            process=spec_process,
            cgroups=manager_from_state(record.cgroups),
            namespace_fds=namespace_fds,
            report_socket=child_end,
            stdio=stdio,
            console=console_connection,
            preserve_fds=preserve_fds,
            seccomp_filter=seccomp_filter,
        )
        pid = fork_into_pid_namespace(pid_namespace_fd, new=False)
        if pid == 0:
            _run_child(context)
        child_end.close()
        _await_exec(parent_end, pid, container_id)
        if pid_file is not None:
            write_pid_file(Path(pid_file), pid)
    except BaseException as error:
        if pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            reap(pid)
        if isinstance(error, OSError):
            raise SystemFailure(f"cannot exec in container {container_id}: {error}") from None
        raise
    finally:
        parent_end.close()
        child_end.close()
        for fd in namespace_fds.values():
            os.close(fd)
        if pid_namespace_fd is not None:
            os.close(pid_namespace_fd)
        if console_connection is not None:
            console_connection.close()
    log.debug("exec in container %s: process %d", container_id, pid)
    return pid


def _check_console(spec_process: Process, console_socket: Path | None) -> None:
    from ketch.errors import InvalidArgument

    if spec_process.terminal and console_socket is None:
        raise InvalidArgument(
            "process.terminal is true, so a console socket is required (--console-socket)"
        )
    if console_socket is not None and not spec_process.terminal:
        raise InvalidArgument("a console socket was given, but process.terminal is false")


def _open_init_namespaces(record: state.ContainerRecord) -> dict[str, int]:
    """Open the init's namespaces that differ from this process's own.

    Opened through a pidfd's process so that a pid reused after the init died cannot
    hand this process another process's namespaces: the pidfd pins the init.
    """
    try:
        pidfd = os.pidfd_open(record.pid)
    except ProcessLookupError:
        raise Conflict(f"cannot exec in container {record.id}: it is not running") from None
    fds: dict[str, int] = {}
    try:
        if not state.init_is_alive(record):
            raise Conflict(f"cannot exec in container {record.id}: it is not running")
        for kind, name in _NAMESPACE_FILES.items():
            fd = os.open(f"/proc/{record.pid}/ns/{name}", os.O_RDONLY | os.O_CLOEXEC)
            if _same_file(fd, f"/proc/self/ns/{name}"):
                os.close(fd)
            else:
                fds[kind] = fd
        # Checked again with the namespaces open: they belong to the init if it still
        # has the start time the record gives.
        if not state.init_is_alive(record):
            raise Conflict(f"cannot exec in container {record.id}: it is not running")
    except BaseException:
        for fd in fds.values():
            os.close(fd)
        raise
    finally:
        os.close(pidfd)
    return fds


_NAMESPACE_FILES = {
    "user": "user",
    "pid": "pid",
    "ipc": "ipc",
    "uts": "uts",
    "network": "net",
    "cgroup": "cgroup",
    "mount": "mnt",
}


def _same_file(fd: int, path: str) -> bool:
    theirs = os.fstat(fd)
    ours = os.stat(path)
    return (theirs.st_dev, theirs.st_ino) == (ours.st_dev, ours.st_ino)


def _await_exec(parent_end: socket.socket, pid: int, container_id: str) -> None:
    try:
        message = sync.receive(parent_end, EXEC_TIMEOUT)
    except TimeoutError:
        raise SystemFailure(
            f"exec in container {container_id}: the process did not start within {EXEC_TIMEOUT} s"
        ) from None
    if message is None:
        return
    if message["type"] == sync.ERROR:
        raise sync.error_from_message(message)
    raise SystemFailure(f"exec in container {container_id}: unexpected message {message}")


def _run_child(context: _ExecContext) -> NoReturn:
    try:
        # First, for the reason the init gives: until the exec, this process runs the
        # host's Python binary, which container processes must not reach through
        # /proc/<pid>/exe.
        syscalls.set_dumpable(False)
        init.reset_signals()
        # Joined while the host's /sys/fs/cgroup is still this process's view.
        context.cgroups.add_process(os.getpid())
        _join_namespaces(context.namespace_fds)
        os.setsid()
        init.setup_stdio(context.stdio)
        keep = {context.report_socket.fileno(), *context.namespace_fds.values()}
        if context.console is not None:
            keep.add(context.console.fileno())
        # Closes the caller's descriptors, which could lead back to the host (the
        # CVE-2024-21626 kind), but not those the caller asked to pass on.
        process.close_fds_from(3 + context.preserve_fds, keep)
        seccomp_early = process.needs_early_seccomp(context.process, context.seccomp_filter)
        executable, helper_fd = _prepare(context, seccomp_early)
        process.exec_process(
            context.process,
            executable,
            helper_fd,
            preserve_fds=context.preserve_fds,
            keep_fd=context.report_socket.fileno(),
            seccomp_filter=None if seccomp_early else context.seccomp_filter,
        )
    except BaseException as error:
        sync.report_error(context.report_socket, error)
    os._exit(1)


def _join_namespaces(namespace_fds: dict[str, int]) -> None:
    # The user namespace first: it owns the others, and joining it gives the
    # capabilities that joining them needs.
    for kind in ("user", *init.JOIN_ORDER):
        fd = namespace_fds.pop(kind, None)
        if fd is not None:
            syscalls.setns(fd, syscalls.NAMESPACE_FLAGS[kind])
            os.close(fd)


def _prepare(context: _ExecContext, seccomp_early: bool) -> tuple[str, int]:
    spec_process = context.process
    if context.console is not None:
        user = spec_process.user
        console.set_up_terminal(context.console, user.uid, user.gid, spec_process.console_size)
        context.console.close()
    process.set_home(spec_process)
    process.apply_rlimits(spec_process)
    process.apply_oom_score_adj(spec_process)
    if seccomp_early and context.seccomp_filter is not None:
        process.load_seccomp(context.seccomp_filter)
    process.switch_user(spec_process)
    process.enter_working_directory(spec_process.cwd)
    executable = process.find_executable(spec_process.args[0], spec_process.env)
    return executable, exechelper.sealed_helper_fd()
