"""Conformance, seen from inside: mounts, devices, masked paths, sysctls, namespaces and
cgroup limits, as the container's pid 1 finds them."""

from __future__ import annotations

import os
from pathlib import Path

from oci_probe import parse_mountinfo, parse_sections, probe_script

from support.netns import network_namespace


def probe(oci, commands: dict[str, str], **changes) -> dict[str, str]:
    result = oci.run(probe_script(commands), **changes)
    assert result.returncode == 0, f"{oci.name}: {result.stderr}"
    return parse_sections(result.stdout)


def mounts_of(oci, **changes):
    return parse_mountinfo(probe(oci, {"mounts": "cat /proc/1/mountinfo"}, **changes)["mounts"])


def test_default_mount_types(oci):
    mounts = mounts_of(oci)
    types = {point: mounts[point].fstype for point in mounts if point != "/"}
    assert types["/proc"] == "proc"
    assert types["/dev"] == "tmpfs"
    assert types["/dev/pts"] == "devpts"
    assert types["/dev/shm"] == "tmpfs"
    assert types["/dev/mqueue"] == "mqueue"
    assert types["/sys"] == "sysfs"


def test_default_mount_options(oci):
    mounts = mounts_of(oci)
    assert "nosuid" in mounts["/dev"].options
    assert {"nosuid", "noexec"} <= mounts["/dev/pts"].options
    assert {"nosuid", "noexec", "nodev"} <= mounts["/dev/shm"].options
    assert {"nosuid", "noexec", "nodev"} <= mounts["/dev/mqueue"].options
    assert {"ro", "nosuid", "noexec", "nodev"} <= mounts["/sys"].options


def test_default_mount_data(oci):
    mounts = mounts_of(oci)
    assert {"mode=755", "size=65536k"} <= mounts["/dev"].super_options
    assert {"gid=5", "mode=620", "ptmxmode=666"} <= mounts["/dev/pts"].super_options
    assert "size=65536k" in mounts["/dev/shm"].super_options


def test_cgroup_mount_readonly(oci):
    mounts = mounts_of(oci)
    for controller in ("cpu", "memory", "pids", "devices", "freezer"):
        mount = mounts[f"/sys/fs/cgroup/{controller}"]
        assert mount.fstype == "cgroup", controller
        assert "ro" in mount.options, controller


def test_bind_mount_readonly(oci, tmp_path):
    source = tmp_path / "shared"
    source.mkdir()
    (source / "file").write_text("from the host\n")
    mount = {
        "destination": "/mnt/shared",
        "type": "bind",
        "source": str(source),
        "options": ["rbind", "ro", "nosuid"],
    }
    config = oci.config(
        ["sh", "-c", "cat /mnt/shared/file; touch /mnt/shared/new; cat /proc/1/mountinfo"]
    )
    config["mounts"].append(mount)
    result = oci.run_config(config)
    assert result.stdout.startswith("from the host\n")
    assert not (source / "new").exists()
    mounts = parse_mountinfo(result.stdout.split("\n", 1)[1])
    assert {"ro", "nosuid"} <= mounts["/mnt/shared"].options


def test_bind_mount_file(oci, tmp_path):
    source = tmp_path / "single-file"
    source.write_text("one file\n")
    config = oci.config(["cat", "/etc/conformance/single-file"])
    config["mounts"].append(
        {
            "destination": "/etc/conformance/single-file",
            "type": "bind",
            "source": str(source),
            "options": ["bind", "ro"],
        }
    )
    result = oci.run_config(config)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "one file\n"


def test_tmpfs_mount_options(oci):
    config = oci.config(probe_script({"mounts": "cat /proc/1/mountinfo"}))
    config["mounts"].append(
        {
            "destination": "/scratch",
            "type": "tmpfs",
            "source": "tmpfs",
            "options": ["nodev", "noexec", "size=1m", "mode=700"],
        }
    )
    result = oci.run_config(config)
    mount = parse_mountinfo(parse_sections(result.stdout)["mounts"])["/scratch"]
    assert mount.fstype == "tmpfs"
    assert {"nodev", "noexec"} <= mount.options
    assert {"size=1024k", "mode=700"} <= mount.super_options


def test_rootfs_propagation_shared(oci, tmp_path):
    source = tmp_path / "propagated"
    source.mkdir()
    (source / "file").write_text("bound\n")
    config = oci.config(["cat", "/mnt/propagated/file"])
    config["linux"]["rootfsPropagation"] = "shared"
    config["mounts"].append(
        {
            "destination": "/mnt/propagated",
            "type": "bind",
            "source": str(source),
            "options": ["rbind"],
        }
    )
    result = oci.run_config(config)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "bound\n"


