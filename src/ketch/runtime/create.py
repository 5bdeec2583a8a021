"""Creating a container: everything ``Runtime.create`` does in the calling process.

Kept apart from :mod:`ketch.runtime.lifecycle` so that ``start``, ``state``, ``kill``
and ``delete``, and the ``ketch-runc`` calls that make them, do not import the init,
the rootfs code and the config parser.
"""

from __future__ import annotations

import errno
import os
import time

from ketch.errors import Conflict, InvalidArgument, KetchError, NotFound, SystemFailure
from ketch.linux import syscalls
from ketch.runtime import hooks, signals, state, sync
from ketch.runtime.cgroups import CgroupManager, manager_for
from ketch.runtime.config import Spec, load_spec
from ketch.runtime.lazylog import LazyLogger
from ketch.runtime.lifecycle import reap, wait_until_empty

# False at run time, so that this module does not import typing: every ketch-runc call
# pays for what it imports. Type checkers take the branch below as true.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path
    from typing import Any, NoReturn

    from ketch.runtime import seccomp
    from ketch.runtime.lifecycle import Runtime
    from ketch.runtime.sockets import Socket

log = LazyLogger(__name__)


def create_container(
    runtime: Runtime,
    container_id: str,
    bundle: Path | str,
    *,
    stdio: tuple[int, int, int] | None,
    pid_file: Path | str | None,
    console_socket: Path | str | None,
    preserve_fds: int = 0,
    no_pivot: bool = False,
    join_cgroups_after_ready: bool = False,
) -> int:
    """Do :meth:`Runtime.create <ketch.runtime.lifecycle.Runtime.create>`."""
    state.validate_id(container_id)
    bundle = os.path.abspath(bundle)
    spec = load_spec(bundle)
    if spec.sysctl:
        # The init imports rootfs after the fork (see _run_init), so only a config with
        # sysctls loads it here.
        from ketch.runtime import rootfs

        rootfs.check_sysctls(spec)
    _check_console(spec, console_socket)
    _check_preserved_fds(preserve_fds)
    seccomp_filter = compile_seccomp(spec.seccomp)

    def run_runtime_hooks(init_pid: int) -> None:
        hook_state = hooks.hook_state(
            spec.oci_version, container_id, "creating", init_pid, str(bundle), spec.annotations
        )
        for kind in ("prestart", "createRuntime"):
            hooks.run_hooks(kind, spec.hooks.get(kind, []), hook_state)

    cgroups = _ContainerCgroups(
        manager_for(spec.cgroups_path, container_id), spec, join_cgroups_after_ready
    )
    directory = _make_container_dir(runtime.state_root_path, container_id)
    namespace_fds: dict[str, int] = {}
    console_connection = None
    pid = 0
    try:
        namespace_fds = _open_namespaces(spec)
        if console_socket is not None:
            from ketch.runtime import console

            console_connection = console.connect(console_socket)
        os.mkfifo(os.path.join(directory, state.EXEC_FIFO), 0o622)
        # mkfifo applies the umask; the init may run as any user and must be able to
        # open the fifo for writing.
        os.chmod(os.path.join(directory, state.EXEC_FIFO), 0o622)
        cgroups.create()
        pid = _fork_init(
            container_id,
            spec,
            cgroups,
            directory,
            namespace_fds,
            stdio,
            console_connection,
            runtime.create_timeout,
            preserve_fds=preserve_fds,
            no_pivot=no_pivot,
            seccomp_filter=seccomp_filter,
            run_runtime_hooks=run_runtime_hooks,
            bundle=bundle,
        )
        _record_container(directory, container_id, pid, bundle, spec, cgroups.manager)
        if pid_file is not None:
            write_pid_file(pid_file, pid)
    except BaseException as error:
        # Undo in reverse: the init, then its cgroups and the state directory.
        if pid:
            # The init is this process's child, so no other process will reap it.
            signals.send_if_alive(pid, signals.SIGKILL)
            reap(pid)
        _undo_create(directory, cgroups.manager if cgroups.created else None, runtime.kill_timeout)
        if isinstance(error, OSError):
            raise SystemFailure(f"cannot create container {container_id}: {error}") from None
        raise
    finally:
        for fd in namespace_fds.values():
            os.close(fd)
        if console_connection is not None:
            console_connection.close()
    log.debug("created container %s with init pid %d", container_id, pid)
    return pid


