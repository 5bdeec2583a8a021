"""The runtime library: create, start, state, kill and delete containers over OCI bundles.

Walk-through, with the vocabulary of the OCI runtime spec::

    rt = Runtime(Path("/run/ketch/runtime"))        # the state root, like runc --root
    pid = rt.create("web", Path("/bundles/web"))    # init parked, status "created"
    rt.start("web")                                 # the process runs, status "running"
    rt.exec("web", {"args": ["ps"], "cwd": "/"})    # another process in it; reap its pid
    rt.kill("web", signal.SIGTERM)
    ...                                             # the caller reaps pid
    rt.delete("web")                                # cgroups and state removed

``create`` forks the container's init from the calling process (see
:mod:`ketch.runtime.init`) and returns once the init waits for ``start``. The init is
the caller's child, and its exit status belongs to the caller, which must reap it (a
caller that exits leaves it to the nearest child subreaper or to PID 1). With a user
namespace the init is forked by an intermediate process instead (see
:mod:`ketch.runtime.userns`), so it goes to the nearest child subreaper at once: a
caller that reaps its containers must then be one. ``create``
leaves no other child behind, reaps the init itself when it fails, and installs no
signal handler or thread in the caller, so a long-running, single-threaded caller such
as the supervisor can call it in-process.

Per-container files are described in :mod:`ketch.runtime.state`.
"""

from __future__ import annotations

import posix
import select
import time

from ketch.errors import Conflict, KetchError, NotFound, SystemFailure
from ketch.runtime import state
from ketch.runtime.lazylog import LazyLogger
from ketch.runtime.paths import exists, is_directory, join

# False at run time, so that this module does not import typing, pathlib or the cgroup
# managers. Every ketch-runc call pays for what it imports, and start, state and kill
# need none of them. Type checkers take the branch below as true. For the same reason
# signal and contextlib (each of which imports enum, functools and collections) are not
# imported here, and signals are sent through ketch.runtime.signals. System calls go
# through posix, not os (see ketch.runtime.paths).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any

    from ketch.runtime.cgroups import CgroupManager

log = LazyLogger(__name__)


