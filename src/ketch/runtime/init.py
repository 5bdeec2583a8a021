"""The container's init: the process ``Runtime.create`` forks.

The parent forks the init straight into the container's pid namespace (it unshares or
joins that namespace for its children just before the fork), so the init is PID 1
there and the caller's own child. The init joins the other namespaces the config gives
by path and unshares the new ones. The init then sets up the rootfs and the process,
reports ``ready``, joins the container's cgroups, waits on exec.fifo until ``start``
opens it, and execs the container's program through the sealed exec helper. The
cgroups are joined at other points in some cases, which
:class:`ketch.runtime.create._ContainerCgroups` lists. The messages are listed in
:mod:`ketch.runtime.sync`.

The init is a fork of the caller, so it starts with the caller's memory, descriptors and
signal handlers. It never returns into the caller's code: it ends in ``os._exit`` or an
exec, whatever happens.
"""

from __future__ import annotations

import errno
import os

from ketch.errors import SystemFailure
from ketch.linux import syscalls
from ketch.runtime import (
    exechelper,
    hooks,
    inroot,
    network,
    process,
    rootfs,
    signals,
    sync,
)
from ketch.runtime.cgroups import CgroupManager
from ketch.runtime.config import Spec
from ketch.runtime.record import Record

# False at run time, so that this module does not import typing: every ketch-runc call
# pays for what it imports. Type checkers take the branch below as true.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import NoReturn

    from ketch.runtime import seccomp
    from ketch.runtime.sockets import Socket

# Joined namespaces, in the order they are entered: the mount namespace last, because
# entering it changes the root and the working directory. The pid namespace is the
# parent's to join, for its child.
JOIN_ORDER = ("ipc", "uts", "network", "cgroup", "mount")


class InitContext(Record):
    container_id: str
    spec: Spec
    cgroups: CgroupManager
    init_joins_cgroups: bool  # joins them before unsharing a new cgroup namespace
    # (path, descriptor) of each cgroup.procs the init writes "0" to after ready, opened
    # by the parent. Empty when the init joins its cgroups another way.
    cgroup_procs_files: list[tuple[str, int]]
    sync_socket: Socket
    exec_fifo_fd: int  # O_PATH descriptor of exec.fifo, opened by the parent
    # Namespace type -> open /proc/<pid>/ns/<type> to join; the parent joins "pid".
    namespace_fds: dict[str, int]
    stdio: tuple[int, int, int] | None
    # Connected console socket when process.terminal is set; see ketch.runtime.console.
    console: Socket | None = None
    preserve_fds: int = 0  # descriptors 3 to 2 + N go to the container's process
    no_pivot: bool = False  # MS_MOVE and chroot in place of pivot_root
    seccomp_filter: seccomp.Filter | None = None
    bundle: str = ""  # absolute path, for hook states
    # The init's pid in the caller's pid namespace, for hook states; set by "continue".
    host_pid: int = 0
    # With a user namespace: the pipe on which ketch.runtime.userns releases the init.
    release_fd: int = -1