def _record_container(
    directory: str,
    container_id: str,
    pid: int,
    bundle: str,
    spec: Spec,
    cgroups: CgroupManager,
) -> None:
    record = state.ContainerRecord(
        id=container_id,
        pid=pid,
        init_start_time=_start_time_or_fail(pid, container_id),
        bundle=str(bundle),
        rootfs=str(spec.rootfs),
        created=_now_rfc3339(),
        oci_version=spec.oci_version,
        owner="",
        annotations=spec.annotations,
        cgroups=cgroups.state(),
        hooks={kind: [hook.as_dict() for hook in entries] for kind, entries in spec.hooks.items()},
        seccomp=spec.seccomp,
    )
    state.write_record(directory, record)


# Compiled seccomp programs by their profile's canonical JSON text (every object's keys
# sorted), least recently used first. Compiling docker's default profile takes about 7 ms
# and its canonical text about 0.1 ms (measured on the 2-core test machine), so a
# long-lived caller such as the supervisor compiles each profile once rather than on every
# create and exec. The key is the text itself (about 6 KB for docker's default profile),
# not a SHA-256 digest. hashlib loads OpenSSL's libcrypto, about 2 ms of imports by -X
# importtime, and json would bring re and enum back into every create with a profile.
_COMPILED_FILTERS: dict[str, seccomp.Filter] = {}
MAX_COMPILED_FILTERS = 16


def compile_seccomp(profile: dict[str, Any] | None) -> seccomp.Filter | None:
    """Compile a linux.seccomp object (validated by the config) to its BPF program, or
    return the program compiled earlier for an equal profile."""
    if profile is None:
        return None
    from ketch.runtime import json_text, seccomp

    key = json_text.dumps(_with_sorted_keys(profile))
    compiled = _COMPILED_FILTERS.pop(key, None)
    if compiled is None:
        compiled = seccomp.compile_filter(seccomp.parse_profile(profile))
    _COMPILED_FILTERS[key] = compiled
    while len(_COMPILED_FILTERS) > MAX_COMPILED_FILTERS:
        del _COMPILED_FILTERS[next(iter(_COMPILED_FILTERS))]
    return compiled


def _with_sorted_keys(value: Any) -> Any:
    """Return a copy of the decoded JSON ``value`` whose objects list their keys sorted."""
    if isinstance(value, dict):
        return {key: _with_sorted_keys(value[key]) for key in sorted(value)}
    if isinstance(value, list):
        return [_with_sorted_keys(item) for item in value]
    return value


def _check_console(spec: Spec, console_socket: Path | str | None) -> None:
    if spec.process.terminal and console_socket is None:
        raise InvalidArgument(
            "process.terminal is true, so a console socket is required (--console-socket) "
            "to receive the terminal"
        )
    if console_socket is not None and not spec.process.terminal:
        raise InvalidArgument("a console socket was given, but process.terminal is false")


def _check_preserved_fds(count: int) -> None:
    if count < 0:
        raise InvalidArgument(f"invalid preserve_fds {count}: expected 0 or more")
    for fd in range(3, 3 + count):
        try:
            os.fstat(fd)
        except OSError:
            raise InvalidArgument(
                f"invalid preserve_fds {count}: descriptor {fd} is not open"
            ) from None


def _make_container_dir(state_root: str, container_id: str) -> str:
    directory = state.container_path(state_root, container_id)
    try:
        os.makedirs(state_root, mode=0o700, exist_ok=True)
        os.mkdir(directory, mode=0o711)
    except FileExistsError:
        raise Conflict(f"container {container_id} already exists") from None
    except OSError as error:
        raise SystemFailure(f"cannot create {directory}: {error.strerror}") from None
    return directory


