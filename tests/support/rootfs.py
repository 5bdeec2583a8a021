"""A busybox rootfs and OCI bundles for tests that run real containers.

``busybox_rootfs`` and ``runner`` are pytest fixtures; a test module that uses them
loads this module as a plugin::

    pytest_plugins = ["support.rootfs"]

It builds, in the test's tmp_path::

    rootfs/
        bin/busybox            copied from /bin/busybox (Debian's busybox-static)
        bin/<applet>           symlinks to busybox, one per applet it lists
        etc/passwd, etc/group  root, nobody and a user "app" with uid and gid 1000
        tmp/, root/, home/app/

``write_bundle(directory, rootfs, args, **changes)`` writes ``directory/config.json`` from
``ketch.runtime.spec.default_spec`` with the terminal off and the rootfs writable, and
returns the directory.

The ``runner`` fixture (:class:`ContainerRunner`) creates, starts and reaps containers
in that rootfs with the runtime library and deletes them, with their cgroups, at the end.
"""

from __future__ import annotations

import copy
import json
import os
import selectors
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ketch.errors import NotFound
from ketch.linux import syscalls
from ketch.runtime.spec import default_spec

BUSYBOX = Path("/bin/busybox")

PASSWD = """root:x:0:0:root:/root:/bin/sh
app:x:1000:1000:app:/home/app:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
"""

GROUP = """root:x:0:
app:x:1000:
extra:x:2000:app
nogroup:x:65534:
"""

_applets: list[str] | None = None


def busybox_applets() -> list[str]:
    global _applets
    if _applets is None:
        output = subprocess.run(
            [str(BUSYBOX), "--list"], check=True, capture_output=True, text=True
        ).stdout
        _applets = [name for name in output.split() if name and "/" not in name]
    return _applets


def make_busybox_rootfs(directory: Path) -> Path:
    """Build the rootfs described in the module docstring at ``directory``."""
    if not BUSYBOX.exists():
        pytest.skip("busybox-static is not installed (/bin/busybox)")
    for name in ("bin", "etc", "tmp", "root", "home/app", "proc", "sys", "dev"):
        (directory / name).mkdir(parents=True, exist_ok=True)
    (directory / "tmp").chmod(0o1777)
    shutil.copy2(BUSYBOX, directory / "bin/busybox")
    for applet in busybox_applets():
        link = directory / "bin" / applet
        if not link.exists():
            link.symlink_to("busybox")
    (directory / "etc/passwd").write_text(PASSWD)
    (directory / "etc/group").write_text(GROUP)
    return directory


@pytest.fixture
def busybox_rootfs(tmp_path: Path) -> Path:
    return make_busybox_rootfs(tmp_path / "rootfs")


def bundle_config(rootfs: Path, args: list[str], **changes: Any) -> dict[str, Any]:
    """Return a config for ``args`` in ``rootfs``; keyword arguments replace top-level
    keys, and ``process``/``linux`` given as dicts are merged into the defaults."""
    config = default_spec(args)
    config["process"]["terminal"] = False
    config["root"] = {"path": str(rootfs), "readonly": False}
    for key, value in changes.items():
        if key in ("process", "linux") and isinstance(value, dict):
            config[key].update(copy.deepcopy(value))
        else:
            config[key] = copy.deepcopy(value)
    return config