class Runtime:
    """Containers under one state root."""

    # Seconds create waits for the init to report.
    create_timeout = 60.0
    # Seconds delete waits for the container's processes to be gone after SIGKILL.
    kill_timeout = 10.0

    def __init__(self, state_root: Path | str) -> None:
        # Kept as a string: the short verbs build their paths with ketch.runtime.paths.
        self._state_root = posix.fspath(state_root)

    @property
    def state_root(self) -> Path:
        """The state root, like runc's --root."""
        from pathlib import Path

        return Path(self._state_root)

    @state_root.setter
    def state_root(self, value: Path | str) -> None:
        self._state_root = posix.fspath(value)

    @property
    def state_root_path(self) -> str:
        """The state root as a string, for create, which does not import pathlib."""
        return self._state_root

    def create(
        self,
        container_id: str,
        bundle: Path | str,
        *,
        stdio: tuple[int, int, int] | None = None,
        pid_file: Path | str | None = None,
        console_socket: Path | str | None = None,
        preserve_fds: int = 0,
        no_pivot: bool = False,
        join_cgroups_after_ready: bool = False,
    ) -> int:
        """Create the container and return its init's pid once the init waits for start.

        ``stdio`` gives the descriptors for the init's 0, 1 and 2 (None: the caller's).
        ``console_socket`` is the unix socket that receives the pty master when the
        config sets process.terminal (see :mod:`ketch.runtime.console`); it is required
        then and rejected otherwise. Descriptors 3 to 2 + ``preserve_fds`` of the caller
        reach the container's process too. ``no_pivot`` moves the rootfs onto / and
        chroots into it instead of pivot_root, for a rootfs on the initial ramdisk, where
        pivot_root fails. A failed create leaves no process, cgroup or state behind.

        ``join_cgroups_after_ready`` lets the init join its cgroups after create returns
        and before it waits for start, when the config has no hooks that run before
        ready and neither a user namespace nor a new cgroup namespace. On cgroup v1 the
        join waits about 10 ms for an RCU grace period, which create then skips and
        start may wait for instead. It suits a caller that exits after create, such as
        ``ketch-runc create``. Without it, create moves the init in while the init sets
        up its rootfs, which is faster for a caller that starts the container at once.
        """
        from ketch.runtime.create import create_container

        return create_container(
            self,
            container_id,
            bundle,
            stdio=stdio,
            pid_file=pid_file,
            console_socket=console_socket,
            preserve_fds=preserve_fds,
            no_pivot=no_pivot,
            join_cgroups_after_ready=join_cgroups_after_ready,
        )

    def exec(
        self,
        container_id: str,
        process: dict[str, Any],
        *,
        stdio: tuple[int, int, int] | None = None,
        console_socket: Path | None = None,
        pid_file: Path | None = None,
        preserve_fds: int = 0,
    ) -> int:
        """Start another process in a created or running container; return its host pid.

        ``process`` is an OCI process object (args, env, cwd, user, capabilities,
        rlimits, terminal, noNewPrivileges, oomScoreAdj). The process joins the init's
        namespaces and cgroups, and the caller must reap it. ``stdio``,
        ``console_socket`` and ``pid_file`` work as for :meth:`create`; descriptors 3 to
        2 + ``preserve_fds`` of the caller are passed on too. It returns once the
        process has exec'd the container's program, or raises with nothing left behind.
        """
        from ketch.runtime.execute import exec_in_container

        return exec_in_container(
            self,
            container_id,
            process,
            stdio=stdio,
            console_socket=console_socket,
            pid_file=pid_file,
            preserve_fds=preserve_fds,
        )

    def start(self, container_id: str) -> None:
        """Let the init exec the container's process."""
        record = state.read_record(self._state_root, container_id)
        directory = state.container_path(self._state_root, container_id)
        status = state.status_of(directory, record)
        if status != "created":
            raise Conflict(f"cannot start container {container_id}: it is {status}, not created")
        fifo_path = join(directory, state.EXEC_FIFO)
        try:
            fifo = posix.open(fifo_path, posix.O_RDONLY | posix.O_NONBLOCK | posix.O_CLOEXEC)
        except FileNotFoundError:
            raise Conflict(f"cannot start container {container_id}: it was started") from None
        try:
            _await_init_release(fifo, fifo_path, record)
        finally:
            posix.close(fifo)
        try:
            posix.unlink(fifo_path)
        except FileNotFoundError:
            pass
        log.debug("started container %s", container_id)
        _run_record_hooks(record, "poststart", "running")

    def state(self, container_id: str) -> dict[str, Any]:
        """Return the container's state as ``runc state`` prints it."""
        record = state.read_record(self._state_root, container_id)
        directory = state.container_path(self._state_root, container_id)
        return record.to_oci_state(state.status_of(directory, record))

    def list(self) -> list[dict[str, Any]]:
        """Return the state of every container under the state root."""
        result = []
        if not self.state_root.is_dir():
            return result
        for entry in sorted(self.state_root.iterdir()):
            try:
                result.append(self.state(entry.name))
            except KetchError:
                pass
        return result

    def kill(self, container_id: str, signal_number: int, all: bool = False) -> None:
        """Send ``signal_number`` to the init, or with ``all`` to every container process."""
        record = state.read_record(self._state_root, container_id)
        directory = state.container_path(self._state_root, container_id)
        status = state.status_of(directory, record)
        if status == "stopped":
            raise Conflict(f"cannot kill container {container_id}: it is not running")
        if all:
            from ketch.runtime.cgroups import manager_from_state

            cgroups = manager_from_state(record.cgroups)
            if status == "created":
                join_created_init(record, cgroups)
            from ketch.runtime.signals import send_if_alive

            for pid in cgroups.processes():
                send_if_alive(pid, signal_number)
            return
        _signal_init(record, signal_number)

    def delete(self, container_id: str, force: bool = False) -> None:
        """Remove a stopped container's cgroups and state; ``force`` kills it first.

        A container still in "created" is killed without ``force``, as runc does.
        """
        directory = state.container_path(self._state_root, container_id)
        try:
            record = state.read_record(self._state_root, container_id)
        except NotFound:
            if is_directory(directory):
                # Left by a create that died before writing its record.
                _remove_state_directory(directory)
                return
            raise
        status = state.status_of(directory, record)
        if status in ("running", "paused") and not force:
            raise Conflict(
                f"cannot delete container {container_id} that is not stopped: it is {status}"
            )
        if status == "stopped" and not _recorded_processes(record.cgroups):
            _remove_recorded_cgroups(record.cgroups)
        else:
            from ketch.runtime.cgroups import manager_from_state

            cgroups = manager_from_state(record.cgroups)
            if status == "created":
                join_created_init(record, cgroups)
            if status != "stopped" or cgroups.processes():
                self._kill_everything(record, cgroups)
            cgroups.destroy()
        _remove_state_directory(directory)
        log.debug("deleted container %s", container_id)
        _run_record_hooks(record, "poststop", "stopped")

    def pause(self, container_id: str) -> None:
        """Freeze every process of a running container (status "paused")."""
        record, status = self._record_and_status(container_id)
        if status != "running":
            raise Conflict(f"cannot pause container {container_id}: it is {status}, not running")
        from ketch.runtime.cgroups import manager_from_state

        manager_from_state(record.cgroups).freeze()
        log.debug("paused container %s", container_id)

    def resume(self, container_id: str) -> None:
        """Thaw a paused container's processes (status "running" again)."""
        record, status = self._record_and_status(container_id)
        if status != "paused":
            raise Conflict(f"cannot resume container {container_id}: it is {status}, not paused")
        from ketch.runtime.cgroups import manager_from_state

        manager_from_state(record.cgroups).thaw()
        log.debug("resumed container %s", container_id)

    def update(self, container_id: str, resources: dict[str, Any]) -> None:
        """Write new cgroup limits; ``resources`` is an OCI linux.resources object."""
        from ketch.runtime.cgroups import manager_from_state
        from ketch.runtime.config import parse_resources

        record, status = self._record_and_status(container_id)
        if status == "stopped":
            raise Conflict(f"cannot update container {container_id}: it is stopped")
        manager_from_state(record.cgroups).update(parse_resources(resources))
        log.debug("updated the resources of container %s", container_id)

    def processes(self, container_id: str) -> list[int]:
        """Return the host pids of every process in the container's cgroup."""
        from ketch.runtime.cgroups import manager_from_state

        record, status = self._record_and_status(container_id)
        cgroups = manager_from_state(record.cgroups)
        if status == "created":
            join_created_init(record, cgroups)
        return cgroups.processes()

    def _record_and_status(self, container_id: str) -> tuple[state.ContainerRecord, str]:
        record = state.read_record(self._state_root, container_id)
        directory = state.container_path(self._state_root, container_id)
        return record, state.status_of(directory, record)

    def _kill_everything(self, record: state.ContainerRecord, cgroups: CgroupManager) -> None:
        from ketch.runtime.signals import SIGKILL, send_if_alive

        try:
            _signal_init(record, SIGKILL)
        except KetchError:
            pass
        for pid in cgroups.processes():
            send_if_alive(pid, SIGKILL)
        _thaw(cgroups)
        wait_until_empty(cgroups, self.kill_timeout)
        deadline = time.monotonic() + self.kill_timeout
        while state.init_is_alive(record) and time.monotonic() < deadline:
            time.sleep(0.005)