def _fork_init(
    container_id: str,
    spec: Spec,
    cgroups: _ContainerCgroups,
    directory: str,
    namespace_fds: dict[str, int],
    stdio: tuple[int, int, int] | None,
    console_connection: Socket | None,
    timeout: float,
    *,
    preserve_fds: int,
    no_pivot: bool,
    seccomp_filter: seccomp.Filter | None,
    run_runtime_hooks: Callable[[int], None],
    bundle: str,
) -> int:
    procs_files = cgroups.open_procs_files()
    try:
        parent_end, child_end = sync.socket_pair()
        fifo_fd = os.open(os.path.join(directory, state.EXEC_FIFO), os.O_PATH | os.O_CLOEXEC)
    except BaseException:
        close_procs_files(procs_files)
        raise
    # The fields of ketch.runtime.init.InitContext, which the init builds (see _run_init).
    context = {
        "container_id": container_id,
        "spec": spec,
        "cgroups": cgroups.manager,
        "init_joins_cgroups": cgroups.init_joins,
        "cgroup_procs_files": procs_files,
        "sync_socket": child_end,
        "exec_fifo_fd": fifo_fd,
        "namespace_fds": namespace_fds,
        "stdio": stdio,
        "console": console_connection,
        "preserve_fds": preserve_fds,
        "no_pivot": no_pivot,
        "seccomp_filter": seccomp_filter,
        "bundle": bundle,
    }
    try:
        if spec.namespace("user") is not None:
            pid = _fork_in_user_namespace(context, namespace_fds, parent_end, timeout, cgroups)
        else:
            pid = fork_into_pid_namespace(
                namespace_fds.get("pid"), new=spec.namespace("pid") is not None
            )
    except BaseException:
        parent_end.close()
        child_end.close()
        os.close(fifo_fd)
        close_procs_files(procs_files)
        raise
    if pid == 0:
        _run_init(context)
    child_end.close()
    os.close(fifo_fd)
    close_procs_files(procs_files)
    try:
        _collect_init(parent_end, pid, timeout, container_id, cgroups, run_runtime_hooks)
    finally:
        parent_end.close()
    return pid


def _run_init(context: dict[str, Any], release_fd: int = -1) -> NoReturn:
    """Become the container's init, in the forked child; never returns.

    The init's modules (ketch.runtime.init with rootfs, mounts, process, exechelper and
    network) are imported here, after the fork, not by create. So their imports, about
    2 ms, run in parallel with the parent's work after the fork instead of before it.
    """
    # Before the imports below, which take milliseconds, for the reason run_init gives.
    syscalls.set_dumpable(False)
    try:
        from ketch.runtime import init

        init_context = init.InitContext(**context, release_fd=release_fd)
    except BaseException as error:
        sync.report_error(context["sync_socket"], error)
        os._exit(1)
    init.run_init(init_context)


def _fork_in_user_namespace(
    context: dict[str, Any],
    namespace_fds: dict[str, int],
    parent_end: Socket,
    timeout: float,
    cgroups: _ContainerCgroups,
) -> int:
    """Fork the init through :mod:`ketch.runtime.userns`; return its pid (never 0)."""
    from ketch.runtime import userns

    def run_in_init(release_fd: int) -> NoReturn:
        _run_init(context, release_fd)

    return userns.fork_init(
        context["spec"],
        namespace_fds,
        parent_end,
        context["sync_socket"],
        run_in_init,
        timeout,
        cgroups.add_before_init,
    )


def _undo_create(directory: str, cgroups: CgroupManager | None, kill_timeout: float) -> None:
    if cgroups is not None:
        try:
            # Anything left in the cgroups was started by this create.
            for pid in cgroups.processes():
                signals.send_if_alive(pid, signals.SIGKILL)
            wait_until_empty(cgroups, kill_timeout)
            cgroups.destroy()
        except KetchError as error:
            log.warning("cleanup after a failed create: %s", error)
    import shutil

    shutil.rmtree(directory, ignore_errors=True)


