"""What the container's process finds: namespaces, mounts, user, limits, cgroups."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ketch.errors import InvalidArgument

pytest_plugins = ["support.rootfs"]


def test_process_is_pid_1(runner):
    assert runner.run(["sh", "-c", "echo $$"]).stdout == "1\n"


def test_only_own_processes_visible(runner):
    result = runner.run(["sh", "-c", "ls /proc | grep -E '^[0-9]+$' | wc -l"])
    # sh, ls, grep and wc, all in the container's pid namespace.
    assert int(result.stdout) <= 4


def test_hostname_set(runner):
    assert runner.run(["hostname"], hostname="box").stdout == "box\n"


def test_proc_mounted(runner):
    result = runner.run(["sh", "-c", "grep ' /proc ' /proc/mounts"])
    assert result.stdout.startswith("proc /proc proc ")


def test_sysfs_read_only(runner):
    result = runner.run(["sh", "-c", "grep ' /sys ' /proc/mounts"])
    assert " ro," in result.stdout


def test_network_only_loopback(runner):
    result = runner.run(["sh", "-c", "ls /sys/class/net"])
    assert result.stdout.split() == ["lo"]


def test_loopback_up(runner):
    result = runner.run(["ip", "-o", "link", "show", "lo"])
    assert ",UP," in result.stdout


def test_user_uid_gid(runner):
    result = runner.run(
        ["id"], process={"user": {"uid": 1000, "gid": 1000, "additionalGids": [2000]}}
    )
    # As with runc, the supplementary groups are additionalGids alone.
    assert result.stdout == "uid=1000(app) gid=1000(app) groups=2000(extra)\n"


def test_env_passed(runner):
    env = ["PATH=/bin", "GREETING=hi there"]
    result = runner.run(["sh", "-c", 'echo "$GREETING"'], process={"env": env})
    assert result.stdout == "hi there\n"


def test_env_exact(runner):
    # HOME is added from root's /etc/passwd entry, as runc adds it.
    result = runner.run(["env"], process={"env": ["PATH=/bin", "A=1"]})
    assert sorted(result.stdout.split()) == ["A=1", "HOME=/root", "PATH=/bin"]


def test_env_home_from_passwd(runner):
    process = {"env": ["PATH=/bin"], "user": {"uid": 1000, "gid": 1000}}
    assert runner.run(["sh", "-c", "echo $HOME"], process=process).stdout == "/home/app\n"


def test_env_home_kept(runner):
    process = {"env": ["PATH=/bin", "HOME=/elsewhere"]}
    assert runner.run(["sh", "-c", "echo $HOME"], process=process).stdout == "/elsewhere\n"


def test_env_home_without_entry(runner):
    process = {"env": ["PATH=/bin"], "user": {"uid": 4242, "gid": 4242}}
    assert runner.run(["sh", "-c", "echo $HOME"], process=process).stdout == "/\n"


def test_cwd_used(runner):
    assert runner.run(["pwd"], process={"cwd": "/tmp"}).stdout == "/tmp\n"


def test_cwd_created_when_missing(runner):
    assert runner.run(["pwd"], process={"cwd": "/work/dir"}).stdout == "/work/dir\n"


def test_argv0_kept(runner):
    # busybox picks the applet from argv[0], so the given name must reach the program.
    result = runner.run(["/bin/busybox", "echo", "x"])
    assert result.stdout == "x\n"


def test_default_devices(runner):
    result = runner.run(["sh", "-c", "ls /dev | sort | tr '\\n' ' '"])
    for name in ("null", "zero", "full", "random", "urandom", "tty", "ptmx", "fd", "stdin"):
        assert name in result.stdout.split()


def test_dev_null_writable_by_user(runner):
    result = runner.run(
        ["sh", "-c", "echo x > /dev/null && echo ok"], process={"user": {"uid": 1000, "gid": 1000}}
    )
    assert result.stdout == "ok\n"


def test_devices_cgroup_denies_disk(runner):
    # CAP_MKNOD lets root create any node; the devices cgroup must still deny opening it.
    script = "mknod /tmp/disk b 7 0 && (head -c1 /tmp/disk >/dev/null 2>&1 || echo denied)"
    process = {
        "capabilities": {name: ["CAP_MKNOD"] for name in ("bounding", "effective", "permitted")}
    }
    result = runner.run(["sh", "-c", script], process=process)
    assert result.stdout == "denied\n"


def test_memory_limit_written(runner):
    limit = 64 * 1024 * 1024
    container_id, _ = runner.create(["true"], linux={"resources": {"memory": {"limit": limit}}})
    memory = [d for d in runner.cgroup_directories(container_id) if "/memory/" in str(d)][0]
    assert (memory / "memory.limit_in_bytes").read_text() == f"{limit}\n"


def test_memory_limit_visible_inside(runner):
    limit = 32 * 1024 * 1024
    result = runner.run(
        ["cat", "/sys/fs/cgroup/memory/memory.limit_in_bytes"],
        linux={"resources": {"memory": {"limit": limit}}},
    )
    assert result.stdout == f"{limit}\n"


def test_pids_limit_enforced(runner):
    script = "for i in 1 2 3 4 5 6; do sleep 5 & done"
    result = runner.run(["sh", "-c", script], linux={"resources": {"pids": {"limit": 4}}})
    assert "can't fork" in result.stderr


def test_pids_limit_written(runner):
    container_id, _ = runner.create(["true"], linux={"resources": {"pids": {"limit": 7}}})
    pids = [d for d in runner.cgroup_directories(container_id) if "/pids/" in str(d)][0]
    assert (pids / "pids.max").read_text() == "7\n"


def test_process_in_container_cgroup(runner):
    result = runner.run(["cat", "/proc/self/cgroup"])
    line = [entry for entry in result.stdout.splitlines() if ":pids:" in entry][0]
    assert line.endswith(f"/{runner.cgroup_parent}/c1")


def test_readonly_root(runner):
    result = runner.run(
        ["sh", "-c", "touch /newfile 2>&1 || echo refused"],
        root={"path": str(runner.rootfs), "readonly": True},
    )
    assert "refused" in result.stdout


def test_masked_path_empty(runner):
    assert runner.run(["cat", "/proc/kcore"]).stdout == ""


def test_readonly_path(runner):
    result = runner.run(["sh", "-c", "echo 1 > /proc/sys/kernel/sysrq 2>/dev/null || echo ro"])
    assert result.stdout == "ro\n"


def test_rlimit_applied(runner):
    rlimits = [{"type": "RLIMIT_NOFILE", "soft": 321, "hard": 654}]
    result = runner.run(["sh", "-c", "ulimit -n; ulimit -Hn"], process={"rlimits": rlimits})
    assert result.stdout.split() == ["321", "654"]


def test_capabilities_limited(runner):
    result = runner.run(["sh", "-c", "grep CapEff /proc/self/status"])
    # runc's default set: CAP_KILL (5), CAP_NET_BIND_SERVICE (10), CAP_AUDIT_WRITE (29).
    assert result.stdout.split()[1] == f"{(1 << 5) | (1 << 10) | (1 << 29):016x}"


def test_no_new_privileges_set(runner):
    result = runner.run(["sh", "-c", "grep NoNewPrivs /proc/self/status"])
    assert result.stdout.split() == ["NoNewPrivs:", "1"]


def test_bind_mount(runner, tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "note").write_text("from host")
    mounts = [
        {"destination": "/data", "type": "bind", "source": str(shared), "options": ["rbind", "ro"]}
    ]
    result = runner.run(
        ["sh", "-c", "cat /data/note; touch /data/x 2>/dev/null || echo ro"],
        mounts=_default_mounts() + mounts,
    )
    assert result.stdout == "from hostro\n"


def test_umask_default(runner):
    assert runner.run(["sh", "-c", "umask"]).stdout == "0022\n"


def test_sysctl_namespaced(runner):
    result = runner.run(
        ["cat", "/proc/sys/net/ipv4/ip_forward"], linux={"sysctl": {"net.ipv4.ip_forward": "1"}}
    )
    assert result.stdout == "1\n"


def test_sysctl_global_rejected(runner):
    container_id = runner.new_id()
    bundle = runner.bundle(container_id, ["true"], linux={"sysctl": {"vm.swappiness": "10"}})
    with pytest.raises(InvalidArgument, match="not namespaced"):
        runner.runtime.create(container_id, bundle)


def test_join_network_namespace(runner):
    first_id, first_pid = runner.create(["sleep", "30"])
    runner.runtime.start(first_id)
    path = f"/proc/{first_pid}/ns/net"
    namespaces = [
        {"type": "pid"},
        {"type": "network", "path": path},
        {"type": "ipc"},
        {"type": "uts"},
        {"type": "mount"},
    ]
    result = runner.run(["readlink", "/proc/self/ns/net"], linux={"namespaces": namespaces})
    assert result.stdout.strip() == os.readlink(path)


def test_host_untouched_by_mounts(runner):
    # The container's mounts happen in its own mount namespace. Only mounts under the
    # test's directory count, because other processes on the host mount things too.
    result = runner.run(["true"])
    assert result.exit_code == 0
    assert str(runner.root) not in Path("/proc/self/mountinfo").read_text()


def _default_mounts() -> list[dict]:
    from ketch.runtime.spec import default_spec

    return default_spec()["mounts"]


def test_memory_limit_enforced(runner):
    limit = 16 * 1024 * 1024
    memory = {"limit": limit, "swap": limit}
    result = runner.run(
        ["dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1"],
        linux={"resources": {"memory": memory}},
    )
    # The kernel's OOM killer ends dd, which allocates a 64 MiB buffer.
    assert result.exit_code == 137
