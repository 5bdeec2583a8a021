"""The runtime library: create, start, state, kill and delete containers over OCI bundles.

Walk-through, with the vocabulary of the OCI runtime spec::

    rt = Runtime(Path("/run/ketch/runtime"))        # the state root, like runc --root
    pid = rt.create("web", Path("/bundles/web"))    # init parked, status "created"
    rt.start("web")                                 # the process runs, status "running"
    rt.kill("web", signal.SIGTERM)
    ...                                             # the caller reaps pid
    rt.delete("web")                                # cgroups and state removed

``create`` forks the container's init from the calling process (see
:mod:`ketch.runtime.init`) and returns once the init waits for ``start``. The init is
the caller's child, and its exit status belongs to the caller, which must reap it (a
caller that exits leaves it to the nearest child subreaper or to PID 1). ``create``
leaves no other child behind, reaps the init itself when it fails, and installs no
signal handler or thread in the caller, so a long-running, single-threaded caller such
as the supervisor can call it in-process.

Per-container files are described in :mod:`ketch.runtime.state`.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import logging
import os
import select
import shutil
import signal
import time
from pathlib import Path
from typing import Any

from ketch.errors import Conflict, KetchError, NotFound, SystemFailure
from ketch.linux import syscalls
from ketch.runtime import init, rootfs, state, sync
from ketch.runtime.cgroups import CgroupManager, manager_for, manager_from_state
from ketch.runtime.config import Spec, load_spec

log = logging.getLogger(__name__)


class Runtime:
    """Containers under one state root."""

    # Seconds create waits for the init to report.
    create_timeout = 60.0
    # Seconds delete waits for the container's processes to be gone after SIGKILL.
    kill_timeout = 10.0

    def __init__(self, state_root: Path) -> None:
        self.state_root = Path(state_root)

    def create(
        self,
        container_id: str,
        bundle: Path,
        *,
        stdio: tuple[int, int, int] | None = None,
        pid_file: Path | None = None,
    ) -> int:
        """Create the container and return its init's pid once the init waits for start.

        ``stdio`` gives the descriptors for the init's 0, 1 and 2 (None: the caller's).
        A failed create leaves no process, cgroup or state behind.
        """
        state.validate_id(container_id)
        bundle = Path(os.path.abspath(bundle))
        spec = load_spec(bundle)
        rootfs.check_sysctls(spec)
        cgroups = _ContainerCgroups(manager_for(spec.cgroups_path, container_id), spec)
        directory = self._make_container_dir(container_id)
        namespace_fds: dict[str, int] = {}
        try:
            namespace_fds = _open_namespaces(spec)
            os.mkfifo(directory / state.EXEC_FIFO, 0o622)
            # mkfifo applies the umask; the init may run as any user and must be able to
            # open the fifo for writing.
            os.chmod(directory / state.EXEC_FIFO, 0o622)
            cgroups.create()
            pid = self._fork_init(container_id, spec, cgroups, directory, namespace_fds, stdio)
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
                cgroups=cgroups.manager.state(),
            )
            state.write_record(directory, record)
            if pid_file is not None:
                _write_pid_file(Path(pid_file), pid)
        except BaseException:
            self._undo_create(directory, cgroups.manager if cgroups.created else None)
            raise
        finally:
            for fd in namespace_fds.values():
                os.close(fd)
        log.debug("created container %s with init pid %d", container_id, pid)
        return pid

    def start(self, container_id: str) -> None:
        """Let the init exec the container's process."""
        record = state.read_record(self.state_root, container_id)
        directory = state.container_dir(self.state_root, container_id)
        status = state.status_of(directory, record)
        if status != "created":
            raise Conflict(f"cannot start container {container_id}: it is {status}, not created")
        fifo_path = directory / state.EXEC_FIFO
        try:
            fifo = os.open(fifo_path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            raise Conflict(f"cannot start container {container_id}: it was started") from None
        try:
            _await_init_release(fifo, record, container_id)
        finally:
            os.close(fifo)
        with contextlib.suppress(FileNotFoundError):
            fifo_path.unlink()
        log.debug("started container %s", container_id)

    def state(self, container_id: str) -> dict[str, Any]:
        """Return the container's state as ``runc state`` prints it."""
        record = state.read_record(self.state_root, container_id)
        directory = state.container_dir(self.state_root, container_id)
        return record.to_oci_state(state.status_of(directory, record))

    def list(self) -> list[dict[str, Any]]:
        """Return the state of every container under the state root."""
        result = []
        if not self.state_root.is_dir():
            return result
        for entry in sorted(self.state_root.iterdir()):
            with contextlib.suppress(KetchError):
                result.append(self.state(entry.name))
        return result

    def kill(self, container_id: str, signal_number: int, all: bool = False) -> None:
        """Send ``signal_number`` to the init, or with ``all`` to every container process."""
        record = state.read_record(self.state_root, container_id)
        directory = state.container_dir(self.state_root, container_id)
        if state.status_of(directory, record) == "stopped":
            raise Conflict(f"cannot kill container {container_id}: it is not running")
        if all:
            cgroups = manager_from_state(record.cgroups)
            for pid in cgroups.processes():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal_number)
            return
        _signal_init(record, signal_number)

    def delete(self, container_id: str, force: bool = False) -> None:
        """Remove a stopped container's cgroups and state; ``force`` kills it first.

        A container still in "created" is killed without ``force``, as runc does.
        """
        directory = state.container_dir(self.state_root, container_id)
        try:
            record = state.read_record(self.state_root, container_id)
        except NotFound:
            if directory.is_dir():
                # Left by a create that died before writing its record.
                shutil.rmtree(directory, ignore_errors=True)
                return
            raise
        status = state.status_of(directory, record)
        if status in ("running", "paused") and not force:
            raise Conflict(
                f"cannot delete container {container_id} that is not stopped: it is {status}"
            )
        cgroups = manager_from_state(record.cgroups)
        if status != "stopped" or cgroups.processes():
            self._kill_everything(record, cgroups)
        cgroups.destroy()
        shutil.rmtree(directory, ignore_errors=True)
        log.debug("deleted container %s", container_id)

    def _make_container_dir(self, container_id: str) -> Path:
        self.state_root.mkdir(mode=0o700, parents=True, exist_ok=True)
        directory = state.container_dir(self.state_root, container_id)
        try:
            directory.mkdir(mode=0o711)
        except FileExistsError:
            raise Conflict(f"container {container_id} already exists") from None
        return directory

    def _fork_init(
        self,
        container_id: str,
        spec: Spec,
        cgroups: _ContainerCgroups,
        directory: Path,
        namespace_fds: dict[str, int],
        stdio: tuple[int, int, int] | None,
    ) -> int:
        parent_end, child_end = sync.socket_pair()
        fifo_fd = os.open(directory / state.EXEC_FIFO, os.O_PATH | os.O_CLOEXEC)
        context = init.InitContext(
            container_id=container_id,
            spec=spec,
            cgroups=cgroups.manager,
            init_joins_cgroups=cgroups.init_joins,
            sync_socket=child_end,
            exec_fifo_fd=fifo_fd,
            namespace_fds=namespace_fds,
            stdio=stdio,
        )
        try:
            pid = _fork_into_pid_namespace(spec, namespace_fds.get("pid"))
        except BaseException:
            parent_end.close()
            child_end.close()
            os.close(fifo_fd)
            raise
        if pid == 0:
            init.run_init(context)
        child_end.close()
        os.close(fifo_fd)
        with parent_end:
            _collect_init(parent_end, pid, self.create_timeout, container_id, cgroups)
        return pid

    def _undo_create(self, directory: Path, cgroups: CgroupManager | None) -> None:
        if cgroups is not None:
            try:
                # Anything left in the cgroups was started by this create.
                for pid in cgroups.processes():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                _wait_until_empty(cgroups, self.kill_timeout)
                cgroups.destroy()
            except KetchError as error:
                log.warning("cleanup after a failed create: %s", error)
        shutil.rmtree(directory, ignore_errors=True)

    def _kill_everything(self, record: state.ContainerRecord, cgroups: CgroupManager) -> None:
        with contextlib.suppress(KetchError):
            _signal_init(record, signal.SIGKILL)
        for pid in cgroups.processes():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        _thaw(record)
        _wait_until_empty(cgroups, self.kill_timeout)
        deadline = time.monotonic() + self.kill_timeout
        while state.init_is_alive(record) and time.monotonic() < deadline:
            time.sleep(0.005)