class _ContainerCgroups:
    """The container's cgroups during create, and when the init joins them.

    Moving a process between cgroup v1 cgroups waits for an RCU grace period, about
    10 ms here (Linux 6.18, measured by timing writes to cgroup.procs), once per burst
    of moves. So by default the parent moves the init in while the init imports its
    modules and sets up its rootfs, and the two overlap.

    In ``ketch-runc create`` that wait is often longer than the init's setup (6 to 24 ms
    against about 7 ms, in one benchmark run on the 2-core test machine). So with
    ``after_ready`` (the caller's ``join_cgroups_after_ready``) the init joins its
    cgroups itself, after it has reported ``ready`` and before it waits for ``start``.
    create returns without the wait, which then overlaps create's exit and the start of
    the next ``ketch-runc`` call. The init writes "0" to descriptors of the cgroup.procs
    files that the parent opened before the fork (see :meth:`open_procs_files`), so the
    join works after pivot_root and after the init switched to the container's user.
    The kernel checks a cgroup.procs write against the credentials of the process that
    opened the file (Linux 5.16 and later, and the stable kernels the fix went to). The
    container's process still starts in its cgroups, because the init reaches exec.fifo
    only after it joined. Until then, the verbs that read or act on the cgroups' members
    move the init in themselves (see ``join_created_init`` in
    :mod:`ketch.runtime.lifecycle`).

    The parent moves the init in as by default when the config has prestart,
    createRuntime or createContainer hooks, so that they run with the init in its
    cgroups. With a new cgroup namespace the init joins before it unshares, because the
    namespace is rooted at the cgroup of the process that unshares it. With a user
    namespace the process that forks the init joins, and the init starts in the cgroups
    (see :meth:`add_before_init`). The cgroups are made before the fork in every case:
    the init bind-mounts them into the container.
    """

    def __init__(self, manager: CgroupManager, spec: Spec, after_ready: bool) -> None:
        self.manager = manager
        self.resources = spec.resources
        namespace = spec.namespace("cgroup")
        user_namespace = spec.namespace("user") is not None
        # With a user namespace the init starts in the cgroups (see add_before_init).
        self.init_joins = namespace is not None and namespace.path is None and not user_namespace
        self.init_joins_after_ready = (
            after_ready
            and not self.init_joins
            and not user_namespace
            and not any(kind in spec.hooks for kind in _HOOKS_BEFORE_READY)
        )
        self.created = False
        self.init_added = False

    def create(self) -> None:
        self.manager.create(self.resources)
        self.created = True

    def open_procs_files(self) -> list[tuple[str, int]]:
        """Open cgroup.procs of each cgroup for the init to join after ``ready``.

        Returns (path, descriptor) pairs, or [] when the init does not join that way.
        The descriptors are close-on-exec, so that no program exec'd by the init or by
        the caller gets them.
        """
        if not self.init_joins_after_ready:
            return []
        files: list[tuple[str, int]] = []
        try:
            for path in self.manager.procs_files():
                files.append((path, os.open(path, os.O_WRONLY | os.O_CLOEXEC)))
        except OSError as error:
            close_procs_files(files)
            raise SystemFailure(f"cannot open {error.filename}: {error.strerror}") from None
        return files

    def add_init(self, pid: int) -> None:
        if not self.init_joins and not self.init_joins_after_ready and not self.init_added:
            self.manager.add_process(pid)

    def add_before_init(self, pid: int) -> None:
        """Move the process that forks the init into the cgroups; the init inherits them."""
        self.manager.add_process(pid)
        self.init_added = True


# The hooks that run before the init reports ready: the parent runs prestart and
# createRuntime, the init createContainer.
_HOOKS_BEFORE_READY = ("prestart", "createRuntime", "createContainer")


def close_procs_files(files: list[tuple[str, int]]) -> None:
    for _path, fd in files:
        os.close(fd)


def fork_into_pid_namespace(namespace_fd: int | None, *, new: bool) -> int:
    """Fork with the child in another pid namespace; return os.fork's result.

    The child joins the namespace ``namespace_fd`` refers to, or with ``new`` a new one;
    with neither it stays in the caller's. unshare(CLONE_NEWPID) and setns(CLONE_NEWPID)
    change only the namespace of the caller's future children, so the caller switches it
    for this one fork and switches it back at once, in the parent only: the child keeps
    it for the processes it forks.
    """
    if namespace_fd is None and not new:
        return os.fork()
    own = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
    try:
        if namespace_fd is not None:
            syscalls.setns(namespace_fd, syscalls.CLONE_NEWPID)
        else:
            syscalls.unshare(syscalls.CLONE_NEWPID)
        try:
            pid = os.fork()
        except BaseException:
            syscalls.setns(own, syscalls.CLONE_NEWPID)
            raise
        if pid != 0:
            _restore_pid_namespace(own, pid)
        return pid
    finally:
        os.close(own)