def write_bundle(directory: Path, rootfs: Path, args: list[str], **changes: Any) -> Path:
    """Write ``directory/config.json`` from :func:`bundle_config` and return ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    config = bundle_config(rootfs, args, **changes)
    (directory / "config.json").write_text(json.dumps(config, indent=2))
    return directory


@dataclass
class Result:
    exit_code: int
    stdout: str
    stderr: str


class ContainerRunner:
    """Runs containers with :class:`ketch.runtime.Runtime` from the test process.

    The test process becomes a child subreaper while the runner is open, so that it can
    reap each container's init and read its exit status. Every container gets the cgroups
    path ``<parent>/<id>`` under one parent made for the test. ``close`` force-deletes
    the containers, removes that parent in every hierarchy and stops being a subreaper.
    """

    def __init__(self, root: Path, rootfs: Path) -> None:
        from ketch.runtime import Runtime

        self.root = root
        self.rootfs = rootfs
        self.runtime = Runtime(root / "state")
        self.cgroup_parent = f"ketch-test-{uuid.uuid4().hex[:8]}"
        self.ids: list[str] = []
        self._counter = 0
        syscalls.set_child_subreaper()

    def new_id(self) -> str:
        self._counter += 1
        return f"c{self._counter}"

    def bundle(self, container_id: str, args: list[str], **changes: Any) -> Path:
        linux = dict(changes.pop("linux", {}))
        linux.setdefault("cgroupsPath", f"{self.cgroup_parent}/{container_id}")
        return write_bundle(
            self.root / "bundles" / container_id, self.rootfs, args, linux=linux, **changes
        )

    def create(
        self, args: list[str], *, stdio: tuple[int, int, int] | None = None, **changes: Any
    ) -> tuple[str, int]:
        """Create a container running ``args``; return (id, init pid)."""
        container_id = self.new_id()
        bundle = self.bundle(container_id, args, **changes)
        self.ids.append(container_id)
        pid = self.runtime.create(container_id, bundle, stdio=stdio)
        return container_id, pid

    def run(self, args: list[str], timeout: float = 30.0, **changes: Any) -> Result:
        """Create, start and wait for a container; return its status and output."""
        stdout_read, stdout_write = os.pipe()
        stderr_read, stderr_write = os.pipe()
        null = os.open("/dev/null", os.O_RDONLY)
        try:
            container_id, pid = self.create(
                args, stdio=(null, stdout_write, stderr_write), **changes
            )
        finally:
            os.close(stdout_write)
            os.close(stderr_write)
            os.close(null)
        try:
            self.runtime.start(container_id)
            stdout, stderr = read_until_closed([stdout_read, stderr_read], timeout)
        finally:
            os.close(stdout_read)
            os.close(stderr_read)
        return Result(wait_for_exit(pid), stdout.decode(), stderr.decode())

    def wait(self, pid: int, timeout: float = 30.0) -> int:
        """Reap a container's init; see :func:`wait_for_exit`."""
        return wait_for_exit(pid, timeout)

    def cgroup_directories(self, container_id: str) -> list[Path]:
        record = json.loads((self.root / "state" / container_id / "state.json").read_text())
        return [Path(path) for path in record["cgroups"]["directories"].values()]

    def cgroup_parents(self) -> list[Path]:
        return cgroup_parents(self.cgroup_parent)

    def close(self) -> None:
        errors = []
        for container_id in self.ids:
            try:
                self.runtime.delete(container_id, force=True)
            except NotFound:
                pass
            except Exception as error:  # cleanup goes on for the others
                errors.append(f"{container_id}: {error}")
        for parent in cgroup_parents(self.cgroup_parent):
            try:
                parent.rmdir()
            except OSError as error:
                errors.append(f"{parent}: {error}")
        syscalls.prctl(syscalls.PR_SET_CHILD_SUBREAPER, 0)
        assert not errors, errors


def cgroup_parents(name: str) -> list[Path]:
    """Return the existing directories ``name`` under the test process's cgroups."""
    own = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        own[controllers] = path
    found = []
    for hierarchy in Path("/sys/fs/cgroup").iterdir():
        for controllers, path in own.items():
            if controllers and hierarchy.name == controllers:
                candidate = hierarchy / path.lstrip("/") / name
                if candidate.is_dir():
                    found.append(candidate)
    return found


def read_until_closed(fds: list[int], timeout: float) -> list[bytes]:
    """Read every fd until all reach end of file; raise TimeoutError after ``timeout``."""
    output = {fd: bytearray() for fd in fds}
    open_fds = set(fds)
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        for fd in fds:
            selector.register(fd, selectors.EVENT_READ)
        while open_fds:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("the container's output did not end in time")
            for key, _ in selector.select(remaining):
                data = os.read(key.fd, 65536)
                if data:
                    output[key.fd] += data
                else:
                    selector.unregister(key.fd)
                    open_fds.discard(key.fd)
    return [bytes(output[fd]) for fd in fds]


def wait_for_exit(pid: int, timeout: float = 30.0) -> int:
    """Reap ``pid`` and return its exit status, 128 + signal for a signal."""
    deadline = time.monotonic() + timeout
    while True:
        reaped, status = os.waitpid(pid, os.WNOHANG)
        if reaped == pid:
            if os.WIFSIGNALED(status):
                return 128 + os.WTERMSIG(status)
            return os.WEXITSTATUS(status)
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise TimeoutError(f"process {pid} did not exit within {timeout} s")
        time.sleep(0.002)


@pytest.fixture
def runner(tmp_path: Path, busybox_rootfs: Path) -> Iterator[ContainerRunner]:
    containers = ContainerRunner(tmp_path, busybox_rootfs)
    try:
        yield containers
    finally:
        containers.close()