def test_default_devices(oci):
    sections = probe(oci, {"devices": "stat -c '%n %F %t %T %a' /dev/* | grep special"})
    devices = {line.split()[0]: line.split()[-3:] for line in sections["devices"].splitlines()}
    assert devices["/dev/null"] == ["1", "3", "666"]
    assert devices["/dev/zero"] == ["1", "5", "666"]
    assert devices["/dev/full"] == ["1", "7", "666"]
    assert devices["/dev/random"] == ["1", "8", "666"]
    assert devices["/dev/urandom"] == ["1", "9", "666"]
    assert devices["/dev/tty"] == ["5", "0", "666"]


def test_default_dev_links(oci):
    sections = probe(
        oci,
        {name: f"readlink /dev/{name}" for name in ("ptmx", "fd", "stdin", "stdout", "stderr")},
    )
    assert sections["ptmx"] == "pts/ptmx"
    assert sections["fd"] == "/proc/self/fd"
    assert sections["stdin"] == "/proc/self/fd/0"
    assert sections["stdout"] == "/proc/self/fd/1"
    assert sections["stderr"] == "/proc/self/fd/2"


def test_configured_device(oci):
    device = {
        "path": "/dev/conformance-kmsg",
        "type": "c",
        "major": 1,
        "minor": 11,
        "fileMode": 0o640,
        "uid": 0,
        "gid": 1000,
    }
    sections = probe(
        oci,
        {"device": "stat -c '%F %t %T %a %u %g' /dev/conformance-kmsg"},
        linux={"devices": [device]},
    )
    assert sections["device"] == "character special file 1 b 640 0 1000"


def test_device_cgroup_denies_unlisted(oci):
    # The default device rules deny every device but the default set, so a node made in
    # the container for the host's disk cannot be opened.
    process = {"capabilities": {name: ["CAP_MKNOD"] for name in ("bounding", "effective")}}
    process["capabilities"]["permitted"] = ["CAP_MKNOD"]
    script = "mknod /tmp/disk b 7 0 && (head -c1 /tmp/disk >/dev/null && echo opened); true"
    result = oci.run(["sh", "-c", script], process=process)
    assert "opened" not in result.stdout


def test_masked_paths(oci):
    sections = probe(
        oci,
        {
            "keys": "wc -c < /proc/keys",
            "timer_list": "wc -c < /proc/timer_list",
            "acpi": "ls -A /proc/acpi | wc -l",
            "firmware": "ls -A /sys/firmware | wc -l",
        },
    )
    assert sections["keys"].strip() == "0"
    assert sections["timer_list"].strip() == "0"
    assert sections["acpi"].strip() == "0"
    assert sections["firmware"].strip() == "0"


def test_masked_path_configured(oci):
    sections = probe(
        oci,
        {"version": "wc -c < /proc/version"},
        linux={"maskedPaths": ["/proc/version"]},
    )
    assert sections["version"].strip() == "0"


def test_readonly_paths(oci):
    mounts = mounts_of(oci)
    for path in ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys"):
        assert "ro" in mounts[path].options, path


def test_readonly_path_rejects_write(oci):
    sections = probe(oci, {"write": "echo 1 > /proc/sys/kernel/ns_last_pid && echo written; true"})
    assert "written" not in sections["write"]


def test_sysctl(oci):
    sysctl = {"kernel.msgmax": "4096", "net.ipv4.ip_forward": "1"}
    sections = probe(
        oci,
        {
            "msgmax": "cat /proc/sys/kernel/msgmax",
            "forward": "cat /proc/sys/net/ipv4/ip_forward",
        },
        linux={"sysctl": sysctl},
    )
    assert sections["msgmax"] == "4096"
    assert sections["forward"] == "1"


def test_sysctl_stays_in_namespace(oci):
    before = Path("/proc/sys/kernel/msgmax").read_text()
    oci.run(["true"], linux={"sysctl": {"kernel.msgmax": "4097"}})
    assert Path("/proc/sys/kernel/msgmax").read_text() == before


def host_namespaces() -> dict[str, str]:
    return {name: os.readlink(f"/proc/self/ns/{name}") for name in os.listdir("/proc/self/ns")}


def container_namespaces(oci, **changes) -> dict[str, str]:
    names = ("pid", "net", "ipc", "uts", "mnt", "cgroup", "user")
    sections = probe(oci, {name: f"readlink /proc/1/ns/{name}" for name in names}, **changes)
    return {name: sections[name] for name in names}


