"""A privileged container through the docker CLI: the host's devices under /dev, all
capabilities, no seccomp filter and no masked or read-only paths. The devices are
listed, never opened."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from ketch.engine.host_devices import host_devices
from support.daemon import KetchDaemon

pytestmark = pytest.mark.skipif(
    shutil.which("docker") is None, reason="the docker CLI is not installed"
)


def run(daemon: KetchDaemon, *args: str) -> str:
    result = daemon.docker("run", "--rm", "--network", "none", *args, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout


def block_device() -> dict[str, object]:
    """Return a block device of this host (a loop device on most machines)."""
    devices = [device for device in host_devices() if device["type"] == "b"]
    if not devices:
        pytest.skip("this host has no block device under /dev")
    return devices[0]


def test_privileged_sees_host_block_device(daemon: KetchDaemon) -> None:
    device = block_device()
    output = run(daemon, "--privileged", "busybox", "stat", "-c", "%F %t %T", str(device["path"]))
    kind, major, minor = output.rsplit(maxsplit=2)
    assert kind == "block special file"
    assert (int(major, 16), int(minor, 16)) == (device["major"], device["minor"])


def test_unprivileged_lacks_host_block_device(daemon: KetchDaemon) -> None:
    device = block_device()
    result = daemon.docker(
        "run", "--rm", "--network", "none", "busybox", "test", "-e", str(device["path"])
    )
    assert result.returncode == 1, result.stderr


def test_privileged_has_all_host_devices(daemon: KetchDaemon) -> None:
    script = "find /dev -type b -o -type c | grep -v -e ^/dev/pts/ -e ^/dev/console -e ^/dev/ptmx"
    listed = run(daemon, "--privileged", "busybox", "sh", "-c", script).split()
    expected = {str(device["path"]) for device in host_devices()}
    assert expected <= set(listed)


def test_privileged_has_all_capabilities(daemon: KetchDaemon) -> None:
    output = run(daemon, "--privileged", "busybox", "grep", "CapEff", "/proc/self/status")
    effective = int(output.split()[1], 16)
    # The container cannot hold more than this test's own bounding set.
    status = Path("/proc/self/status").read_text()
    bounding = int(status.split("CapBnd:")[1].split()[0], 16)
    assert effective == bounding


def test_privileged_has_no_seccomp(daemon: KetchDaemon) -> None:
    output = run(daemon, "--privileged", "busybox", "grep", "^Seccomp:", "/proc/self/status")
    assert output.split() == ["Seccomp:", "0"]


def test_privileged_timer_list_not_masked(daemon: KetchDaemon) -> None:
    if not Path("/proc/timer_list").exists():
        pytest.skip("this kernel has no /proc/timer_list")
    # By default /proc/timer_list is masked with a bind of /dev/null, a character device.
    output = run(daemon, "--privileged", "busybox", "stat", "-c", "%F", "/proc/timer_list")
    assert output.strip().startswith("regular")


def test_default_timer_list_masked(daemon: KetchDaemon) -> None:
    if not Path("/proc/timer_list").exists():
        pytest.skip("this kernel has no /proc/timer_list")
    output = run(daemon, "busybox", "stat", "-c", "%F", "/proc/timer_list")
    assert output.strip() == "character special file"


def test_privileged_proc_sys_writable(daemon: KetchDaemon) -> None:
    script = "grep ' /proc/sys ' /proc/mounts || echo none"
    output = run(daemon, "--privileged", "busybox", "sh", "-c", script)
    assert output.strip() == "none"


def test_privileged_host_uid_of_devices(daemon: KetchDaemon) -> None:
    device = block_device()
    output = run(daemon, "--privileged", "busybox", "stat", "-c", "%u %g %a", str(device["path"]))
    info = os.stat(str(device["path"]))
    assert output.split() == [str(info.st_uid), str(info.st_gid), f"{info.st_mode & 0o7777:o}"]