class _ContainerCgroups:
    """The container's cgroups during create, and when the init joins them.

    Moving a process between cgroup v1 cgroups waits for an RCU grace period, about
    10 ms here (Linux 6.18, measured by timing writes to cgroup.procs), once per burst
    of moves. So the parent moves the init into the cgroups while the init sets up its
    rootfs, which takes that wait off the critical path. The init is in its cgroups
    before it reports ``ready``, so the container's process starts there. With a new
    cgroup namespace the init joins by itself instead, before it unshares, because the
    namespace is rooted at the cgroup of the process that unshares it. The cgroups are
    made before the fork either way: the init bind-mounts them into the container.
    """

    def __init__(self, manager: CgroupManager, spec: Spec) -> None:
        self.manager = manager
        self.resources = spec.resources
        namespace = spec.namespace("cgroup")
        self.init_joins = namespace is not None and namespace.path is None
        self.created = False

    def create(self) -> None:
        self.manager.create(self.resources)
        self.created = True

    def add_init(self, pid: int) -> None:
        if not self.init_joins:
            self.manager.add_process(pid)


def _fork_into_pid_namespace(spec: Spec, pid_namespace_fd: int | None) -> int:
    """Fork with the child in the container's pid namespace; return os.fork's result.

    unshare(CLONE_NEWPID) and setns(CLONE_NEWPID) change only the namespace of the
    caller's future children, so the caller switches it for this one fork and switches
    it back at once, in the parent only: the child keeps it for the processes it forks.
    """
    if spec.namespace("pid") is None:
        return os.fork()
    own = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
    try:
        if pid_namespace_fd is not None:
            syscalls.setns(pid_namespace_fd, syscalls.CLONE_NEWPID)
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
        os.kill(child, signal.SIGKILL)
        _reap(child)
        raise SystemFailure(f"cannot return to the caller's pid namespace: {error}") from None


