"""Containers in a user namespace with linux.uidMappings and linux.gidMappings."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from ketch.errors import InvalidArgument, KetchError

pytest_plugins = ["support.rootfs"]

NAMESPACES = [{"type": kind} for kind in ("pid", "network", "ipc", "uts", "mount", "user")]
IDENTITY = [{"containerID": 0, "hostID": 0, "size": 65536}]
SHIFTED = [{"containerID": 0, "hostID": 100000, "size": 65536}]


def _linux(mapping: list[dict]) -> dict:
    return {"namespaces": NAMESPACES, "uidMappings": mapping, "gidMappings": mapping}


@pytest.fixture
def shifted_runner():
    """A runner whose rootfs the shifted root (host uid 100000) can reach: pytest's
    temporary directories are mode 0700, so this one is made apart, mode 0755."""
    from support.rootfs import ContainerRunner, make_busybox_rootfs

    directory = Path(tempfile.mkdtemp(prefix="ketch-userns-"))
    directory.chmod(0o755)
    runner = ContainerRunner(directory, make_busybox_rootfs(directory / "rootfs"))
    try:
        yield runner
    finally:
        try:
            runner.close()
        finally:
            shutil.rmtree(directory, ignore_errors=True)


def test_identity_mapping_visible(runner):
    result = runner.run(["cat", "/proc/1/uid_map", "/proc/1/gid_map"], linux=_linux(IDENTITY))
    assert result.stdout.split() == ["0", "0", "65536", "0", "0", "65536"]


def test_own_user_namespace(runner):
    result = runner.run(["readlink", "/proc/self/ns/user"], linux=_linux(IDENTITY))
    assert result.stdout.strip() != os.readlink("/proc/self/ns/user")


def test_shifted_mapping_root_inside(shifted_runner):
    script = "cat /proc/self/uid_map; id -u; id -g"
    result = shifted_runner.run(["sh", "-c", script], linux=_linux(SHIFTED))
    assert result.stdout.split() == ["0", "100000", "65536", "0", "0"]


def test_shifted_mapping_host_files_unmapped(shifted_runner):
    # The rootfs belongs to host uid 0, which has no id inside: it shows as the overflow
    # uid 65534.
    result = shifted_runner.run(["stat", "-c", "%u", "/bin/busybox"], linux=_linux(SHIFTED))
    assert result.stdout == "65534\n"


def test_shifted_process_runs_as_host_id(shifted_runner):
    container_id, pid = shifted_runner.create(["sleep", "30"], linux=_linux(SHIFTED))
    shifted_runner.runtime.start(container_id)
    status = Path(f"/proc/{pid}/status").read_text()
    assert "\nUid:\t100000\t100000\t100000\t100000\n" in status


def test_devices_bound_from_host(runner):
    result = runner.run(["sh", "-c", "echo x > /dev/null && echo ok"], linux=_linux(IDENTITY))
    assert result.stdout == "ok\n"


def test_exec_joins_user_namespace(shifted_runner):
    container_id, pid = shifted_runner.create(["sleep", "30"], linux=_linux(SHIFTED))
    shifted_runner.runtime.start(container_id)
    read_end, write_end = os.pipe()
    try:
        exec_pid = shifted_runner.runtime.exec(
            container_id,
            {"args": ["readlink", "/proc/self/ns/user"], "cwd": "/", "env": ["PATH=/bin"]},
            stdio=(0, write_end, write_end),
        )
    finally:
        os.close(write_end)
    with os.fdopen(read_end) as output:
        text = output.read()
    assert shifted_runner.wait(exec_pid) == 0
    assert text.strip() == os.readlink(f"/proc/{pid}/ns/user")


def test_mappings_without_user_namespace_rejected(runner):
    linux = {"uidMappings": IDENTITY, "gidMappings": IDENTITY}
    with pytest.raises(InvalidArgument, match="need a user namespace"):
        runner.create(["true"], linux=linux)


def test_user_namespace_without_mappings_rejected(runner):
    with pytest.raises(InvalidArgument, match="linux.uidMappings"):
        runner.create(["true"], linux={"namespaces": NAMESPACES})


def test_overlapping_mappings_leave_nothing(runner):
    overlapping = [
        {"containerID": 0, "hostID": 0, "size": 1000},
        {"containerID": 500, "hostID": 5000, "size": 1000},
    ]
    with pytest.raises(KetchError, match="linux.uidMappings"):
        runner.create(["true"], linux=_linux(overlapping))
    container_id = runner.ids[-1]
    assert not (runner.root / "state" / container_id).exists()
    assert all(not (parent / container_id).exists() for parent in runner.cgroup_parents())


def test_hooks_with_user_namespace(runner, tmp_path):
    record = tmp_path / "prestart.json"
    hook = {"path": "/bin/sh", "args": ["sh", "-c", f"cat > {record}"]}
    container_id, pid = runner.create(["true"], linux=_linux(IDENTITY), hooks={"prestart": [hook]})
    state = json.loads(record.read_text())
    assert state["pid"] == pid
    assert state["id"] == container_id


def test_seccomp_with_user_namespace(runner):
    profile = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}],
    }
    linux = {**_linux(IDENTITY), "seccomp": profile}
    result = runner.run(["mkdir", "/tmp/denied"], linux=linux)
    assert "Operation not permitted" in result.stderr