def join_created_init(record: state.ContainerRecord, cgroups: CgroupManager) -> None:
    """Move a created container's init into its cgroups, where it may not be yet.

    With ``create(join_cgroups_after_ready=True)``, as ``ketch-runc create`` calls it,
    the init joins its cgroups by itself after create returns, before it waits for
    ``start`` (see ``_ContainerCgroups`` in :mod:`ketch.runtime.create`). The verbs that
    read or act on the cgroups' members call this first, so that they find the init.
    """
    if not state.init_is_alive(record) or record.pid in cgroups.processes():
        # The init joins the cgroups in the order processes() reads them, first to last,
        # so one in the first may still be on its way into the others. That is enough
        # for ps and kill --all, which read only the first, and for delete, which kills
        # the init before it removes the cgroups.
        return
    # NOTE: the init could exit and its pid be reused between the check above and the
    # write, which would move that other process. The init of a created container exits
    # only when it is killed or cannot join its cgroups, so the window is rare.
    try:
        cgroups.add_process(record.pid)
    except SystemFailure:
        if state.init_is_alive(record):
            raise


def reap(pid: int) -> None:
    try:
        posix.waitpid(pid, 0)
    except ChildProcessError:
        pass


# Delete of a stopped container with an empty cgroup, the usual case, reads the
# directories from the record instead of building the cgroup manager, which would import
# pathlib and every controller module.


