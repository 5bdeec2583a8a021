"""HostConfig options (binds, tmpfs, capabilities, ulimits, sysctls, DNS, host network,
privileges, read-only rootfs) through the real docker CLI against a real ketchd.

One ketchd per module (see support.daemon). Every test names its containers so that a
failure points at one, and the fixture removes them all at the end.
"""

from __future__ import annotations

import os
import shutil

import pytest

from support.daemon import KetchDaemon, docker_ok

pytestmark = pytest.mark.skipif(
    shutil.which("docker") is None, reason="the docker CLI is not installed"
)


# HostConfig options


def test_bind_mount_read_only(daemon: KetchDaemon) -> None:
    source = daemon.root / "bind-source"
    source.mkdir(exist_ok=True)
    (source / "greeting").write_text("from the host\n")
    output = docker_ok(
        daemon, "run", "--rm", "-v", f"{source}:/data:ro", "busybox",
        "sh", "-c", "cat /data/greeting; touch /data/new 2>&1 || echo refused",
    )  # fmt: skip
    lines = output.splitlines()
    assert lines[0] == "from the host"
    assert lines[-1] == "refused"


def test_mount_tmpfs(daemon: KetchDaemon) -> None:
    output = docker_ok(
        daemon, "run", "--rm", "--tmpfs", "/scratch:size=1m", "busybox",
        "sh", "-c", "grep ' /scratch ' /proc/mounts",
    )  # fmt: skip
    assert output.split()[2] == "tmpfs"
    assert "size=1024k" in output


def test_cap_drop_and_add(daemon: KetchDaemon) -> None:
    script = "grep CapEff /proc/self/status"
    dropped = docker_ok(daemon, "run", "--rm", "--cap-drop", "ALL", "busybox", "sh", "-c", script)
    assert dropped.split()[1] == "0000000000000000"
    added = docker_ok(
        daemon, "run", "--rm", "--cap-drop", "ALL", "--cap-add", "NET_ADMIN", "busybox",
        "sh", "-c", script,
    )  # fmt: skip
    assert int(added.split()[1], 16) == 1 << 12


def test_ulimit_nofile(daemon: KetchDaemon) -> None:
    output = docker_ok(
        daemon,
        "run",
        "--rm",
        "--ulimit",
        "nofile=512:1024",
        "busybox",
        "sh",
        "-c",
        "ulimit -n; ulimit -Hn",
    )
    assert output.split() == ["512", "1024"]


def test_sysctl_and_shm_size(daemon: KetchDaemon) -> None:
    output = docker_ok(
        daemon, "run", "--rm", "--sysctl", "net.ipv4.ip_forward=1", "--shm-size", "8m",
        "busybox", "sh", "-c", "cat /proc/sys/net/ipv4/ip_forward; df -k /dev/shm | tail -1",
    )  # fmt: skip
    lines = output.splitlines()
    assert lines[0] == "1"
    assert lines[1].split()[1] == "8192"


def test_add_host_and_dns(daemon: KetchDaemon) -> None:
    output = docker_ok(
        daemon, "run", "--rm", "--add-host", "db.local:10.1.2.3", "--dns", "10.9.9.9",
        "busybox", "sh", "-c", "grep db.local /etc/hosts; cat /etc/resolv.conf",
    )  # fmt: skip
    lines = output.splitlines()
    assert lines[0].split() == ["10.1.2.3", "db.local"]
    assert lines[1] == "nameserver 10.9.9.9"


def test_network_host(daemon: KetchDaemon) -> None:
    output = docker_ok(
        daemon, "run", "--rm", "--network", "host", "busybox", "readlink", "/proc/self/ns/net"
    )
    # ketchd runs in the test's network namespace, which is the "host" one it can give.
    assert output.strip() == os.readlink(f"/proc/{daemon.process.pid}/ns/net")


def test_privileged_sees_all_caps(daemon: KetchDaemon) -> None:
    output = docker_ok(
        daemon, "run", "--rm", "--privileged", "busybox", "grep", "CapEff", "/proc/self/status"
    )
    with open("/proc/self/status") as status:
        bounding = next(line for line in status if line.startswith("CapBnd:")).split()[1]
    assert output.split()[1] == bounding


def test_no_new_privileges(daemon: KetchDaemon) -> None:
    output = docker_ok(
        daemon, "run", "--rm", "--security-opt", "no-new-privileges", "busybox",
        "grep", "NoNewPrivs", "/proc/self/status",
    )  # fmt: skip
    assert output.split()[1] == "1"


def test_read_only_rootfs(daemon: KetchDaemon) -> None:
    result = daemon.docker("run", "--rm", "--read-only", "busybox", "touch", "/file")
    assert result.returncode == 1
    assert "Read-only file system" in result.stderr