def run_init(context: InitContext) -> NoReturn:
    try:
        # First of all, because while the init runs the host's Python binary, a container
        # process could open /proc/1/exe and reach that binary. The /proc entries of a
        # non-dumpable process are closed to processes without CAP_SYS_PTRACE.
        syscalls.set_dumpable(False)
        reset_signals()
        if context.release_fd >= 0:
            from ketch.runtime import userns

            userns.wait_for_release(context.release_fd)
        _enter_namespaces(context)
        os.setsid()
        setup_stdio(context.stdio)
        # The caller's descriptors came along with the fork, and any of them could lead a
        # container process back to the host (CVE-2024-21626 used a leaked directory fd).
        keep = {context.sync_socket.fileno(), context.exec_fifo_fd}
        keep.update(fd for _path, fd in context.cgroup_procs_files)
        if context.console is not None:
            keep.add(context.console.fileno())
        process.close_fds_from(3 + context.preserve_fds, keep)
        seccomp_early = process.needs_early_seccomp(context.spec.process, context.seccomp_filter)
        executable, helper_fd = _set_up(context, seccomp_early)
        sync.send(context.sync_socket, sync.READY)
        context.sync_socket.close()
    except BaseException as error:
        sync.report_error(context.sync_socket, error)
        os._exit(1)
    try:
        _join_cgroups(context.cgroup_procs_files)
    except SystemFailure as error:
        # create has returned, so the error goes to stderr, and start reports that the
        # init exited. The container's program must not run outside its cgroup limits.
        sync.write_stderr(f"ketch-runc init: cannot join the container's cgroup: {error}\n")
        os._exit(1)
    try:
        _wait_for_start(context.exec_fifo_fd)
        _run_init_hooks(context, "startContainer", "created")
        process.exec_process(
            context.spec.process,
            executable,
            helper_fd,
            preserve_fds=context.preserve_fds,
            seccomp_filter=None if seccomp_early else context.seccomp_filter,
        )
    except BaseException as error:
        sync.write_stderr(f"ketch-runc init: cannot start the container's process: {error}\n")
    os._exit(1)


