"""Seccomp profiles and lifecycle hooks in real containers."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from ketch.errors import SystemFailure

pytest_plugins = ["support.rootfs"]

DENY_MKDIR = {
    "defaultAction": "SCMP_ACT_ALLOW",
    "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}],
}


def test_seccomp_errno(runner):
    result = runner.run(["mkdir", "/tmp/denied"], linux={"seccomp": DENY_MKDIR})
    assert "Operation not permitted" in result.stderr
    assert result.exit_code == 1


def test_seccomp_filter_mode_reported(runner):
    result = runner.run(["grep", "^Seccomp:", "/proc/1/status"], linux={"seccomp": DENY_MKDIR})
    assert result.stdout.split() == ["Seccomp:", "2"]


def test_seccomp_kill_process(runner):
    profile = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["uname"], "action": "SCMP_ACT_KILL_PROCESS"}],
    }
    result = runner.run(["uname"], linux={"seccomp": profile})
    assert result.exit_code == 128 + signal.SIGSYS


def test_seccomp_argument_condition(runner):
    condition = {"index": 1, "value": int(signal.SIGUSR1), "op": "SCMP_CMP_EQ"}
    profile = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["kill"], "action": "SCMP_ACT_ERRNO", "args": [condition]}],
    }
    script = "kill -0 $$ && echo zero-allowed; kill -USR1 $$ || echo usr1-denied"
    result = runner.run(["sh", "-c", script], linux={"seccomp": profile})
    assert result.stdout == "zero-allowed\nusr1-denied\n"


def test_seccomp_unprivileged_without_nnp(runner):
    # Neither no_new_privs nor CAP_SYS_ADMIN at the end: the filter is loaded before
    # the user switch.
    process = {"user": {"uid": 1000, "gid": 1000}, "noNewPrivileges": False, "capabilities": {}}
    result = runner.run(
        ["sh", "-c", "mkdir /tmp/d; id -u"], linux={"seccomp": DENY_MKDIR}, process=process
    )
    assert result.stdout == "1000\n"
    assert "Operation not permitted" in result.stderr


def test_seccomp_applies_to_exec(runner):
    container_id, _ = runner.create(["sleep", "60"], linux={"seccomp": DENY_MKDIR})
    runner.runtime.start(container_id)
    read_end, write_end = os.pipe()
    try:
        pid = runner.runtime.exec(
            container_id,
            {"args": ["mkdir", "/tmp/e"], "cwd": "/", "env": ["PATH=/bin"]},
            stdio=(0, write_end, write_end),
        )
    finally:
        os.close(write_end)
    with os.fdopen(read_end) as output:
        text = output.read()
    assert runner.wait(pid) == 1
    assert "Operation not permitted" in text


def _recording_hook(record: Path) -> dict:
    return {"path": "/bin/sh", "args": ["sh", "-c", f"cat >> {record}; echo >> {record}"]}


def _states(record: Path) -> list[dict]:
    return [json.loads(line) for line in record.read_text().splitlines() if line]


def test_hooks_create_states(runner, tmp_path):
    records = {kind: tmp_path / f"{kind}.jsonl" for kind in ("prestart", "createRuntime")}
    records["createContainer"] = tmp_path / "createContainer.jsonl"
    hooks = {kind: [_recording_hook(path)] for kind, path in records.items()}
    container_id, pid = runner.create(["true"], hooks=hooks)
    for kind, record in records.items():
        (state,) = _states(record)
        assert state["status"] == "creating", kind
        assert state["pid"] == pid, kind
        assert state["id"] == container_id, kind
        assert state["bundle"] == str(runner.root / "bundles" / container_id), kind


def test_hooks_order(runner, tmp_path):
    record = tmp_path / "order"
    kinds = ("prestart", "createRuntime", "createContainer", "startContainer", "poststart")
    hooks = {
        kind: [{"path": "/bin/sh", "args": ["sh", "-c", f"echo {kind} >> {record}"]}]
        for kind in kinds
    }
    # startContainer runs inside the container, so its path is the rootfs's /bin/sh and
    # its record path must exist there too.
    container_record = runner.rootfs / "tmp" / "order"
    hooks["startContainer"][0]["args"][-1] = "echo startContainer >> /tmp/order"
    result = runner.run(["true"], hooks=hooks)
    assert result.exit_code == 0
    assert record.read_text().split() == [
        "prestart",
        "createRuntime",
        "createContainer",
        "poststart",
    ]
    assert container_record.read_text() == "startContainer\n"


def test_hook_start_container_in_container(runner):
    hook = {"path": "/bin/sh", "args": ["sh", "-c", "hostname > /tmp/hook-hostname"]}
    result = runner.run(
        ["cat", "/tmp/hook-hostname"], hostname="inside", hooks={"startContainer": [hook]}
    )
    assert result.stdout == "inside\n"


def test_hook_poststart_running(runner, tmp_path):
    record = tmp_path / "poststart.jsonl"
    container_id, pid = runner.create(
        ["sleep", "60"], hooks={"poststart": [_recording_hook(record)]}
    )
    runner.runtime.start(container_id)
    (state,) = _states(record)
    assert state["status"] == "running"
    assert state["pid"] == pid


def test_hook_poststop_on_delete(runner, tmp_path):
    record = tmp_path / "poststop.jsonl"
    container_id, pid = runner.create(["true"], hooks={"poststop": [_recording_hook(record)]})
    runner.runtime.start(container_id)
    runner.wait(pid)
    runner.runtime.delete(container_id)
    (state,) = _states(record)
    assert state["status"] == "stopped"
    assert state["id"] == container_id


def test_hook_env_exact(runner, tmp_path):
    record = tmp_path / "env"
    hook = {"path": "/bin/sh", "args": ["sh", "-c", f"env > {record}"], "env": ["ONLY=this"]}
    runner.create(["true"], hooks={"prestart": [hook]})
    lines = set(record.read_text().split())
    # The hook's environment is exactly its env; HOME is the runtime's to add only to
    # the container's process.
    assert "ONLY=this" in lines
    assert not any(line.startswith("HOME=") for line in lines)


def test_failing_prestart_leaves_nothing(runner):
    hook = {"path": "/bin/sh", "args": ["sh", "-c", "echo broken >&2; exit 3"]}
    with pytest.raises(SystemFailure, match=r"hook prestart\[0\] .* exited with status 3: broken"):
        runner.create(["sleep", "60"], hooks={"prestart": [hook]})
    container_id = runner.ids[-1]
    assert not (runner.root / "state" / container_id).exists()
    assert all(not (parent / container_id).exists() for parent in runner.cgroup_parents())


def test_failing_create_container_hook(runner):
    hook = {"path": "/bin/false", "args": ["false"]}
    with pytest.raises(SystemFailure, match=r"hook createContainer\[0\]"):
        runner.create(["true"], hooks={"createContainer": [hook]})


def test_hook_timeout_fails_create(runner):
    hook = {"path": "/bin/sleep", "args": ["sleep", "30"], "timeout": 1}
    with pytest.raises(SystemFailure, match="timed out after 1 s"):
        runner.create(["true"], hooks={"createRuntime": [hook]})


def test_failing_poststart_only_warns(runner, caplog):
    hook = {"path": "/bin/false", "args": ["false"]}
    container_id, pid = runner.create(["true"], hooks={"poststart": [hook]})
    runner.runtime.start(container_id)
    assert runner.wait(pid) == 0
    assert "hook poststart[0]" in caplog.text


def test_cli_start_container_hook(runner, tmp_path):
    # ketch-runc has not imported subprocess itself, so the init must load what the
    # hook needs before pivot_root hides the host's standard library.
    from support.runtime_cli import Cli

    hook = {"path": "/bin/sh", "args": ["sh", "-c", "hostname > /tmp/hook-hostname"]}
    container_id = runner.new_id()
    bundle = runner.bundle(
        container_id,
        ["cat", "/tmp/hook-hostname"],
        hostname="from-cli",
        hooks={"startContainer": [hook]},
    )
    runner.ids.append(container_id)
    result = Cli(runner)("run", "--bundle", str(bundle), container_id)
    assert result.stdout == "from-cli\n", result.stderr
