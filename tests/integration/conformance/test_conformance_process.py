"""Conformance, seen from inside: what the container's process gets from config.json.

Each case runs a busybox probe as the container's process and reads the files the kernel
keeps for pid 1 in the container (``/proc/1/...``). A command that the probe execs may
hold other credentials than the process the runtime started, so it does not read its own.
"""

from __future__ import annotations

import os

from oci_probe import parse_sections, probe_script, status_fields

# Bit numbers from linux/capability.h.
CAPABILITY_BITS = {
    "CAP_CHOWN": 0,
    "CAP_KILL": 5,
    "CAP_SETUID": 7,
    "CAP_NET_BIND_SERVICE": 10,
    "CAP_SYS_ADMIN": 21,
    "CAP_AUDIT_WRITE": 29,
}


def capability_mask(*names: str) -> str:
    """Return the capability set as /proc/<pid>/status prints it (16 hex digits)."""
    mask = 0
    for name in names:
        mask |= 1 << CAPABILITY_BITS[name]
    return f"{mask:016x}"


def probe(oci, commands: dict[str, str], **changes) -> dict[str, str]:
    result = oci.run(probe_script(commands), **changes)
    assert result.returncode == 0, f"{oci.name}: {result.stderr}"
    return parse_sections(result.stdout)


def test_rootfs_is_root(oci):
    sections = probe(oci, {"marker": "cat /marker"})
    assert sections["marker"] == "conformance rootfs"


def test_rootfs_readonly(oci):
    config = oci.config(["sh", "-c", "touch /written"])
    config["root"]["readonly"] = True
    result = oci.run_config(config)
    assert result.returncode != 0
    assert not (oci.rootfs / "written").exists()


def test_hostname(oci):
    sections = probe(oci, {"hostname": "hostname"}, hostname="conformance-host")
    assert sections["hostname"] == "conformance-host"


def test_domainname(oci):
    oci.gap("runc 1.1 ignores domainname; runc 1.2 sets it", runtime="runc")
    sections = probe(oci, {"domain": "cat /proc/sys/kernel/domainname"}, domainname="example.test")
    assert sections["domain"] == "example.test"


def test_cwd(oci):
    sections = probe(oci, {"cwd": "pwd"}, process={"cwd": "/home/app"})
    assert sections["cwd"] == "/home/app"


def test_cwd_missing_is_created(oci):
    sections = probe(oci, {"cwd": "pwd"}, process={"cwd": "/tmp/conformance-new-cwd"})
    assert sections["cwd"] == "/tmp/conformance-new-cwd"


def test_args_exact(oci):
    args = ["sh", "-c", "cat /proc/1/cmdline; true", "zero", "two words", ""]
    result = oci.run(args)
    assert result.stdout.split("\0")[:-1] == args


def test_env_exact(oci):
    env = ["PATH=/bin", "HOME=/root", "ONE=1", "SPACES=a b  c", "EMPTY="]
    result = oci.run(["sh", "-c", "cat /proc/1/environ; true"], process={"env": env})
    assert sorted(result.stdout.split("\0")[:-1]) == sorted(env)


def test_env_home_from_passwd(oci):
    process = {"env": ["PATH=/bin"], "user": {"uid": 1000, "gid": 1000}}
    result = oci.run(["sh", "-c", "cat /proc/1/environ; true"], process=process)
    assert "HOME=/home/app" in result.stdout.split("\0")


def test_env_home_without_passwd_entry(oci):
    process = {"env": ["PATH=/bin"], "user": {"uid": 4242, "gid": 4242}}
    result = oci.run(["sh", "-c", "cat /proc/1/environ; true"], process=process)
    assert "HOME=/" in result.stdout.split("\0")


def test_user_ids(oci):
    user = {"uid": 1000, "gid": 1000, "additionalGids": [2000, 3000]}
    sections = probe(oci, {"status": "cat /proc/1/status"}, process={"user": user})
    fields = status_fields(sections["status"])
    assert fields["Uid"].split() == ["1000"] * 4
    assert fields["Gid"].split() == ["1000"] * 4
    assert sorted(fields["Groups"].split()) == ["2000", "3000"]