def _set_up(context: InitContext, seccomp_early: bool) -> tuple[str, int]:
    """Do every step before the wait for start; return the executable and helper fd."""
    spec = context.spec
    if context.console is not None:
        # Only containers with a terminal load the pty code (and termios), and it must be
        # loaded here, because after pivot_root the host's files are out of reach.
        from ketch.runtime import console
    # Modes of device nodes and directories are taken from the config as given.
    os.umask(0)
    rootfs.prepare_root(spec)
    root_fd = os.open(spec.rootfs, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        rootfs.mount_all(root_fd, spec, context.cgroups)
        rootfs.create_devices(root_fd, spec)
        os.close(inroot.make_directories(root_fd, spec.process.cwd))
    finally:
        os.close(root_fd)
    _await_runtime_hooks(context)
    _run_init_hooks(context, "createContainer", "creating")
    if "startContainer" in spec.hooks:
        # Imported now, because after pivot_root the host's standard library is out of
        # reach, and startContainer hooks run after it.
        import subprocess  # noqa: F401
    if context.no_pivot:
        rootfs.move_into(spec.rootfs)
    else:
        rootfs.pivot_into(spec.rootfs)

    if spec.hostname is not None:
        syscalls.sethostname(spec.hostname)
    if spec.domainname is not None:
        syscalls.setdomainname(spec.domainname)
    network_namespace = spec.namespace("network")
    if network_namespace is not None and network_namespace.path is None:
        network.bring_up_loopback()
    rootfs.finish_root(spec)
    if context.console is not None:
        # After pivot_root, so that the pty comes from the container's own devpts.
        user = spec.process.user
        console.set_up_terminal(context.console, user.uid, user.gid, spec.process.console_size)
        context.console.close()

    process.set_home(spec.process)
    process.apply_rlimits(spec.process)
    process.apply_oom_score_adj(spec.process)
    if seccomp_early and context.seccomp_filter is not None:
        process.load_seccomp(context.seccomp_filter)
    process.switch_user(spec.process)
    process.enter_working_directory(spec.process.cwd)
    executable = process.find_executable(spec.process.args[0], spec.process.env)
    return executable, exechelper.sealed_helper_fd()


def _await_runtime_hooks(context: InitContext) -> None:
    """Let the parent run the prestart and createRuntime hooks, and learn the host pid."""
    if not any(kind in context.spec.hooks for kind in _HOOKS_NEEDING_PID):
        return
    sync.send(context.sync_socket, sync.HOOKS)
    # The parent's hooks have timeouts of their own; this only ends a wait on a parent
    # that stopped without closing the socket.
    message = sync.receive(context.sync_socket, _HOOKS_WAIT)
    if message is None or message.get("type") != sync.CONTINUE:
        raise SystemFailure(f"the runtime did not let the init continue: {message}")
    context.host_pid = int(message["pid"])


_HOOKS_NEEDING_PID = ("prestart", "createRuntime", "createContainer", "startContainer")
_HOOKS_WAIT = 24 * 3600.0


def _run_init_hooks(context: InitContext, kind: str, status: str) -> None:
    entries = context.spec.hooks.get(kind)
    if not entries:
        return
    spec = context.spec
    hook_state = hooks.hook_state(
        spec.oci_version,
        context.container_id,
        status,
        context.host_pid,
        context.bundle,
        spec.annotations,
    )
    hooks.run_hooks(kind, entries, hook_state)


def _join_cgroups(procs_files: list[tuple[str, int]]) -> None:
    """Move the init into each cgroup by writing "0" (the writer) to its cgroup.procs.

    Raises SystemFailure naming the file and the errno. On cgroup v1 the first write waits
    for an RCU grace period, about 10 ms, which is why this comes after ``ready``.
    """
    # NOTE: only run on Linux 6.x, which checks this write against the credentials of the
    # process that opened the file (the parent). Older kernels that check the writer's
    # own, a non-root container user by now, may reject the join.
    for path, fd in procs_files:
        try:
            os.write(fd, b"0")
        except OSError as error:
            name = errno.errorcode.get(error.errno, str(error.errno))
            raise SystemFailure(f"cannot write 0 to {path}: {error.strerror} ({name})") from None
        finally:
            os.close(fd)


def _wait_for_start(exec_fifo_fd: int) -> None:
    """Block until ``start`` opens exec.fifo for reading, then tell it we go on.

    The fifo is reopened through the O_PATH descriptor because its path is in the
    host's state directory, which is out of reach after pivot_root.
    """
    fifo = os.open(inroot.fd_path(exec_fifo_fd), os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fifo, b"0")
    finally:
        os.close(fifo)
        os.close(exec_fifo_fd)


def _enter_namespaces(context: InitContext) -> None:
    """Join the namespaces given by path, then unshare the new ones (pid and user
    excepted)."""
    for kind in JOIN_ORDER:
        fd = context.namespace_fds.get(kind)
        if fd is not None:
            syscalls.setns(fd, syscalls.NAMESPACE_FLAGS[kind])
    if context.init_joins_cgroups:
        # Joined before unsharing, so that the new cgroup namespace is rooted there.
        context.cgroups.add_process(os.getpid())
    flags = 0
    for namespace in context.spec.namespaces:
        # The parent, or with a user namespace the intermediate, made these two.
        if namespace.path is None and namespace.type not in ("pid", "user"):
            flags |= syscalls.NAMESPACE_FLAGS[namespace.type]
    syscalls.unshare(flags)


def reset_signals() -> None:
    """Give every signal its default action and stop the caller's wakeup fd.

    The caller's Python handlers would run inside the container's process, and its
    signal.set_wakeup_fd descriptor would wake the caller's event loop.
    """
    signals.stop_wakeup_fd()
    for number in signals.all_signals():
        if number in (signals.SIGKILL, signals.SIGSTOP):
            continue
        try:
            signals.set_handler(number, signals.SIG_DFL)
        except (OSError, ValueError):
            pass  # signals the kernel reserves (32 and 33, used by glibc)


def setup_stdio(stdio: tuple[int, int, int] | None) -> None:
    if stdio is None:
        _fill_missing_stdio()
        return
    # Duplicate first, so that a given fd that is itself 0, 1 or 2 survives the dup2s.
    copies = [os.dup(fd) for fd in stdio]
    for target, copy in enumerate(copies):
        os.dup2(copy, target)
        os.close(copy)


def _fill_missing_stdio() -> None:
    # A closed 0, 1 or 2 would be taken by the next descriptor the init opens, which
    # the container's program would then get as its stdin, stdout or stderr.
    for target in range(3):
        try:
            os.fstat(target)
        except OSError:
            null = os.open("/dev/null", os.O_RDWR)
            if null != target:
                os.dup2(null, target)
                os.close(null)
