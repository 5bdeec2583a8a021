"""Attacks from inside a container (or through its config) and the checks that stop them."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from ketch.errors import KetchError

EVIL_SCRIPT = """#!/proc/self/exe
import os
open("/pwned", "w").write(os.readlink("/proc/self/exe"))
"""

pytest_plugins = ["support.rootfs"]


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_proc_self_exe_script_gets_sealed_helper(runner):
    # CVE-2019-5736: a script whose interpreter is /proc/self/exe, run as the container's
    # process, is interpreted by whatever binary execs it. Were that the init's Python,
    # the script (valid Python too) would run as the host's interpreter binary.
    host_python = Path(os.path.realpath(sys.executable))
    before = (_digest(host_python), host_python.stat().st_mtime_ns)
    evil = runner.rootfs / "evil"
    evil.write_text(EVIL_SCRIPT)
    evil.chmod(0o755)

    result = runner.run(["/evil"])

    assert result.exit_code == 126
    assert "/memfd:ketch-runc-exec" in result.stderr
    assert "was not started by the runtime" in result.stderr
    assert not (runner.rootfs / "pwned").exists()
    assert (_digest(host_python), host_python.stat().st_mtime_ns) == before


def test_proc_self_exe_direct_gets_sealed_helper(runner):
    result = runner.run(["/proc/self/exe", "-c", "print('python')"])
    assert result.exit_code == 126
    assert "/memfd:ketch-runc-exec" in result.stderr
    assert "python" not in result.stdout


def test_parked_init_not_dumpable(runner):
    # While parked, the init runs the host's Python; without CAP_SYS_PTRACE no process,
    # even one of the init's own uid, may open its /proc/<pid>/exe.
    _, pid = runner.create(["true"], process={"user": {"uid": 1000, "gid": 1000}})
    status = Path(f"/proc/{pid}/status").read_text()
    assert "\nUid:\t1000\t1000\t1000\t1000\n" in status
    result = _as_uid_1000(["readlink", "-v", f"/proc/{pid}/exe"])
    assert result.returncode != 0
    assert "Permission denied" in result.stderr


def test_same_uid_dumpable_readable(tmp_path):
    # The control for the test above: an ordinary process of uid 1000 is readable.
    sleeper = subprocess.Popen(
        ["setpriv", "--reuid=1000", "--regid=1000", "--clear-groups", "sleep", "30"]
    )
    try:
        deadline = time.monotonic() + 10
        while Path(f"/proc/{sleeper.pid}/comm").read_text() != "sleep\n":
            assert time.monotonic() < deadline, "setpriv did not exec sleep"
            time.sleep(0.01)
        result = _as_uid_1000(["readlink", "-v", f"/proc/{sleeper.pid}/exe"])
        assert result.returncode == 0
    finally:
        sleeper.kill()
        sleeper.wait()


def test_no_leaked_fds(runner, tmp_path):
    # Descriptors the caller holds, inheritable or not, must not reach the container.
    host_dir = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    os.set_inheritable(host_dir, True)
    read_end, write_end = os.pipe()
    try:
        result = runner.run(["ls", "/proc/self/fd"])
    finally:
        for fd in (host_dir, read_end, write_end):
            os.close(fd)
    # 0, 1 and 2, and 3 for the directory ls itself reads.
    assert result.stdout.split() == ["0", "1", "2", "3"]


def test_cwd_through_leaked_fd_rejected(runner, tmp_path):
    # CVE-2024-21626: process.cwd naming a descriptor of the runtime that points to a
    # host directory started the process outside its rootfs.
    host_dir = tmp_path / "host"
    host_dir.mkdir()
    fd = os.open(host_dir, os.O_RDONLY | os.O_DIRECTORY)
    os.set_inheritable(fd, True)
    container_id = runner.new_id()
    try:
        bundle = runner.bundle(
            container_id, ["touch", "escaped"], process={"cwd": f"/proc/self/fd/{fd}"}
        )
        with pytest.raises(KetchError):
            runner.runtime.create(container_id, bundle)
    finally:
        os.close(fd)
    assert list(host_dir.iterdir()) == []
    assert not (runner.root / "state" / container_id).exists()


@pytest.mark.parametrize("link_kind", ["absolute", "relative"])
def test_mount_destination_symlink_contained(runner, tmp_path, link_kind):
    # The link names a host directory; inside the root it names rootfs/<that path>.
    host_target = tmp_path / "host-target"
    host_target.mkdir()
    inside = runner.rootfs / str(host_target).lstrip("/")
    inside.mkdir(parents=True)
    _plant_link(runner.rootfs / "escape", host_target, link_kind)
    mounts = [{"destination": "/escape/sub", "type": "tmpfs", "source": "tmpfs"}]
    result = runner.run(["true"], mounts=_default_mounts() + mounts)
    assert result.exit_code == 0
    assert list(host_target.iterdir()) == []
    assert (inside / "sub").is_dir()


@pytest.mark.parametrize("link_kind", ["absolute", "relative"])
def test_mount_destination_symlink_out_created_inside(runner, tmp_path, link_kind):
    # The link's target exists only on the host. Followed as the host sees it, the mount
    # would create host directories; inside the root its target is made in the rootfs.
    host_target = tmp_path / "host-target"
    host_target.mkdir()
    _plant_link(runner.rootfs / "escape", host_target, link_kind)
    mounts = [{"destination": "/escape/sub", "type": "tmpfs", "source": "tmpfs"}]
    result = runner.run(["true"], mounts=_default_mounts() + mounts)
    assert result.exit_code == 0
    assert list(host_target.iterdir()) == []
    assert (runner.rootfs / str(host_target).lstrip("/") / "sub").is_dir()


def test_bind_file_destination_symlink_out_contained(runner, tmp_path):
    host_file = tmp_path / "host-passwd"
    host_file.write_text("host secret\n")
    (runner.rootfs / "etc/shadow-link").symlink_to(host_file)
    source = tmp_path / "source"
    source.write_text("from bind\n")
    mounts = [
        {
            "destination": "/etc/shadow-link",
            "type": "bind",
            "source": str(source),
            "options": ["bind"],
        }
    ]
    result = runner.run(["cat", "/etc/shadow-link"], mounts=_default_mounts() + mounts)
    assert result.stdout == "from bind\n"
    assert host_file.read_text() == "host secret\n"
    assert (runner.rootfs / str(host_file).lstrip("/")).is_file()


def _plant_link(link: Path, host_target: Path, kind: str) -> None:
    if kind == "absolute":
        link.symlink_to(host_target)
    else:
        link.symlink_to("../" * 20 + str(host_target).lstrip("/"))


def test_cgroup_files_read_only_inside(runner):
    result = runner.run(
        ["sh", "-c", "echo 1 > /sys/fs/cgroup/pids/pids.max 2>/dev/null || echo ro"]
    )
    assert result.stdout == "ro\n"


def _as_uid_1000(command: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["setpriv", "--reuid=1000", "--regid=1000", "--clear-groups", *command],
        capture_output=True,
        text=True,
        timeout=10,
    )


def _default_mounts() -> list[dict]:
    from ketch.runtime.spec import default_spec

    return default_spec()["mounts"]


def test_mount_destination_swapped_mid_setup(runner, tmp_path):
    # CVE-2021-30465 kind: while the runtime sets up the mounts, a process that controls
    # the rootfs swaps a mount destination between a directory and a symlink to a host
    # directory. A runtime that resolves the path by name and then mounts by name can
    # be redirected to the host directory between the two steps. A createContainer hook
    # runs in the container's mount namespace before pivot_root, where host paths are
    # still visible, and records its mount table after the mounts were made.
    host_dir = tmp_path / "host"
    host_dir.mkdir()
    (host_dir / "marker").write_text("host\n")
    mnt = runner.rootfs / "mnt"
    mnt.mkdir(exist_ok=True)
    target = mnt / "target"
    target.mkdir()
    link = mnt / "link"
    link.symlink_to(host_dir)
    records = tmp_path / "mountinfo"
    records.mkdir()
    mounts = _default_mounts() + [
        {"destination": "/mnt/target", "type": "tmpfs", "source": "tmpfs"}
    ]

    stop = threading.Event()
    swapper = threading.Thread(target=_swap_until, args=(stop, target, link, mnt / "aside"))
    swapper.start()
    outcomes = []
    try:
        for attempt in range(20):
            hook = {
                "path": "/bin/sh",
                "args": ["sh", "-c", f"cat /proc/self/mountinfo > {records}/{attempt}"],
            }
            try:
                result = runner.run(["true"], mounts=mounts, hooks={"createContainer": [hook]})
                outcomes.append(result.exit_code)
            except KetchError as error:
                outcomes.append(str(error))
    finally:
        stop.set()
        swapper.join()

    mount_points = []
    for record in records.iterdir():
        mount_points += [line.split()[4] for line in record.read_text().splitlines()]
    assert mount_points, outcomes
    escaped = [point for point in mount_points if point.startswith(str(host_dir))]
    assert escaped == []
    assert sorted(path.name for path in host_dir.iterdir()) == ["marker"]


def _swap_until(stop: threading.Event, target: Path, link: Path, aside: Path) -> None:
    """Swap ``target`` (a directory) with ``link`` (a symlink) until ``stop`` is set."""
    while not stop.is_set():
        try:
            os.rename(target, aside)
            os.rename(link, target)
            time.sleep(0.0005)
            os.rename(target, link)
            os.rename(aside, target)
            time.sleep(0.0005)
        except OSError:
            # The runtime may create the destination while it is missing; the next
            # round swaps whatever is there.
            continue