def test_root_has_no_groups(oci):
    sections = probe(oci, {"status": "cat /proc/1/status"})
    assert status_fields(sections["status"])["Groups"] == ""


def test_umask(oci):
    sections = probe(oci, {"umask": "umask"}, process={"user": {"uid": 0, "gid": 0, "umask": 63}})
    assert sections["umask"] == "0077"


def test_capabilities_default(oci):
    sections = probe(oci, {"status": "cat /proc/1/status"})
    fields = status_fields(sections["status"])
    default = capability_mask("CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE")
    assert fields["CapBnd"] == default
    assert fields["CapPrm"] == default
    assert fields["CapEff"] == default
    assert fields["CapInh"] == capability_mask()


def test_capabilities_five_sets(oci):
    # A user other than root, so that exec computes the sets from the ambient set and
    # not from the bounding set, and each of the five sets is visible on its own.
    capabilities = {
        "bounding": ["CAP_CHOWN", "CAP_KILL", "CAP_SETUID", "CAP_NET_BIND_SERVICE"],
        "permitted": ["CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
        "effective": ["CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
        "inheritable": ["CAP_KILL", "CAP_NET_BIND_SERVICE"],
        "ambient": ["CAP_KILL"],
    }
    process = {"user": {"uid": 1000, "gid": 1000}, "capabilities": capabilities}
    sections = probe(oci, {"status": "cat /proc/1/status"}, process=process)
    fields = status_fields(sections["status"])
    assert fields["CapBnd"] == capability_mask(*capabilities["bounding"])
    assert fields["CapInh"] == capability_mask(*capabilities["inheritable"])
    assert fields["CapAmb"] == capability_mask("CAP_KILL")
    assert fields["CapPrm"] == capability_mask("CAP_KILL")
    assert fields["CapEff"] == capability_mask("CAP_KILL")


def test_rlimits(oci):
    rlimits = [
        {"type": "RLIMIT_NOFILE", "soft": 512, "hard": 2048},
        {"type": "RLIMIT_CORE", "soft": 0, "hard": 4096},
        {"type": "RLIMIT_NPROC", "soft": 300, "hard": 400},
    ]
    sections = probe(oci, {"limits": "cat /proc/1/limits"}, process={"rlimits": rlimits})
    limits = {line[:26].strip(): line[26:].split()[:2] for line in sections["limits"].splitlines()}
    assert limits["Max open files"] == ["512", "2048"]
    assert limits["Max core file size"] == ["0", "4096"]
    assert limits["Max processes"] == ["300", "400"]


def test_rlimit_above_hard_limit_fails(oci):
    hard = os.sysconf("SC_OPEN_MAX")
    with open("/proc/self/limits") as limits:
        for line in limits:
            if line.startswith("Max open files"):
                hard = int(line[26:].split()[1])
    rlimits = [{"type": "RLIMIT_NOFILE", "soft": hard + 1, "hard": hard + 1}]
    container_id, result = oci.create(["true"], process={"rlimits": rlimits})
    assert result.returncode == 1
    assert oci("state", container_id).returncode != 0


def test_no_new_privileges_on(oci):
    sections = probe(oci, {"status": "cat /proc/1/status"}, process={"noNewPrivileges": True})
    assert status_fields(sections["status"])["NoNewPrivs"] == "1"


def test_no_new_privileges_off(oci):
    sections = probe(oci, {"status": "cat /proc/1/status"}, process={"noNewPrivileges": False})
    assert status_fields(sections["status"])["NoNewPrivs"] == "0"


def test_oom_score_adj(oci):
    sections = probe(oci, {"oom": "cat /proc/1/oom_score_adj"}, process={"oomScoreAdj": 345})
    assert sections["oom"] == "345"


def test_stdio_passed_through(oci):
    result = oci.run(["sh", "-c", "echo to-stdout; echo to-stderr >&2; exit 3"])
    assert result.returncode == 3
    assert result.stdout == "to-stdout\n"
    assert result.stderr == "to-stderr\n"


def test_only_stdio_fds_open(oci):
    sections = probe(oci, {"fds": "ls /proc/1/fd"})
    assert sorted(sections["fds"].split()) == ["0", "1", "2"]