def _recorded_processes(cgroups: dict[str, Any]) -> list[int]:
    from ketch.runtime.cgroups import directories_from_state
    from ketch.runtime.cgroups.files import read_pids

    # The same cgroup.procs the managers' processes() reads: the first directory's.
    directories = directories_from_state(cgroups)
    return read_pids(directories[0]) if directories else []


def _remove_recorded_cgroups(cgroups: dict[str, Any]) -> None:
    from ketch.runtime.cgroups import directories_from_state
    from ketch.runtime.cgroups.files import remove_directories

    remove_directories(directories_from_state(cgroups))


def _remove_state_directory(directory: str) -> None:
    """Remove a container's state directory, ignoring errors, as ``rmtree`` would.

    The directory holds only files, so this avoids importing shutil (with its
    compression modules) on every delete; anything else goes to ``shutil.rmtree``.
    """
    try:
        for entry in posix.scandir(directory):
            if entry.is_dir(follow_symlinks=False):
                raise IsADirectoryError(entry.path)
            posix.unlink(entry.path)
        posix.rmdir(directory)
    except OSError:
        import shutil

        shutil.rmtree(directory, ignore_errors=True)


def _run_record_hooks(record: state.ContainerRecord, kind: str, status: str) -> None:
    """Run the record's hooks of ``kind``; failures are logged, as both kinds allow."""
    entries = record.hooks.get(kind)
    if not entries:
        return
    from ketch.runtime import hooks

    pid = record.pid if status != "stopped" else 0
    hook_state = hooks.hook_state(
        record.oci_version, record.id, status, pid, record.bundle, record.annotations
    )
    hooks.run_hooks(kind, [hooks.Hook(**entry) for entry in entries], hook_state)


def _await_init_release(fifo: int, fifo_path: str, record: state.ContainerRecord) -> None:
    """Wait for the init's byte on exec.fifo, checking that the init is still alive.

    Opening the read end without O_NONBLOCK would block forever if the init had died
    before opening its end, so this polls and looks at the init between polls. Another
    ``start`` that got the byte first removes exec.fifo, which ends this one too.
    """
    poller = select.poll()
    poller.register(fifo, select.POLLIN)
    while True:
        if poller.poll(50) and posix.read(fifo, 1):
            return
        if not state.init_is_alive(record):
            raise SystemFailure(f"cannot start container {record.id}: its init exited")
        if not exists(fifo_path):
            raise Conflict(f"cannot start container {record.id}: it was started")
        # A writer that closed without writing leaves the fifo readable at end of file,
        # which poll would report at once again.
        time.sleep(0.005)


def _signal_init(record: state.ContainerRecord, signal_number: int) -> None:
    try:
        pidfd = posix.pidfd_open(record.pid)
    except ProcessLookupError:
        raise Conflict(f"cannot signal container {record.id}: it is not running") from None
    try:
        # Checked with the pidfd open: the pid cannot be reused while the pidfd exists.
        if not state.init_is_alive(record):
            raise Conflict(f"cannot signal container {record.id}: it is not running")
        from ketch.runtime.signals import pidfd_send_signal

        pidfd_send_signal(pidfd, signal_number)
    except ProcessLookupError:
        raise Conflict(f"cannot signal container {record.id}: it is not running") from None
    finally:
        posix.close(pidfd)


def _thaw(cgroups: CgroupManager) -> None:
    # A frozen process does not act on SIGKILL until it is thawed.
    if cgroups.is_frozen():
        try:
            cgroups.thaw()
        except KetchError:
            pass


def wait_until_empty(cgroups: CgroupManager, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while cgroups.processes():
        if time.monotonic() > deadline:
            raise SystemFailure(f"container processes still alive after {timeout} s")
        time.sleep(0.005)