def _collect_init(
    parent_end: Any,
    init_pid: int,
    timeout: float,
    container_id: str,
    cgroups: _ContainerCgroups,
) -> None:
    """Run the parent's side of the protocol in :mod:`ketch.runtime.sync`: move the
    init into its cgroups and wait for its ``ready``. On failure, kill and reap it."""
    try:
        _add_init(cgroups, init_pid, parent_end)
        message = _receive(parent_end, timeout, container_id)
        if message["type"] != sync.READY:
            raise SystemFailure(f"create {container_id}: unexpected message {message}")
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            os.kill(init_pid, signal.SIGKILL)
        _reap(init_pid)
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


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


def _await_init_release(fifo: int, record: state.ContainerRecord, container_id: str) -> None:
    """Wait for the init's byte on exec.fifo, checking that the init is still alive.

    Opening the read end without O_NONBLOCK would block forever if the init had died
    before opening its end, so this polls and looks at the init between polls.
    """
    poller = select.poll()
    poller.register(fifo, select.POLLIN)
    while True:
        if poller.poll(50):
            if os.read(fifo, 1):
                return
            raise SystemFailure(f"cannot start container {container_id}: its init exited")
        if not state.init_is_alive(record):
            raise SystemFailure(f"cannot start container {container_id}: its init exited")


def _signal_init(record: state.ContainerRecord, signal_number: int) -> None:
    try:
        pidfd = os.pidfd_open(record.pid)
    except ProcessLookupError:
        raise Conflict(f"cannot signal container {record.id}: it is not running") from None
    try:
        # Checked with the pidfd open: the pid cannot be reused while the pidfd exists.
        if not state.init_is_alive(record):
            raise Conflict(f"cannot signal container {record.id}: it is not running")
        signal.pidfd_send_signal(pidfd, signal_number)
    except ProcessLookupError:
        raise Conflict(f"cannot signal container {record.id}: it is not running") from None
    finally:
        os.close(pidfd)


def _thaw(record: state.ContainerRecord) -> None:
    # A frozen process does not act on SIGKILL until it is thawed.
    freezer = record.cgroups.get("directories", {}).get("freezer")
    if freezer is not None:
        with contextlib.suppress(OSError):
            Path(freezer, "freezer.state").write_text("THAWED")


def _wait_until_empty(cgroups: CgroupManager, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while cgroups.processes():
        if time.monotonic() > deadline:
            raise SystemFailure(f"container processes still alive after {timeout} s")
        time.sleep(0.005)


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


def _write_pid_file(path: Path, pid: int) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(str(pid))
    os.replace(temporary, path)


def _now_rfc3339() -> str:
    now = time.time_ns()
    seconds, nanoseconds = divmod(now, 1_000_000_000)
    moment = datetime.datetime.fromtimestamp(seconds, datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + f".{nanoseconds:09d}Z"