def _restore_pid_namespace(own: int, child: int) -> None:
    try:
        syscalls.setns(own, syscalls.CLONE_NEWPID)
    except OSError as error:
        os.kill(child, signals.SIGKILL)
        reap(child)
        raise SystemFailure(f"cannot return to the caller's pid namespace: {error}") from None


def _collect_init(
    parent_end: Any,
    init_pid: int,
    timeout: float,
    container_id: str,
    cgroups: _ContainerCgroups,
    run_runtime_hooks: Callable[[int], None],
) -> None:
    """Run the parent's side of the protocol in :mod:`ketch.runtime.sync`: move the
    init into its cgroups when it does not join them itself, run the runtime's hooks
    when the init requests them, and wait for its ``ready``. On failure, kill and reap it."""
    try:
        _add_init(cgroups, init_pid, parent_end)
        message = _receive(parent_end, timeout, container_id)
        if message["type"] == sync.HOOKS:
            run_runtime_hooks(init_pid)
            sync.send(parent_end, sync.CONTINUE, pid=init_pid)
            message = _receive(parent_end, timeout, container_id)
        if message["type"] != sync.READY:
            raise SystemFailure(f"create {container_id}: unexpected message {message}")
    except BaseException:
        signals.send_if_alive(init_pid, signals.SIGKILL)
        reap(init_pid)
        raise


def _add_init(cgroups: _ContainerCgroups, init_pid: int, parent_end: Any) -> None:
    try:
        cgroups.add_init(init_pid)
    except KetchError as error:
        # An init that failed at once cannot be moved, and its own report is the cause.
        try:
            message = sync.receive(parent_end, 1.0)
        except (TimeoutError, OSError):
            message = None
        if message is not None and message.get("type") == sync.ERROR:
            raise sync.error_from_message(message) from error
        raise


def _receive(parent_end: Any, timeout: float, container_id: str) -> dict[str, Any]:
    try:
        message = sync.receive(parent_end, timeout)
    except TimeoutError:
        raise SystemFailure(
            f"create {container_id}: the container's init did not report within {timeout} s"
        ) from None
    if message is None:
        raise SystemFailure(f"create {container_id}: the container's init exited during setup")
    if message["type"] == sync.ERROR:
        raise sync.error_from_message(message)
    return message


def _open_namespaces(spec: Spec) -> dict[str, int]:
    fds: dict[str, int] = {}
    try:
        for namespace in spec.namespaces:
            if namespace.path is None:
                continue
            try:
                fds[namespace.type] = os.open(namespace.path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError as error:
                if error.errno == errno.ENOENT:
                    raise NotFound(
                        f"{namespace.type} namespace {namespace.path} does not exist "
                        "(linux.namespaces)"
                    ) from None
                raise SystemFailure(
                    f"cannot open {namespace.type} namespace {namespace.path}: {error.strerror}"
                ) from None
    except BaseException:
        for fd in fds.values():
            os.close(fd)
        raise
    return fds


def _start_time_or_fail(pid: int, container_id: str) -> int:
    start_time = state.process_start_time(pid)
    if start_time is None:
        raise SystemFailure(f"create {container_id}: the container's init exited after setup")
    return start_time


def write_pid_file(path: Path | str, pid: int) -> None:
    """Write ``pid`` to ``path`` through a temporary file, so that a reader never finds it empty."""
    path = os.fspath(path)
    parent, name = os.path.split(path)
    temporary = os.path.join(parent, f".{name}.tmp")
    with open(temporary, "w") as handle:
        handle.write(str(pid))
    os.replace(temporary, path)


def _now_rfc3339() -> str:
    now = time.time_ns()
    seconds, nanoseconds = divmod(now, 1_000_000_000)
    # time.gmtime, not datetime, which create would import only for this.
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{nanoseconds:09d}Z"