def test_namespaces_new(oci):
    host = host_namespaces()
    inside = container_namespaces(oci)
    for name in ("pid", "net", "ipc", "uts", "mnt"):
        assert inside[name] != host[name], name
    assert inside["user"] == host["user"]


def test_cgroup_namespace(oci):
    namespaces = [{"type": kind} for kind in ("pid", "network", "ipc", "uts", "mount", "cgroup")]
    sections = probe(
        oci,
        {"ns": "readlink /proc/1/ns/cgroup", "cgroup": "cat /proc/1/cgroup"},
        linux={"namespaces": namespaces},
    )
    assert sections["ns"] != host_namespaces()["cgroup"]
    memory = [line for line in sections["cgroup"].splitlines() if ":memory:" in line]
    assert memory == [memory[0].split(":", 2)[0] + ":memory:/"]


def test_network_namespace_joined(oci):
    with network_namespace("ketch-conformance") as namespace:
        namespaces = [{"type": kind} for kind in ("pid", "ipc", "uts", "mount")]
        namespaces.append({"type": "network", "path": namespace.path})
        inside = container_namespaces(oci, linux={"namespaces": namespaces})
        expected = f"net:[{os.stat(namespace.path).st_ino}]"
    assert inside["net"] == expected


def test_user_namespace_mappings(oci):
    namespaces = [{"type": kind} for kind in ("pid", "network", "ipc", "uts", "mount", "user")]
    # Identity-mapped, so that the new root can still reach the rootfs under /tmp.
    mapping = [{"containerID": 0, "hostID": 0, "size": 65536}]
    sections = probe(
        oci,
        {"uid": "cat /proc/1/uid_map", "gid": "cat /proc/1/gid_map"},
        linux={"namespaces": namespaces, "uidMappings": mapping, "gidMappings": mapping},
    )
    assert sections["uid"].split() == ["0", "0", "65536"]
    assert sections["gid"].split() == ["0", "0", "65536"]


def test_cgroup_limits(oci):
    resources = {
        "memory": {"limit": 64 * 1024 * 1024, "reservation": 32 * 1024 * 1024},
        "cpu": {"shares": 512, "quota": 50000, "period": 100000, "cpus": "0"},
        "pids": {"limit": 42},
    }
    files = {
        "memory": "memory/memory.limit_in_bytes",
        "soft": "memory/memory.soft_limit_in_bytes",
        "shares": "cpu/cpu.shares",
        "quota": "cpu/cpu.cfs_quota_us",
        "period": "cpu/cpu.cfs_period_us",
        "cpus": "cpuset/cpuset.cpus",
        "pids": "pids/pids.max",
    }
    sections = probe(
        oci,
        {name: f"cat /sys/fs/cgroup/{path}" for name, path in files.items()},
        linux={"resources": resources},
    )
    assert sections["memory"] == str(64 * 1024 * 1024)
    assert sections["soft"] == str(32 * 1024 * 1024)
    assert sections["shares"] == "512"
    assert sections["quota"] == "50000"
    assert sections["period"] == "100000"
    assert sections["cpus"] == "0"
    assert sections["pids"] == "42"


def test_zero_limits_unset(oci):
    resources = {
        "memory": {"limit": 0, "reservation": 0, "swap": 0},
        "cpu": {"shares": 0, "quota": 0, "period": 0},
        "pids": {"limit": 0},
    }
    sections = probe(
        oci,
        {"shares": "cat /sys/fs/cgroup/cpu/cpu.shares", "pids": "cat /sys/fs/cgroup/pids/pids.max"},
        linux={"resources": resources},
    )
    assert sections["shares"] == "1024"
    assert sections["pids"] == "max"


def test_memory_swap_limit(oci):
    memory = {"limit": 64 * 1024 * 1024, "swap": 96 * 1024 * 1024}
    sections = probe(
        oci,
        {"swap": "cat /sys/fs/cgroup/memory/memory.memsw.limit_in_bytes"},
        linux={"resources": {"memory": memory}},
    )
    assert sections["swap"] == str(96 * 1024 * 1024)


def test_pids_limit_enforced(oci):
    script = "for i in 1 2 3 4 5 6 7 8; do sleep 5 & done; wait; true"
    result = oci.run(["sh", "-c", script], linux={"resources": {"pids": {"limit": 4}}})
    assert "can't fork" in result.stderr


def test_process_in_container_cgroup(oci):
    sections = probe(oci, {"cgroup": "cat /proc/1/cgroup"})
    lines = [line for line in sections["cgroup"].splitlines() if ":pids:" in line]
    assert lines[0].endswith(f"/{oci.cgroup_parent}/{oci.ids[-1]}")
